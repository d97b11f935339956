"""`request.session`: a plain dict of attributes that also carries login/logout intent.

Being a real `dict` keeps code written for Starlette's SessionMiddleware working; what
changed is found by comparing with what was loaded, so nested mutation is saved too.
"""

from __future__ import annotations

from typing import Any

from sessionlib.store import StoredSession


class Session(dict[str, Any]):
    """The attributes of one session plus what the middleware must do at response time."""

    def __init__(self, stored: StoredSession | None = None) -> None:
        super().__init__(stored.attributes if stored else {})
        self.stored = stored
        self.login_user: str | None = None
        self.regenerate_requested = False
        self.invalidated = False

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
