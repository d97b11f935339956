"""Attribute encryption: AES-GCM values bound to their session and attribute, keys that
rotate, and settings that refuse a missing or malformed key without printing it."""

import base64
import json
import secrets

import pytest
from pydantic import ValidationError

from sessionlib.config import SessionSettings, load_settings
from sessionlib.encryption import AttributeCipher, UnreadableValue, is_sealed, key_id
from sessionlib.errors import ConfigurationError

SID = "S" * 43
OTHER_SID = "T" * 43
KEYS_VARIABLE = "SESSIONLIB_SESSION__ENCRYPTION__KEYS"


def new_key() -> bytes:
    return secrets.token_bytes(32)


def key_text(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


def test_a_sealed_value_opens_to_the_same_json_and_does_not_contain_it():
    cipher = AttributeCipher([new_key()])
    sealed = cipher.seal(SID, "cart", '{"sku":"secret-sku"}')
    assert is_sealed(sealed) and "secret-sku" not in sealed
    assert cipher.open(SID, "cart", sealed) == '{"sku":"secret-sku"}'


def test_the_stored_format_names_the_version_and_the_key():
    key = new_key()
    sealed = AttributeCipher([key]).seal(SID, "a", "1")
    tag, version, kid, body = sealed.split(":")
    assert (tag, version, kid) == ("enc", "v1", key_id(key))
    assert len(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) == 12 + 1 + 16


def test_json_never_looks_sealed():
    for value in ({}, [], "enc:v1:x:y", 1, -1, True, False, None):
        assert not is_sealed(json.dumps(value))


def test_sealing_the_same_value_twice_gives_different_text():
    cipher = AttributeCipher([new_key()])
    assert cipher.seal(SID, "a", '"x"') != cipher.seal(SID, "a", '"x"')


def test_a_value_copied_to_another_session_or_attribute_does_not_open():
    cipher = AttributeCipher([new_key()])
    sealed = cipher.seal(SID, "role", '"admin"')
    with pytest.raises(UnreadableValue, match="another session or attribute"):
        cipher.open(OTHER_SID, "role", sealed)
    with pytest.raises(UnreadableValue, match="another session or attribute"):
        cipher.open(SID, "theme", sealed)


def test_a_tampered_value_does_not_open():
    cipher = AttributeCipher([new_key()])
    sealed = cipher.seal(SID, "a", '"abcdef"')
    flipped = sealed[:-5] + ("A" if sealed[-5] != "A" else "B") + sealed[-4:]
    with pytest.raises(UnreadableValue, match="does not authenticate"):
        cipher.open(SID, "a", flipped)
    with pytest.raises(UnreadableValue, match="malformed"):
        cipher.open(SID, "a", sealed.rsplit(":", 1)[0] + ":AAAA")


def test_after_rotation_the_new_key_seals_and_the_old_key_still_opens():
    old, new = new_key(), new_key()
    written_before = AttributeCipher([old]).seal(SID, "a", "1")
    rotated = AttributeCipher([new, old])
    assert rotated.open(SID, "a", written_before) == "1"
    assert key_id(new) in rotated.seal(SID, "a", "2")


def test_a_value_under_a_removed_key_is_unreadable_and_the_message_names_the_key_id():
    old = new_key()
    sealed = AttributeCipher([old]).seal(SID, "a", "1")
    with pytest.raises(UnreadableValue, match=f"key '{key_id(old)}', which is not configured"):
        AttributeCipher([new_key()]).open(SID, "a", sealed)


def test_encryption_is_off_by_default():
    assert SessionSettings().encryption.enabled is False


def test_encryption_without_a_key_is_refused_naming_the_variable():
    with pytest.raises(ConfigurationError, match=KEYS_VARIABLE):
        load_settings("dev", session={"encryption": {"enabled": True}})


# Fixed 32-byte keys, so every pytest-xdist worker collects the same test ids.
_A_KEY = key_text(bytes(range(32)))


@pytest.mark.parametrize(
    "bad",
    ["short-key-value", _A_KEY[:-3], _A_KEY + "AAAA", "a b"],
    ids=["short", "truncated", "too-long", "space"],
)
def test_a_malformed_key_is_refused_naming_the_variable_and_never_shown(bad):
    with pytest.raises(ConfigurationError, match=KEYS_VARIABLE) as refused:
        load_settings("dev", session={"encryption": {"enabled": True, "keys": [bad]}})
    assert bad not in str(refused.value)
    with pytest.raises(ValidationError) as direct:
        SessionSettings(encryption={"enabled": True, "keys": [bad]})
    assert bad not in str(direct.value)


def test_keys_come_from_the_environment_as_a_json_list(monkeypatch):
    first, second = new_key(), new_key()
    monkeypatch.setenv(KEYS_VARIABLE, json.dumps([key_text(first), key_text(second)]))
    monkeypatch.setenv("SESSIONLIB_SESSION__ENCRYPTION__ENABLED", "true")
    encryption = load_settings("dev").session.encryption
    assert encryption.enabled and encryption.key_bytes() == [first, second]
    assert key_text(first) not in repr(encryption)
