"""Cookie flags follow the settings; the header wins over the cookie."""

from starlette.datastructures import Headers

from sessionlib.config import SessionSettings
from sessionlib.resolvers import CookiePolicy, SessionIdResolver


def test_dev_cookie_is_httponly_lax_without_secure():
    policy = CookiePolicy.from_settings(SessionSettings(), max_age=600)
    header = policy.set_cookie("abc")
    assert header.startswith("session=abc; Path=/; Max-Age=600")
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Secure" not in header


def test_prod_style_cookie_uses_host_prefix_and_secure():
    settings = SessionSettings(
        cookie_secure=True, cookie_host_prefix=True, cookie_same_site="strict"
    )
    header = CookiePolicy.from_settings(settings, max_age=None).set_cookie("abc")
    assert header.startswith("__Host-session=abc; Path=/;")
    assert "Max-Age" not in header, "max_age None means a browser-session cookie"
    assert "Secure" in header and "SameSite=Strict" in header and "Domain" not in header


def test_clearing_a_cookie_expires_it_with_the_same_flags():
    policy = CookiePolicy.from_settings(SessionSettings(cookie_domain="example.test"), 60)
    header = policy.clear_cookie()
    assert header.startswith("session=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970")
    assert "Domain=example.test" in header


def test_header_wins_over_cookie_and_cookie_is_the_fallback():
    resolver = SessionIdResolver("X-Session-Id", CookiePolicy(name="session"))
    both = Headers({"x-session-id": "from-header", "cookie": "other=1; session=from-cookie"})
    assert resolver.resolve(both) == ("from-header", "header")
    assert resolver.resolve(Headers({"cookie": "session=from-cookie"})) == ("from-cookie", "cookie")
    assert resolver.resolve(Headers({"cookie": "other=1"})) == (None, None)
