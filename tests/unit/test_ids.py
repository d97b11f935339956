"""Session ids are unguessable, URL-safe, and forged or malformed ids never get through."""

import re

from sessionlib.ids import SessionIdCodec, new_raw_id, redact


def test_new_ids_are_256_bit_url_safe_and_unique():
    ids = {new_raw_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", i) for i in ids)


def test_unsigned_codec_accepts_a_well_formed_id_only():
    codec = SessionIdCodec()
    raw = new_raw_id()
    assert codec.decode(codec.encode(raw)) == raw
    for bad in ["", "short", raw + "x", raw[:-1] + "!", raw + ".sig", "a" * 5000, "../../etc"]:
        assert codec.decode(bad) is None, bad


def test_signed_ids_reject_forgeries_and_ids_signed_by_unknown_keys():
    codec = SessionIdCodec(["current-key-0123456789"])
    raw = new_raw_id()
    signed = codec.encode(raw)
    assert signed.startswith(raw + ".")
    assert codec.decode(signed) == raw
    assert codec.decode(raw) is None, "an unsigned id must not pass when signing is on"
    forged = raw + "." + signed.rsplit(".", 1)[1][::-1]
    assert codec.decode(forged) is None
    assert SessionIdCodec(["another-key-0123456789"]).decode(signed) is None


def test_key_rotation_first_key_signs_every_key_verifies():
    old = SessionIdCodec(["old-key-0123456789"])
    rotated = SessionIdCodec(["new-key-0123456789", "old-key-0123456789"])
    raw = new_raw_id()
    assert rotated.decode(old.encode(raw)) == raw
    assert rotated.encode(raw) != old.encode(raw)
    assert SessionIdCodec(["new-key-0123456789"]).decode(rotated.encode(raw)) == raw


def test_redacted_ids_are_too_short_to_use():
    raw = new_raw_id()
    assert len(redact(raw)) < 10
    assert raw not in redact(raw)
    assert redact(None) == "-"
