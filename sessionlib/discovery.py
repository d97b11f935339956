"""Asking every sentinel at once who the master is, within a short timeout.

redis-py asks sentinels one after another, each with the full socket timeout, and
folds every failure (a wrong sentinel password included) into one long
`MasterNotFoundError`. Here the first valid answer wins, and a refusal is told apart.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel

from sessionlib.errors import SessionStoreRefused
from sessionlib.refusals import describe_refusal, fix_for, is_refusal

Address = tuple[str, int]


class ConcurrentSentinel(Sentinel):
    """A `Sentinel` whose master discovery asks all sentinels concurrently."""

    def __init__(self, *args: Any, discovery_timeout_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.discovery_timeout_seconds = discovery_timeout_seconds

    async def discover_master(self, service_name: str) -> Address:
        queries = {
            asyncio.ensure_future(self._ask(client, service_name)): client
            for client in self.sentinels
        }
        failures: list[str] = []
        refusal: str | None = None
        try:
            for finished in asyncio.as_completed(queries, timeout=self.discovery_timeout_seconds):
                try:
                    found = await finished
                except TimeoutError:
                    break
                except Exception as exc:
                    failures.append(str(exc))
                    if isinstance(exc, SessionStoreRefused):
                        refusal = str(exc)
                    continue
                if found is not None:
                    return found
        finally:
            for query in queries:
                query.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*queries, return_exceptions=True)
        if refusal is not None and len(failures) == len(queries):
            raise SessionStoreRefused(refusal)
        answered = len(failures)
        raise MasterNotFoundError(
            f"no sentinel named a master for {service_name!r} "
            f"({len(queries) - answered} of {len(queries)} did not answer within "
            f"{self.discovery_timeout_seconds:g}s; {'; '.join(failures[:3]) or 'no errors'})"
        )

    async def _ask(self, client: Redis, service_name: str) -> Address | None:
        where = _address_text(client)
        try:
            masters = await client.sentinel_masters()  # type: ignore[no-untyped-call]
        except Exception as exc:
            if is_refusal(exc):
                user = client.connection_pool.connection_kwargs.get("username")
                raise SessionStoreRefused(
                    describe_refusal(exc, f"sentinel {where}", user, fix_for(exc, sentinel=True))
                ) from None
            raise redis_errors.ConnectionError(f"sentinel {where}: {exc}") from None
        state = masters.get(service_name)
        if state and self.check_master_state(state, service_name):
            return str(state["ip"]), int(state["port"])
        return None


def _address_text(client: Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"
