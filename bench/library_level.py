"""Library level: `SessionStore.load`/`save` against raw redis-py doing the minimum (HGETALL;
HSET + PEXPIRE in one pipeline), same client settings, rounds interleaved A B, B A, ...

The same store with encryption at rest on runs in the same rounds, and its cost is a ratio
to plain sessionlib, round by round.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import SecretStr

from bench.machine import process_cpu_seconds
from bench.plan import Plan
from bench.stats import Sample, Spread, compare, percentile
from bench.workload import CHANGED, changed, changed_value, session_attributes
from sessionlib.config import EncryptionSettings, RedisSettings, SessionSettings
from sessionlib.connection import create_redis
from sessionlib.store import SessionStore

SESSIONLIB = "sessionlib"
ENCRYPTED = "sessionlib + encryption"
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
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    encryption = EncryptionSettings(enabled=True, keys=[SecretStr(key)])
    sealing = SessionStore(create_redis(settings), SessionSettings(encryption=encryption))
    raw = create_redis(settings)
    try:
        await store.load_scripts()
        attributes = session_attributes()
        # Each worker has a session of its own per variant, all in sessionlib's layout.
        ids = [await store.create(attributes) for _ in range(workers)]
        loaded = [snapshot for sid in ids if (snapshot := await store.load(sid))]
        sealed_ids = [await sealing.create(attributes) for _ in range(workers)]
        sealed = [snapshot for sid in sealed_ids if (snapshot := await sealing.load(sid))]
        if len(loaded) != workers or len(sealed) != workers:
            raise RuntimeError("sessions just created could not be loaded")
        raw_keys = [store.session_key(await store.create(attributes)) for _ in range(workers)]
        ttl_ms = store.settings.idle_timeout_seconds * 1000
        counter = itertools.count()

        async def sessionlib_load(index: int) -> None:
            await store.load(ids[index])

        async def encrypted_load(index: int) -> None:
            await sealing.load(sealed_ids[index])

        async def raw_load(index: int) -> None:
            await raw.hgetall(raw_keys[index])

        async def sessionlib_save(index: int) -> None:
            await store.save(loaded[index], changed(attributes, next(counter)))

        async def encrypted_save(index: int) -> None:
            await sealing.save(sealed[index], changed(attributes, next(counter)))

        async def raw_save(index: int) -> None:
            pipe = raw.pipeline(transaction=False)
            pipe.hset(raw_keys[index], CHANGED, json.dumps(changed_value(next(counter))))
            pipe.pexpire(raw_keys[index], ttl_ms)
            await pipe.execute()

        operations = {
            "load": {SESSIONLIB: sessionlib_load, ENCRYPTED: encrypted_load, RAW: raw_load},
            "save": {SESSIONLIB: sessionlib_save, ENCRYPTED: encrypted_save, RAW: raw_save},
        }
        results: dict[str, Any] = {}
        for name, variants in operations.items():
            results[name] = {}
            for concurrency in plan.library_concurrency:
                rounds = await interleaved(variants, concurrency, plan, redis_pid)
                comparison = compare(rounds, RAW)
                per_round = zip(rounds[ENCRYPTED], rounds[SESSIONLIB], strict=True)
                cost = Spread.of([e.rate / p.rate for e, p in per_round]).to_json()
                comparison["variants"][ENCRYPTED]["ratio_to_sessionlib"] = cost
                results[name][str(concurrency)] = comparison
        return results
    finally:
        await store.close()
        await sealing.close()
        await raw.aclose()
