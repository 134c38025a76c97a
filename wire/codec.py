"""Array codecs for model weights and deltas: named float32 tensors ⇄ a msgpack-ready body.

- `int8-zstd`: per-tensor symmetric int8 quantization (scale = max|x| / 127), then zstd. The
  default for node updates: about a quarter of the fp32 bytes before zstd.
- `fp16-zstd`: IEEE half precision, then zstd: half the fp32 bytes, relative error 2⁻¹¹.
- `topk-int8-zstd`: only the largest-magnitude fraction of the update's values (over all its
  tensors), each tensor's chosen positions as a bitmap and their values as int8 with the
  tensor's scale (max |chosen| / 127), then zstd. Lossy by design: a node sending it keeps what
  it did not send and adds it to its next update (error feedback, `edge_node.feedback`).
- `fp32-zstd`: lossless float32, then zstd. For partial aggregates and global models, which must
  stay exact so the cloud reproduces flat FedAvg.

Decoding checks everything against the expected tensor names and shapes and refuses non-finite
values; zstd output is capped at the expected size, so a compression bomb cannot allocate more.
This module does no I/O and knows nothing about MQTT.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Any, Literal, get_args

import numpy as np
import zstandard

from wire.errors import EncodeError, RejectedMessage, RejectReason

Codec = Literal["int8-zstd", "fp32-zstd", "fp16-zstd", "topk-int8-zstd"]
CODECS: tuple[str, ...] = get_args(Codec)
Arrays = dict[str, np.ndarray]
Shapes = Mapping[str, tuple[int, ...]]

_ZSTD_LEVEL = 3  # level 3 is within a few percent of level 19 on quantized weights, 10x faster
_BYTES_PER_VALUE = {"int8-zstd": 1, "fp32-zstd": 4, "fp16-zstd": 2}
# topk-int8-zstd keeps this share of an update's values unless told otherwise: with its bitmap
# about 1/16 of the fp32 bytes for the default model (bench/codecs.py measures it).
DEFAULT_TOPK_FRACTION = 1 / 32
_FLOAT16_MAX = float(np.finfo(np.float16).max)
# zstd contexts cost more to make than to use on bodies this small: one of each per thread
# (they are not thread-safe).
_contexts = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    if not hasattr(_contexts, "compressor"):
        _contexts.compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
    compressor: zstandard.ZstdCompressor = _contexts.compressor
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_contexts, "decompressor"):
        _contexts.decompressor = zstandard.ZstdDecompressor()
    decompressor: zstandard.ZstdDecompressor = _contexts.decompressor
    return decompressor


def topk_count(total: int, fraction: float) -> int:
    """How many of `total` values a top-k update keeps: at least one."""
    if not 0 < fraction <= 1:
        raise EncodeError(f"top-k fraction must be in (0, 1], got {fraction}")
    return max(1, min(total, math.ceil(fraction * total)))


def encode_arrays(
    arrays: Mapping[str, np.ndarray], codec: Codec, *, topk_fraction: float = DEFAULT_TOPK_FRACTION
) -> dict[str, Any]:
    """Encode named tensors; the body lists names, shapes and scales (top-k: and the count of
    values kept), then the bytes. `topk_fraction` applies to `topk-int8-zstd` only."""
    if codec not in CODECS:
        raise EncodeError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")
    tensors = {name: np.asarray(array, dtype=np.float32) for name, array in arrays.items()}
    flat = np.concatenate([values.ravel() for values in tensors.values()]) if tensors else np.zeros(0, np.float32)
    if not np.isfinite(flat).all():
        name = next(name for name, values in tensors.items() if not np.isfinite(values).all())
        raise EncodeError(f"tensor {name!r} holds non-finite values")
    if codec == "topk-int8-zstd":
        return _encode_topk(tensors, flat, topk_fraction)
    scales = [1.0] * len(tensors)
    if codec == "int8-zstd":
        quantized, scales = _int8_per_tensor(flat, [values.size for values in tensors.values()])
        data = quantized.tobytes()
    elif codec == "fp16-zstd":
        if np.abs(flat).max(initial=0.0) > _FLOAT16_MAX:
            name = next(name for name, values in tensors.items() if np.abs(values).max(initial=0.0) > _FLOAT16_MAX)
            raise EncodeError(f"tensor {name!r} holds values beyond float16's range")
        data = flat.astype("<f2").tobytes()
    else:
        data = flat.astype("<f4").tobytes()
    meta = [[name, list(values.shape), scale] for (name, values), scale in zip(tensors.items(), scales, strict=True)]
    return {"codec": codec, "tensors": meta, "data": _compressor().compress(data)}


def _int8_per_tensor(flat: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, list[float]]:
    """Symmetric int8 quantization of each tensor of `flat` (the tensors' values one after
    another, `sizes` long): (values, each tensor's scale = max |x| / 127). A scale that
    underflows in float32, where decoding applies it, means values too small to matter: sent
    as zeros with scale 0. In a few whole-array operations rather than a few per tensor: every
    node update pays this, and a simulated fleet encodes ten thousand a round."""
    counts = np.asarray(sizes)
    maxima = np.zeros(len(sizes), np.float32)
    present = counts > 0
    if flat.size:
        starts = (np.cumsum(counts) - counts)[present]
        maxima[present] = np.maximum.reduceat(np.abs(flat), starts)
    scales = maxima.astype(np.float64) / 127.0
    scales32 = scales.astype(np.float32)
    zero = scales32 == 0
    scales[zero] = 0.0
    divisors = np.repeat(np.where(zero, np.float32(1), scales32), counts)
    quantized = np.clip(np.rint(flat / divisors), -127, 127).astype(np.int8)
    quantized[np.repeat(zero, counts)] = 0
    return quantized, scales.tolist()


def _encode_topk(tensors: Mapping[str, np.ndarray], flat: np.ndarray, fraction: float) -> dict[str, Any]:
    """The `k` largest |values| over every tensor (`flat`: their values one after another): per
    tensor a bitmap of the positions kept (little-endian bit order, padded with zero bits to a
    byte), then every tensor's kept values as int8, in position order."""
    keep = np.zeros(flat.size, bool)
    if flat.size:
        count = topk_count(flat.size, fraction)
        keep[np.argpartition(np.abs(flat), flat.size - count)[flat.size - count :]] = True
    masks, offset = [], 0
    for values in tensors.values():
        masks.append(keep[offset : offset + values.size])
        offset += values.size
    kept = [int(mask.sum()) for mask in masks]
    quantized, scales = _int8_per_tensor(flat[keep], kept)
    meta = [
        [name, list(values.shape), scale, count]
        for (name, values), scale, count in zip(tensors.items(), scales, kept, strict=True)
    ]
    bitmaps = b"".join(np.packbits(mask, bitorder="little").tobytes() for mask in masks)
    data = _compressor().compress(bitmaps + quantized.tobytes())
    return {"codec": "topk-int8-zstd", "tensors": meta, "data": data}


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_entry(entry: object, name: str, shape: tuple[int, ...], topk: bool) -> tuple[float, int]:
    """The tensor's scale and (top-k) count of values kept, once its metadata entry
    `[name, shape, scale]` (top-k: `[name, shape, scale, count]`) is sound."""
    length = 4 if topk else 3
    if not (isinstance(entry, list) and len(entry) == length and isinstance(entry[1], list)):
        layout = "[name, shape, scale, count]" if topk else "[name, shape, scale]"
        raise RejectedMessage(RejectReason.MALFORMED, f"tensor {name!r}: entry must be {layout}")
    if entry[1] != list(shape):
        raise RejectedMessage(RejectReason.SHAPE_MISMATCH, f"tensor {name!r} has shape {entry[1]}, expected {shape}")
    scale = entry[2]
    if isinstance(scale, bool) or not isinstance(scale, float | int):
        raise RejectedMessage(RejectReason.MALFORMED, f"tensor {name!r} has scale {scale!r}")
    # Finite in float64 is not enough: the scale is applied in float32.
    if not (0 <= scale <= _FLOAT32_MAX):
        raise RejectedMessage(RejectReason.NON_FINITE, f"tensor {name!r} has scale {scale!r}")
    size = math.prod(shape)
    count = entry[3] if topk else size
    if type(count) is not int or not 0 <= count <= size:
        raise RejectedMessage(RejectReason.MALFORMED, f"tensor {name!r} keeps {count!r} of {size} values")
    return float(scale), count


def _plain_dense_entries(meta: list[Any], expected: Shapes) -> list[tuple[float, int]] | None:
    """What `_check_entry` returns for every entry of a dense body, when every one is exactly as
    `encode_arrays` writes it (a float scale in range): checked in a few list operations, which
    every update costs. None sends the body through `_check_entry`, which names what is wrong."""
    if not meta or not all(type(entry) is list and len(entry) == 3 for entry in meta):
        return None
    if [entry[1] for entry in meta] != [list(shape) for shape in expected.values()]:
        return None
    scales = [entry[2] for entry in meta]
    if not all(type(scale) is float for scale in scales) or not 0 <= min(scales) <= max(scales) <= _FLOAT32_MAX:
        return None
    return [(scale, math.prod(shape)) for scale, shape in zip(scales, expected.values(), strict=True)]


def decode_arrays(body: object, expected: Shapes, codec: Codec | None = None) -> Arrays:
    """Decode a body made by `encode_arrays`, refusing anything that does not match `expected`
    (and `codec`, when the receiver knows which one the sender had to use). A top-k body comes
    back dense, zeros where nothing was sent."""
    if not isinstance(body, Mapping):
        raise RejectedMessage(RejectReason.MALFORMED, "tensor body is not a map")
    body_codec, meta, data = body.get("codec"), body.get("tensors"), body.get("data")
    if body_codec not in CODECS:
        raise RejectedMessage(RejectReason.MALFORMED, f"unknown codec {body_codec!r}")
    if codec is not None and body_codec != codec:
        raise RejectedMessage(RejectReason.BAD_VALUE, f"codec {body_codec!r} where {codec!r} is required")
    if not isinstance(meta, list) or not isinstance(data, bytes):
        raise RejectedMessage(RejectReason.MALFORMED, "tensor body lacks 'tensors' list or 'data' bytes")
    names = [entry[0] if isinstance(entry, list) and entry else None for entry in meta]
    if names != list(expected):
        raise RejectedMessage(
            RejectReason.SHAPE_MISMATCH,
            f"tensors {names} do not match the model's {list(expected)}",
        )
    topk = body_codec == "topk-int8-zstd"
    entries = _plain_dense_entries(meta, expected) if not topk else None
    if entries is None:
        entries = [
            _check_entry(entry, name, shape, topk) for entry, (name, shape) in zip(meta, expected.items(), strict=True)
        ]
    sizes = [math.prod(shape) for shape in expected.values()]
    if topk:
        total = sum((size + 7) // 8 for size in sizes) + sum(count for _, count in entries)
    else:
        total = sum(sizes) * _BYTES_PER_VALUE[str(body_codec)]
    raw = _decompress(data, total)
    if topk:
        values = _topk_values(raw, entries, sizes)
    else:
        values = _dense_values(raw, str(body_codec), [scale for scale, _ in entries], sizes)
    if not np.isfinite(values).all():
        first = int(np.flatnonzero(~np.isfinite(values))[0])
        name = list(expected)[int(np.searchsorted(np.cumsum(sizes), first, side="right"))]
        raise RejectedMessage(RejectReason.NON_FINITE, f"tensor {name!r} holds NaN or Inf")
    arrays: Arrays = {}
    offset = 0
    for size, (name, shape) in zip(sizes, expected.items(), strict=True):
        arrays[name] = values[offset : offset + size].reshape(shape)
        offset += size
    return arrays


def _decompress(data: bytes, total: int) -> bytes:
    # zstd allocates what the frame header declares before any output cap applies: check it first.
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise RejectedMessage(RejectReason.MALFORMED, f"zstd: {exc}") from exc
    if declared not in (-1, total):
        raise RejectedMessage(RejectReason.SHAPE_MISMATCH, f"zstd frame declares {declared} bytes, expected {total}")
    try:
        raw: bytes = _decompressor().decompress(data, max_output_size=total)
    except zstandard.ZstdError as exc:
        raise RejectedMessage(RejectReason.MALFORMED, f"zstd: {exc}") from exc
    if len(raw) != total:
        raise RejectedMessage(RejectReason.SHAPE_MISMATCH, f"{len(raw)} bytes, expected {total}")
    return raw


def _dense_values(raw: bytes, codec: str, scales: list[float], sizes: list[int]) -> np.ndarray:
    """Every tensor's values, concatenated: one array operation for all of them (per-tensor
    calls cost more than the arithmetic for models this small)."""
    if codec == "int8-zstd":
        return _scaled(np.frombuffer(raw, np.int8), np.repeat(np.asarray(scales, np.float32), sizes))
    if codec == "fp16-zstd":
        return np.frombuffer(raw, "<f2").astype(np.float32)
    return np.frombuffer(raw, "<f4").astype(np.float32)


def _scaled(quantized: np.ndarray, scale: float | np.ndarray) -> np.ndarray:
    # A scale near the float32 maximum overflows to Inf here: refused as non-finite by the
    # caller, so numpy's overflow warning (an error where warnings are) must not escape.
    with np.errstate(over="ignore"):
        values: np.ndarray = quantized.astype(np.float32) * np.float32(scale)
    return values


def _topk_values(raw: bytes, entries: list[tuple[float, int]], sizes: list[int]) -> np.ndarray:
    """Every tensor's values, concatenated, zeros where the bitmaps mark nothing."""
    values = np.zeros(sum(sizes), np.float32)
    bitmap_offset, value_offset, offset = 0, sum((size + 7) // 8 for size in sizes), 0
    for (scale, count), size in zip(entries, sizes, strict=True):
        packed = np.frombuffer(raw, np.uint8, (size + 7) // 8, bitmap_offset)
        bitmap_offset += packed.size
        bits = np.unpackbits(packed, bitorder="little")
        mask = bits[:size].astype(bool)
        if bits[size:].any() or int(mask.sum()) != count:
            raise RejectedMessage(
                RejectReason.MALFORMED, f"top-k bitmap does not mark exactly {count} of {size} values"
            )
        values[offset : offset + size][mask] = _scaled(np.frombuffer(raw, np.int8, count, value_offset), scale)
        value_offset += count
        offset += size
    return values
