"""A save writes only what changed, keeps what it cannot read, and enforces limits
before anything reaches Redis."""

import pytest
from redis.asyncio import Redis

from sessionlib.codec import StoredSession
from sessionlib.config import SessionSettings
from sessionlib.errors import SessionDataError, SessionTooLarge
from sessionlib.store import SessionStore


def store(**limits) -> SessionStore:
    # The client is never used: delta() is pure; Redis() does not connect until asked.
    return SessionStore(Redis(), SessionSettings(**limits))


def loaded(stored_fields: dict[str, str], attributes: dict) -> StoredSession:
    return StoredSession(
        id="x" * 43,
        attributes=attributes,
        stored_fields=stored_fields,
        user=None,
        created_ms=0,
        absolute_expiry_ms=0,
        version=1,
        ttl_refreshed=False,
    )


def test_only_changed_and_removed_attributes_are_written():
    before = loaded({"a": "1", "b": '"x"', "c": "[1]"}, {"a": 1, "b": "x", "c": [1]})
    delta = store().delta(before, {"a": 1, "b": "y", "d": True})
    assert delta.to_set == {"b": '"y"', "d": "true"}
    assert delta.to_remove == ["c"]


def test_an_untouched_session_needs_no_write():
    before = loaded({"a": '{"k":[1,2]}'}, {"a": {"k": [1, 2]}})
    assert not store().delta(before, {"a": {"k": [1, 2]}})


def test_nested_mutation_is_detected():
    attributes = {"cart": [{"sku": "a", "qty": 1}]}
    before = loaded({"cart": '[{"sku":"a","qty":1}]'}, {"cart": [{"sku": "a", "qty": 1}]})
    attributes["cart"].append({"sku": "b", "qty": 2})
    assert "cart" in store().delta(before, attributes).to_set


def test_attributes_starting_with_underscore_never_clash_with_metadata():
    delta = store().delta(None, {"_created": "mine", "__x": 1})
    assert delta.to_set == {"__created": '"mine"', "___x": "1"}


def test_unreadable_stored_fields_are_neither_rewritten_nor_deleted():
    before = loaded({"ok": "1", "legacy": "{not json"}, {"ok": 1})
    delta = store().delta(before, {"ok": 2})
    assert delta.to_set == {"ok": "2"}
    assert delta.to_remove == []


def test_oversized_attribute_is_refused_with_its_name():
    with pytest.raises(SessionTooLarge, match="'blob'") as err:
        store(max_attribute_bytes=100).delta(None, {"blob": "x" * 200})
    assert err.value.limit == 100


def test_oversized_session_is_refused():
    with pytest.raises(SessionTooLarge, match="session size"):
        store(max_session_bytes=1000).delta(None, {f"k{i}": "x" * 90 for i in range(20)})


def test_too_many_attributes_are_refused():
    with pytest.raises(SessionTooLarge, match="attribute count"):
        store(max_attributes=3).delta(None, {str(i): i for i in range(4)})


def test_values_that_are_not_json_are_refused_clearly():
    for bad in [{1, 2}, object(), float("nan"), b"bytes"]:
        with pytest.raises(SessionDataError, match="not JSON-compatible"):
            store().delta(None, {"bad": bad})
