"""`sessionlib doctor`: the settings exactly as the middleware resolves them, each with its
source, and whether the Redis topology they describe answers as the store needs it to.

Every problem is one line naming the node and the variable (or ACL rule) that fixes it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr
from redis import exceptions as redis_errors
from redis.asyncio import Redis

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
from sessionlib.refusals import describe_refusal, fix_for, is_refusal

REDACTED = "********"
# SHA1 of no script sessionlib has: EVALSHA must answer NOSCRIPT, not NOPERM.
_MISSING_SCRIPT = "0" * 40

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


async def _check_rights(settings: Settings, client: Redis, where: str, report: Report) -> None:
    """Harmless probes of the commands the store runs, on a key under its prefix: a
    NOPERM names the command the ACL user lacks."""
    key = f"{settings.session.key_prefix}:doctor"
    probes: list[tuple[str | int, ...]] = [
        ("PING",),
        ("EXISTS", key),
        ("HMGET", key, "_ver"),
        ("PTTL", key),
        ("EVALSHA", _MISSING_SCRIPT, 1, key),
        ("WAIT", 0, 0),
    ]
    denied = []
    for probe in probes:
        command = str(probe[0])
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
            report.fail(f"{where}: {command} failed ({_unreachable(exc)})")
            denied.append(command)
    if not denied:
        names = ", ".join(str(probe[0]) for probe in probes)
        report.ok(f"{where}: {names} allowed on {key}")


async def check_topology(settings: Settings, report: Report) -> None:
    redis = settings.redis
    if redis.mode == "cluster":
        report.fail("sessionlib doctor cannot check Cluster mode yet", env_variable("redis.mode"))
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
