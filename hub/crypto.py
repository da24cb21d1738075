"""Key ring (AES-GCM-256), row-bound ciphertexts and blind indexes.

A ciphertext is ``VERSION | len(key_id) | key_id | nonce(12) | AES-GCM(ct+tag)``. The associated
data names the table, column and row id, so a ciphertext pasted into another row or column fails
its integrity check instead of decrypting into the wrong patient's record.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hub.errors import HubError

FORMAT_VERSION = 1
"""First byte of every ciphertext; bump when the layout changes."""

NONCE_BYTES = 12
KEY_BYTES = 32
INDEX_KEY_ID = "index"
"""Reserved id in HUB_KEYS for the blind-index HMAC key (never used to encrypt)."""

KEY_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")

BlindIndexKind = Literal["phone", "email", "tag", "message_id", "name", "external_id"]


class CryptoError(HubError):
    """Base for failures to decrypt."""


class IntegrityCheckFailed(CryptoError):
    """The ciphertext was altered, or it belongs to another row or column."""


class UnknownKey(CryptoError):
    """The ciphertext names a key id that the ring does not hold."""


class KeyRingError(HubError):
    """The key ring specification is malformed."""


def associated_data(table: str, column: str, row_id: object) -> bytes:
    return f"hub:{table}.{column}:{row_id}".encode()


def _decode_key(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyRingError("is not valid base64") from exc


def encode_key(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def new_key_entry(key_id: str) -> str:
    """A fresh ``id:base64`` entry for HUB_KEYS."""
    if not KEY_ID_RE.match(key_id) or key_id == INDEX_KEY_ID:
        raise KeyRingError(f"key id {key_id!r} must be 1-32 of A-Z a-z 0-9 _ . - and not 'index'")
    return f"{key_id}:{encode_key(os.urandom(KEY_BYTES))}"


@dataclass(frozen=True)
class KeyRing:
    """Encryption keys, newest (active) first, plus the blind-index key."""

    keys: dict[str, bytes]
    index_key: bytes
    _aead: dict[str, AESGCM] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyRingError("holds no encryption key")
        for kid, raw in self.keys.items():
            self._aead[kid] = AESGCM(raw)

    def __repr__(self) -> str:  # never print key material
        return f"KeyRing(active={self.active_id!r}, ids={list(self.keys)!r})"

    @property
    def active_id(self) -> str:
        return next(iter(self.keys))

    @classmethod
    def parse(cls, spec: str) -> KeyRing:
        """Parse ``index:<b64>,<id>:<b64>,...``; the first encryption key listed is active."""
        keys: dict[str, bytes] = {}
        index_key: bytes | None = None
        entries = [e.strip() for e in spec.split(",") if e.strip()]
        if not entries:
            raise KeyRingError("is empty")
        for n, entry in enumerate(entries, start=1):
            kid, sep, material = entry.partition(":")
            kid = kid.strip()
            if not sep or not KEY_ID_RE.match(kid):
                raise KeyRingError(f"entry {n} is not of the form id:base64key")
            try:
                raw = _decode_key(material.strip())
            except KeyRingError as exc:
                raise KeyRingError(f"entry {n} ({kid}) {exc}") from None
            if len(raw) != KEY_BYTES:
                raise KeyRingError(
                    f"entry {n} ({kid}) decodes to {len(raw)} bytes, not {KEY_BYTES}"
                )
            if kid == INDEX_KEY_ID:
                index_key = raw
            elif kid in keys:
                raise KeyRingError(f"entry {n} repeats key id {kid}")
            else:
                keys[kid] = raw
        if index_key is None:
            raise KeyRingError("has no 'index:' entry for the blind-index key")
        if not keys:
            raise KeyRingError("has no encryption key besides 'index'")
        if any(hmac.compare_digest(index_key, raw) for raw in keys.values()):
            raise KeyRingError("reuses the blind-index key as an encryption key")
        return cls(keys=keys, index_key=index_key)

    def to_spec(self) -> str:
        parts = [f"{INDEX_KEY_ID}:{encode_key(self.index_key)}"]
        parts += [f"{kid}:{encode_key(raw)}" for kid, raw in self.keys.items()]
        return ",".join(parts)

    @classmethod
    def generate(cls, key_id: str = "k1") -> KeyRing:
        return cls(keys={key_id: os.urandom(KEY_BYTES)}, index_key=os.urandom(KEY_BYTES))

    def with_new_key(self, key_id: str) -> KeyRing:
        if key_id in self.keys or key_id == INDEX_KEY_ID:
            raise KeyRingError(f"key id {key_id} is already in the ring")
        return KeyRing(keys={key_id: os.urandom(KEY_BYTES), **self.keys}, index_key=self.index_key)

    def without(self, key_id: str) -> KeyRing:
        return KeyRing(
            keys={k: v for k, v in self.keys.items() if k != key_id}, index_key=self.index_key
        )

    # -- encryption -------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        kid = self.active_id
        nonce = os.urandom(NONCE_BYTES)
        body = self._aead[kid].encrypt(nonce, plaintext, aad)
        kid_b = kid.encode()
        return bytes([FORMAT_VERSION, len(kid_b)]) + kid_b + nonce + body

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        kid, nonce, body = _split(blob)
        aead = self._aead.get(kid)
        if aead is None:
            raise UnknownKey(
                f"ciphertext is under key {kid!r}, which HUB_KEYS no longer holds; "
                "add it back or restore from backup"
            )
        try:
            return aead.decrypt(nonce, body, aad)
        except InvalidTag:
            raise IntegrityCheckFailed(
                f"ciphertext for {aad.decode(errors='replace').removeprefix('hub:')} failed its "
                "integrity check: it was altered or copied from another row or column"
            ) from None

    def encrypt_text(self, text: str, aad: bytes) -> bytes:
        return self.encrypt(text.encode("utf-8"), aad)

    def decrypt_text(self, blob: bytes, aad: bytes) -> str:
        return self.decrypt(blob, aad).decode("utf-8")

    # -- blind index ------------------------------------------------------------------------

    def blind_index(self, kind: BlindIndexKind, normalized: str) -> bytes:
        """HMAC-SHA256 over an already normalized value, separated by kind."""
        msg = kind.encode() + b"\x00" + normalized.encode("utf-8")
        return hmac.new(self.index_key, msg, hashlib.sha256).digest()

    def link_key(self, purpose: str) -> bytes:
        """A key for signing links and addresses (reply tokens, unsubscribe links), derived
        from the index key and separated by purpose from it and from each other."""
        return hmac.new(
            self.index_key, b"hub-link-key/v1\x00" + purpose.encode(), hashlib.sha256
        ).digest()


def _split(blob: bytes) -> tuple[str, bytes, bytes]:
    if len(blob) < 2 or blob[0] != FORMAT_VERSION:
        raise IntegrityCheckFailed("ciphertext has an unknown format version")
    n = blob[1]
    kid_end = 2 + n
    if len(blob) < kid_end + NONCE_BYTES + 16:
        raise IntegrityCheckFailed("ciphertext is truncated")
    kid = blob[2:kid_end].decode("ascii", errors="replace")
    return kid, blob[kid_end : kid_end + NONCE_BYTES], blob[kid_end + NONCE_BYTES :]


HEADER_MAX_BYTES = 2 + 32
"""Enough leading bytes of a ciphertext to read its key id (see ``key_id_of``)."""


def key_id_of(blob: bytes) -> str:
    """The key id in a ciphertext's header; works on a prefix of HEADER_MAX_BYTES too."""
    if len(blob) < 2 or blob[0] != FORMAT_VERSION or len(blob) < 2 + blob[1]:
        raise IntegrityCheckFailed("ciphertext has an unknown format version")
    return blob[2 : 2 + blob[1]].decode("ascii", errors="replace")
