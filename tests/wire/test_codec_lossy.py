"""wire.codec's smaller update codecs: fp16-zstd round-trips within half precision, and
topk-int8-zstd sends exactly the largest values (dense zeros elsewhere), its bitmap checked."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from learning.model import AutoencoderShape, weight_shapes
from wire.codec import decode_arrays, encode_arrays, topk_count
from wire.errors import EncodeError, RejectedMessage, RejectReason

SHAPES: dict[str, tuple[int, ...]] = {"0.weight": (3, 4), "0.bias": (3,), "2.weight": (2, 3)}


def _random(seed: int = 0, scale: float = 0.05) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * scale).astype(np.float32) for name, shape in SHAPES.items()}


@settings(max_examples=100)
@given(st.integers(0, 2**32 - 1), st.floats(1e-4, 1e3))
def test_fp16_round_trip_is_within_half_precision(seed: int, scale: float) -> None:
    arrays = _random(seed, scale)

    decoded = decode_arrays(encode_arrays(arrays, "fp16-zstd"), SHAPES, "fp16-zstd")

    for name, original in arrays.items():
        np.testing.assert_allclose(decoded[name], original, rtol=2**-11, atol=6e-8)


def test_fp16_refuses_to_encode_values_beyond_its_range() -> None:
    arrays = _random()
    arrays["0.bias"][0] = 1e6

    with pytest.raises(EncodeError, match="float16"):
        encode_arrays(arrays, "fp16-zstd")


@settings(max_examples=100)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1 / 27, 0.1, 0.5, 1.0]))
def test_topk_keeps_exactly_the_largest_values_within_an_int8_step(seed: int, fraction: float) -> None:
    arrays = _random(seed)
    flat = np.concatenate([a.ravel() for a in arrays.values()])
    kept = topk_count(flat.size, fraction)

    decoded = decode_arrays(encode_arrays(arrays, "topk-int8-zstd", topk_fraction=fraction), SHAPES)

    out = np.concatenate([decoded[name].ravel() for name in SHAPES])
    largest = np.argsort(-np.abs(flat), kind="stable")[:kept]
    assert np.count_nonzero(out) <= kept
    assert set(np.flatnonzero(out)) <= set(largest.tolist())
    for name, original in arrays.items():
        sent = decoded[name] != 0
        step = np.abs(original[sent]).max(initial=0) / 127
        np.testing.assert_allclose(decoded[name][sent], original[sent], atol=step / 2 + 1e-7)


def test_topk_of_the_default_model_at_one_in_32_is_a_tenth_of_the_int8_bytes() -> None:
    rng = np.random.default_rng(1)
    shapes = weight_shapes(AutoencoderShape())
    delta = {name: (rng.standard_normal(shape) * 0.01).astype(np.float32) for name, shape in shapes.items()}

    topk = encode_arrays(delta, "topk-int8-zstd", topk_fraction=1 / 32)
    int8 = encode_arrays(delta, "int8-zstd")

    assert len(topk["data"]) < len(int8["data"]) / 8


def test_topk_refuses_a_fraction_outside_zero_to_one() -> None:
    with pytest.raises(EncodeError):
        encode_arrays(_random(), "topk-int8-zstd", topk_fraction=0.0)


def _topk_body(fraction: float = 0.5) -> dict[str, object]:
    return encode_arrays(_random(), "topk-int8-zstd", topk_fraction=fraction)


def _replace_data(body: dict[str, object], raw: bytes) -> dict[str, object]:
    return {**body, "data": zstandard.ZstdCompressor().compress(raw)}


def test_topk_decode_refuses_a_bitmap_that_disagrees_with_the_count() -> None:
    body = _topk_body()
    raw = bytearray(zstandard.ZstdDecompressor().decompress(body["data"]))  # type: ignore[arg-type]
    raw[0] ^= 0x01  # one position more or fewer in the first tensor's bitmap

    with pytest.raises(RejectedMessage) as refused:
        decode_arrays(_replace_data(body, bytes(raw)), SHAPES)

    assert refused.value.reason is RejectReason.MALFORMED


def test_topk_decode_refuses_bits_set_in_a_bitmaps_padding() -> None:
    body = _topk_body()
    raw = bytearray(zstandard.ZstdDecompressor().decompress(body["data"]))  # type: ignore[arg-type]
    raw[1] |= 0x80  # "0.weight" has 12 values: bits 12..15 of its 2-byte bitmap are padding

    with pytest.raises(RejectedMessage) as refused:
        decode_arrays(_replace_data(body, bytes(raw)), SHAPES)

    assert refused.value.reason is RejectReason.MALFORMED


@pytest.mark.parametrize("count", [-1, 13, 1.5, True, "3"])
def test_topk_decode_refuses_an_impossible_count(count: object) -> None:
    body = _topk_body()
    tensors = [list(entry) for entry in body["tensors"]]  # type: ignore[union-attr]
    tensors[0][3] = count

    with pytest.raises(RejectedMessage) as refused:
        decode_arrays({**body, "tensors": tensors}, SHAPES)

    assert refused.value.reason is RejectReason.MALFORMED


def test_topk_decode_refuses_dense_three_entry_metadata() -> None:
    body = _topk_body()
    tensors = [list(entry)[:3] for entry in body["tensors"]]  # type: ignore[union-attr]

    with pytest.raises(RejectedMessage) as refused:
        decode_arrays({**body, "tensors": tensors}, SHAPES)

    assert refused.value.reason is RejectReason.MALFORMED
