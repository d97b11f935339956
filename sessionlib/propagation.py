"""Service-to-service calls that carry the caller's session id and request id, to an
allow-list of internal base URLs only, as an httpx transport plus a tiny ASGI middleware.

`PropagatingTransport` wraps any httpx transport: on an allow-listed URL it adds
`X-Session-Id` and `X-Request-Id` and retries idempotent calls a bounded number of times;
on every other URL it removes both headers, whoever set them. `CallerContextMiddleware`
binds each incoming request's caller so the transport finds it without being passed it.
"""

from __future__ import annotations

import logging
import random
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Annotated, Any, Protocol, cast

import anyio

try:
    import httpx
except ImportError as exc:
    raise ImportError(
        "sessionlib.propagation needs httpx, which sessionlib does not install by itself: "
        "pip install 'sessionlib[propagation]'"
    ) from exc
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionlib.middleware import MIDDLEWARE_SCOPE_KEY, SessionMiddleware
from sessionlib.session import Session

log = logging.getLogger("sessionlib.propagation")

REQUEST_ID_HEADER = "X-Request-Id"
DEFAULT_SESSION_HEADER = "X-Session-Id"
# Per-request override: `client.get(url, extensions={CALLER_EXTENSION: caller})`.
CALLER_EXTENSION = "sessionlib.caller"
CALLER_SCOPE_KEY = "sessionlib.caller"
# A downstream call must fail fast enough that the caller can still answer its client.
DEFAULT_TIMEOUT = httpx.Timeout(5.0, connect=1.0)
DEFAULT_PORTS = {"http": 80, "https": 443}
# Incoming ids are echoed into logs and other services' headers: only plain tokens pass.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


# -- the allow-list -------------------------------------------------------------------


@dataclass(frozen=True)
class InternalBaseURL:
    """One allow-listed base URL: scheme, host and port must be equal, and the path must
    be the base path or below it (`/api` covers `/api/x`, never `/apix`)."""

    scheme: str
    host: str
    port: int
    path: str  # without a trailing slash; "" is the whole origin

    @classmethod
    def parse(cls, base_url: str) -> InternalBaseURL:
        url = httpx.URL(base_url)
        if url.scheme not in DEFAULT_PORTS or not url.host:
            raise ValueError(f"internal base URL {base_url!r} needs an http(s) scheme and a host")
        if url.userinfo or url.query or url.fragment:
            raise ValueError(
                f"internal base URL {base_url!r} must not carry credentials, a query or a fragment"
            )
        path = url.path.rstrip("/")
        if _has_dot_segments(path):
            raise ValueError(f"internal base URL {base_url!r} has '.' or '..' in its path")
        return cls(url.scheme, url.host.lower(), _port_of(url), path)

    def matches(self, url: httpx.URL) -> bool:
        if (url.scheme, url.host.lower(), _port_of(url)) != (self.scheme, self.host, self.port):
            return False
        path = url.path
        # A '..' the server resolves after us could climb out of the prefix: refuse it.
        if _has_dot_segments(path):
            return False
        return not self.path or path == self.path or path.startswith(self.path + "/")

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"


def _port_of(url: httpx.URL) -> int:
    return url.port if url.port is not None else DEFAULT_PORTS.get(url.scheme, -1)


def _has_dot_segments(path: str) -> bool:
    return any(segment in (".", "..") for segment in path.split("/"))


class AllowList:
    """The internal base URLs a caller's identity may be sent to; nothing else gets it."""

    def __init__(self, base_urls: Iterable[str | InternalBaseURL]) -> None:
        self.bases = tuple(
            b if isinstance(b, InternalBaseURL) else InternalBaseURL.parse(b) for b in base_urls
        )

    def allows(self, url: httpx.URL | str) -> bool:
        target = url if isinstance(url, httpx.URL) else httpx.URL(url)
        return any(base.matches(target) for base in self.bases)

    def __iter__(self) -> Iterator[InternalBaseURL]:
        return iter(self.bases)

    def __repr__(self) -> str:
        return f"AllowList({[str(b) for b in self.bases]!r})"


# -- retries --------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries for idempotent downstream calls, with capped exponential backoff.

    Only failures where trying again can help and cannot do harm: the connection was
    never made, or a gateway-ish status said the service is briefly unable to answer.
    """

    attempts: int = 3
    backoff_seconds: float = 0.05
    max_backoff_seconds: float = 0.5
    methods: frozenset[str] = frozenset({"GET", "HEAD", "PUT", "DELETE"})
    statuses: frozenset[int] = frozenset({502, 503, 504})

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts counts the first try too: it must be at least 1")

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry `retry_number` (1, 2, ...): half fixed, half
        random, so callers that failed together do not come back together."""
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2.0 ** (retry_number - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not secrets

    def applies_to(self, request: httpx.Request) -> bool:
        # A streamed body cannot be sent twice; a GET's empty body or bytes can.
        return request.method in self.methods and isinstance(request.stream, httpx.ByteStream)


NO_RETRY = RetryPolicy(attempts=1)


# -- whose call it is -----------------------------------------------------------------


def new_request_id() -> str:
    return uuid.uuid4().hex


class Caller(Protocol):
    """On whose behalf a downstream call is made."""

    @property
    def request_id(self) -> str: ...

    async def session_id(self) -> str | None:
        """The session id to forward, as the client would present it, or None."""
        ...


@dataclass(frozen=True)
class CallerContext:
    """A caller given explicitly: a background job, a test, another framework."""

    request_id: str = field(default_factory=new_request_id)
    forwarded_session_id: str | None = None

    async def session_id(self) -> str | None:
        return self.forwarded_session_id


_current_caller: ContextVar[Caller | None] = ContextVar("sessionlib_caller", default=None)


def current_caller() -> Caller | None:
    """The caller bound to the request being handled, if any."""
    return _current_caller.get()


def current_request_id() -> str | None:
    caller = _current_caller.get()
    return caller.request_id if caller else None


def incoming_request_id(value: str | None) -> str:
    """The request id to use: the incoming one when it is a plain token, else a new one."""
    if value and _REQUEST_ID.fullmatch(value):
        return value
    return new_request_id()


# -- the transport --------------------------------------------------------------------


class PropagatingTransport(httpx.AsyncBaseTransport):
    """Adds the caller's session id and request id to allow-listed calls only.

    On an allow-listed URL both headers are set from the caller (the request's
    `CALLER_EXTENSION`, else the bound `current_caller()`), keeping values the code set
    itself; with no caller, a fresh request id is sent. On any other URL both headers
    are removed, also when the code set them, also on a redirect's next hop.
    """

    def __init__(
        self,
        allow_list: AllowList | Iterable[str],
        *,
        inner: httpx.AsyncBaseTransport | None = None,
        session_header: str = DEFAULT_SESSION_HEADER,
        request_id_header: str = REQUEST_ID_HEADER,
        retry: RetryPolicy | None = None,
        caller: Callable[[], Caller | None] = current_caller,
    ) -> None:
        self.allow_list = allow_list if isinstance(allow_list, AllowList) else AllowList(allow_list)
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.session_header = session_header
        self.request_id_header = request_id_header
        self.retry = retry or RetryPolicy()
        self._caller = caller

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.allow_list.allows(request.url):
            for name in (self.session_header, self.request_id_header):
                request.headers.pop(name, None)
            return await self.inner.handle_async_request(request)
        caller = request.extensions.get(CALLER_EXTENSION) or self._caller()
        if self.request_id_header not in request.headers:
            request.headers[self.request_id_header] = (
                caller.request_id if caller else new_request_id()
            )
        if caller is not None and self.session_header not in request.headers:
            session_id = await caller.session_id()
            if session_id:
                request.headers[self.session_header] = session_id
        return await self._send(request)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        policy = self.retry if self.retry.applies_to(request) else NO_RETRY
        for attempt in range(1, policy.attempts + 1):
            last = attempt == policy.attempts
            try:
                response = await self.inner.handle_async_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if last:
                    raise
                why = type(exc).__name__
            else:
                if last or response.status_code not in policy.statuses:
                    return response
                why = str(response.status_code)
                await response.aclose()
            log.info(
                "retrying %s %s after %s (attempt %d of %d)",
                request.method,
                request.url.copy_with(query=None),
                why,
                attempt + 1,
                policy.attempts,
            )
            await anyio.sleep(policy.delay(attempt))
        raise AssertionError("the last attempt returns or raises")

    async def aclose(self) -> None:
        await self.inner.aclose()


def _no_cookies() -> CookieJar:
    # A client shared by every incoming request must never keep one user's cookie and
    # send it on another user's call: a jar that accepts nothing. (A jar, not
    # httpx.Cookies: the client copies those into a new jar with the default policy.)
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def propagating_client(
    allow_list: AllowList | Iterable[str],
    *,
    base_url: str = "",
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    retry: RetryPolicy | None = None,
    session_header: str = DEFAULT_SESSION_HEADER,
    inner: httpx.AsyncBaseTransport | None = None,
    **client_options: Any,
) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` for internal calls: propagating transport, timeouts, no
    cookie jar, redirects not followed. Make one per app and share it."""
    transport = PropagatingTransport(
        allow_list, inner=inner, session_header=session_header, retry=retry
    )
    return httpx.AsyncClient(
        transport=transport,
        base_url=base_url,
        timeout=timeout,
        cookies=_no_cookies(),
        follow_redirects=False,
        **client_options,
    )


# -- binding the incoming request -----------------------------------------------------


class RequestCaller:
    """The caller of one incoming request: its request id, and its session id read when
    a call is made, so that a session created or regenerated earlier in the same request
    is written first (by the session middleware) and its new id forwarded."""

    def __init__(self, scope: Scope, request_id: str) -> None:
        self._scope = scope
        self.request_id = request_id

    async def session_id(self) -> str | None:
        session = self._scope.get("session")
        middleware = self._scope.get(MIDDLEWARE_SCOPE_KEY)
        if not isinstance(session, Session) or not isinstance(middleware, SessionMiddleware):
            return None
        return await middleware.downstream_id(session)


class CallerContextMiddleware:
    """Binds each request's caller for `PropagatingTransport` and echoes `X-Request-Id`.

    Add it after `SessionMiddleware`, so that it wraps it.
    """

    def __init__(self, app: ASGIApp, *, request_id_header: str = REQUEST_ID_HEADER) -> None:
        self.app = app
        self.request_id_header = request_id_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(Headers(scope=scope).get(self.request_id_header))
        caller = RequestCaller(scope, request_id)
        scope[CALLER_SCOPE_KEY] = caller

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).setdefault(self.request_id_header, request_id)
            await send(message)

        token = _current_caller.set(caller)
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            _current_caller.reset(token)


def get_caller(request: Request) -> Caller:
    """FastAPI dependency: the caller of the current request."""
    caller = request.scope.get(CALLER_SCOPE_KEY)
    if caller is None:
        raise RuntimeError("sessionlib.propagation.CallerContextMiddleware is not installed")
    return cast(Caller, caller)


# FastAPI is optional here: only this dependency needs it, so it is imported when used.
if TYPE_CHECKING:
    from fastapi import Depends

    CallerDep = Annotated[Caller, Depends(get_caller)]
else:

    def __getattr__(name: str) -> Any:
        if name != "CallerDep":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        try:
            from fastapi import Depends
        except ImportError as exc:
            raise ImportError(
                "sessionlib.propagation.CallerDep needs FastAPI: pip install "
                "'sessionlib[fastapi,propagation]'"
            ) from exc
        dependency = Annotated[Caller, Depends(get_caller)]
        globals()["CallerDep"] = dependency  # one object, as a module attribute would be
        return dependency
