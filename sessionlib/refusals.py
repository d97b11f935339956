"""Telling a caller's own mistake from an outage: a wrong password, a missing ACL
permission, a refused certificate, plaintext spoken to a TLS port.

A refusal gets the same answer on every attempt, so it is never retried; it is told in
one line naming the node, the user and the setting to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from redis import exceptions as redis_errors


class ProtocolMismatch(redis_errors.ConnectionError):
    """TLS on one side and plaintext on the other: the node cut off a plaintext client
    on a port that speaks TLS, or a TLS handshake met a port that speaks plaintext."""


class TLSSessionRefused(redis_errors.ConnectionError):
    """The node accepted the handshake, then refused the session (a client certificate
    missing or not trusted): TLS 1.3 says so after the handshake."""


def is_refusal(exc: BaseException) -> bool:
    """Whether Redis (or the TLS layer in front of it) refused us for good."""
    if isinstance(
        exc,
        redis_errors.AuthenticationError
        | redis_errors.NoPermissionError
        | ProtocolMismatch
        | TLSSessionRefused,
    ):
        return True
    return is_tls_refusal(exc)


def is_tls_refusal(exc: BaseException) -> bool:
    """A certificate or handshake refusal somewhere in the chain of causes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def fix_for(exc: BaseException, *, sentinel: bool = False) -> str:
    """The settings (environment variables) that can cure a refusal."""
    if isinstance(exc, ProtocolMismatch):
        return "SESSIONLIB_REDIS__TLS__ENABLED"
    if isinstance(exc, TLSSessionRefused) or is_tls_refusal(exc):
        return "SESSIONLIB_REDIS__TLS__* (CA file, client certificate, hostname)"
    if isinstance(exc, redis_errors.NoPermissionError):
        return "the ACL rules of that user"
    if sentinel:
        return "SESSIONLIB_REDIS__SENTINEL_USERNAME / SESSIONLIB_REDIS__SENTINEL_PASSWORD"
    return "SESSIONLIB_REDIS__USERNAME / SESSIONLIB_REDIS__PASSWORD"


def describe_refusal(exc: BaseException, where: str, user: str | None, fix: str) -> str:
    """One readable line for a refusal: who refused whom, why, and what to change."""
    reason = _innermost_reason(exc)
    return f"{where} refused user {user or 'default'!r}: {reason} (check {fix})"


def _innermost_reason(exc: BaseException) -> str:
    # A TLS failure arrives wrapped in redis-py's ConnectionError; its SSL cause reads best.
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return getattr(seen, "verify_message", None) or seen.reason or str(seen)
        seen = seen.__cause__ or seen.__context__
    return str(exc).strip() or type(exc).__name__


async def speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether `host:port` completes (or answers) a TLS handshake."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context), timeout
        )
    except ssl.SSLError:
        return True  # a TLS alert (a client certificate required, ...) is TLS all the same
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


async def tls_session_refusal(
    host: str, port: int, context: ssl.SSLContext, timeout: float
) -> str | None:
    """Why `host:port` refuses a TLS session made with `context` (a missing or refused
    client certificate), or None when it accepts one."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host), timeout
        )
    except ssl.SSLError as exc:
        return f"refused the TLS session: {exc.reason or exc}"
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(b"PING\r\n")
        line = await asyncio.wait_for(reader.readline(), timeout)
    except ssl.SSLError as exc:
        return f"refused the TLS session: {exc.reason or exc}"
    except (ConnectionResetError, BrokenPipeError):
        line = b""  # TLS 1.3: the reset may overtake the alert that says why
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    # Closed right after a handshake it completed, without a word: the node took the
    # session, then refused it (a client certificate it does not accept).
    return None if line else "closed the TLS session after the handshake (client certificate?)"


async def speaks_plaintext(host: str, port: int, timeout: float) -> bool:
    """Whether `host:port` answers a plaintext `PING` like Redis (`+PONG`, `-NOAUTH`)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"PING\r\n")
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return line[:1] in (b"+", b"-")
