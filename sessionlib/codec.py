"""How a session hash becomes attributes and back: one JSON field per attribute (sealed
when encryption at rest is on), the delta a save writes, and the size limits. No Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sessionlib.config import SessionSettings, env_variable
from sessionlib.encryption import AttributeCipher, UnreadableValue, is_sealed
from sessionlib.errors import SessionDataError, SessionTooLarge
from sessionlib.ids import redact
from sessionlib.serialization import as_text, attribute_for, decode_value, encode_value, field_for

log = logging.getLogger("sessionlib.store")


@dataclass(frozen=True)
class StoredSession:
    """A session as loaded: decoded attributes plus what is needed to save a delta."""

    id: str
    attributes: dict[str, Any]
    stored_fields: dict[str, str] = field(repr=False)
    user: str | None
    created_ms: int
    absolute_expiry_ms: int
    version: int
    ttl_refreshed: bool
    stale: bool = False
    # The JSON text of each attribute stored sealed: a save compares with it, since a
    # fresh seal of the same value never equals the stored one (random nonce).
    opened: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Delta:
    """The fields a save writes (as JSON, before any sealing) and removes, and the
    session's size afterwards (of the JSON: limits apply to plaintext)."""

    to_set: dict[str, str]
    to_remove: list[str]
    size_bytes: int
    encoded: dict[str, str]  # every attribute by name, as JSON

    def __bool__(self) -> bool:
        return bool(self.to_set or self.to_remove)


class SessionCodec:
    """Decodes loaded hashes, computes deltas and seals values, under one session's
    settings (limits, encryption keys)."""

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        encryption = settings.encryption
        # With keys but not enabled, sealed values still open: encryption can be
        # switched off without losing what was sealed.
        self._cipher = AttributeCipher(encryption.key_bytes()) if encryption.keys else None
        self._sealing = encryption.enabled

    def decode(
        self, session_id: str, flat: list[Any], *, ttl_refreshed: bool, stale: bool = False
    ) -> StoredSession:
        meta: dict[str, str] = {}
        stored: dict[str, str] = {}
        opened: dict[str, str] = {}
        attributes: dict[str, Any] = {}
        unreadable: list[str] = []
        for name_raw, value_raw in zip(flat[::2], flat[1::2], strict=True):
            name, value = as_text(name_raw), value_raw.decode(errors="replace")
            attribute = attribute_for(name)
            if attribute is None:
                meta[name] = value
                continue
            stored[attribute] = value
            try:
                if is_sealed(value):
                    opened[attribute] = self._open(session_id, attribute, value)
                    attributes[attribute] = decode_value(opened[attribute])
                else:
                    attributes[attribute] = decode_value(value_raw)
            except UnreadableValue as exc:
                unreadable.append(f"{attribute!r}: {exc}")
            except ValueError:
                unreadable.append(f"{attribute!r}: not JSON")
        if unreadable:
            # Kept in stored_fields so a save does not delete what it cannot read.
            log.warning(
                "session %s: attributes left untouched (not served, kept by saves): %s",
                redact(session_id),
                "; ".join(unreadable),
            )
        return StoredSession(
            id=session_id,
            attributes=attributes,
            stored_fields=stored,
            user=meta.get("_user"),
            created_ms=int(meta.get("_created", "0")),
            absolute_expiry_ms=int(meta["_abs"]),
            version=int(meta.get("_ver", "0")),
            ttl_refreshed=ttl_refreshed,
            stale=stale,
            opened=opened,
        )

    def _open(self, session_id: str, attribute: str, stored: str) -> str:
        """The JSON text of a sealed value (the one place values are opened)."""
        if self._cipher is None:
            variable = env_variable("session.encryption.keys")
            raise UnreadableValue(f"the value is encrypted and no keys are configured ({variable})")
        return self._cipher.open(session_id, attribute, stored)

    def stored_form(self, session_id: str, json_fields: dict[str, str]) -> dict[str, str]:
        """Fields as written to Redis: each attribute's JSON sealed for `session_id` when
        encryption is on (the one place values are sealed), else as it is."""
        if self._cipher is None or not self._sealing:
            return json_fields
        sealed: dict[str, str] = {}
        for name, text in json_fields.items():
            attribute = attribute_for(name)
            assert attribute is not None  # only attribute fields are ever written
            sealed[name] = self._cipher.seal(session_id, attribute, text)
        return sealed

    def delta(self, loaded: StoredSession | None, attributes: Mapping[str, Any]) -> Delta:
        """What must change in Redis to turn `loaded` into `attributes`, within limits."""
        limits = self.settings
        if len(attributes) > limits.max_attributes:
            raise SessionTooLarge("attribute count", len(attributes), limits.max_attributes)
        before = loaded.stored_fields if loaded else {}
        opened = loaded.opened if loaded else {}
        unreadable = set(before) - set(loaded.attributes) if loaded else set()
        to_set: dict[str, str] = {}
        encoded_all: dict[str, str] = {}
        size = 0
        for name, value in attributes.items():
            if not isinstance(name, str):
                raise SessionDataError(f"session attribute names must be str, not {name!r}")
            encoded = encoded_all[name] = encode_value(name, value)
            value_size = len(encoded.encode())
            if value_size > limits.max_attribute_bytes:
                raise SessionTooLarge(
                    f"session attribute {name!r} (bytes)", value_size, limits.max_attribute_bytes
                )
            size += value_size + len(name.encode())
            if opened.get(name, before.get(name)) != encoded:
                to_set[field_for(name)] = encoded
        for name in unreadable - set(attributes):
            size += len(before[name].encode()) + len(name.encode())
        if size > limits.max_session_bytes:
            raise SessionTooLarge("session size (bytes)", size, limits.max_session_bytes)
        removed = [field_for(n) for n in before if n not in attributes and n not in unreadable]
        return Delta(to_set=to_set, to_remove=removed, size_bytes=size, encoded=encoded_all)

    def carried(self, current: StoredSession) -> tuple[dict[str, str], dict[str, str]]:
        """What a login carries to the new id, by field: the readable attributes as JSON
        (sealed again when written: a sealed value is bound to its session id), and the
        unreadable plain values as they are. A sealed value that did not open is dropped:
        bound to the old id, no key could ever open it under the new one."""
        readable = {
            field_for(n): current.opened.get(n, current.stored_fields[n])
            for n in current.attributes
        }
        kept: dict[str, str] = {}
        dropped: list[str] = []
        for n, value in current.stored_fields.items():
            if n not in current.attributes:
                if is_sealed(value):
                    dropped.append(n)
                else:
                    kept[field_for(n)] = value
        if dropped:
            log.warning(
                "session %s: a login dropped encrypted attributes that did not decrypt: %s",
                redact(current.id),
                ", ".join(map(repr, dropped)),
            )
        return readable, kept
