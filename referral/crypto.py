"""Field encryption and the blind index.

AES-256-GCM with a fresh 96-bit nonce per value. The associated data binds a ciphertext to
its table, column, row and key version, so a ciphertext copied to another row or column
does not decrypt. A key ring holds every key version still needed; new values use the
newest. The blind index is an HMAC of normalised identity (names, date of birth): equal for
spelling variants of the same person, meaningless without the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import date

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class CryptoError(Exception):
    """A value cannot be decrypted: wrong key, wrong place, or tampered."""


class KeyRingError(ValueError):
    """The configured key ring is malformed."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _b64decode(text: str) -> bytes:
    # base64.urlsafe_b64decode, without its wrappers: half the time, the same answers
    return binascii.a2b_base64(
        (text + "=" * (-len(text) % 4)).encode("ascii").translate(_FROM_URLSAFE)
    )


def generate_key_entry(version: int = 1) -> str:
    return f"{version}:{_b64encode(os.urandom(KEY_BYTES))}"


@dataclass(frozen=True)
class KeyRing:
    keys: dict[int, bytes]
    # one cipher per key version, made once: making one per value was two thirds of a
    # decryption, and a list page decrypts a hundred names
    _ciphers: dict[int, AESGCM] = field(init=False, repr=False, compare=False)
    # the same, by the prefix a ciphertext starts with ("v1"): one lookup finds both
    _by_prefix: dict[str, tuple[int, AESGCM]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ciphers = {v: AESGCM(k) for v, k in self.keys.items()}
        object.__setattr__(self, "_ciphers", ciphers)
        object.__setattr__(self, "_by_prefix", {f"v{v}": (v, c) for v, c in ciphers.items()})

    @property
    def current(self) -> int:
        return max(self.keys)

    @classmethod
    def parse(cls, value: str) -> KeyRing:
        """`1:<base64 key>,2:<base64 key>`; the highest version encrypts new values."""
        keys: dict[int, bytes] = {}
        for entry in filter(None, (part.strip() for part in value.split(","))):
            version_text, _, key_text = entry.partition(":")
            try:
                version = int(version_text)
                key = _b64decode(key_text)
            except (ValueError, binascii.Error) as exc:
                raise KeyRingError("each key is `<version>:<base64 of 32 bytes>`") from exc
            if version < 1 or len(key) != KEY_BYTES or version in keys:
                raise KeyRingError(
                    f"key version {version_text}: needs a unique version >= 1 and 32 bytes"
                )
            keys[version] = key
        if not keys:
            raise KeyRingError("the key ring is empty")
        return cls(keys)

    @staticmethod
    def _aad(table: str, column: str, row_id: uuid.UUID | str, version: int) -> bytes:
        return f"{table}|{column}|{row_id}|v{version}".encode()

    def encrypt(self, plaintext: str, *, table: str, column: str, row_id: uuid.UUID | str) -> str:
        version = self.current
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[version].encrypt(
            nonce, plaintext.encode(), self._aad(table, column, row_id, version)
        )
        return f"v{version}.{_b64encode(nonce + sealed)}"

    def decrypt(self, token: str, *, table: str, column: str, row_id: uuid.UUID | str) -> str:
        prefix, _, body = token.partition(".")
        found = self._by_prefix.get(prefix)
        if found is None:
            version = self.version_of(token)  # refuses what is not a ciphertext at all
            raise CryptoError(f"key version {version} is not in the key ring")
        version, cipher = found
        try:
            raw = _b64decode(body)
            plain = cipher.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._aad(table, column, row_id, version)
            )
        except (InvalidTag, ValueError, binascii.Error) as exc:
            raise CryptoError(f"{table}.{column} of {row_id} does not decrypt") from exc
        return plain.decode()

    @staticmethod
    def version_of(token: str) -> int:
        prefix, _, _ = token.partition(".")
        if not prefix.startswith("v") or not prefix[1:].isdigit():
            raise CryptoError("not a ciphertext of this key ring")
        return int(prefix[1:])


def normalise_name(*parts: str) -> str:
    """Case, accents, punctuation, spacing and word order do not matter."""
    text = unicodedata.normalize("NFKD", " ".join(parts))
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = "".join(c if c.isalnum() else " " for c in text)
    return " ".join(sorted(text.split()))


def blind_index(key: bytes, *, given_name: str, family_name: str, date_of_birth: date) -> str:
    message = f"{normalise_name(given_name, family_name)}|{date_of_birth.isoformat()}"
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def derive_key(secret: str, purpose: str) -> bytes:
    """A purpose-specific 32-byte key from a configured secret string."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).digest()


def seal_field(ring: KeyRing, obj: object, field: str, value: str | None) -> None:
    """Encrypt `value` into `obj.<field>_enc`, bound to the object's table, field and id."""
    sealed = sealed_columns(ring, obj.__tablename__, obj.id, **{field: value})  # type: ignore[attr-defined]
    setattr(obj, f"{field}_enc", sealed[f"{field}_enc"])


def sealed_columns(
    ring: KeyRing, table: str, row_id: uuid.UUID, /, **values: str | None
) -> dict[str, str | None]:
    """`{"<field>_enc": ciphertext}` for each field of a row about to be inserted, each
    bound to the table, field and row id, as `seal_field` does for a loaded object."""
    return {
        f"{field}_enc": None
        if value is None
        else ring.encrypt(value, table=table, column=field, row_id=row_id)
        for field, value in values.items()
    }


def open_field(ring: KeyRing, obj: object, field: str) -> str | None:
    token = getattr(obj, f"{field}_enc")
    if not token:  # never set, or purged
        return None
    return ring.decrypt(token, table=obj.__tablename__, column=field, row_id=obj.id)  # type: ignore[attr-defined]
