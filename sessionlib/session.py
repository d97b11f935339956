"""`request.session`: a plain dict of attributes that also carries login/logout intent.

Being a real `dict` keeps code written for Starlette's SessionMiddleware working; what
changed is found by comparing with what was loaded, so nested mutation is saved too.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import anyio

from sessionlib.store import StoredSession


class Session(dict[str, Any]):
    """The attributes of one session plus what the middleware must do at response time."""

    def __init__(self, stored: StoredSession | None = None, client_id: str | None = None) -> None:
        super().__init__(stored.attributes if stored else {})
        self.stored = stored
        # The id as the client presented it (signature included), while it is current.
        self.client_id = client_id if stored else None
        # An id this request created, which the response must still hand to the client.
        self.issued_id: str | None = None
        self.login_user: str | None = None
        self.regenerate_requested = False
        self.invalidated = False

    @cached_property
    def commit_lock(self) -> anyio.Lock:
        """Serialises early commits: two downstream calls of one request share one id."""
        return anyio.Lock()

    @property
    def is_new(self) -> bool:
        return self.stored is None

    @property
    def user(self) -> str | None:
        """Who this session belongs to (after a pending login, the new user)."""
        if self.invalidated:
            return None
        if self.login_user is not None:
            return self.login_user
        return self.stored.user if self.stored else None

    @property
    def ending(self) -> bool:
        """Whether the response will delete this session: logged out, or emptied (as with
        Starlette, clearing a session that had attributes deletes it)."""
        emptied = bool(self.stored and self.stored.attributes) and not self
        return self.invalidated or (emptied and not self.regenerate_requested)

    @property
    def needs_new_id(self) -> bool:
        """Whether committing means writing under a fresh id (login, regeneration, or a
        first write to a new session)."""
        return self.regenerate_requested or (self.stored is None and bool(self))

    def login(self, user: str) -> None:
        """Bind the session to `user` under a fresh id (no session fixation)."""
        if not user:
            raise ValueError("user must not be empty")
        self.login_user = user
        self.regenerate_requested = True
        self.invalidated = False

    def regenerate_id(self) -> None:
        """Keep the data, change the id (e.g. after a privilege change)."""
        self.regenerate_requested = True

    def invalidate(self) -> None:
        """Log out: drop every attribute and delete the session for every service."""
        self.clear()
        self.invalidated = True
        self.login_user = None
        self.regenerate_requested = False

    def adopt(self, stored: StoredSession, client_id: str) -> None:
        """Take on a session just written under a new id: later saves diff against it."""
        self.stored = stored
        self.client_id = self.issued_id = client_id
        self.login_user = None
        self.regenerate_requested = False
