"""The Lua scripts the store runs, called by SHA with a fallback on `NOSCRIPT`.

A freshly promoted master has an empty script cache, so the fallback matters after
every failover; in the steady state each call is one `EVALSHA` round trip. Every script
touches one session's keys, all in one slot (the `{<sid>}` hash tag), so in Cluster mode
it runs on the node that owns that slot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import DataAccessCommands, ScriptCommands
from redis.exceptions import NoScriptError

from sessionlib.cluster import RedisClient, SessionCluster
from sessionlib.errors import ConfigurationError

Arg = str | int | bytes


class LuaScript:
    """One script from `sessionlib/lua/`, identified by its SHA1."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = resources.files("sessionlib").joinpath("lua", f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()

    async def run(self, redis: RedisClient, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return await cast(Awaitable[Any], redis.evalsha(self.sha, len(keys), *keys, *args))
        except NoScriptError:
            return await cast(Awaitable[Any], redis.eval(self.source, len(keys), *keys, *args))

    def queue(self, pipe: Pipeline, keys: Sequence[str], args: Sequence[Arg]) -> None:
        """Add an `EVALSHA` to a pipeline; see `run_pipeline` for the fallback."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)


Step = Callable[[Pipeline], object]
# `WAIT numreplicas timeout_ms` after a write.
Wait = tuple[int, int]


async def _execute(redis: Redis, steps: Sequence[Step]) -> list[Any]:
    pipe = redis.pipeline(transaction=False)
    for step in steps:
        step(pipe)
    return list(await pipe.execute(raise_on_error=False))


async def run_pipeline(
    redis: RedisClient,
    steps: Sequence[Step],
    scripts: Sequence[LuaScript],
    *,
    wait: Wait | None = None,
) -> list[Any]:
    """Run `steps` (one command each) in one non-transactional round trip, with a
    `WAIT replicas timeout_ms` behind them when `wait` is given: its reply comes last.

    When Redis did not know a script, only the steps that failed run again once the
    scripts are loaded: the others already took effect and may not be idempotent (the
    `WAIT` runs again too, it must follow every write). In Cluster mode the steps run one
    after another instead (see `_run_in_order`).
    """
    if isinstance(redis, RedisCluster):
        return await _run_in_order(redis, steps, scripts, wait)
    if wait is not None:
        steps = [*steps, lambda p: p.wait(*wait)]
    results = await _execute(redis, steps)
    missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
    if missing:
        for script in scripts:
            await redis.script_load(script.source)
        last = len(steps) - 1
        again = missing + ([last] if wait is not None and last not in missing else [])
        for i, result in zip(again, await _execute(redis, [steps[i] for i in again]), strict=True):
            results[i] = result
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


class _OneCommand(DataAccessCommands, ScriptCommands):
    """Stands in for a pipeline and records the one command a step queues on it, as
    redis-py's command methods spell it (`exists` -> `EXISTS key`)."""

    _event_dispatcher: Any = None  # part of redis-py 7's command protocol, unused here

    def __init__(self) -> None:
        self.args: tuple[Any, ...] = ()

    def execute_command(self, *args: Any, **options: Any) -> _OneCommand:
        # `options` only serve redis-py's client-side cache (`keys=`): not needed here.
        self.args = args
        return self


async def _run_in_order(
    redis: RedisCluster, steps: Sequence[Step], scripts: Sequence[LuaScript], wait: Wait | None
) -> list[Any]:
    """Run `steps` one by one, in order, each on the node owning its key: the keys of one
    batch may live in different slots (a cluster pipeline would run them concurrently,
    and refuses EVALSHA), and their order is what makes a crash between them harmless
    (see `SessionStore.regenerate`). The first failure stops the batch, so a later step
    never runs without the earlier ones. A step whose script the node does not know (a
    promoted replica) runs again once that node has the script.

    With `wait`, each step is followed by its `WAIT` on the same connection of the same
    node (a `WAIT` elsewhere would count nothing), and the last reply is the fewest
    replicas any step reached.
    """
    if wait is not None and not isinstance(redis, SessionCluster):
        raise ConfigurationError(
            "WAIT in Cluster mode needs the client sessionlib builds (create_redis)"
        )
    results = []
    fewest: int | None = None
    for step in steps:
        command = _OneCommand()
        step(cast(Pipeline, command))
        # One key each: the client sends it to the node owning that key's slot (its
        # multi-key helpers would split it through a pipeline, with a retry loop of its
        # own in redis-py 5.2).
        if wait is None:
            results.append(await _knowing(redis, scripts, *command.args))
            continue
        cluster = cast(SessionCluster, redis)
        sources = [script.source for script in scripts]
        reply, acknowledged = await cluster.run_then(command.args, ("WAIT", *wait), sources)
        results.append(reply)
        fewest = int(acknowledged) if fewest is None else min(fewest, int(acknowledged))
    if wait is not None:
        results.append(wait[0] if fewest is None else fewest)
    return results


async def _knowing(redis: RedisCluster, scripts: Sequence[LuaScript], *args: Any) -> Any:
    """The command; an `EVALSHA` the node does not know (a promoted replica) runs again as
    `EVAL` of its source, which also puts the script in that node's cache. Loading it with
    `script_load` instead would reach the masters redis-py knows by type, and a reloaded
    map may still type the promoted node a replica."""
    try:
        return await redis.execute_command(*args)
    except NoScriptError:
        _evalsha, sha, *rest = args
        source = next(script.source for script in scripts if script.sha == sha)
        return await redis.execute_command("EVAL", source, *rest)
