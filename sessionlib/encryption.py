"""Encryption at rest of attribute values: AES-256-GCM, one sealed value per hash field,
bound to its session id and attribute name, with a key list for rotation.

A sealed value is `enc:v1:<key id>:<base64url(nonce | ciphertext | tag)>`: no JSON text
starts with `e`, so plain (older) values and sealed ones tell themselves apart.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_PREFIX = "enc:v1:"
_AAD_DOMAIN = b"sessionlib attribute v1\0"
# Whole base64 quanta only (a lone trailing character is no byte), padding optional.
_KEY_TEXT = re.compile(r"(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2,3}={0,2})?")


class UnreadableValue(ValueError):
    """A sealed value no configured key opens; the message says why, never the value."""


def is_sealed(stored: str) -> bool:
    """Whether a stored attribute value is sealed (else it is plain JSON, or not ours)."""
    return stored.startswith(_PREFIX)


def key_id(key: bytes) -> str:
    """A short public name of a key, so opening picks the key instead of trying each.
    Four bytes of a domain-separated hash: tells keys apart, reveals nothing usable."""
    digest = hashlib.sha256(b"sessionlib key id\0" + key).digest()
    return _b64(digest[:4])


# binascii plus a byte translation: a third of base64.urlsafe_b64decode's time, which
# counts on a load that opens every attribute.
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return binascii.a2b_base64(text.encode().translate(_FROM_URLSAFE) + b"=" * (-len(text) % 4))


def _aad(session_id: str, attribute: str) -> bytes:
    # Length-prefixed id: no (id, attribute) pair can be read as another.
    sid = session_id.encode()
    return _AAD_DOMAIN + len(sid).to_bytes(2, "big") + sid + attribute.encode()


class AttributeCipher:
    """Seals attribute JSON under the first key and opens it under any key of the list,
    so keys rotate by prepending a new one and dropping the oldest later."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("an AttributeCipher needs at least one key")
        if any(len(k) != KEY_BYTES for k in keys):
            raise ValueError(f"every encryption key must be {KEY_BYTES} bytes")
        self._sealing_id = key_id(keys[0])
        self._sealing = AESGCM(keys[0])
        # Two keys with the same id (a 1 in 2**32 chance) are both tried.
        self._opening: dict[str, list[AESGCM]] = {}
        for key in keys:
            self._opening.setdefault(key_id(key), []).append(AESGCM(key))

    def seal(self, session_id: str, attribute: str, json_text: str) -> str:
        """`json_text` encrypted for this session's attribute, as stored text."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._sealing.encrypt(nonce, json_text.encode(), _aad(session_id, attribute))
        return f"{_PREFIX}{self._sealing_id}:{_b64(nonce + sealed)}"

    def open(self, session_id: str, attribute: str, stored: str) -> str:
        """The JSON text `seal` was given; raises UnreadableValue when the value is not
        sealed, names no configured key, or does not authenticate (tampered, or copied
        from another session or attribute)."""
        if not is_sealed(stored):
            raise UnreadableValue("the value is not encrypted")
        kid, _, body = stored[len(_PREFIX) :].partition(":")
        candidates = self._opening.get(kid)
        if candidates is None:
            raise UnreadableValue(
                f"the value is encrypted under key {kid!r}, which is not configured"
            )
        try:
            data = _unb64(body)
        except (binascii.Error, ValueError):
            raise UnreadableValue("the encrypted value is malformed") from None
        if len(data) < _NONCE_BYTES + _TAG_BYTES:
            raise UnreadableValue("the encrypted value is malformed")
        nonce, sealed = data[:_NONCE_BYTES], data[_NONCE_BYTES:]
        aad = _aad(session_id, attribute)
        for cipher in candidates:
            try:
                return cipher.decrypt(nonce, sealed, aad).decode()
            except InvalidTag:
                continue
            except UnicodeDecodeError:
                break
        raise UnreadableValue(
            "the encrypted value does not authenticate (altered, or copied from another "
            "session or attribute)"
        )


def decode_key(text: str) -> bytes:
    """A configured key: 32 bytes, base64url (padding optional). Raises ValueError with
    a message that never repeats the key."""
    stripped = text.strip()
    if not _KEY_TEXT.fullmatch(stripped):
        raise ValueError("is not base64url (A-Z a-z 0-9 - _, 43 characters for 32 bytes)")
    key = _unb64(stripped.rstrip("="))
    if len(key) != KEY_BYTES:
        raise ValueError(f"decodes to {len(key)} bytes, not {KEY_BYTES}")
    return key
