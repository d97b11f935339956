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

from sessionlib.config import (
    SessionSettings,
    Settings,
    load_settings,
    overridden_session,
    with_session_overrides,
)
from sessionlib.errors import (
    DurabilityShortfall,
    SessionDataError,
    SessionError,
    SessionMoved,
    SessionStoreRefused,
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
STARLETTE_MAX_AGE = 14 * 24 * 60 * 60  # Starlette's default, in seconds


class _Unset:
    pass


_UNSET: Any = _Unset()


class SessionMiddleware:
    """Sessions in Redis behind Starlette's `SessionMiddleware` interface.

    The Starlette keywords keep their meaning: `secret_key` signs session ids (HMAC),
    `max_age` is the idle timeout and the cookie's Max-Age (None: a browser-session
    cookie; <= 0: nothing outlives the response), `https_only` sets `Secure`,
    `partitioned` adds `Partitioned`. Anything else comes from `settings` or `store`.

    Built Starlette-style (no `settings`, and either no `store` or a store plus any
    cookie keyword), `max_age` defaults to Starlette's 14 days. Otherwise the idle
    timeout comes from the settings, and the cookie's Max-Age counts down to the
    session's absolute expiry (reads slide the idle expiry without a new cookie).
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
        partitioned: bool = _UNSET,
        *,
        settings: Settings | None = None,
        store: SessionStore | None = None,
        header_name: str | None = None,
        exclude_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        # Probes and /metrics must neither wait on nor fail with Redis, cookie or not.
        self.exclude_paths = frozenset(exclude_paths)
        # A store carries sessionlib settings; cookie keywords beside it say "Starlette".
        cookie_keywords = (session_cookie, max_age, path, same_site, https_only, domain)
        given = [k for k in (*cookie_keywords, partitioned) if k is not _UNSET]
        if max_age is _UNSET and settings is None and (store is None or given):
            max_age = STARLETTE_MAX_AGE
        overrides = {
            name: value
            for name, value in {
                "cookie_name": session_cookie,
                "cookie_path": path,
                "cookie_same_site": same_site,
                "cookie_secure": https_only,
                "cookie_domain": domain,
                "header_name": header_name or _UNSET,
                "idle_timeout_seconds": max_age if _lasts(max_age) else _UNSET,
            }.items()
            if value is not _UNSET
        }
        if store is None:
            resolved = with_session_overrides(settings or load_settings(), overrides)
            session_settings = resolved.session
            self.store = SessionStore.from_settings(resolved)
        else:
            session_settings = _overridden(store.settings, overrides, settings)
            # The caller's store stays as it was; this one shares its connection.
            self.store = store.with_settings(session_settings) if overrides else store
        keys = [k.get_secret_value() for k in session_settings.signing_keys]
        self.ids = SessionIdCodec(([secret_key] if secret_key else []) + keys)
        self.cookie = CookiePolicy.from_settings(
            session_settings,
            None if max_age is _UNSET else max_age,
            until_expiry=max_age is _UNSET,
            partitioned=partitioned is not _UNSET and bool(partitioned),
        )
        self.resolver = SessionIdResolver(session_settings.header_name, self.cookie)
        self.expose_id_header = session_settings.expose_id_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.exclude_paths:
            await self.app(scope, receive, send)
            return
        request_headers = Headers(scope=scope)
        presented, source = self.resolver.resolve(request_headers)
        # A client that sends the id header (even empty) reads new ids from it too.
        asked_for_id = self.resolver.header_name in request_headers
        raw_id = self.ids.decode(presented)
        moved_from: str | None = None
        try:
            stored = await self.store.load(raw_id) if raw_id else None
        except SessionMoved:
            # A login gave this session a new id: no access, and no cookie change either
            # (the browser may hold the new id already).
            stored, moved_from = None, raw_id
        except SessionError as exc:
            await _error_response(_status_for(exc), exc, during="load")(scope, receive, send)
            return
        session = Session(stored, client_id=presented)
        session.moved_from = moved_from
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
                    extra = await self._commit(
                        session, source, stale_id=presented is not None, asked_for_id=asked_for_id
                    )
                except SessionError as exc:
                    replaced = True
                    await _error_response(_status_for(exc), exc)(scope, receive, send)
                    return
                if session.accessed or extra:
                    headers = MutableHeaders(scope=message)
                    if session.accessed:
                        # The response depends on the session, which the cookie or the id
                        # header names: shared caches must not serve it to anyone else.
                        headers.add_vary_header("Cookie")
                        headers.add_vary_header(self.resolver.header_name)
                    for name, value in extra:
                        headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_wrapper)

    async def _commit(
        self, session: Session, source: Source | None, *, stale_id: bool, asked_for_id: bool
    ) -> list[tuple[str, str]]:
        """Persist what the request did to the session; returns headers to add.

        `Set-Cookie` goes out only when the session was written, changed through the
        dict API (Starlette's `modified`), given a new id, or ended; never for a read
        that merely slid its expiry.
        """
        stored = session.stored
        if stored is None and self.cookie.expires_at_once:
            # Starlette's max_age <= 0: the browser drops the cookie on arrival, so no
            # session is ever created; the cookie is still sent, as Starlette sends it.
            keep = session.modified and bool(session)
            return [("set-cookie", self.cookie.set_cookie("null"))] if keep else []
        if session.ending:
            # Logout wins: through an old id, it also ends the session a racing login
            # moved it to.
            if stored:
                await self.store.delete(stored.id, user=stored.user)
            elif session.moved_from:
                await self.store.delete(session.moved_from)
            return [("set-cookie", self.cookie.clear_cookie())]
        if session.needs_new_id and not await self._write_under_new_id(session):
            log.info("session %s was deleted meanwhile; write dropped", redact(session.client_id))
            return [("set-cookie", self.cookie.clear_cookie())] if source == "cookie" else []
        stored = session.stored
        if session.issued_id and stored:
            await self.store.save(stored, session)  # what changed after an early commit
            issued = self.cookie.set_cookie(session.issued_id, stored.absolute_expiry_ms)
            return [("set-cookie", issued), *self._id_header(session, asked_for_id)]
        if stored is None:
            # An unknown, expired or forged id in a cookie: make the browser drop it.
            forget = stale_id and source == "cookie" and session.moved_from is None
            return [("set-cookie", self.cookie.clear_cookie())] if forget else []
        result = await self.store.save(stored, session)
        if result.moved:
            raise SessionMoved("the session id changed (a login replaced it); write not stored")
        if result.session_gone:
            log.info("session %s was deleted meanwhile; write dropped", redact(stored.id))
            return [("set-cookie", self.cookie.clear_cookie())] if source == "cookie" else []
        headers = self._id_header(session, asked_for_id)
        if source == "cookie" and (result.written or session.modified):
            cookie = self.cookie.set_cookie(self.ids.encode(stored.id), stored.absolute_expiry_ms)
            headers.append(("set-cookie", cookie))
        return headers

    def _id_header(self, session: Session, asked_for_id: bool) -> list[tuple[str, str]]:
        """The id header, when the app exposes the id or a new one is issued and the
        `expose_id_header` setting lets it go to this client."""
        policy = self.expose_id_header
        allowed = policy == "always" or (policy == "when_requested" and asked_for_id)
        send = session.id_exposed or (session.issued_id is not None and allowed)
        if not (send and session.client_id):
            return []
        return [(self.resolver.header_name, session.client_id)]

    async def _write_under_new_id(self, session: Session) -> bool:
        """Write the session under a fresh id; False when it was deleted meanwhile (and
        this is no login, so nothing of it may come back)."""
        login = session.login_user
        if session.moved_from is not None and login is None:
            # Writing to an id a login replaced: a new session here would overwrite the
            # browser's new cookie.
            raise SessionMoved("the session id changed (a login replaced it); write not stored")
        previous = session.stored
        if session.cleared and previous is not None:
            # clear() ended it: logged out everywhere, so deleted, not moved to the new id.
            await self.store.delete(previous.id, user=previous.user)
            previous = None
        stored = await self.store.regenerate(
            previous, session, user=login, restart_lifetime=login is not None
        )
        if stored is None:
            return False
        session.adopt(stored, self.ids.encode(stored.id))
        return True

    async def downstream_id(self, session: Session) -> str | None:
        """The id a service-to-service call should carry for this request's session.

        A session created or regenerated earlier in this request is written now, so the
        downstream service can load it; the response then hands the new id out.
        """
        session.mark_accessed()  # the downstream answer depends on this session
        async with session.commit_lock:
            if session.ending or (session.stored is None and self.cookie.expires_at_once):
                return None
            if session.needs_new_id:
                if not await self._write_under_new_id(session):
                    return None
                log.info(
                    "session written early as %s for a downstream call",
                    redact(session.stored.id if session.stored else None),
                )
        return session.client_id


def _lasts(max_age: Any) -> bool:
    """Whether a Starlette `max_age` is a lifetime (None and <= 0 are not)."""
    return isinstance(max_age, int) and max_age > 0


def _overridden(
    base: SessionSettings, overrides: dict[str, Any], settings: Settings | None
) -> SessionSettings:
    """A given store's session settings with the Starlette-style keywords applied.

    A store keeps no profile. With `settings=` beside `store=`, their profile judges the
    result (`prod` refuses `https_only=False`); without, a keyword may not switch off
    Secure or HttpOnly where the store has them on. Either way a `ConfigurationError`
    is raised here, when the middleware is built, never on a request.
    """
    if settings is not None:
        with_profile = settings.model_copy(update={"session": base})
        return with_session_overrides(with_profile, overrides).session
    return overridden_session(base, overrides)


def _status_for(exc: SessionError) -> int:
    if isinstance(exc, SessionTooLarge):
        return 413
    if isinstance(exc, SessionMoved):
        return 409
    if isinstance(exc, SessionStoreUnavailable | SessionStoreRefused | DurabilityShortfall):
        return 503
    if isinstance(exc, SessionDataError):
        return 500
    return 503


def _error_response(status: int, exc: SessionError, *, during: str = "commit") -> JSONResponse:
    headers = {}
    if status == 503:
        retry_after = exc.retry_after_seconds if isinstance(exc, SessionStoreUnavailable) else 1
        headers["Retry-After"] = str(retry_after)
        detail = "session store unavailable, retry shortly"
    elif status == 413:
        detail = f"session too large: {exc}"
    elif status == 409:
        detail = "the session id changed (a login replaced it): retry with the new id"
    else:
        detail = "session could not be saved"
    # One line: our messages name the node and the user, never a pool's repr.
    log.warning("session %s failed (%s): %s", during, status, exc)
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)
