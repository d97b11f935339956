"""The Lua scripts the store runs, called by SHA with a fallback on `NOSCRIPT`.

A freshly promoted master has an empty script cache, so the fallback matters after
every failover; in the steady state each call is one `EVALSHA` round trip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

Arg = str | int | bytes


class LuaScript:
    """One script from `sessionlib/lua/`, identified by its SHA1."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = resources.files("sessionlib").joinpath("lua", f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()

    async def run(self, redis: Redis, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return await cast(Awaitable[Any], redis.evalsha(self.sha, len(keys), *keys, *args))
        except NoScriptError:
            return await cast(Awaitable[Any], redis.eval(self.source, len(keys), *keys, *args))

    def queue(self, pipe: Pipeline, keys: Sequence[str], args: Sequence[Arg]) -> None:
        """Add an `EVALSHA` to a pipeline; see `run_pipeline` for the fallback."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)


Step = Callable[[Pipeline], object]


async def _execute(redis: Redis, steps: Sequence[Step]) -> list[Any]:
    pipe = redis.pipeline(transaction=False)
    for step in steps:
        step(pipe)
    return list(await pipe.execute(raise_on_error=False))


async def run_pipeline(
    redis: Redis, steps: Sequence[Step], scripts: Sequence[LuaScript], *, rerun_last: bool = False
) -> list[Any]:
    """Run `steps` (one command each) in one non-transactional round trip.

    When Redis did not know a script, only the steps that failed run again once the
    scripts are loaded: the others already took effect and may not be idempotent.
    `rerun_last` repeats the final step too (a `WAIT` must follow every write).
    """
    results = await _execute(redis, steps)
    missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
    if missing:
        for script in scripts:
            await redis.script_load(script.source)
        last = len(steps) - 1
        again = missing + ([last] if rerun_last and last not in missing else [])
        for i, result in zip(again, await _execute(redis, [steps[i] for i in again]), strict=True):
            results[i] = result
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results
