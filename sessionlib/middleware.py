"""An ASGI middleware that is a drop-in for Starlette's `SessionMiddleware`, in Redis.

It loads the session before the app runs and commits the delta when the response
starts, so a failed save can still become a 413 or 503 instead of a lost write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Literal

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionlib.config import SessionSettings, Settings, load_settings
from sessionlib.errors import (
    DurabilityShortfall,
    SessionDataError,
    SessionError,
    SessionStoreUnavailable,
    SessionTooLarge,
)
from sessionlib.ids import SessionIdCodec, redact
from sessionlib.resolvers import CookiePolicy, SessionIdResolver, Source
from sessionlib.session import Session
from sessionlib.store import SessionStore

log = logging.getLogger("sessionlib.middleware")

STORE_SCOPE_KEY = "sessionlib.store"
MIDDLEWARE_SCOPE_KEY = "sessionlib.middleware"


class _Unset:
    pass


_UNSET: Any = _Unset()


class SessionMiddleware:
    """Sessions in Redis behind Starlette's `SessionMiddleware` interface.

    The Starlette keywords keep their meaning: `secret_key` signs session ids (HMAC),
    `max_age` is the idle timeout and the cookie's Max-Age (None: a browser-session
    cookie), `https_only` sets `Secure`. Anything else comes from `settings`.
    """

    def __init__(
        self,
        app: ASGIApp,
        secret_key: str | None = None,
        session_cookie: str = _UNSET,
        max_age: int | None = _UNSET,
        path: str = _UNSET,
        same_site: Literal["lax", "strict", "none"] = _UNSET,
        https_only: bool = _UNSET,
        domain: str | None = _UNSET,
        *,
        settings: Settings | None = None,
        store: SessionStore | None = None,
        header_name: str | None = None,
        exclude_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        # Probes and /metrics must neither wait on nor fail with Redis, cookie or not.
        self.exclude_paths = frozenset(exclude_paths)
        overrides = {
            name: value
            for name, value in {
                "cookie_name": session_cookie,
                "cookie_path": path,
                "cookie_same_site": same_site,
                "cookie_secure": https_only,
                "cookie_domain": domain,
                "header_name": header_name or _UNSET,
                "idle_timeout_seconds": max_age or _UNSET,
            }.items()
            if value is not _UNSET
        }
        if store is None:
            resolved = settings or load_settings()
            session_settings = _overridden(resolved.session, overrides)
            self.store = SessionStore.from_settings(
                resolved.model_copy(update={"session": session_settings})
            )
        else:
            session_settings = _overridden(store.settings, overrides)
            # The caller's store stays as it was; this one shares its connection.
            self.store = store.with_settings(session_settings) if overrides else store
        keys = [k.get_secret_value() for k in session_settings.signing_keys]
        self.ids = SessionIdCodec(([secret_key] if secret_key else []) + keys)
        cookie_max_age = session_settings.idle_timeout_seconds if max_age is _UNSET else max_age
        self.cookie = CookiePolicy.from_settings(session_settings, cookie_max_age)
        self.resolver = SessionIdResolver(session_settings.header_name, self.cookie)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.exclude_paths:
            await self.app(scope, receive, send)
            return
        presented, source = self.resolver.resolve(Headers(scope=scope))
        raw_id = self.ids.decode(presented)
        try:
            stored = await self.store.load(raw_id) if raw_id else None
        except SessionStoreUnavailable as exc:
            await _error_response(503, exc)(scope, receive, send)
            return
        session = Session(stored, client_id=presented)
        scope["session"] = session
        scope[MIDDLEWARE_SCOPE_KEY] = self
        # request.state.session_stale: served by a replica while no master answered.
        scope.setdefault("state", {})["session_stale"] = bool(stored and stored.stale)
        scope[STORE_SCOPE_KEY] = self.store
        if scope["type"] == "websocket":
            # A websocket has no response headers to carry a new id: read-only here.
            await self.app(scope, receive, send)
            return

        replaced = False

        async def send_wrapper(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                try:
                    extra = await self._commit(session, source, stale_id=presented is not None)
                except SessionError as exc:
                    replaced = True
                    await _error_response(_status_for(exc), exc)(scope, receive, send)
                    return
                headers = MutableHeaders(scope=message)
                for name, value in extra:
                    headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_wrapper)

    async def _commit(
        self, session: Session, source: Source | None, *, stale_id: bool
    ) -> list[tuple[str, str]]:
        """Persist what the request did to the session; returns headers to add."""
        stored = session.stored
        if session.ending:
            if stored:
                await self.store.delete(stored.id, user=stored.user)
            return [("set-cookie", self.cookie.clear_cookie())]
        if session.needs_new_id:
            await self._write_under_new_id(session)
        stored = session.stored
        if session.issued_id and stored:
            await self.store.save(stored, session)  # what changed after an early commit
            return [
                ("set-cookie", self.cookie.set_cookie(session.issued_id)),
                (self.resolver.header_name, session.issued_id),
            ]
        if stored is None:
            # An unknown, expired or forged id in a cookie: make the browser drop it.
            forget = stale_id and source == "cookie"
            return [("set-cookie", self.cookie.clear_cookie())] if forget else []
        result = await self.store.save(stored, session)
        if result.session_gone:
            log.info("session %s was deleted meanwhile; write dropped", redact(stored.id))
            return [("set-cookie", self.cookie.clear_cookie())] if source == "cookie" else []
        if source == "cookie" and (result.written or stored.ttl_refreshed):
            return [("set-cookie", self.cookie.set_cookie(self.ids.encode(stored.id)))]
        return []

    async def _write_under_new_id(self, session: Session) -> None:
        stored = await self.store.regenerate(session.stored, session, user=session.login_user)
        session.adopt(stored, self.ids.encode(stored.id))

    async def downstream_id(self, session: Session) -> str | None:
        """The id a service-to-service call should carry for this request's session.

        A session created or regenerated earlier in this request is written now, so the
        downstream service can load it; the response then hands the new id out.
        """
        async with session.commit_lock:
            if session.ending:
                return None
            if session.needs_new_id:
                await self._write_under_new_id(session)
                log.info(
                    "session written early as %s for a downstream call",
                    redact(session.stored.id if session.stored else None),
                )
        return session.client_id


def _overridden(base: SessionSettings, overrides: dict[str, Any]) -> SessionSettings:
    """`base` with the Starlette-style keywords applied, validated like any settings."""
    return SessionSettings.model_validate({**base.model_dump(), **overrides})


def _status_for(exc: SessionError) -> int:
    if isinstance(exc, SessionTooLarge):
        return 413
    if isinstance(exc, SessionStoreUnavailable | DurabilityShortfall):
        return 503
    if isinstance(exc, SessionDataError):
        return 500
    return 503


def _error_response(status: int, exc: SessionError) -> JSONResponse:
    headers = {}
    if status == 503:
        retry_after = exc.retry_after_seconds if isinstance(exc, SessionStoreUnavailable) else 1
        headers["Retry-After"] = str(retry_after)
        detail = "session store unavailable, retry shortly"
    elif status == 413:
        detail = f"session too large: {exc}"
    else:
        detail = "session could not be saved"
    log.warning("session commit failed (%s): %s", status, exc)
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)
