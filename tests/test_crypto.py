from __future__ import annotations

import uuid

import pytest

from hub.contact import InvalidContact, normalize_email, normalize_phone
from hub.crypto import (
    IntegrityCheckFailed,
    KeyRing,
    KeyRingError,
    UnknownKey,
    associated_data,
    key_id_of,
)


def test_round_trip_and_key_id_in_ciphertext(ring: KeyRing) -> None:
    aad = associated_data("inbox_message", "body_enc", uuid.uuid4())
    blob = ring.encrypt_text("chest pain since Tuesday", aad)
    assert b"chest" not in blob
    assert key_id_of(blob) == "t1"
    assert ring.decrypt_text(blob, aad) == "chest pain since Tuesday"


def test_same_plaintext_encrypts_differently(ring: KeyRing) -> None:
    aad = associated_data("inbox_patient", "name_enc", uuid.uuid4())
    assert ring.encrypt_text("Avery", aad) != ring.encrypt_text("Avery", aad)


@pytest.mark.parametrize(
    "other_aad",
    [
        associated_data("inbox_patient", "name_enc", "other-row"),
        associated_data("inbox_patient", "phone_enc", "row-1"),
        associated_data("inbox_message", "name_enc", "row-1"),
    ],
    ids=["other row", "other column", "other table"],
)
def test_ciphertext_is_bound_to_table_column_row(ring: KeyRing, other_aad: bytes) -> None:
    blob = ring.encrypt_text("Avery Sample", associated_data("inbox_patient", "name_enc", "row-1"))
    with pytest.raises(IntegrityCheckFailed, match="integrity check"):
        ring.decrypt(blob, other_aad)


def test_flipped_bit_fails_integrity(ring: KeyRing) -> None:
    aad = associated_data("t", "c", 1)
    blob = bytearray(ring.encrypt_text("x", aad))
    blob[-1] ^= 1
    with pytest.raises(IntegrityCheckFailed):
        ring.decrypt(bytes(blob), aad)


def test_old_keys_still_decrypt_and_removed_key_is_named(ring: KeyRing) -> None:
    aad = associated_data("t", "c", 1)
    old_blob = ring.encrypt_text("x", aad)
    newer = ring.with_new_key("t2")
    assert newer.active_id == "t2"
    assert newer.decrypt_text(old_blob, aad) == "x"
    assert key_id_of(newer.encrypt_text("x", aad)) == "t2"
    with pytest.raises(UnknownKey, match="'t1'"):
        newer.without("t1").decrypt(old_blob, aad)


def test_parse_round_trip_keeps_active_first() -> None:
    ring = KeyRing.generate("a").with_new_key("b")
    again = KeyRing.parse(ring.to_spec())
    assert again.active_id == "b"
    assert list(again.keys) == ["b", "a"]
    assert again.index_key == ring.index_key


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("nonsense", "entry 1 is not of the form"),
        ("index:" + "A" * 43, "no encryption key"),
        ("k1:" + "B" * 43, "no 'index:' entry"),
        ("index:" + "A" * 43 + ",k1:c2hvcnQ", "decodes to 5 bytes"),
        ("index:" + "A" * 43 + ",k1:!!!", "not valid base64"),
    ],
)
def test_malformed_spec_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(KeyRingError, match=message):
        KeyRing.parse(spec)


def test_repr_never_shows_key_material(ring: KeyRing) -> None:
    assert ring.to_spec().split(",")[1].split(":")[1] not in repr(ring)


@pytest.mark.parametrize(
    "spelling",
    [
        "+1 (555) 123-4567",
        "+15551234567",
        "1-555-123-4567",
        "(555) 123-4567",
        "555.123.4567",
        "+1 555 123 4567",
        " 5551234567 ",
    ],
)
def test_every_spelling_of_a_number_has_one_blind_index(ring: KeyRing, spelling: str) -> None:
    assert normalize_phone(spelling, "US") == "+15551234567"
    assert ring.blind_index("phone", normalize_phone(spelling)) == ring.blind_index(
        "phone", "+15551234567"
    )


def test_blind_index_separates_kinds_and_keys(ring: KeyRing) -> None:
    assert ring.blind_index("phone", "x") != ring.blind_index("email", "x")
    assert ring.blind_index("phone", "x") != KeyRing.generate().blind_index("phone", "x")


def test_email_normalisation() -> None:
    assert normalize_email("  Avery.Sample@Example.ORG ") == "avery.sample@example.org"
    for bad in ["no-at-sign", "a@nodot", "two@@example.org", "sp ace@example.org"]:
        with pytest.raises(InvalidContact):
            normalize_email(bad)


def test_impossible_phone_is_refused() -> None:
    with pytest.raises(InvalidContact):
        normalize_phone("12", "US")
    with pytest.raises(InvalidContact):
        normalize_phone("call me", "US")
