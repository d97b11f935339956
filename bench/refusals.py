"""`python -m bench.refusals`: how fast a caller's own mistake is answered (a wrong
password, a missing ACL permission, every TLS misconfiguration), against real
redis-servers this script starts. Before sessionlib told refusals from outages, each
took the whole 5 s retry deadline (or, for TLS, failed with a TypeError)."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from deploy.local.certificates import Authority
from deploy.local.processes import find_free_ports
from deploy.local.standalone import StandaloneRedis
from deploy.local.tls_standalone import TLSRedis
from sessionlib.config import load_settings
from sessionlib.errors import SessionStoreRefused
from sessionlib.store import SessionStore

TRIES = 20


async def _seconds_to_refusal(url: str, **redis: Any) -> list[float]:
    settings = load_settings("dev", redis={"mode": "standalone", "url": url, **redis})
    times = []
    for _ in range(TRIES):
        store = SessionStore.from_settings(settings)  # a fresh connection every time
        started = time.perf_counter()
        try:
            await store.load("A" * 43)
        except SessionStoreRefused:
            times.append(time.perf_counter() - started)
        finally:
            await store.close()
    return times


async def _acl_cases(directory: Path) -> dict[str, list[float]]:
    right, app_password = secrets.token_hex(8), secrets.token_hex(8)
    with StandaloneRedis(directory / "redis", find_free_ports(1)[0], password=right) as server:
        admin = Redis.from_url(f"redis://:{right}@127.0.0.1:{server.port}/0")
        await admin.execute_command(
            "ACL", "SETUSER", "app", "on", f">{app_password}", "~sessionlib:*", "+@all",
            "-evalsha", "-eval",
        )  # fmt: skip
        await admin.aclose()
        url = f"redis://127.0.0.1:{server.port}/0"
        return {
            "wrong password": await _seconds_to_refusal(
                f"redis://:wrong@127.0.0.1:{server.port}/0"
            ),
            "missing ACL permission": await _seconds_to_refusal(
                url, username="app", password=app_password
            ),
            "TLS client, plaintext port": await _seconds_to_refusal(url, tls={"enabled": True}),
        }


async def _tls_cases(directory: Path) -> dict[str, list[float]]:
    ca = Authority.create(directory / "ca")
    other = Authority.create(directory / "other", name="another CA")
    server_cert = ca.issue(directory, "server")
    client_cert = ca.issue(directory, "client", client=True)
    expired = ca.issue(directory, "expired", valid_from_days_ago=10, valid_days=1)
    elsewhere = ca.issue(directory, "elsewhere", hostnames=("db.example.org",))

    def tls(authority: Authority = ca) -> dict[str, Any]:
        return {"enabled": True, "ca_file": str(authority.ca_file)}

    cases: dict[str, list[float]] = {}
    with TLSRedis(directory / "plain-tls", ca, server_cert) as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        cases["certificate from another CA"] = await _seconds_to_refusal(url, tls=tls(other))
        cases["plaintext client, TLS port"] = await _seconds_to_refusal(url)
    with TLSRedis(directory / "mutual", ca, server_cert, mutual=True, client_cert=client_cert) as s:
        cases["no client certificate (mTLS)"] = await _seconds_to_refusal(
            f"redis://127.0.0.1:{s.port}/0", tls=tls()
        )
    with TLSRedis(directory / "expired", ca, expired) as s:
        cases["expired certificate"] = await _seconds_to_refusal(
            f"redis://127.0.0.1:{s.port}/0", tls=tls()
        )
    with TLSRedis(directory / "elsewhere", ca, elsewhere) as s:
        cases["hostname mismatch"] = await _seconds_to_refusal(
            f"redis://127.0.0.1:{s.port}/0", tls=tls()
        )
    return cases


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cases = {**await _acl_cases(Path(tmp)), **await _tls_cases(Path(tmp))}
    for case, times in cases.items():
        print(
            f"{case}: median {statistics.median(times) * 1000:.1f} ms, "
            f"max {max(times) * 1000:.1f} ms over {len(times)} tries"
        )


if __name__ == "__main__":
    asyncio.run(main())
