"""Where a request carries its session id: the `X-Session-Id` header or the cookie.

The header wins when both are present, since service-to-service calls set it on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.datastructures import Headers
from starlette.requests import cookie_parser

from sessionlib.config import SessionSettings

Source = Literal["header", "cookie"]


@dataclass(frozen=True)
class CookiePolicy:
    """How the session cookie is named and flagged; built once from settings."""

    name: str
    path: str = "/"
    domain: str | None = None
    secure: bool = False
    http_only: bool = True
    same_site: str = "lax"
    max_age: int | None = None

    @classmethod
    def from_settings(cls, settings: SessionSettings, max_age: int | None) -> CookiePolicy:
        prefix = "__Host-" if settings.cookie_host_prefix else ""
        return cls(
            name=prefix + settings.cookie_name,
            path=settings.cookie_path,
            domain=settings.cookie_domain,
            secure=settings.cookie_secure,
            http_only=settings.cookie_http_only,
            same_site=settings.cookie_same_site,
            max_age=max_age,
        )

    def set_cookie(self, value: str) -> str:
        """The `Set-Cookie` value that stores `value`."""
        parts = [f"{self.name}={value}", f"Path={self.path}"]
        if self.max_age is not None:
            parts.append(f"Max-Age={self.max_age}")
        return "; ".join(parts + self._flags())

    def clear_cookie(self) -> str:
        """The `Set-Cookie` value that makes the browser forget the cookie."""
        parts = [
            f"{self.name}=",
            f"Path={self.path}",
            "Max-Age=0",
            "Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        ]
        return "; ".join(parts + self._flags())

    def _flags(self) -> list[str]:
        flags = []
        if self.domain:
            flags.append(f"Domain={self.domain}")
        if self.secure:
            flags.append("Secure")
        if self.http_only:
            flags.append("HttpOnly")
        flags.append(f"SameSite={self.same_site.capitalize()}")
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
