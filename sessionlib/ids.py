"""Session ids: 256 random bits, URL-safe, optionally HMAC-signed with rotating keys.

A signed id is `<raw>.<signature>`; only the raw part reaches Redis, and a forged or
malformed id is rejected here, before any round trip.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence

RAW_ID_BYTES = 32
_RAW_ID = re.compile(r"[A-Za-z0-9_-]{43}")
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_raw_id() -> str:
    """A fresh session id: 256 bits from `secrets`, base64url without padding."""
    return _b64(secrets.token_bytes(RAW_ID_BYTES))


def redact(session_id: str | None) -> str:
    """A log-safe stand-in for a session id: enough to correlate, never enough to use."""
    if not session_id:
        return "-"
    return session_id[:6] + "…"


class SessionIdCodec:
    """Mints ids and turns untrusted client input into a raw id, or None.

    With signing keys, the first key signs and every key verifies, so keys rotate by
    prepending the new one and dropping the oldest later.
    """

    def __init__(self, signing_keys: Sequence[str | bytes] = ()) -> None:
        self._keys = [k.encode() if isinstance(k, str) else k for k in signing_keys]
        if any(not k for k in self._keys):
            raise ValueError("signing keys must not be empty")

    @property
    def signs(self) -> bool:
        return bool(self._keys)

    def encode(self, raw_id: str) -> str:
        """The id as given to the client (signed when keys are configured)."""
        if not self._keys:
            return raw_id
        return f"{raw_id}.{self._sign(self._keys[0], raw_id)}"

    def decode(self, client_value: str | None) -> str | None:
        """The raw id if `client_value` is well formed (and correctly signed), else None."""
        if not client_value or len(client_value) > 100:
            return None
        raw, _, signature = client_value.partition(".")
        if not _RAW_ID.fullmatch(raw):
            return None
        if not self._keys:
            return raw if not signature else None
        if not _SIGNATURE.fullmatch(signature):
            return None
        for key in self._keys:
            if hmac.compare_digest(signature, self._sign(key, raw)):
                return raw
        return None

    @staticmethod
    def _sign(key: bytes, raw_id: str) -> str:
        return _b64(hmac.new(key, raw_id.encode("ascii"), hashlib.sha256).digest())
