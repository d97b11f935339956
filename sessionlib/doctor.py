"""`sessionlib doctor`: the settings exactly as the middleware resolves them, each with its
source, and whether the Redis topology they describe answers as the store needs it to.

Every problem is one line naming the node and the variable (or ACL rule) that fixes it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.crc import key_slot

from sessionlib.cluster_views import (
    DOWN_FLAGS,
    SLOT_COUNT,
    UNSETTLED_FLAGS,
    ClusterNodeLine,
    ClusterView,
    SlotMap,
    SlotRange,
    as_ranges,
    format_ranges,
    read_view,
)
from sessionlib.config import (
    ENV_PREFIX,
    NON_SETTING_VARIABLES,
    RedisSettings,
    Settings,
    env_variable,
    environment_variables,
    settings_from_layers,
    settings_layers,
)
from sessionlib.connection import create_redis, endpoint_of, node_client
from sessionlib.errors import ConfigurationError
from sessionlib.failover import Address
from sessionlib.refusals import describe_refusal, fix_for, is_refusal
from sessionlib.scripts import LuaScript
from sessionlib.serialization import as_text

REDACTED = "********"
# SHA1 of no script sessionlib has: EVALSHA must answer NOSCRIPT, not NOPERM.
_MISSING_SCRIPT = "0" * 40
# Commands whose second word names the subcommand an ACL rule grants (`+cluster|slots`).
_CONTAINER_COMMANDS = frozenset({"CLUSTER", "SCRIPT", "CONFIG", "CLIENT"})
# With the near cache on, what its invalidation channel runs (sessionlib.tracking);
# `CLIENT TRACKING off` changes nothing on the doctor's own connection.
_NEAR_CACHE_PROBES: list[tuple[str | int, ...]] = [("CLIENT", "ID"), ("CLIENT", "TRACKING", "off")]
# Refusals Redis gives after the ACL check passed: a write with too few replicas linked.
_NOT_ABOUT_RIGHTS = ("NOREPLICAS", "READONLY", "MASTERDOWN")

Status = Literal["ok", "WARN", "FAIL"]


@dataclass
class Report:
    """What the doctor found, in order; each problem says what fixes it."""

    findings: list[tuple[Status, str]] = field(default_factory=list)

    def ok(self, text: str) -> None:
        self.findings.append(("ok", text))

    def warn(self, text: str) -> None:
        self.findings.append(("WARN", text))

    def fail(self, text: str, fix: str | None = None) -> None:
        if fix and "(check " not in text:
            text = f"{text} (check {fix})"
        self.findings.append(("FAIL", text))

    @property
    def problems(self) -> int:
        return sum(status == "FAIL" for status, _ in self.findings)


# -- settings and where each one comes from --------------------------------------------


def resolve(
    profile: str | None = None, config_file: str | Path | None = None
) -> tuple[Settings, dict[str, str]]:
    """The settings as `load_settings()` resolves them, and the source of every setting
    some layer gives (profile, config file or environment variable)."""
    chosen, layers = settings_layers(profile, config_file)
    settings = settings_from_layers(chosen, [layer for _, layer in layers])
    sources: dict[str, str] = {}
    for label, layer in layers:
        for path in _given_paths(layer):
            sources[path] = _environment_source(path) if label == "environment" else label
    if settings.redis.mode == "standalone" and _layer_of(sources, "redis.mode") != _layer_of(
        sources, "redis.url"
    ):
        sources["redis.mode"] = "implied by redis.url"
    if profile:
        sources["profile"] = "argument"
    elif os.environ.get(f"{ENV_PREFIX}PROFILE"):
        sources["profile"] = f"{ENV_PREFIX}PROFILE"
    return settings, sources


def _layer_of(sources: Mapping[str, str], path: str) -> str | None:
    source = sources.get(path)
    return "environment" if source and source.startswith(ENV_PREFIX) else source


def _given_paths(layer: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in layer.items():
        if isinstance(value, Mapping):
            yield from _given_paths(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def _environment_source(path: str) -> str:
    """The variable that gave `path`: its own, or a section's given as JSON."""
    parts = path.split(".")
    for length in range(len(parts), 0, -1):
        name = env_variable(".".join(parts[:length]))
        if name in os.environ or name.lower() in os.environ:
            return name
    return "environment"


def setting_values(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf setting of `model` as (dotted path, value)."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from setting_values(value, f"{prefix}{name}.")
        else:
            yield prefix + name, value


def shown(path: str, value: Any) -> str:
    """A setting's value as printed: secrets (and a password in a URL) redacted."""
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, list):
        return "[" + ", ".join(shown(path, item) for item in value) + "]"
    if value is None:
        return "-"
    if path == "redis.url":
        return _redacted_url(str(value))
    return str(value)


def _redacted_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:{REDACTED}@{host}").geturl()


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """`SESSIONLIB_*` variables that set nothing (load_settings refuses those that look
    like settings; the others, tools' own variables among them, it leaves alone)."""
    known = set(environment_variables()) | NON_SETTING_VARIABLES
    return sorted(
        name
        for name in environ
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in known
    )


# -- the topology -----------------------------------------------------------------------


def _unreachable(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


async def check_sentinels(redis: RedisSettings, report: Report) -> tuple[str, int] | None:
    """Ask every sentinel for the master; the address most of them give, or None."""
    # Asked at once, reported in the order the settings list them.
    addresses = redis.sentinel_addresses()
    reports = [Report() for _ in addresses]
    answers = await asyncio.gather(
        *(_ask_sentinel(redis, a, r) for a, r in zip(addresses, reports, strict=True))
    )
    for each in reports:
        report.findings.extend(each.findings)
    named = [answer for answer in answers if answer is not None]
    if not named:
        report.fail(
            f"no sentinel named a master for {redis.master_name!r}",
            f"{env_variable('redis.sentinels')} and {env_variable('redis.master_name')}",
        )
        return None
    master = max(set(named), key=named.count)
    if len(set(named)) > 1:
        views = ", ".join(sorted({f"{h}:{p}" for h, p in named}))
        report.fail(f"sentinels disagree on the master of {redis.master_name!r}: {views}")
    return master


async def _ask_sentinel(
    redis: RedisSettings, address: tuple[str, int], report: Report
) -> tuple[str, int] | None:
    where = f"sentinel {address[0]}:{address[1]}"
    client = node_client(redis, address, sentinel=True)
    try:
        masters = await client.sentinel_masters()  # type: ignore[no-untyped-call]
    except Exception as exc:
        user = redis.sentinel_username if redis.sentinel_password is not None else None
        if is_refusal(exc):
            report.fail(describe_refusal(exc, where, user, fix_for(exc, sentinel=True)))
        else:
            fix = env_variable("redis.sentinels")
            report.fail(f"{where}: unreachable ({_unreachable(exc)})", fix)
        return None
    finally:
        await client.aclose()
    state = masters.get(redis.master_name)
    if not state:
        report.fail(
            f"{where} does not monitor a master named {redis.master_name!r}",
            env_variable("redis.master_name"),
        )
        return None
    flags = set(str(state.get("flags", "")).split(","))
    master = (str(state["ip"]), int(state["port"]))
    if flags & {"s_down", "o_down", "failover_in_progress"}:
        report.fail(f"{where} sees master {master[0]}:{master[1]} as {', '.join(sorted(flags))}")
        return None
    tls = " over TLS" if redis.uses_tls else ""
    report.ok(
        f"{where}{tls}: master {redis.master_name!r} at {master[0]}:{master[1]} "
        f"({state.get('num-slaves', '?')} replicas, "
        f"{state.get('num-other-sentinels', '?')} other sentinels)"
    )
    return master


async def check_master(settings: Settings, client: Redis, where: str, report: Report) -> None:
    """ROLE, replicas, WAIT durability and the commands the store runs, on the master."""
    redis = settings.redis
    user = redis.username
    try:
        role = await client.execute_command("ROLE")  # type: ignore[no-untyped-call]
    except Exception as exc:
        if is_refusal(exc):
            report.fail(describe_refusal(exc, where, user, fix_for(exc)))
        else:
            fix = env_variable("redis.url") if redis.mode == "standalone" else None
            report.fail(f"{where}: unreachable ({_unreachable(exc)})", fix)
        return
    kind = role[0].decode() if isinstance(role[0], bytes) else str(role[0])
    if kind != "master":
        fix = env_variable("redis.url") if redis.mode == "standalone" else None
        report.fail(f"{where} answers ROLE {kind}, not master: writes would fail", fix)
        return
    replicas = len(role[2])
    tls = ""
    if redis.uses_tls:
        tls = f" over TLS (CA {redis.tls.ca_file or 'system'}"
        tls += ", client certificate)" if redis.tls.cert_file else ")"
    report.ok(f"{where}{tls} as user {user or 'default'!r}: ROLE master, {replicas} replicas")
    await _check_durability(settings, client, where, replicas, report)
    await _check_rights(settings, client, where, report)


async def _check_durability(
    settings: Settings, client: Redis, where: str, replicas: int, report: Report
) -> None:
    wanted = settings.session.durability.replicas
    if wanted == 0:
        return
    timeout_ms = settings.session.durability.timeout_ms
    try:
        acknowledged = int(await client.wait(wanted, timeout_ms))
    except redis_errors.RedisError:
        return  # told by the ACL check below
    if acknowledged < wanted:
        report.fail(
            f"session.durability.replicas is {wanted} but WAIT on {where} reached "
            f"{acknowledged} within {timeout_ms} ms ({replicas} replicas connected): every "
            f"write would {_shortfall(settings)}",
            env_variable("session.durability.replicas"),
        )
    else:
        report.ok(f"WAIT {wanted} {timeout_ms} on {where}: {acknowledged} replicas acknowledged")


def _shortfall(settings: Settings) -> str:
    if settings.session.durability.on_shortfall == "fail":
        return "fail with 503"
    return "count a durability shortfall"


Probe = tuple[str | int, ...]


def _store_probes(key: str) -> list[Probe]:
    """Harmless forms of the commands the store runs on `key`."""
    return [
        ("PING",),
        ("EXISTS", key),
        ("HMGET", key, "_ver"),
        ("PTTL", key),
        ("EVALSHA", _MISSING_SCRIPT, 1, key),
        ("WAIT", 0, 0),
    ]


async def _check_rights(
    settings: Settings,
    client: Redis,
    where: str,
    report: Report,
    key: str | None = None,
    probes: list[Probe] | None = None,
) -> None:
    """Harmless probes of the commands the store runs, on a key under its prefix: a
    NOPERM names the command the ACL user lacks."""
    key = key or f"{settings.session.key_prefix}:doctor"
    probes = probes or _store_probes(key)
    if settings.session.near_cache.enabled:
        probes = [*probes, *_NEAR_CACHE_PROBES]
    denied = []
    for probe in probes:
        command = " ".join(str(word) for word in probe[: _name_length(probe)])
        try:
            await client.execute_command(*probe)  # type: ignore[no-untyped-call]
        except redis_errors.NoScriptError:
            pass  # allowed to run it, and no such script: as expected
        except redis_errors.NoPermissionError as exc:
            denied.append(command)
            user = repr(settings.redis.username or "default")
            report.fail(
                f"{where}: user {user} may not run {command} on {key} ({_unreachable(exc)})",
                f"the ACL rules of user {user}",
            )
        except redis_errors.RedisError as exc:
            if isinstance(exc, redis_errors.ClusterDownError) or str(exc).startswith(
                _NOT_ABOUT_RIGHTS
            ):
                continue  # the ACL let it through; the state and replica checks tell why
            report.fail(f"{where}: {command} failed ({_unreachable(exc)})")
            denied.append(command)
    if not denied:
        names = ", ".join(" ".join(map(str, p[: _name_length(p)])) for p in probes)
        report.ok(f"{where}: {names} allowed on {key}")


def _name_length(probe: Probe) -> int:
    """How many words name the command: `CLUSTER SLOTS` is one command, `EXISTS key` is not."""
    return 2 if str(probe[0]).upper() in _CONTAINER_COMMANDS and len(probe) > 1 else 1


# -- Cluster mode -----------------------------------------------------------------------


def _address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _ask_cluster_node(
    redis: RedisSettings, address: str, report: Report, found_in_map: bool = False
) -> ClusterView | None:
    """CLUSTER INFO and CLUSTER NODES from one node, as the app's user: one line saying
    whether it let us in and what it is."""
    where = f"cluster node {address}" + (" (not in redis.cluster_nodes)" if found_in_map else "")
    client = node_client(redis, _address(address))
    try:
        view = await read_view(client, address)
    except Exception as exc:
        if is_refusal(exc):
            report.fail(describe_refusal(exc, where, redis.username, fix_for(exc)))
        else:
            fix = None if found_in_map else env_variable("redis.cluster_nodes")
            report.fail(f"{where}: unreachable ({_unreachable(exc)})", fix)
        return None
    finally:
        await client.aclose()
    me = view.myself
    if me is None:
        what = "not found under this address in its own CLUSTER SHARDS"
    elif me.is_master:
        what = f"master of slots {format_ranges(me.slots)}" if me.slots else "master of no slots"
    else:
        master = view.node(me.master_id or "")
        what = f"replica of {master.address if master else me.master_id}"
    tls = " over TLS" if redis.uses_tls else ""
    report.ok(f"{where}{tls} as user {redis.username or 'default'!r}: {what}")
    return view


async def check_cluster(settings: Settings, report: Report) -> None:
    """Every configured node, then the cluster as a whole (state, slots, agreement), then
    each master as the store uses it (replicas, durability, ACL rights, scripts)."""
    redis = settings.redis
    views = await _ask_cluster_nodes(redis, redis.cluster_nodes, report)
    if not views:
        report.fail("no cluster node answered: the cluster itself could not be checked")
        return
    # The slot map names every node; those not configured are asked too, unless already
    # asked under another name (a host name where the map has the IP address).
    asked = set(redis.cluster_nodes) | {v.myself.node_id for v in views if v.myself}
    others = sorted(
        {
            node.address
            for view in views
            for node in view.nodes
            if not {node.address, node.node_id} & asked
            and not node.flags & (UNSETTLED_FLAGS | DOWN_FLAGS)
        }
    )
    views += await _ask_cluster_nodes(redis, others, report, found_in_map=True)
    if any(view.partial for view in views):
        user = repr(redis.username or "default")
        report.warn(
            f"user {user} may not run CLUSTER INFO or CLUSTER NODES, so the cluster was read "
            "from CLUSTER SHARDS: cluster_state, config epochs and slots left migrating are "
            "not checked (grant the read-only +cluster|info +cluster|nodes to check them)"
        )
    slot_map = _check_agreement(views, report)
    _check_state(views, report)
    masters = _check_slots(views, slot_map, report)
    for master in masters:
        replicas = [
            node for node in slot_map.nodes if node.master_id == master.node_id and not node.is_down
        ]
        await _check_cluster_master(settings, master, replicas, report)


async def _ask_cluster_nodes(
    redis: RedisSettings, addresses: list[str], report: Report, found_in_map: bool = False
) -> list[ClusterView]:
    # Asked at once, reported in the order given.
    reports = [Report() for _ in addresses]
    answers = await asyncio.gather(
        *(
            _ask_cluster_node(redis, address, each, found_in_map)
            for address, each in zip(addresses, reports, strict=True)
        )
    )
    for each in reports:
        report.findings.extend(each.findings)
    return [view for view in answers if view is not None]


def _check_agreement(views: list[ClusterView], report: Report) -> ClusterView:
    """Whether every node that answered has the same slot map (owners and config
    epochs); returns the view most of them share, the one the rest is judged by."""
    epochs = not any(view.partial for view in views)
    groups: dict[SlotMap, list[ClusterView]] = {}
    for view in views:
        groups.setdefault(view.slot_map(epochs), []).append(view)
    ranked = sorted(groups.values(), key=len, reverse=True)
    chosen = ranked[0][0]
    masters = chosen.serving_masters()
    if len(ranked) == 1:
        seen = "config epochs not seen"
        if epochs:
            numbers = ", ".join(str(node.config_epoch) for node in masters)
            current = chosen.info.get("cluster_current_epoch", "?")
            seen = f"config epochs {numbers or '-'}, current epoch {current}"
        report.ok(
            f"all {len(views)} nodes that answered agree on the slot map: {len(masters)} "
            f"masters serving slots, {seen}"
        )
        return chosen
    sides = "; ".join(
        f"{', '.join(v.address for v in group)} see {_describe_map(group[0])}" for group in ranked
    )
    report.fail(
        f"nodes disagree on the slot map: {sides}; clients would be redirected back and "
        "forth until gossip settles",
        "CLUSTER NODES on each node; `redis-cli --cluster fix` once no failover or "
        "resharding is under way",
    )
    return chosen


def _describe_map(view: ClusterView) -> str:
    return ", ".join(
        f"{node.address} (epoch {node.config_epoch}) slots {format_ranges(node.slots)}"
        for node in view.serving_masters()
    )


def _check_state(views: list[ClusterView], report: Report) -> None:
    views = [view for view in views if not view.partial]
    if not views:
        return  # warned about: the user may not run CLUSTER INFO
    bad = [view for view in views if view.info.get("cluster_state") != "ok"]
    if not bad:
        report.ok(f"cluster_state:ok on all {len(views)} nodes that answered")
        return
    # Nodes that see the same thing are named once, as a count.
    seen: dict[str, int] = {}
    for view in bad:
        state = (
            f"cluster_state:{view.info.get('cluster_state', '?')} "
            f"(slots ok {view.info.get('cluster_slots_ok', '?')}, "
            f"pfail {view.info.get('cluster_slots_pfail', '?')}, "
            f"fail {view.info.get('cluster_slots_fail', '?')})"
        )
        seen[state] = seen.get(state, 0) + 1
    states = "; ".join(f"{state} on {count}" for state, count in seen.items())
    report.fail(
        f"{states} of {len(views)} nodes that answered: such a node refuses every command",
        "the slot and master problems reported here",
    )


def _check_slots(
    views: list[ClusterView], slot_map: ClusterView, report: Report
) -> list[ClusterNodeLine]:
    """All 16384 slots served, by masters that are up, none left half-moved; returns the
    masters that serve slots and are up."""
    served = slot_map.serving_masters()
    covered = {
        slot for node in served for first, last in node.slots for slot in range(first, last + 1)
    }
    problems = 0
    if len(covered) < SLOT_COUNT:
        missing = as_ranges(set(range(SLOT_COUNT)) - covered)
        problems += 1
        report.fail(
            f"{SLOT_COUNT - len(covered)} slots are served by no master "
            f"({format_ranges(missing)}): sessions whose ids hash there cannot be read or written",
            "`redis-cli --cluster fix`, or CLUSTER ADDSLOTSRANGE on a master",
        )
    up = []
    for node in served:
        seen_down = [view for view in views if _line_of(view, node.node_id).is_down]
        if not seen_down:
            up.append(node)
            continue
        problems += 1
        failed = any("fail" in _line_of(view, node.node_id).flags for view in views)
        replicas = [n.address for n in slot_map.nodes if n.master_id == node.node_id]
        state = "fail" if failed else "fail? (not yet agreed)"
        report.fail(
            f"master {node.address} (slots {format_ranges(node.slots)}) is flagged {state} by "
            f"{len(seen_down)} of {len(views)} nodes that answered and no replica has taken "
            "its slots over: sessions there are unavailable",
            f"that its replica ({', '.join(replicas) or 'none'}) is linked and allowed to "
            "fail over (cluster-replica-no-failover no), or restart the master",
        )
    for view in views:
        for entry in view.myself.open_slots if view.myself else ():
            problems += 1
            report.fail(f"{view.address}: {_describe_open_slot(entry, view)}", _FIX_OPEN_SLOT)
    if not problems:
        moving = "none migrating or importing"
        if all(view.partial for view in views):
            moving = "migrating or importing not seen"
        report.ok(
            f"{SLOT_COUNT}/{SLOT_COUNT} slots served by {len(served)} masters that are up, "
            + moving
        )
    return up


_FIX_OPEN_SLOT = "`redis-cli --cluster fix` finishes or undoes the move"


def _describe_open_slot(entry: str, view: ClusterView) -> str:
    slot, arrow, peer = entry.strip("[]").partition("->-")
    direction = "migrating to"
    if not arrow:
        slot, _, peer = entry.strip("[]").partition("-<-")
        direction = "importing from"
    other = view.node(peer)
    return (
        f"slot {slot} left {direction} {other.address if other else peer}: an unfinished "
        "reshard, every request for it pays an ASK redirect"
    )


def _line_of(view: ClusterView, node_id: str) -> ClusterNodeLine:
    # A node the asked node does not know at all is as good as down for it.
    return view.node(node_id) or ClusterNodeLine(node_id, "?", frozenset({"fail?"}), None, 0, ())


def _probe_key(prefix: str, ranges: tuple[SlotRange, ...]) -> str | None:
    """A key under the store's prefix whose slot `ranges` holds: the probes must land on
    the master being checked, not be redirected."""
    for n in range(1 << 20):
        slot = key_slot(str(n).encode())
        if any(first <= slot <= last for first, last in ranges):
            return f"{prefix}:doctor:{{{n}}}"
    return None


async def _check_cluster_master(
    settings: Settings, master: ClusterNodeLine, replicas: list[ClusterNodeLine], report: Report
) -> None:
    """A master as the store uses it: its replicas (failover, durability,
    min-replicas-to-write), the commands of the store and the client, and the scripts."""
    redis = settings.redis
    where = f"master {master.address}"
    client = node_client(redis, _address(master.address))
    try:
        try:
            role = await client.execute_command("ROLE")  # type: ignore[no-untyped-call]
        except Exception as exc:
            if is_refusal(exc):
                report.fail(describe_refusal(exc, where, redis.username, fix_for(exc)))
            else:
                report.fail(f"{where}: unreachable ({_unreachable(exc)})")
            return
        if as_text(role[0]) != "master":
            report.fail(
                f"{where} answers ROLE {as_text(role[0])}, yet the slot map names it master of "
                f"slots {format_ranges(master.slots)}: a failover has not settled yet"
            )
            return
        linked = len(role[2])
        key = _probe_key(settings.session.key_prefix, master.slots)
        await _check_replicas(client, master, replicas, linked, key, report)
        await _check_durability(settings, client, where, linked, report)
        if key is not None:
            # The client's own discovery (CLUSTER SLOTS, COMMAND) comes first: without it
            # no store operation starts. DEL stands for the writes, HGETALL for the reads.
            probes: list[Probe] = [("PING",), ("CLUSTER", "SLOTS"), ("COMMAND",), ("EXISTS", key)]
            probes += [("HGETALL", key), ("HMGET", key, "_ver"), ("PTTL", key), ("DEL", key)]
            probes += [("EVALSHA", _MISSING_SCRIPT, 1, key), ("WAIT", 0, 0)]
            await _check_rights(settings, client, where, report, key, probes)
        await _check_scripts(settings, client, where, report)
    finally:
        await client.aclose()


async def _check_replicas(
    client: Redis,
    master: ClusterNodeLine,
    replicas: list[ClusterNodeLine],
    linked: int,
    key: str | None,
    report: Report,
) -> None:
    where = f"master {master.address} (slots {format_ranges(master.slots)})"
    at_least = await _min_replicas_to_write(client)
    refusal = await _write_refusal(client, key) if key else None
    names = ", ".join(node.address for node in replicas) or "none"
    detail = f"{len(replicas)} replica(s) up ({names}), {linked} linked"
    if at_least is not None:
        detail += f", min-replicas-to-write {at_least}"
    if not replicas or not linked:
        report.fail(
            f"{where} has no working replica ({detail}): when it fails, its slots go down "
            "with it" + (f", and it already refuses writes ({refusal})" if refusal else ""),
            "that its replica runs and is linked, or add one "
            "(`redis-cli --cluster add-node NEW EXISTING --cluster-slave`)",
        )
    elif refusal or (at_least is not None and linked < at_least):
        reason = refusal or f"min-replicas-to-write {at_least}, {linked} linked"
        report.fail(
            f"{where} refuses writes ({reason}): {detail}",
            "the replicas' links (INFO replication), or lower min-replicas-to-write",
        )
    else:
        report.ok(f"{where}: {detail}")


async def _min_replicas_to_write(client: Redis) -> int | None:
    """The master's min-replicas-to-write, or None when the user may not read it."""
    try:
        reply = await client.execute_command(  # type: ignore[no-untyped-call]
            "CONFIG", "GET", "min-replicas-to-write"
        )
    except redis_errors.RedisError:
        return None
    values = list(reply.values()) if isinstance(reply, dict) else list(reply)[1::2]
    return int(as_text(values[0])) if values else None


async def _write_refusal(client: Redis, key: str) -> str | None:
    """Why the master refuses a write (NOREPLICAS, READONLY, ...), from a DEL of a key
    that does not exist; None when it accepts writes, or when another check tells why not
    (the cluster is down, the user may not DEL)."""
    try:
        await client.execute_command("DEL", key)  # type: ignore[no-untyped-call]
    except (redis_errors.NoPermissionError, redis_errors.ClusterDownError):
        return None
    except redis_errors.RedisError as exc:
        return _unreachable(exc)
    return None


async def _check_scripts(settings: Settings, client: Redis, where: str, report: Report) -> None:
    """SCRIPT LOAD of every script the store runs: a promoted replica starts with an
    empty script cache, and the store loads them again on NOSCRIPT."""
    scripts = _store_scripts()
    user = repr(settings.redis.username or "default")
    for script in scripts:
        try:
            sha = as_text(await client.script_load(script.source))
        except redis_errors.NoPermissionError as exc:
            report.fail(
                f"{where}: user {user} may not run SCRIPT LOAD ({_unreachable(exc)})",
                f"the ACL rules of user {user}",
            )
            return
        except redis_errors.RedisError as exc:
            report.fail(f"{where}: SCRIPT LOAD of {script.name}.lua failed ({_unreachable(exc)})")
            return
        if sha != script.sha:
            report.fail(
                f"{where}: SCRIPT LOAD of {script.name}.lua answered SHA1 {sha}, not {script.sha}"
            )
            return
    names = ", ".join(script.name for script in scripts)
    report.ok(f"{where}: SCRIPT LOAD of {len(scripts)} scripts ({names})")


def _store_scripts() -> list[LuaScript]:
    """Every script sessionlib ships (sessionlib/lua/*.lua)."""
    folder = resources.files("sessionlib").joinpath("lua")
    names = sorted(
        item.name[: -len(".lua")] for item in folder.iterdir() if item.name.endswith(".lua")
    )
    return [LuaScript(name) for name in names]


async def check_topology(settings: Settings, report: Report) -> None:
    redis = settings.redis
    if redis.mode == "cluster":
        await check_cluster(settings, report)
        return
    if redis.mode == "sentinel":
        master = await check_sentinels(redis, report)
        if master is None:
            return
        client = node_client(redis, master)
        where = f"master {master[0]}:{master[1]}"
    else:
        standalone = create_redis(redis)
        assert isinstance(standalone, Redis)  # standalone mode builds a plain client
        client = standalone
        where = f"redis {endpoint_of(client)[0]}"
    try:
        await check_master(settings, client, where, report)
    finally:
        await client.aclose()


# -- the command ------------------------------------------------------------------------


def run(
    out: TextIO,
    profile: str | None = None,
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Print the settings and the checks; 0 when everything holds, 1 otherwise."""
    report = Report()
    try:
        settings, sources = resolve(profile, config_file)
    except ConfigurationError as exc:
        _warn_unknown(report, environ, refused=str(exc))
        heading, *details = str(exc).splitlines()
        for line in details or [heading]:
            report.fail(f"{heading.rstrip(':')}: {line.strip()}" if details else line)
        _print_findings(out, report)
        return 1
    _warn_unknown(report, environ)
    _print_settings(out, settings, sources)
    asyncio.run(check_topology(settings, report))
    _print_findings(out, report)
    return 1 if report.problems else 0


def _warn_unknown(report: Report, environ: Mapping[str, str] | None, refused: str = "") -> None:
    for name in unknown_variables(os.environ if environ is None else environ):
        if name not in refused:  # a refused one is already a problem of its own
            report.warn(f"{name} matches no sessionlib setting and is ignored")


def _print_settings(out: TextIO, settings: Settings, sources: Mapping[str, str]) -> None:
    out.write(f"settings (profile {settings.profile}; secrets redacted; [source]):\n")
    values = list(setting_values(settings))
    width = max(len(path) for path, _ in values)
    for path, value in values:
        source = sources.get(path, "default")
        out.write(f"  {path:<{width}}  {shown(path, value)}  [{source}]\n")


def _print_findings(out: TextIO, report: Report) -> None:
    out.write("checks:\n")
    for status, text in report.findings:
        out.write(f"  {status:<4}  {text}\n")
    problems = report.problems
    out.write(
        "everything holds\n" if not problems else f"{problems} problem{'s' * (problems > 1)}\n"
    )
