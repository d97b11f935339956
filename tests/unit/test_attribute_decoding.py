"""A loaded session decodes its attributes on first use, and a save re-encodes only what
may have changed, with every refusal (bad JSON, limits) as before. No Redis."""

import enum
import json
import logging
import uuid

import pytest

import sessionlib.codec
from sessionlib.codec import SessionCodec
from sessionlib.config import SessionSettings
from sessionlib.errors import SessionDataError, SessionTooLarge
from sessionlib.serialization import decode_value, encode_value

SID = "x" * 43


def reply(**attributes: str) -> list[bytes]:
    """A session hash as the load script returns it: metadata, then attribute fields."""
    flat = [b"_created", b"1", b"_abs", b"9999999999999", b"_ver", b"3", b"_user", b"ann"]
    for name, text in attributes.items():
        flat += [name.encode(), text.encode()]
    return flat


def test_a_loaded_session_reads_its_metadata_without_decoding_attributes(caplog):
    codec = SessionCodec(SessionSettings())
    with caplog.at_level(logging.WARNING, logger="sessionlib.store"):
        loaded = codec.decode(SID, reply(ok="1", broken="{not json"), ttl_refreshed=False)
        assert (loaded.user, loaded.version, loaded.absolute_expiry_ms) == ("ann", 3, 9999999999999)
    assert caplog.records == [], "nothing decoded, nothing to complain about yet"


def test_an_attribute_that_is_not_json_is_reported_on_first_use_and_kept_by_saves(caplog):
    codec = SessionCodec(SessionSettings())
    loaded = codec.decode(SID, reply(ok="1", broken="{not json"), ttl_refreshed=False)
    with caplog.at_level(logging.WARNING, logger="sessionlib.store"):
        attributes = loaded.attributes
    assert attributes == {"ok": 1}
    assert "'broken': not JSON" in caplog.text
    delta = codec.delta(loaded, {"ok": 2})
    assert delta.to_set == {"ok": "2"}
    assert delta.to_remove == []


def test_values_loaded_and_left_alone_are_not_encoded_again(monkeypatch):
    codec = SessionCodec(SessionSettings())
    loaded = codec.decode(SID, reply(theme='"dark"', n="7", on="true"), ttl_refreshed=False)
    encoded: list[str] = []
    monkeypatch.setattr(
        sessionlib.codec, "encode_value", lambda name, value: encoded.append(name) or "0"
    )
    assert not codec.delta(loaded, dict(loaded.attributes))
    assert encoded == []


def test_a_change_inside_a_loaded_container_is_still_saved():
    codec = SessionCodec(SessionSettings())
    loaded = codec.decode(SID, reply(cart='[{"sku":"a"}]', theme='"dark"'), ttl_refreshed=False)
    attributes = dict(loaded.attributes)
    attributes["cart"].append({"sku": "b"})
    assert codec.delta(loaded, attributes).to_set == {"cart": '[{"sku":"a"},{"sku":"b"}]'}


def test_a_session_over_the_size_limit_is_refused_even_when_nothing_was_re_encoded():
    codec = SessionCodec(SessionSettings(max_session_bytes=150))
    loaded = codec.decode(SID, reply(a=json.dumps("x" * 100), b='"y"'), ttl_refreshed=False)
    codec.delta(loaded, dict(loaded.attributes))  # within the limit: fine
    bigger = {**loaded.attributes, "c": "z" * 50}  # 103 + 4 + 53 bytes, names included
    with pytest.raises(SessionTooLarge, match="session size"):
        codec.delta(loaded, bigger)


def test_an_unchanged_attribute_over_its_limit_is_still_refused():
    codec = SessionCodec(SessionSettings(max_attribute_bytes=50))
    loaded = codec.decode(SID, reply(big=json.dumps("x" * 100)), ttl_refreshed=False)
    with pytest.raises(SessionTooLarge, match="'big'"):
        codec.delta(loaded, dict(loaded.attributes))


@pytest.mark.parametrize(
    "value",
    [
        "café ☕",
        2**70,
        -(2**64),
        {1: "int key"},
        [None, True, 1.5, {"nested": [None]}],
        {"deep": [[[[1e300]]]]},
    ],
)
def test_values_are_written_and_read_back_as_the_json_module_would(value):
    expected = json.loads(json.dumps(value, ensure_ascii=False))
    assert decode_value(encode_value("a", value).encode()) == expected


@pytest.mark.parametrize("text", ["12345678901234567890123", "[18446744073709551616]", '"\\ud800"'])
def test_stored_json_reads_exactly_as_the_json_module_reads_it(text):
    assert decode_value(text.encode()) == json.loads(text)


@pytest.mark.parametrize("bad", [float("nan"), [float("inf")], {"k": {1, 2}}, b"bytes"])
def test_values_the_json_module_refuses_are_refused_with_the_attribute_named(bad):
    with pytest.raises(SessionDataError, match="'cart' is not JSON-compatible"):
        encode_value("cart", bad)


@pytest.mark.parametrize(
    "value",
    [uuid.UUID(int=1), enum.Enum("Colour", "RED").RED, float("nan"), {1, 2}, b"bytes"],
    ids=["uuid", "enum", "nan", "set", "bytes"],
)
def test_a_value_the_json_module_refuses_is_refused_not_stored_as_something_else(value):
    # What Starlette's SessionMiddleware (json.dumps) refuses: never a string that reads
    # back as another type.
    with pytest.raises(SessionDataError, match="is not JSON-compatible"):
        encode_value("x", value)
