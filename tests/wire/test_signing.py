"""wire.signing.signature_is_valid (libsodium) agrees with `cryptography`, which signs: what one
accepts the other accepts, and any change of message, signature or key is refused."""

from __future__ import annotations

import os

import pytest
from cryptography.exceptions import InvalidSignature

from wire.signing import generate_key, signature_is_valid

KEY = generate_key()
OTHER = generate_key()


def _cryptography_accepts(signature: bytes, message: bytes) -> bool:
    try:
        KEY.public_key().verify(signature, message)
    except InvalidSignature:
        return False
    return True


@pytest.mark.parametrize("size", [0, 1, 64, 4_400, 100_000])
def test_a_signature_made_by_the_key_verifies(size: int) -> None:
    message = os.urandom(size)

    assert signature_is_valid(KEY.public_key(), KEY.sign(message), message)


def test_a_changed_message_signature_or_key_is_refused_as_cryptography_refuses_it() -> None:
    message = os.urandom(1_000)
    signature = KEY.sign(message)
    flipped_message = bytes([message[0] ^ 1]) + message[1:]
    flipped_signature = signature[:10] + bytes([signature[10] ^ 1]) + signature[11:]

    for candidate, text in [(signature, flipped_message), (flipped_signature, message)]:
        assert not signature_is_valid(KEY.public_key(), candidate, text)
        assert not _cryptography_accepts(candidate, text)
    assert not signature_is_valid(OTHER.public_key(), signature, message)


@pytest.mark.parametrize("length", [0, 63, 65, 128])
def test_a_signature_of_the_wrong_length_is_refused_not_raised(length: int) -> None:
    message = b"round 7"
    signature = (KEY.sign(message) * 2)[:length]

    assert not signature_is_valid(KEY.public_key(), signature, message)
