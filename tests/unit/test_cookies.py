"""Cookie flags follow the settings, spelled as Starlette spells them; the header wins over
the cookie."""

import time

from starlette.datastructures import Headers

from sessionlib.config import SessionSettings
from sessionlib.resolvers import CookiePolicy, SessionIdResolver


def test_dev_cookie_is_httponly_lax_without_secure():
    policy = CookiePolicy.from_settings(SessionSettings(), max_age=600)
    header = policy.set_cookie("abc")
    assert header == "session=abc; path=/; Max-Age=600; httponly; samesite=lax"


def test_prod_style_cookie_uses_host_prefix_and_secure():
    settings = SessionSettings(
        cookie_secure=True, cookie_host_prefix=True, cookie_same_site="strict"
    )
    header = CookiePolicy.from_settings(settings, max_age=None).set_cookie("abc")
    assert header == "__Host-session=abc; path=/; httponly; samesite=strict; secure", (
        "max_age None means a browser-session cookie"
    )


def test_partitioned_comes_last_as_with_starlette():
    policy = CookiePolicy.from_settings(
        SessionSettings(cookie_secure=True, cookie_same_site="none"), 60, partitioned=True
    )
    assert policy.set_cookie("abc").endswith("; samesite=none; secure; partitioned")


def test_without_a_fixed_max_age_the_cookie_lives_until_the_absolute_expiry():
    policy = CookiePolicy.from_settings(SessionSettings(), None, until_expiry=True)
    expiry_ms = int(time.time() * 1000) + 3600_500
    assert "; Max-Age=3600;" in policy.set_cookie("abc", expiry_ms)


def test_clearing_a_cookie_expires_it_with_the_same_flags():
    policy = CookiePolicy.from_settings(SessionSettings(cookie_domain="example.test"), 60)
    header = policy.clear_cookie()
    assert header == (
        "session=null; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; "
        "httponly; samesite=lax; domain=example.test"
    )


def test_header_wins_over_cookie_and_cookie_is_the_fallback():
    resolver = SessionIdResolver("X-Session-Id", CookiePolicy(name="session"))
    both = Headers({"x-session-id": "from-header", "cookie": "other=1; session=from-cookie"})
    assert resolver.resolve(both) == ("from-header", "header")
    assert resolver.resolve(Headers({"cookie": "session=from-cookie"})) == ("from-cookie", "cookie")
    assert resolver.resolve(Headers({"cookie": "other=1"})) == (None, None)
