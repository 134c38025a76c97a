"""wire.codec: tensor bodies round-trip within each codec's error bound, and decoding refuses
everything that does not match the expected tensors, always with a RejectedMessage."""

from __future__ import annotations

import contextlib
import struct
import tracemalloc

import msgpack
import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from learning.model import AutoencoderShape, weight_shapes
from wire.codec import CODECS, _int8_per_tensor, decode_arrays, encode_arrays
from wire.errors import EncodeError, RejectedMessage, RejectReason

SHAPES: dict[str, tuple[int, ...]] = {"0.weight": (3, 4), "0.bias": (3,), "2.weight": (2, 3)}
TOTAL_VALUES = sum(int(np.prod(shape)) for shape in SHAPES.values())


def _tensors(elements: st.SearchStrategy[float]) -> st.SearchStrategy[dict[str, np.ndarray]]:
    # Built as a tuple then keyed in SHAPES order: the codec's contract includes tensor order.
    return st.tuples(*(hnp.arrays(np.float32, shape, elements=elements) for shape in SHAPES.values())).map(
        lambda arrays: dict(zip(SHAPES, arrays, strict=True))
    )


def _random_tensors(seed: int = 0, scale: float = 0.05) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * scale).astype(np.float32) for name, shape in SHAPES.items()}


def _body(data: bytes, codec: str = "fp32-zstd", scale: object = 1.0) -> dict[str, object]:
    """A hand-made body whose metadata matches SHAPES, carrying arbitrary `data`."""
    return {
        "codec": codec,
        "tensors": [[name, list(shape), scale] for name, shape in SHAPES.items()],
        "data": data,
    }


def _zstd(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(raw)


def _frame_declaring(content_size: int) -> bytes:
    """A 16-byte zstd frame whose header claims `content_size` bytes and holds none."""
    single_segment_8_byte_size = bytes([0b1110_0000])
    last_raw_block_of_0_bytes = b"\x01\x00\x00"
    return (
        b"\x28\xb5\x2f\xfd" + single_segment_8_byte_size + struct.pack("<Q", content_size) + last_raw_block_of_0_bytes
    )


def _reason(body: object) -> RejectReason:
    with pytest.raises(RejectedMessage) as refused:
        decode_arrays(body, SHAPES)
    return refused.value.reason


# -- round trips ---------------------------------------------------------------------------


@settings(max_examples=150)
@given(_tensors(st.floats(-1e6, 1e6, width=32, allow_subnormal=False)))
def test_int8_round_trip_error_is_at_most_half_a_quantization_step(arrays: dict[str, np.ndarray]) -> None:
    body = encode_arrays(arrays, "int8-zstd")

    decoded = decode_arrays(body, SHAPES)

    for name, original in arrays.items():
        max_abs = float(np.abs(original).max())
        scale = max_abs / 127
        # scale/2 from rounding, plus a few float32 ulps of the largest value for the arithmetic.
        tolerance = scale / 2 + 3 * float(np.spacing(np.float32(max_abs)))
        error = np.abs(decoded[name].astype(np.float64) - original.astype(np.float64))
        assert error.max() <= tolerance, name


@settings(max_examples=150)
@given(_tensors(st.floats(width=32, allow_nan=False, allow_infinity=False)))
def test_fp32_round_trip_is_bit_exact(arrays: dict[str, np.ndarray]) -> None:
    body = encode_arrays(arrays, "fp32-zstd")

    decoded = decode_arrays(body, SHAPES)

    assert list(decoded) == list(arrays)
    for name, original in arrays.items():
        assert decoded[name].dtype == np.float32
        assert decoded[name].shape == original.shape
        assert np.array_equal(decoded[name].view(np.uint32), original.view(np.uint32)), name


@pytest.mark.parametrize("codec", CODECS)
def test_all_zero_tensors_round_trip_to_zeros(codec: str) -> None:
    zeros = {name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()}

    decoded = decode_arrays(encode_arrays(zeros, codec), SHAPES)

    for name, shape in SHAPES.items():
        assert decoded[name].shape == shape
        assert not decoded[name].any()


def test_int8_body_records_each_tensors_scale_as_max_abs_over_127() -> None:
    arrays = _random_tensors()

    body = encode_arrays(arrays, "int8-zstd")

    assert [entry[0] for entry in body["tensors"]] == list(SHAPES)
    for (name, shape, scale), original in zip(body["tensors"], arrays.values(), strict=True):
        assert tuple(shape) == SHAPES[name]
        assert scale == pytest.approx(float(np.abs(original).max()) / 127, rel=1e-6)


def test_int8_body_of_the_default_model_is_at_most_a_third_of_the_fp32_bytes() -> None:
    shapes = weight_shapes(AutoencoderShape())
    rng = np.random.default_rng(7)
    model = {name: (rng.standard_normal(shape) * 0.01).astype(np.float32) for name, shape in shapes.items()}
    fp32_raw_bytes = 4 * sum(array.size for array in model.values())

    wire_bytes = len(msgpack.packb(encode_arrays(model, "int8-zstd"), use_bin_type=True))

    assert wire_bytes <= fp32_raw_bytes / 3


def test_int8_tensor_too_small_for_a_float32_scale_is_sent_as_zeros_without_warnings() -> None:
    tiny = np.float32(1e-44)  # max/127 underflows to 0 in float32, the precision of decoding
    arrays = {name: np.full(shape, tiny, np.float32) for name, shape in SHAPES.items()}

    decoded = decode_arrays(encode_arrays(arrays, "int8-zstd"), SHAPES)

    for name in SHAPES:
        assert not decoded[name].any()


# -- encode refusals -------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_encode_refuses_non_finite_values(codec: str, bad: float) -> None:
    arrays = _random_tensors()
    arrays["0.bias"][1] = bad

    with pytest.raises(EncodeError, match=r"0\.bias"):
        encode_arrays(arrays, codec)


def test_encode_refuses_an_unknown_codec() -> None:
    with pytest.raises(EncodeError, match="unknown codec"):
        encode_arrays(_random_tensors(), "int4-lz4")  # type: ignore[arg-type]


# -- decode refusals -------------------------------------------------------------------------


def test_decode_refuses_tensors_in_another_order() -> None:
    arrays = _random_tensors()
    reordered = {name: arrays[name] for name in reversed(list(arrays))}

    assert _reason(encode_arrays(reordered, "fp32-zstd")) is RejectReason.SHAPE_MISMATCH


def test_decode_refuses_a_renamed_tensor() -> None:
    arrays = _random_tensors()
    arrays["1.weight"] = arrays.pop("2.weight")

    assert _reason(encode_arrays(arrays, "fp32-zstd")) is RejectReason.SHAPE_MISMATCH


def test_decode_refuses_a_missing_tensor() -> None:
    arrays = _random_tensors()
    del arrays["2.weight"]

    assert _reason(encode_arrays(arrays, "int8-zstd")) is RejectReason.SHAPE_MISMATCH


@pytest.mark.parametrize("codec", CODECS)
def test_decode_refuses_a_transposed_shape_with_the_same_number_of_values(codec: str) -> None:
    arrays = _random_tensors()
    arrays["0.weight"] = arrays["0.weight"].T.copy()

    assert _reason(encode_arrays(arrays, codec)) is RejectReason.SHAPE_MISMATCH


@pytest.mark.parametrize("codec", CODECS)
def test_decode_refuses_truncated_data(codec: str) -> None:
    body = encode_arrays(_random_tensors(), codec)
    body["data"] = body["data"][: len(body["data"]) // 2]

    assert _reason(body) in {RejectReason.MALFORMED, RejectReason.SHAPE_MISMATCH}


def test_decode_refuses_data_that_is_not_zstd() -> None:
    assert _reason(_body(b"definitely not a zstd frame")) is RejectReason.MALFORMED


def test_decode_refuses_zstd_data_shorter_than_the_tensors() -> None:
    assert _reason(_body(_zstd(b"\0" * (4 * TOTAL_VALUES - 4)))) is RejectReason.SHAPE_MISMATCH


def test_decode_refuses_a_bomb_whose_header_declares_its_size() -> None:
    bomb = _zstd(b"\0" * 4_000_000)

    assert _reason(_body(bomb)) in {RejectReason.MALFORMED, RejectReason.SHAPE_MISMATCH}


def test_decode_refuses_a_streamed_bomb_without_a_declared_size() -> None:
    compressor = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    bomb = compressor.compress(b"\0" * 4_000_000) + compressor.flush()

    assert _reason(_body(bomb)) in {RejectReason.MALFORMED, RejectReason.SHAPE_MISMATCH}


def test_decode_allocates_no_more_than_the_expected_size_for_a_lying_frame_header() -> None:
    lying_frame = _frame_declaring(64 * 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(RejectedMessage):
            decode_arrays(_body(lying_frame), SHAPES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 1024 * 1024


def test_decode_refuses_a_frame_declaring_an_impossible_size() -> None:
    assert _reason(_body(_frame_declaring(2**62))) in {RejectReason.MALFORMED, RejectReason.SHAPE_MISMATCH}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_decode_refuses_non_finite_fp32_values(bad: float) -> None:
    values = np.zeros(TOTAL_VALUES, "<f4")
    values[5] = bad

    assert _reason(_body(_zstd(values.tobytes()))) is RejectReason.NON_FINITE


def test_an_integer_scale_decodes_as_the_same_float_scale() -> None:
    # encode_arrays writes floats; another msgpack writer may write 2 as an integer.
    data = _zstd(bytes(range(1, TOTAL_VALUES + 1)))

    as_int = decode_arrays(_body(data, codec="int8-zstd", scale=2), SHAPES)
    as_float = decode_arrays(_body(data, codec="int8-zstd", scale=2.0), SHAPES)

    for name in SHAPES:
        np.testing.assert_array_equal(as_int[name], as_float[name])
    assert as_int["0.weight"].ravel().tolist()[:3] == [2.0, 4.0, 6.0]


@pytest.mark.parametrize("scale", [-0.5, float("nan"), float("inf")])
def test_decode_refuses_an_unusable_int8_scale(scale: object) -> None:
    body = _body(_zstd(b"\1" * TOTAL_VALUES), codec="int8-zstd", scale=scale)

    assert _reason(body) is RejectReason.NON_FINITE


@pytest.mark.parametrize("scale", ["0.1", None, True])
def test_decode_refuses_a_scale_that_is_not_a_number_as_malformed(scale: object) -> None:
    body = _body(_zstd(b"\1" * TOTAL_VALUES), codec="int8-zstd", scale=scale)

    assert _reason(body) is RejectReason.MALFORMED


def test_decode_refuses_an_int8_scale_that_overflows_float32() -> None:
    body = _body(_zstd(b"\1" * TOTAL_VALUES), codec="int8-zstd", scale=1e39)

    assert _reason(body) is RejectReason.NON_FINITE


@pytest.mark.parametrize("scale", [1e38, 3.4e38])
def test_decode_refuses_a_float32_scale_whose_products_overflow_without_a_warning(scale: float) -> None:
    # Found by tests/wire/test_decoder_fuzz.py: the scale itself is a finite float32, but 127 x
    # scale is not; numpy's overflow RuntimeWarning escaped (an exception where warnings are errors).
    body = _body(_zstd(b"\x7f" * TOTAL_VALUES), codec="int8-zstd", scale=scale)

    assert _reason(body) is RejectReason.NON_FINITE


def test_decode_refuses_a_shape_that_is_not_a_list() -> None:
    body = _body(_zstd(b"\0" * 4 * TOTAL_VALUES))
    body["tensors"][0][1] = 12

    assert _reason(body) in {RejectReason.MALFORMED, RejectReason.SHAPE_MISMATCH}


@pytest.mark.parametrize(
    "body",
    [
        None,
        [1, 2, 3],
        {"codec": "gzip", "tensors": [], "data": b""},
        {"codec": "fp32-zstd", "tensors": "0.weight", "data": b""},
        {"codec": "fp32-zstd", "tensors": [], "data": "text, not bytes"},
        {"codec": "fp32-zstd", "data": b""},
    ],
    ids=["none", "list", "unknown-codec", "tensors-not-list", "data-not-bytes", "no-tensors"],
)
def test_decode_refuses_a_body_of_the_wrong_structure_as_malformed(body: object) -> None:
    assert _reason(body) is RejectReason.MALFORMED


_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=24)
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_GARBAGE_BODIES = _VALUES | st.fixed_dictionaries(
    {
        "codec": st.sampled_from([*CODECS, "zstd"]),
        "tensors": st.one_of(
            _VALUES,
            st.lists(st.lists(_VALUES, max_size=4), max_size=4),
            st.just([[name, list(shape), 1.0] for name, shape in SHAPES.items()]),
        ),
        "data": st.binary(max_size=256) | st.builds(_zstd, st.binary(max_size=4 * TOTAL_VALUES + 8)),
    }
)


@settings(max_examples=200)
@given(_GARBAGE_BODIES)
def test_decode_of_garbage_raises_only_rejected_message(body: object) -> None:
    with contextlib.suppress(RejectedMessage):
        decode_arrays(body, SHAPES)


def _int8_of_one_tensor(values: np.ndarray) -> tuple[np.ndarray, float]:
    """The quantization spelled out for one tensor, as the codec once did it tensor by tensor."""
    scale = float(np.abs(values).max(initial=0.0)) / 127.0
    if np.float32(scale) == 0:
        return np.zeros(values.shape, np.int8), 0.0
    return np.clip(np.rint(values / np.float32(scale)), -127, 127).astype(np.int8), scale


@pytest.mark.parametrize("seed", range(20))
def test_int8_of_all_tensors_at_once_is_int8_of_each_tensor(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tensors = [(rng.standard_normal(size) * 10.0 ** rng.integers(-46, 3)).astype(np.float32) for size in (7, 0, 33, 1)]
    tensors[seed % 4][:] = 0.0  # an all-zero tensor, and (seed 1) an empty one, among them
    quantized, scales = _int8_per_tensor(np.concatenate(tensors), [t.size for t in tensors])

    expected = [_int8_of_one_tensor(t) for t in tensors]
    np.testing.assert_array_equal(quantized, np.concatenate([values for values, _ in expected]))
    assert scales == [scale for _, scale in expected]
