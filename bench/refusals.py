"""`python -m bench.refusals`: how fast a caller's own mistake is answered (a wrong
password, a missing ACL permission), against a real redis-server this script starts.
Before sessionlib told refusals from outages, each took the whole 5 s retry deadline."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

from deploy.local.processes import find_free_ports
from deploy.local.standalone import StandaloneRedis
from sessionlib.config import load_settings
from sessionlib.errors import SessionError
from sessionlib.store import SessionStore

TRIES = 20


async def _seconds_to_refusal(url: str, **redis: str) -> list[float]:
    settings = load_settings("dev", redis={"mode": "standalone", "url": url, **redis})
    times = []
    for _ in range(TRIES):
        store = SessionStore.from_settings(settings)  # a fresh connection every time
        started = time.perf_counter()
        try:
            await store.load("A" * 43)
        except SessionError:
            times.append(time.perf_counter() - started)
        finally:
            await store.close()
    return times


async def main() -> None:
    right, app_password = secrets.token_hex(8), secrets.token_hex(8)
    with (
        tempfile.TemporaryDirectory() as tmp,
        StandaloneRedis(Path(tmp) / "redis", find_free_ports(1)[0], password=right) as server,
    ):
        admin = Redis.from_url(f"redis://:{right}@127.0.0.1:{server.port}/0")
        await admin.execute_command(
            "ACL",
            "SETUSER",
            "app",
            "on",
            f">{app_password}",
            "~sessionlib:*",
            "+@all",
            "-evalsha",
            "-eval",
        )
        await admin.aclose()
        cases = {
            "wrong password": await _seconds_to_refusal(
                f"redis://:wrong@127.0.0.1:{server.port}/0"
            ),
            "missing ACL permission": await _seconds_to_refusal(
                f"redis://127.0.0.1:{server.port}/0", username="app", password=app_password
            ),
        }
    for case, times in cases.items():
        print(
            f"{case}: median {statistics.median(times) * 1000:.1f} ms, "
            f"max {max(times) * 1000:.1f} ms over {len(times)} tries"
        )


if __name__ == "__main__":
    asyncio.run(main())
