"""Array codecs for model weights and deltas: named float32 tensors ⇄ a msgpack-ready body.

- `int8-zstd`: per-tensor symmetric int8 quantization (scale = max|x| / 127), then zstd. The
  default for node updates: about a quarter of the fp32 bytes before zstd.
- `fp32-zstd`: lossless float32, then zstd. For partial aggregates and global models, which must
  stay exact so the cloud reproduces flat FedAvg.

Decoding checks everything against the expected tensor names and shapes and refuses non-finite
values; zstd output is capped at the expected size, so a compression bomb cannot allocate more.
This module does no I/O and knows nothing about MQTT.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

import numpy as np
import zstandard

from wire.errors import EncodeError, RejectedMessage, RejectReason

Codec = Literal["int8-zstd", "fp32-zstd"]
CODECS: tuple[str, ...] = get_args(Codec)
Arrays = dict[str, np.ndarray]
Shapes = Mapping[str, tuple[int, ...]]

_ZSTD_LEVEL = 3  # level 3 is within a few percent of level 19 on quantized weights, 10x faster
_BYTES_PER_VALUE = {"int8-zstd": 1, "fp32-zstd": 4}


def encode_arrays(arrays: Mapping[str, np.ndarray], codec: Codec) -> dict[str, Any]:
    """Encode named tensors; the body lists names, shapes and (int8) scales, then the bytes."""
    if codec not in CODECS:
        raise EncodeError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")
    meta: list[list[Any]] = []
    chunks: list[bytes] = []
    for name, array in arrays.items():
        values = np.asarray(array, dtype=np.float32)
        if not np.isfinite(values).all():
            raise EncodeError(f"tensor {name!r} holds non-finite values")
        if codec == "int8-zstd":
            # The scale is applied in float32 on decode; one that underflows there means a
            # tensor too small to matter, sent as zeros rather than divided by zero.
            scale = float(np.abs(values).max(initial=0.0)) / 127.0
            if np.float32(scale) == 0:
                scale = 0.0
                quantized = np.zeros(values.shape, np.int8)
            else:
                quantized = np.clip(np.rint(values / np.float32(scale)), -127, 127).astype(np.int8)
            chunks.append(quantized.tobytes())
            meta.append([name, list(values.shape), scale])
        else:
            chunks.append(values.astype("<f4").tobytes())
            meta.append([name, list(values.shape), 1.0])
    data = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(b"".join(chunks))
    return {"codec": codec, "tensors": meta, "data": data}


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_entry(entry: object, name: str, shape: tuple[int, ...]) -> float:
    """The tensor's scale, once its metadata entry `[name, shape, scale]` is sound."""
    if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[1], list)):
        raise RejectedMessage(RejectReason.MALFORMED, f"tensor {name!r}: entry must be [name, shape, scale]")
    if entry[1] != list(shape):
        raise RejectedMessage(RejectReason.SHAPE_MISMATCH, f"tensor {name!r} has shape {entry[1]}, expected {shape}")
    scale = entry[2]
    if isinstance(scale, bool) or not isinstance(scale, float | int):
        raise RejectedMessage(RejectReason.MALFORMED, f"tensor {name!r} has scale {scale!r}")
    # Finite in float64 is not enough: the scale is applied in float32.
    if not (0 <= scale <= _FLOAT32_MAX):
        raise RejectedMessage(RejectReason.NON_FINITE, f"tensor {name!r} has scale {scale!r}")
    return float(scale)


def decode_arrays(body: object, expected: Shapes, codec: Codec | None = None) -> Arrays:
    """Decode a body made by `encode_arrays`, refusing anything that does not match `expected`
    (and `codec`, when the receiver knows which one the sender had to use)."""
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
    scales = [_check_entry(entry, name, shape) for entry, (name, shape) in zip(meta, expected.items(), strict=True)]
    width = _BYTES_PER_VALUE[body_codec]
    total = sum(int(np.prod(shape)) for shape in expected.values()) * width
    # zstd allocates what the frame header declares before any output cap applies: check it first.
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise RejectedMessage(RejectReason.MALFORMED, f"zstd: {exc}") from exc
    if declared not in (-1, total):
        raise RejectedMessage(RejectReason.SHAPE_MISMATCH, f"zstd frame declares {declared} bytes, expected {total}")
    try:
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=total)
    except zstandard.ZstdError as exc:
        raise RejectedMessage(RejectReason.MALFORMED, f"zstd: {exc}") from exc
    if len(raw) != total:
        raise RejectedMessage(RejectReason.SHAPE_MISMATCH, f"{len(raw)} bytes, expected {total}")
    arrays: Arrays = {}
    offset = 0
    for scale, (name, shape) in zip(scales, expected.items(), strict=True):
        count = int(np.prod(shape))
        chunk = raw[offset : offset + count * width]
        offset += count * width
        if body_codec == "int8-zstd":
            # A scale near the float32 maximum overflows to Inf here: refused as non-finite just
            # below, so numpy's overflow warning (an error where warnings are) must not escape.
            with np.errstate(over="ignore"):
                values = np.frombuffer(chunk, np.int8).astype(np.float32) * np.float32(scale)
        else:
            values = np.frombuffer(chunk, "<f4").astype(np.float32)
        if not np.isfinite(values).all():
            raise RejectedMessage(RejectReason.NON_FINITE, f"tensor {name!r} holds NaN or Inf")
        arrays[name] = values.reshape(shape)
    return arrays
