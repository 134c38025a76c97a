"""simulate.shared_model: the fleet's turbines verify and decode one model payload once; a
payload that fails verification fails for every turbine that receives it."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_node.node import read_model
from simulate.shared_model import SharedModelReader
from wire.envelope import seal
from wire.errors import RejectedMessage, RejectReason
from wire.messages import ModelRelease, model_envelope

SHAPES = {"0.weight": (4, 3), "0.bias": (4,)}
CLOUD_KEY = Ed25519PrivateKey.generate()


def _payload(version: int, key: Ed25519PrivateKey = CLOUD_KEY) -> bytes:
    weights = {name: np.full(shape, float(version), np.float32) for name, shape in SHAPES.items()}
    return seal(model_envelope(ModelRelease(version, version, version - 1, weights), "cloud", 1_763_900_000.0), key)


class CountingReader:
    def __init__(self) -> None:
        self.calls = 0
        self._read = functools.partial(
            read_model, max_bytes=1 << 20, keys=lambda _: CLOUD_KEY.public_key(), shapes=SHAPES
        )

    def __call__(self, payload: bytes) -> ModelRelease:
        self.calls += 1
        return self._read(payload)


def test_each_distinct_payload_is_verified_once_and_shared_read_only() -> None:
    inner = CountingReader()
    shared = SharedModelReader(inner)
    first = [shared(bytes(_payload(1))) for _ in range(3)]  # each turbine its own copy of the bytes
    assert inner.calls == 1
    assert all(release is first[0] for release in first)
    assert first[0].version == 1 and float(first[0].weights["0.bias"][0]) == 1.0
    with pytest.raises(ValueError, match="read-only"):
        first[0].weights["0.weight"][0, 0] = 5.0
    assert shared(_payload(2)).version == 2
    assert inner.calls == 2


def test_a_payload_that_fails_is_not_remembered() -> None:
    inner = CountingReader()
    shared = SharedModelReader(inner)
    forged = _payload(3, key=Ed25519PrivateKey.generate())
    for _ in range(2):
        with pytest.raises(RejectedMessage) as refused:
            shared(forged)
        assert refused.value.reason is RejectReason.BAD_SIGNATURE
    assert inner.calls == 2
    assert shared(_payload(3)).version == 3
