"""The connection classes sessionlib's pools use: their failures say what they are.

A plaintext/TLS mismatch or a refused TLS session reads as a refusal, not an outage; a
write to a transport that closed under it reads as a connection error (retried), not as
an AttributeError (a 500); and TLS connections share one SSL context per configuration,
since building one loads the system's CA bundle (tens of milliseconds of a blocked loop).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio.connection import Connection, RedisSSLContext, SSLConnection

from sessionlib.refusals import (
    ProtocolMismatch,
    TLSSessionRefused,
    speaks_plaintext,
    speaks_tls,
    tls_session_refusal,
)

_SHARED_CONTEXTS: dict[tuple[tuple[str, str], ...], ssl.SSLContext] = {}


def _share_context(redis_context: RedisSSLContext) -> None:
    """Give `redis_context` the SSL context made earlier for the same configuration."""
    # Its settings are slots in some redis-py versions, a __dict__ in others.
    names = {n for c in type(redis_context).__mro__ for n in getattr(c, "__slots__", ())}
    names |= set(getattr(redis_context, "__dict__", {}))
    names.discard("context")
    key = tuple((n, repr(getattr(redis_context, n, None))) for n in sorted(names))
    if key not in _SHARED_CONTEXTS:
        _SHARED_CONTEXTS[key] = redis_context.get()
    redis_context.context = _SHARED_CONTEXTS[key]


class DiagnosingConnection(Connection):
    """A connection that reports a protocol mismatch, a refused TLS session and a write
    after close as what they are. The checks run only on failure, never on the normal
    path.

    Plaintext to a TLS port: the node cuts the connection at the first command. TLS to
    a plaintext port: the handshake waits for an answer that never comes (a timeout).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self, SSLConnection):
            _share_context(self.ssl_context)

    if hasattr(Connection, "connect_check_health"):
        # Where redis-py has it, `connect` goes through it and so does the first send on a
        # connection nobody connected (the Cluster client's nodes never call `connect`).

        async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
            await self._diagnosing(super().connect_check_health(*args, **kwargs))

    else:

        async def connect(self, *args: Any, **kwargs: Any) -> None:
            await self._diagnosing(super().connect(*args, **kwargs))  # type: ignore[no-untyped-call]

    async def _diagnosing(self, connecting: Awaitable[None]) -> None:
        try:
            await connecting
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            refusal = await self._refusal(exc)
            if refusal is None:
                raise
            raise refusal from None

    async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().send_packed_command(*args, **kwargs)
        except AttributeError as exc:
            # The transport closed under us (asyncio's SSL transport, or a writer another
            # task disconnected): the same as any broken connection.
            await self.disconnect(nowait=True)
            raise redis_errors.ConnectionError(
                f"{self.host}:{self.port}: the connection closed while writing"
            ) from exc

    async def _refusal(self, exc: Exception) -> redis_errors.ConnectionError | None:
        host, port = str(self.host), int(self.port)
        timeout = min(self.socket_connect_timeout or 1.0, 1.0)
        # Cut off by the node: a reset, or (TLS 1.3, a client certificate refused after the
        # handshake) the node's alert read where the first reply was expected.
        cut_off = isinstance(
            exc.__context__, ConnectionResetError | BrokenPipeError | ssl.SSLError
        ) or ("closed by server" in str(exc))
        if isinstance(self, SSLConnection):
            if isinstance(exc, redis_errors.TimeoutError) and await speaks_plaintext(
                host, port, timeout
            ):
                return ProtocolMismatch(f"{host}:{port} speaks plaintext; TLS is on here")
            if cut_off:
                # With TLS 1.3 a server refuses a client certificate after the handshake:
                # the alert may come second to a reset. Ask again, and listen for it.
                why = await tls_session_refusal(host, port, self.ssl_context.get(), timeout)
                return TLSSessionRefused(f"{host}:{port} {why}") if why else None
            return None
        if cut_off and await speaks_tls(host, port, timeout):
            return ProtocolMismatch(f"{host}:{port} speaks TLS and cut off a plaintext client")
        return None


class DiagnosingTLSConnection(DiagnosingConnection, SSLConnection):
    """The TLS side of the same connection."""
