"""Where a request carries its session id: the `X-Session-Id` header or the cookie.

The header wins when both are present, since service-to-service calls set it on purpose.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from starlette.datastructures import Headers
from starlette.requests import cookie_parser

from sessionlib.config import SessionSettings

Source = Literal["header", "cookie"]


@dataclass(frozen=True)
class CookiePolicy:
    """How the session cookie is named, flagged and timed; built once from settings.

    `Set-Cookie` is spelled as Starlette's SessionMiddleware spells it (`path=`,
    `httponly`, `samesite=lax`, `secure`, `domain=`, `partitioned`, in that order), so
    code and tests written against Starlette read the same header.
    """

    name: str
    path: str = "/"
    domain: str | None = None
    secure: bool = False
    http_only: bool = True
    same_site: str = "lax"
    partitioned: bool = False
    # Starlette's `max_age`: the Max-Age of every cookie sent (None: a browser-session
    # cookie; <= 0: the browser drops it on arrival) ...
    max_age: int | None = None
    # ... unless this is set: then Max-Age is what is left of the session's absolute
    # lifetime, since reads slide the session's expiry without re-sending the cookie.
    until_expiry: bool = False

    @classmethod
    def from_settings(
        cls,
        settings: SessionSettings,
        max_age: int | None,
        *,
        until_expiry: bool = False,
        partitioned: bool = False,
    ) -> CookiePolicy:
        prefix = "__Host-" if settings.cookie_host_prefix else ""
        return cls(
            name=prefix + settings.cookie_name,
            path=settings.cookie_path,
            domain=settings.cookie_domain,
            secure=settings.cookie_secure,
            http_only=settings.cookie_http_only,
            same_site=settings.cookie_same_site,
            partitioned=partitioned,
            max_age=max_age,
            until_expiry=until_expiry,
        )

    @property
    def expires_at_once(self) -> bool:
        """Whether the browser drops the cookie as it gets it (Starlette's max_age <= 0)."""
        return not self.until_expiry and self.max_age is not None and self.max_age <= 0

    def set_cookie(self, value: str, absolute_expiry_ms: int | None = None) -> str:
        """The `Set-Cookie` value that stores `value`, for a session that ends for good
        at `absolute_expiry_ms` (epoch ms)."""
        max_age = self.max_age
        if self.until_expiry and absolute_expiry_ms is not None:
            max_age = max(0, (absolute_expiry_ms - int(time.time() * 1000)) // 1000)
        parts = [f"{self.name}={value}", f"path={self.path}"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        return "; ".join(parts + self._flags())

    def clear_cookie(self) -> str:
        """The `Set-Cookie` value that makes the browser forget the cookie."""
        parts = [f"{self.name}=null", f"path={self.path}", "expires=Thu, 01 Jan 1970 00:00:00 GMT"]
        return "; ".join(parts + self._flags())

    def _flags(self) -> list[str]:
        flags = ["httponly"] if self.http_only else []
        flags.append(f"samesite={self.same_site}")
        if self.secure:
            flags.append("secure")
        if self.domain:
            flags.append(f"domain={self.domain}")
        if self.partitioned:
            flags.append("partitioned")
        return flags


@dataclass(frozen=True)
class SessionIdResolver:
    """Reads the client's session id from the header, else from the cookie."""

    header_name: str
    cookie: CookiePolicy

    def resolve(self, headers: Headers) -> tuple[str | None, Source | None]:
        from_header = headers.get(self.header_name)
        if from_header:
            return from_header.strip(), "header"
        cookie_header = headers.get("cookie")
        if cookie_header:
            from_cookie = cookie_parser(cookie_header).get(self.cookie.name)
            if from_cookie:
                return from_cookie, "cookie"
        return None, None
