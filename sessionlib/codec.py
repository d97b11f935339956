"""How a session hash becomes attributes and back: one JSON field per attribute (sealed
when encryption at rest is on), the delta a save writes, and the size limits. No Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sessionlib.config import SessionSettings, env_variable
from sessionlib.encryption import AttributeCipher, UnreadableValue, is_sealed
from sessionlib.errors import SessionDataError, SessionTooLarge
from sessionlib.ids import redact
from sessionlib.serialization import as_bytes, attribute_for, decode_value, encode_value, field_for

log = logging.getLogger("sessionlib.store")
_UNSET: Any = object()


class StoredSession:
    """A session as loaded: its metadata, and its attributes with what a delta save needs.

    Built from a Redis reply, the attributes are decoded (and opened, when sealed) on
    first use, all at once: a caller that needs only the metadata pays nothing for them.
    """

    __slots__ = (
        "_codec",
        "_decoded",
        "_fields",
        "absolute_expiry_ms",
        "created_ms",
        "id",
        "stale",
        "ttl_refreshed",
        "user",
        "version",
    )

    def __init__(
        self,
        id: str,
        attributes: dict[str, Any],
        stored_fields: dict[str, str],
        user: str | None,
        created_ms: int,
        absolute_expiry_ms: int,
        version: int,
        ttl_refreshed: bool,
        stale: bool = False,
        opened: dict[str, str] | None = None,
    ) -> None:
        self.id = id
        self.user = user
        self.created_ms = created_ms
        self.absolute_expiry_ms = absolute_expiry_ms
        self.version = version
        self.ttl_refreshed = ttl_refreshed
        self.stale = stale
        self._decoded: _Decoded | None = (attributes, stored_fields, opened or {})
        self._fields: dict[bytes, bytes] = {}
        self._codec: SessionCodec | None = None

    @property
    def attributes(self) -> dict[str, Any]:
        """The readable attributes, decoded."""
        return self._decode()[0]

    @property
    def stored_fields(self) -> dict[str, str]:
        """Every attribute's stored text by name, readable or not (a save keeps what it
        cannot read)."""
        return self._decode()[1]

    @property
    def opened(self) -> dict[str, str]:
        """The JSON text of each attribute stored sealed: a save compares with it, since a
        fresh seal of the same value never equals the stored one (random nonce)."""
        return self._decode()[2]

    def _decode(self) -> _Decoded:
        if self._decoded is None:
            assert self._codec is not None  # set with _fields by SessionCodec.decode
            self._decoded = self._codec.decode_attributes(self.id, self._fields)
            self._fields = {}
        return self._decoded

    def __repr__(self) -> str:
        return (
            f"StoredSession(id={redact(self.id)}, user={self.user!r}, "
            f"version={self.version}, stale={self.stale})"
        )


# A session's attributes decoded, their stored text, and the JSON text of sealed ones.
_Decoded = tuple[dict[str, Any], dict[str, str], dict[str, str]]
# Attribute values that cannot change in place: the same object means the same JSON.
_IMMUTABLE = frozenset({str, int, float, bool, type(None)})


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
        """A session from a hash as Redis returns it (names and values as bytes, in
        turn): the metadata now, the attributes on first use (`decode_attributes`)."""
        pairs = iter(flat)
        fields: dict[bytes, bytes] = dict(zip(pairs, pairs, strict=True))
        if flat and type(flat[0]) is not bytes:
            fields = {as_bytes(name): value for name, value in fields.items()}
        user = fields.get(b"_user")
        # Built field by field: this runs on every load, and the attributes wait.
        stored = StoredSession.__new__(StoredSession)
        stored.id = session_id
        stored.user = None if user is None else user.decode(errors="replace")
        stored.created_ms = int(fields.get(b"_created", b"0"))
        stored.absolute_expiry_ms = int(fields[b"_abs"])
        stored.version = int(fields.get(b"_ver", b"0"))
        stored.ttl_refreshed = ttl_refreshed
        stored.stale = stale
        stored._decoded, stored._fields, stored._codec = None, fields, self
        return stored

    def decode_attributes(self, session_id: str, fields: dict[bytes, bytes]) -> _Decoded:
        """Attributes from a session hash's fields (metadata fields are skipped). One that
        is not JSON, or sealed and not openable, is logged and left out; its stored text
        stays, so saves keep it."""
        stored: dict[str, str] = {}
        opened: dict[str, str] = {}
        attributes: dict[str, Any] = {}
        unreadable: list[str] = []
        for name, value_raw in fields.items():
            if not name.startswith(b"_"):
                attribute = name.decode()
            elif name.startswith(b"__"):
                attribute = name[1:].decode()
            else:
                continue  # metadata
            value = stored[attribute] = value_raw.decode(errors="replace")
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
        return attributes, stored, opened

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
        decoded = loaded.attributes if loaded else {}
        unreadable = before.keys() - decoded.keys() if loaded else set()
        to_set: dict[str, str] = {}
        encoded_all: dict[str, str] = {}
        size = 0
        max_value_bytes = limits.max_attribute_bytes
        for name, value in attributes.items():
            if not isinstance(name, str):
                raise SessionDataError(f"session attribute names must be str, not {name!r}")
            stored_text = opened.get(name) or before.get(name)
            if (
                stored_text is not None
                and value is decoded.get(name, _UNSET)
                and type(value) in _IMMUTABLE
            ):
                # The very value loaded, which cannot have changed in place: as stored.
                encoded = encoded_all[name] = stored_text
            else:
                encoded = encoded_all[name] = encode_value(name, value)
                if encoded != stored_text:
                    to_set[field_for(name)] = encoded
            value_size = len(encoded) if encoded.isascii() else len(encoded.encode())
            if value_size > max_value_bytes:
                raise SessionTooLarge(
                    f"session attribute {name!r} (bytes)", value_size, max_value_bytes
                )
            size += value_size + (len(name) if name.isascii() else len(name.encode()))
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
