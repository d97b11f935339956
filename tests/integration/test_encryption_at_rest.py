"""Encryption at rest against a real redis-server: Redis holds no attribute plaintext,
saves stay deltas, keys rotate, and a value that does not decrypt (tampered, copied from
another session, under a removed key) is neither served nor deleted, and never a crash."""

import base64
import logging
import secrets

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import sessionlib
from sessionlib.encryption import is_sealed, key_id
from sessionlib.ids import redact

pytestmark = pytest.mark.integration

SECRET_VALUE = "4111-1111-1111-1111"


def new_key() -> bytes:
    return secrets.token_bytes(32)


def encryption(*keys: bytes, enabled: bool = True) -> dict:
    texts = [base64.urlsafe_b64encode(k).rstrip(b"=").decode() for k in keys]
    return {"enabled": enabled, "keys": texts}


async def raw_hash(store, sid: str) -> dict[str, str]:
    stored = await store.redis.hgetall(store.session_key(sid))
    return {k.decode(): v.decode() for k, v in stored.items()}


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sessionlib.store"]


@pytest.fixture
def key_a() -> bytes:
    return new_key()


@pytest.fixture
async def store(make_store, key_a):
    store = make_store(encryption=encryption(key_a))
    await store.load_scripts()
    return store


async def test_redis_holds_no_plaintext_of_attribute_values_and_metadata_stays_plain(store):
    sid = await store.create({"card": SECRET_VALUE, "_private": [1, 2]}, user="ann")
    raw = await raw_hash(store, sid)
    assert is_sealed(raw["card"]) and is_sealed(raw["__private"])
    assert all(SECRET_VALUE not in value for value in raw.values())
    assert raw["_user"] == "ann" and int(raw["_abs"]) > 0 and raw["_ver"] == "1"
    assert await store.redis.pttl(store.session_key(sid)) > 0
    assert (await store.load(sid)).attributes == {"card": SECRET_VALUE, "_private": [1, 2]}


async def test_a_save_of_one_changed_attribute_writes_only_that_field(store, round_trips):
    sid = await store.create({f"k{i}": "v" * 100 for i in range(10)})
    before = await raw_hash(store, sid)
    loaded = await store.load(sid)
    round_trips.reset()
    result = await store.save(loaded, {**loaded.attributes, "k3": "changed"})
    assert result.written and round_trips.count == 1
    after = await raw_hash(store, sid)
    changed = {f for f in before if not f.startswith("_") and before[f] != after[f]}
    assert changed == {"k3"}
    assert (await store.load(sid)).attributes["k3"] == "changed"


async def test_an_untouched_encrypted_session_costs_no_write(store, round_trips):
    sid = await store.create({"a": {"nested": [1, 2]}, "b": "x"})
    loaded = await store.load(sid)
    round_trips.reset()
    assert not (await store.save(loaded, {"a": {"nested": [1, 2]}, "b": "x"})).written
    assert round_trips.count == 0


async def test_after_rotation_old_values_read_and_new_writes_use_the_new_key(make_store, key_a):
    sid = await make_store(encryption=encryption(key_a)).create({"old": 1})
    key_b = new_key()
    rotated = make_store(encryption=encryption(key_b, key_a))
    loaded = await rotated.load(sid)
    assert loaded.attributes == {"old": 1}
    await rotated.save(loaded, {"old": 1, "new": 2})
    raw = await raw_hash(rotated, sid)
    assert raw["old"].split(":")[2] == key_id(key_a)
    assert raw["new"].split(":")[2] == key_id(key_b)
    assert (await rotated.load(sid)).attributes == {"old": 1, "new": 2}


async def test_a_value_under_a_removed_key_is_not_served_not_deleted_and_logged(
    make_store, key_a, caplog
):
    sid = await make_store(encryption=encryption(key_a)).create({"old": 1})
    only_b = make_store(encryption=encryption(new_key()))
    loaded = await only_b.load(sid)
    assert loaded is not None and loaded.attributes == {}
    await only_b.save(loaded, {"fresh": True})
    raw = await raw_hash(only_b, sid)
    assert raw["old"].split(":")[2] == key_id(key_a)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sessionlib.store"):
        assert (await only_b.load(sid)).attributes == {"fresh": True}
    [line] = warnings(caplog)
    assert f"key '{key_id(key_a)}', which is not configured" in line
    assert redact(sid) in line and sid not in line


async def test_a_tampered_value_is_not_served_not_deleted_and_logged_once(store, caplog):
    sid = await store.create({"a": "first", "b": "second", "c": "third"})
    key = store.session_key(sid)
    for name in ("a", "b"):
        sealed = (await store.redis.hget(key, name)).decode()
        flipped = sealed[:-5] + ("A" if sealed[-5] != "A" else "B") + sealed[-4:]
        await store.redis.hset(key, name, flipped)
    with caplog.at_level(logging.WARNING, logger="sessionlib.store"):
        loaded = await store.load(sid)
    assert loaded.attributes == {"c": "third"}
    [line] = warnings(caplog)
    assert line.count("does not authenticate") == 2
    await store.save(loaded, {"c": "changed"})
    raw = await raw_hash(store, sid)
    assert is_sealed(raw["a"]) and is_sealed(raw["b"])
    assert (await store.load(sid)).attributes == {"c": "changed"}


async def test_a_value_copied_from_another_sessions_hash_does_not_decrypt(store, caplog):
    admin = await store.create({"role": "admin"})
    victim = await store.create({"role": "guest"})
    copied = await store.redis.hget(store.session_key(admin), "role")
    await store.redis.hset(store.session_key(victim), "role", copied)
    with caplog.at_level(logging.WARNING, logger="sessionlib.store"):
        assert (await store.load(victim)).attributes == {}
    assert "copied from another session or attribute" in warnings(caplog)[0]


async def test_a_value_copied_to_another_attribute_does_not_decrypt(store):
    sid = await store.create({"role": "admin", "theme": "dark"})
    key = store.session_key(sid)
    await store.redis.hset(key, "theme", await store.redis.hget(key, "role"))
    assert (await store.load(sid)).attributes == {"role": "admin"}


async def test_plain_values_from_before_encryption_read_and_a_save_seals_what_it_writes(
    make_store, key_a
):
    sid = await make_store().create({"kept": "plain", "changed": 1})
    encrypted = make_store(encryption=encryption(key_a))
    loaded = await encrypted.load(sid)
    assert loaded.attributes == {"kept": "plain", "changed": 1}
    await encrypted.save(loaded, {"kept": "plain", "changed": 2})
    raw = await raw_hash(encrypted, sid)
    assert raw["kept"] == '"plain"' and is_sealed(raw["changed"])
    assert (await encrypted.load(sid)).attributes == {"kept": "plain", "changed": 2}


async def test_with_encryption_off_but_keys_kept_sealed_values_still_read_and_writes_are_plain(
    make_store, key_a
):
    sid = await make_store(encryption=encryption(key_a)).create({"a": 1})
    switched_off = make_store(encryption=encryption(key_a, enabled=False))
    loaded = await switched_off.load(sid)
    assert loaded.attributes == {"a": 1}
    await switched_off.save(loaded, {"a": 1, "b": 2})
    assert (await raw_hash(switched_off, sid))["b"] == "2"


async def test_without_keys_a_sealed_value_is_unreadable_naming_the_variable(
    make_store, key_a, caplog
):
    sid = await make_store(encryption=encryption(key_a)).create({"a": 1})
    with caplog.at_level(logging.WARNING, logger="sessionlib.store"):
        assert (await make_store().load(sid)).attributes == {}
    assert "SESSIONLIB_SESSION__ENCRYPTION__KEYS" in warnings(caplog)[0]


async def test_a_login_reseals_attributes_for_the_new_id_and_drops_what_did_not_decrypt(
    store, caplog
):
    sid = await store.create({"cart": ["sku-1"], "theme": "dark", "broken": 1})
    old_raw = await raw_hash(store, sid)
    await store.redis.hset(store.session_key(sid), "broken", old_raw["theme"])
    previous = await store.load(sid)
    with caplog.at_level(logging.WARNING, logger="sessionlib.store"):
        moved = await store.regenerate(previous, {**previous.attributes, "n": 1}, user="ann")
    assert moved.id != sid and moved.user == "ann"
    assert moved.attributes == {"cart": ["sku-1"], "theme": "dark", "n": 1}
    assert (await store.load(moved.id)).attributes == moved.attributes
    new_raw = await raw_hash(store, moved.id)
    assert "broken" not in new_raw
    assert all(is_sealed(new_raw[f]) for f in ("cart", "theme", "n"))
    assert new_raw["cart"] != old_raw["cart"]
    assert any("a login dropped encrypted attributes" in line for line in warnings(caplog))


async def test_size_limits_apply_to_the_json_not_the_longer_sealed_text(make_store, key_a):
    store = make_store(encryption=encryption(key_a), max_attribute_bytes=100)
    sid = await store.create({"a": "x" * 98})  # 100 bytes of JSON, about 190 sealed
    assert len((await raw_hash(store, sid))["a"]) > 100
    assert (await store.load(sid)).attributes == {"a": "x" * 98}


def counter_app(store) -> Starlette:
    async def increment(request: Request):
        request.session["card"] = SECRET_VALUE
        request.session["count"] = request.session.get("count", 0) + 1
        return JSONResponse({"count": request.session["count"]})

    async def login(request: Request):
        request.session.login("ann")
        return JSONResponse({})

    async def peek(request: Request):
        return JSONResponse(dict(request.session))

    routes = [
        Route("/increment", increment, methods=["POST"]),
        Route("/login", login, methods=["POST"]),
        Route("/peek", peek),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(sessionlib.SessionMiddleware, store=store)
    return app


async def test_a_middleware_round_trip_with_encryption_on(store):
    transport = httpx.ASGITransport(app=counter_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        assert (await c.post("/increment")).json() == {"count": 1}
        assert (await c.post("/increment")).json() == {"count": 2}
        await c.post("/login")
        assert (await c.get("/peek")).json() == {"card": SECRET_VALUE, "count": 2}
        [sid] = await store.sessions_of("ann")
    raw = await raw_hash(store, sid)
    assert is_sealed(raw["card"]) and is_sealed(raw["count"])
    assert all(SECRET_VALUE not in value for value in raw.values())
