"""Run inside the fresh venv the wheel was installed into, from outside the source tree:
`python installed_apps.py starlette|fastapi|metadata|extras`, one JSON object on stdout.

Only the standard library and what the installed wheel brings may be imported here; the
apps are driven through ASGI directly, so no HTTP client or server needs installing.

No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, and
they name what `fastapi_app` imports locally.
"""

import asyncio
import importlib
import json
import sys
from importlib import metadata, resources
from typing import Any


async def call(app: Any, method: str, path: str, cookie: str | None) -> dict[str, Any]:
    """One HTTP request through the ASGI app: status, Set-Cookie, JSON body."""
    headers = [(b"host", b"testserver")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(message.get("body", b"") for message in sent[1:])
    set_cookie = [v.decode() for k, v in start["headers"] if k == b"set-cookie"]
    return {
        "status": start["status"],
        "set_cookie": set_cookie,
        "body": json.loads(body) if body else None,
    }


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from sessionlib import SessionMiddleware, load_settings

    async def login(request: Request) -> JSONResponse:
        request.session.login("alice")  # type: ignore[attr-defined]
        request.session["visits"] = 0
        return JSONResponse({"user": "alice"})

    async def me(request: Request) -> JSONResponse:
        user = request.session.user  # type: ignore[attr-defined]
        if not user:
            return JSONResponse({"detail": "not logged in"}, status_code=401)
        request.session["visits"] += 1
        return JSONResponse({"user": user, "visits": request.session["visits"]})

    async def logout(request: Request) -> JSONResponse:
        request.session.invalidate()  # type: ignore[attr-defined]
        return JSONResponse({})

    routes = [
        Route("/login", login, methods=["POST"]),
        Route("/me", me),
        Route("/logout", logout, methods=["POST"]),
    ]
    return Starlette(
        routes=routes, middleware=[Middleware(SessionMiddleware, settings=load_settings())]
    )


def fastapi_app() -> Any:
    from fastapi import FastAPI

    from sessionlib import SessionMiddleware, load_settings
    from sessionlib.fastapi import CurrentUser, SessionDep

    app = FastAPI()
    app.add_middleware(SessionMiddleware, settings=load_settings())

    @app.post("/login")
    async def login(session: SessionDep) -> dict[str, str]:
        session.login("alice")
        session["visits"] = 0
        return {"user": "alice"}

    @app.get("/me")
    async def me(user: CurrentUser, session: SessionDep) -> dict[str, Any]:
        session["visits"] += 1
        return {"user": user, "visits": session["visits"]}

    @app.post("/logout")
    async def logout(session: SessionDep) -> dict[str, str]:
        session.invalidate()
        return {}

    return app


async def login_read_logout(app: Any) -> dict[str, Any]:
    """Each step's answer, and how many sessions Redis holds after it."""
    from redis.asyncio import Redis

    from sessionlib import load_settings

    redis = Redis.from_url(load_settings().redis.url)
    steps: dict[str, Any] = {}
    cookie: str | None = None
    try:
        for name, method, path in [
            ("login", "POST", "/login"),
            ("read", "GET", "/me"),
            ("read_again", "GET", "/me"),
            ("logout", "POST", "/logout"),
            ("read_after_logout", "GET", "/me"),
        ]:
            answer = await call(app, method, path, cookie)
            for header in answer["set_cookie"]:
                value = header.split(";", 1)[0]
                cleared = "1970" in header or "max-age=0" in header.lower()
                cookie = None if cleared else value
            answer["sessions_in_redis"] = len(await redis.keys("sessionlib:s:*"))
            steps[name] = answer
    finally:
        await redis.aclose()
    return steps


def installed_metadata() -> dict[str, Any]:
    import sessionlib

    meta = metadata.metadata("sessionlib")
    files = resources.files("sessionlib")
    return {
        "version": metadata.version("sessionlib"),
        "__version__": sessionlib.__version__,
        "module_file": sessionlib.__file__,
        "summary": meta["Summary"],
        "license": meta.get("License-Expression") or meta.get("License"),
        "license_files": [
            str(f) for f in metadata.files("sessionlib") or [] if f.name.startswith("LICENSE")
        ],
        "requires": metadata.requires("sessionlib") or [],
        "extras": meta.get_all("Provides-Extra") or [],
        "py_typed": files.joinpath("py.typed").is_file(),
        "profiles": sorted(p.name for p in files.joinpath("profiles").iterdir()),
        "lua": sorted(p.name for p in files.joinpath("lua").iterdir() if p.name.endswith(".lua")),
        "installed": sorted(d.metadata["Name"].lower() for d in metadata.distributions()),
    }


def extras_refused() -> dict[str, str]:
    """What importing each integration says when its extra is missing."""
    answers = {}
    for module in ("sessionlib.fastapi", "sessionlib.propagation"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            answers[module] = str(exc)
        else:
            answers[module] = "imported"
    return answers


def main(what: str) -> None:
    if what == "metadata":
        result: Any = installed_metadata()
    elif what == "extras":
        result = extras_refused()
    elif what == "starlette":
        result = asyncio.run(login_read_logout(starlette_app()))
    else:
        result = asyncio.run(login_read_logout(fastapi_app()))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
