"""FastAPI dependencies: the current session, its user (401 when absent), the store.

They read what `SessionMiddleware` put in the request scope, so no global state.
"""

from __future__ import annotations

from typing import Annotated

try:
    from fastapi import Depends, HTTPException, Request
except ImportError as exc:
    raise ImportError(
        "sessionlib.fastapi needs FastAPI, which sessionlib does not install by itself: "
        "pip install 'sessionlib[fastapi]'"
    ) from exc

from sessionlib.middleware import STORE_SCOPE_KEY
from sessionlib.session import Session
from sessionlib.store import SessionStore


def get_session(request: Request) -> Session:
    session = request.scope.get("session")
    if not isinstance(session, Session):
        raise RuntimeError("sessionlib.SessionMiddleware is not installed on this app")
    session.mark_accessed()  # as `request.session` does: the response varies on the cookie
    return session


def get_store(request: Request) -> SessionStore:
    store = request.scope.get(STORE_SCOPE_KEY)
    if not isinstance(store, SessionStore):
        raise RuntimeError("sessionlib.SessionMiddleware is not installed on this app")
    return store


def require_user(session: Annotated[Session, Depends(get_session)]) -> str:
    if not session.user:
        raise HTTPException(
            status_code=401, detail="not logged in", headers={"WWW-Authenticate": "Session"}
        )
    return session.user


SessionDep = Annotated[Session, Depends(get_session)]
StoreDep = Annotated[SessionStore, Depends(get_store)]
CurrentUser = Annotated[str, Depends(require_user)]
