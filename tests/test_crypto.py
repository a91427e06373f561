"""Unit tests of the pure crypto rules: AES-GCM binding, key ring rotation, blind index."""

from __future__ import annotations

import base64
import uuid
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from referral.crypto import (
    CryptoError,
    KeyRing,
    KeyRingError,
    _b64decode,
    blind_index,
    generate_key_entry,
    normalise_name,
)

ROW = uuid.uuid4()


def _ring(*entries: str) -> KeyRing:
    return KeyRing.parse(",".join(entries))


def test_round_trip_and_no_plaintext_in_the_ciphertext():
    ring = _ring(generate_key_entry(1))
    token = ring.encrypt("Synthetic Person", table="case_file", column="given_name", row_id=ROW)
    assert "Synthetic" not in token
    assert token.startswith("v1.")
    assert ring.decrypt(token, table="case_file", column="given_name", row_id=ROW) == (
        "Synthetic Person"
    )


def test_same_value_encrypts_differently_each_time():
    ring = _ring(generate_key_entry(1))
    a = ring.encrypt("x", table="t", column="c", row_id=ROW)
    assert a != ring.encrypt("x", table="t", column="c", row_id=ROW)


@pytest.mark.parametrize(
    "elsewhere",
    [
        {"table": "other_table", "column": "given_name", "row_id": ROW},
        {"table": "case_file", "column": "family_name", "row_id": ROW},
        {"table": "case_file", "column": "given_name", "row_id": uuid.uuid4()},
    ],
)
def test_a_ciphertext_moved_to_another_place_does_not_decrypt(elsewhere):
    ring = _ring(generate_key_entry(1))
    token = ring.encrypt("secret", table="case_file", column="given_name", row_id=ROW)
    with pytest.raises(CryptoError):
        ring.decrypt(token, **elsewhere)


@given(st.binary(max_size=200))
def test_the_base64_decoder_answers_as_the_standard_librarys(raw):
    text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert _b64decode(text) == raw


@pytest.mark.parametrize("text", ["a", "ab$c", "é", "abcde"])
def test_the_base64_decoder_refuses_what_the_standard_library_refuses(text):
    with pytest.raises(ValueError, match=r"."):
        base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    with pytest.raises(ValueError, match=r"."):
        _b64decode(text)


@pytest.mark.parametrize("prefix", ["v2", "v01", "x1", "", "v"])
def test_a_ciphertext_of_no_key_in_the_ring_does_not_decrypt(prefix):
    ring = _ring(generate_key_entry(1))
    token = ring.encrypt("Sintetik", table="case_file", column="given_name", row_id=ROW)
    forged = prefix + token[token.index(".") :]
    with pytest.raises(CryptoError):
        ring.decrypt(forged, table="case_file", column="given_name", row_id=ROW)


def test_tampering_is_detected():
    ring = _ring(generate_key_entry(1))
    token = ring.encrypt("secret", table="t", column="c", row_id=ROW)
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(CryptoError):
        ring.decrypt(flipped, table="t", column="c", row_id=ROW)
    relabelled = "v2" + token[2:]
    with pytest.raises(CryptoError):
        _ring(generate_key_entry(1), generate_key_entry(2)).decrypt(
            relabelled, table="t", column="c", row_id=ROW
        )


def test_rotation_newest_key_encrypts_old_keys_still_decrypt():
    v1 = generate_key_entry(1)
    v2 = generate_key_entry(2)
    old = _ring(v1).encrypt("value", table="t", column="c", row_id=ROW)
    both = _ring(v1, v2)
    assert both.current == 2
    assert both.decrypt(old, table="t", column="c", row_id=ROW) == "value"
    new = both.encrypt("value", table="t", column="c", row_id=ROW)
    assert new.startswith("v2.")
    with pytest.raises(CryptoError):
        _ring(v2).decrypt(old, table="t", column="c", row_id=ROW)


@pytest.mark.parametrize(
    "value",
    ["", "1:short", "x:" + "A" * 43, "0:" + "A" * 43, "1:" + "A" * 43 + ",1:" + "B" * 43],
)
def test_malformed_key_rings_are_refused(value):
    with pytest.raises(KeyRingError):
        KeyRing.parse(value)


KEY = b"k" * 32
DOB = date(2009, 3, 14)


@pytest.mark.parametrize(
    ("given", "family"),
    [
        ("Provë", "Shembulli"),
        ("prove", "SHEMBULLI"),
        ("  Prove ", "Shembulli  "),
        ("Shembulli", "Provë"),
        ("PROVË", "shembulli"),
    ],
)
def test_blind_index_matches_spelling_variants_of_the_same_person(given, family):
    reference = blind_index(KEY, given_name="Provë", family_name="Shembulli", date_of_birth=DOB)
    assert blind_index(KEY, given_name=given, family_name=family, date_of_birth=DOB) == reference


def test_blind_index_separates_different_people_and_keys():
    reference = blind_index(KEY, given_name="Provë", family_name="Shembulli", date_of_birth=DOB)
    assert blind_index(KEY, given_name="Testa", family_name="Shembulli", date_of_birth=DOB) != (
        reference
    )
    assert (
        blind_index(
            KEY, given_name="Provë", family_name="Shembulli", date_of_birth=date(2009, 3, 15)
        )
        != reference
    )
    assert (
        blind_index(b"o" * 32, given_name="Provë", family_name="Shembulli", date_of_birth=DOB)
        != reference
    )


def test_normalise_name():
    assert normalise_name(" Çelë  Ëmë ") == "cele eme"
