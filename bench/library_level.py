"""Library level: `SessionStore.load`/`save` against raw redis-py doing the minimum (HGETALL;
HSET + PEXPIRE in one pipeline), same client settings, rounds interleaved A B, B A, ...
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bench.machine import process_cpu_seconds
from bench.plan import Plan
from bench.stats import Sample, compare, percentile
from bench.workload import CHANGED, changed, changed_value, session_attributes
from sessionlib.config import RedisSettings
from sessionlib.connection import create_redis
from sessionlib.store import SessionStore

SESSIONLIB = "sessionlib"
RAW = "redis-py"

Operation = Callable[[int], Awaitable[object]]  # one call by worker `index`


async def timed_round(
    operation: Operation, concurrency: int, seconds: float, redis_pid: int
) -> Sample:
    """`concurrency` workers call `operation` back to back for `seconds`."""
    latencies: list[float] = []
    cpu_before = time.process_time(), process_cpu_seconds(redis_pid)
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await operation(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    python_cpu = time.process_time() - cpu_before[0]
    redis_cpu = process_cpu_seconds(redis_pid) - cpu_before[1]
    count = len(latencies)
    return Sample(
        rate=count / elapsed,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        python_cpu_us=python_cpu / count * 1e6,
        redis_cpu_us=redis_cpu / count * 1e6,
        count=count,
    )


async def interleaved(
    variants: Mapping[str, Operation], concurrency: int, plan: Plan, redis_pid: int
) -> dict[str, list[Sample]]:
    """One untimed warm-up each, then `plan.library_rounds` rounds in alternating order."""
    for operation in variants.values():
        await timed_round(operation, concurrency, plan.library_seconds / 4, redis_pid)
    rounds: dict[str, list[Sample]] = {name: [] for name in variants}
    names = list(variants)
    for number in range(plan.library_rounds):
        for name in names if number % 2 == 0 else reversed(names):
            rounds[name].append(
                await timed_round(variants[name], concurrency, plan.library_seconds, redis_pid)
            )
    return rounds


async def run(redis_url: str, redis_pid: int, plan: Plan) -> dict[str, Any]:
    """Load and save at each concurrency of the plan: figures and ratios to raw redis-py."""
    workers = max(plan.library_concurrency)
    settings = RedisSettings(url=redis_url, max_connections=workers)
    store = SessionStore(create_redis(settings))
    raw = create_redis(settings)
    try:
        await store.load_scripts()
        attributes = session_attributes()
        # Each worker has a session of its own per variant, all in sessionlib's layout.
        ids = [await store.create(attributes) for _ in range(workers)]
        loaded = [snapshot for sid in ids if (snapshot := await store.load(sid))]
        if len(loaded) != workers:
            raise RuntimeError("sessions just created could not be loaded")
        raw_keys = [store.session_key(await store.create(attributes)) for _ in range(workers)]
        ttl_ms = store.settings.idle_timeout_seconds * 1000
        counter = itertools.count()

        async def sessionlib_load(index: int) -> None:
            await store.load(ids[index])

        async def raw_load(index: int) -> None:
            await raw.hgetall(raw_keys[index])

        async def sessionlib_save(index: int) -> None:
            await store.save(loaded[index], changed(attributes, next(counter)))

        async def raw_save(index: int) -> None:
            pipe = raw.pipeline(transaction=False)
            pipe.hset(raw_keys[index], CHANGED, json.dumps(changed_value(next(counter))))
            pipe.pexpire(raw_keys[index], ttl_ms)
            await pipe.execute()

        operations = {
            "load": {SESSIONLIB: sessionlib_load, RAW: raw_load},
            "save": {SESSIONLIB: sessionlib_save, RAW: raw_save},
        }
        results: dict[str, Any] = {}
        for name, variants in operations.items():
            results[name] = {}
            for concurrency in plan.library_concurrency:
                rounds = await interleaved(variants, concurrency, plan, redis_pid)
                results[name][str(concurrency)] = compare(rounds, RAW)
        return results
    finally:
        await store.close()
        await raw.aclose()
