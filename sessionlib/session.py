"""`request.session`: a plain dict of attributes that also carries login/logout intent.

Being a real `dict` keeps code written for Starlette's SessionMiddleware working; what
changed is found by comparing with what was loaded, so nested mutation is saved too.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import anyio

from sessionlib.codec import StoredSession


class Session(dict[str, Any]):
    """The attributes of one session plus what the middleware must do at response time.

    Like Starlette's session it keeps `accessed` (read through `request.session`: the
    response varies on the cookie) and `modified` (changed through the dict API). What
    is saved is found by diffing with what was loaded, so `modified` is not the only
    trigger: a nested change (`s["cart"]["n"] = 1`) is saved as well.
    """

    def __init__(self, stored: StoredSession | None = None, client_id: str | None = None) -> None:
        super().__init__(stored.attributes if stored else {})
        self.stored = stored
        # The id as the client presented it (signature included), while it is current.
        self.client_id = client_id if stored else None
        # An id this request created, which the response must still hand to the client.
        self.issued_id: str | None = None
        self.login_user: str | None = None
        self.regenerate_requested = False
        # clear() ran: the loaded session ends for every service (its user logged out);
        # what is written afterwards in this request starts a new session.
        self.cleared = False
        # The app wants this response to carry the id header whatever the settings say.
        self.id_exposed = False
        self.accessed = False
        self.modified = False
        # The id the client presented when a login had already moved it elsewhere.
        self.moved_from: str | None = None

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
        if self.login_user is not None:
            return self.login_user
        if self.cleared:
            return None
        return self.stored.user if self.stored else None

    @property
    def ending(self) -> bool:
        """Whether the response deletes the loaded session and hands out no other: after
        clear() (or invalidate()) with nothing written since, or when an anonymous
        session lost its last attribute (Starlette's emptied session). A logged-in
        session that loses its last attribute stays logged in."""
        if self or self.regenerate_requested:
            return False
        if self.cleared:
            return self.stored is not None or self.moved_from is not None
        stored = self.stored
        return stored is not None and bool(stored.attributes) and stored.user is None

    @property
    def needs_new_id(self) -> bool:
        """Whether committing means writing under a fresh id (login, regeneration, a
        first write to a new session, or a write after clear())."""
        fresh = self.stored is None or self.cleared
        return self.regenerate_requested or (fresh and bool(self))

    # -- Starlette's accessed / modified flags ----------------------------------------

    def mark_accessed(self) -> None:
        """Called by `request.session` (Starlette) and the FastAPI dependency."""
        self.accessed = True

    def mark_modified(self) -> None:
        self.accessed = True
        self.modified = True

    def __setitem__(self, key: str, value: Any) -> None:
        self.mark_modified()
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.mark_modified()
        super().__delitem__(key)

    def __ior__(self, other: Any) -> Session:  # type: ignore[override,misc]
        self.mark_modified()
        return super().__ior__(other)

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self.mark_modified()
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, Any]:
        item = super().popitem()
        self.mark_modified()
        return item

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self.mark_modified()
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.mark_modified()
        super().update(*args, **kwargs)

    def clear(self) -> None:
        """Empty the session. A loaded session ends for every service (a logged-in one
        is logged out, even with no attributes); anything written after this in the
        same request starts a new session under a new id."""
        self.mark_modified()
        super().clear()
        self.cleared = True
        self.login_user = None
        self.regenerate_requested = False

    # -- login, logout, ids -----------------------------------------------------------

    def login(self, user: str) -> None:
        """Bind the session to `user` under a fresh id (no session fixation)."""
        if not user:
            raise ValueError("user must not be empty")
        self.mark_modified()
        self.login_user = user
        self.regenerate_requested = True

    def regenerate_id(self) -> None:
        """Keep the data, change the id (e.g. after a privilege change)."""
        self.mark_modified()
        self.regenerate_requested = True

    def expose_id(self) -> None:
        """Send the session's id in the id header of this response, whatever the
        `expose_id_header` setting says (an endpoint whose contract returns it)."""
        self.id_exposed = True

    def invalidate(self) -> None:
        """Log out: drop every attribute and delete the session for every service
        (`clear()` by its intent's name)."""
        self.clear()

    def adopt(self, stored: StoredSession, client_id: str) -> None:
        """Take on a session just written under a new id: later saves diff against it.
        Its attributes include what other services wrote before the move."""
        dict.clear(self)
        dict.update(self, stored.attributes)
        self.stored = stored
        self.cleared = False
        self.moved_from = None
        self.client_id = self.issued_id = client_id
        self.login_user = None
        self.regenerate_requested = False
