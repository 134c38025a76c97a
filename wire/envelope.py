"""The signed msgpack envelope every Nacelle message travels in (schema version 1).

    {"v": 1, "kind": "update", "sender": "offshore-t00001", "region": "offshore",
     "round": 7, "base": 6, "ts": 1763900000.25, "body": {...}, "sig": <64 bytes>}

`sig` is an Ed25519 signature over the canonical bytes of every other field: msgpack with map
keys sorted at every depth, binary as bin. Decoding allows only msgpack's own types (no ext
types, no pickle) and checks size before parsing, then schema, then the signature; the caller
checks round, region and body, which depend on its state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from wire.errors import RejectedMessage, RejectReason
from wire.signing import SIGNATURE_BYTES, signature_is_valid

SCHEMA_VERSION = 1


class Kind(StrEnum):
    ROUND = "round"
    MODEL = "model"
    UPDATE = "update"
    PARTIAL = "partial"
    STATUS = "status"
    ALERT = "alert"


@dataclass(frozen=True)
class Envelope:
    kind: Kind
    sender: str
    region: str
    round_id: int
    base_version: int
    created_at: float
    body: dict[str, Any] = field(default_factory=dict)

    def _fields(self) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "kind": self.kind.value,
            "sender": self.sender,
            "region": self.region,
            "round": self.round_id,
            "base": self.base_version,
            "ts": float(self.created_at),
            "body": self.body,
        }


# (sender id) -> its public key, or None when the sender is not in the fleet registry.
KeyLookup = Callable[[str], Ed25519PublicKey | None]


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted(item) for item in value]
    return value


def canonical_bytes(fields: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(_sorted(fields), use_bin_type=True)
    return packed


def seal(envelope: Envelope, key: Ed25519PrivateKey) -> bytes:
    """Sign and serialise `envelope`."""
    fields = envelope._fields()
    fields["sig"] = key.sign(canonical_bytes(fields))
    return canonical_bytes(fields)


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack ext type {code} is not allowed")


# Deeper than any real message (bodies nest three levels); bounds the work a hostile one causes.
MAX_NESTING = 16


_PLAIN = frozenset({str, bytes, int, float, bool, type(None)})


def _check_plain(value: Any) -> None:
    """Refuse anything but maps with str keys, lists and msgpack scalars, nested at most
    MAX_NESTING deep. Iterative, so depth cannot exhaust the stack. msgpack decodes its
    timestamp ext type by itself; this is where it gets refused. Exact types (what msgpack
    returns), scalars never pushed, plain loops: every update passes through here."""
    plain = _PLAIN
    stack = [(value, 0)]
    push, pop = stack.append, stack.pop
    while stack:
        item, depth = pop()
        kind = type(item)
        if kind in plain:
            continue
        if depth >= MAX_NESTING:
            raise RejectedMessage(RejectReason.MALFORMED, f"nested deeper than {MAX_NESTING} levels")
        if kind is dict:
            for key, child in item.items():
                if type(key) is not str:
                    raise RejectedMessage(RejectReason.MALFORMED, "map keys must be strings")
                if type(child) not in plain:
                    push((child, depth + 1))
        elif kind is list:
            for child in item:
                if type(child) not in plain:
                    push((child, depth + 1))
        else:
            raise RejectedMessage(RejectReason.MALFORMED, f"type {kind.__name__} is not allowed")


_HEADER_TYPES: dict[str, type | tuple[type, ...]] = {
    "kind": str,
    "sender": str,
    "region": str,
    "round": int,
    "base": int,
    "ts": (float, int),
    "body": dict,
    "sig": bytes,
}


_FIXMAP_9 = 0x89  # what `seal` writes: a map of the nine fields, "sig" among them


def _signed_part(data: bytes, signature: bytes) -> bytes | None:
    """The bytes `seal` signed, cut out of what it sent: `data` without its `sig` entry, the map
    one field shorter. Re-encoding the fields canonically gives the same bytes for a message that
    `seal` made, at the cost of walking and re-packing every field. Whatever the bytes, a
    signature that verifies over them was made over them by the key's holder, and the fields
    returned are decoded from exactly them plus the signature: None when the entry is not there."""
    entry = b"\xa3sig\xc4" + bytes([SIGNATURE_BYTES]) + signature  # fixstr "sig", bin8 of the signature
    where = data.find(entry)
    if len(signature) != SIGNATURE_BYTES or not data or data[0] != _FIXMAP_9 or where < 0:
        return None
    return bytes([_FIXMAP_9 - 1]) + data[1:where] + data[where + len(entry) :]


def open_envelope(data: bytes, *, max_bytes: int, keys: KeyLookup, expected_kind: Kind | None = None) -> Envelope:
    """Parse and verify `data`; raises RejectedMessage with the reason on any failure."""
    if len(data) > max_bytes:
        raise RejectedMessage(RejectReason.OVERSIZED, f"{len(data)} bytes > limit {max_bytes}")
    try:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_refuse_ext, use_list=True)
    except Exception as exc:  # msgpack raises many types for garbage; all mean the same here
        raise RejectedMessage(RejectReason.MALFORMED, f"not msgpack: {exc}") from exc
    if not isinstance(fields, dict):
        raise RejectedMessage(RejectReason.MALFORMED, "top level is not a map")
    _check_plain(fields)
    if fields.get("v") != SCHEMA_VERSION:
        raise RejectedMessage(
            RejectReason.UNKNOWN_SCHEMA,
            f"schema version {fields.get('v')!r}, expected {SCHEMA_VERSION}",
        )
    for name, kind in _HEADER_TYPES.items():
        value = fields.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise RejectedMessage(RejectReason.MALFORMED, f"field {name!r} missing or mistyped")
    try:
        message_kind = Kind(fields["kind"])
    except ValueError as exc:
        raise RejectedMessage(RejectReason.WRONG_KIND, f"unknown kind {fields['kind']!r}") from exc
    if expected_kind is not None and message_kind is not expected_kind:
        raise RejectedMessage(
            RejectReason.WRONG_KIND,
            f"{message_kind.value} where {expected_kind.value} was expected",
        )
    sender = fields["sender"]
    public_key = keys(sender)
    if public_key is None:
        raise RejectedMessage(RejectReason.UNKNOWN_SENDER, f"sender {sender!r} is not in the registry")
    signature = fields.pop("sig")
    if not (
        signature_is_valid(public_key, signature, _signed_part(data, signature) or canonical_bytes(fields))
        # not sealed by `seal` (another msgpack writer): what its fields would have been signed as
        or signature_is_valid(public_key, signature, canonical_bytes(fields))
    ):
        raise RejectedMessage(RejectReason.BAD_SIGNATURE, f"signature of {sender!r} does not verify")
    return Envelope(
        kind=message_kind,
        sender=sender,
        region=fields["region"],
        round_id=fields["round"],
        base_version=fields["base"],
        created_at=float(fields["ts"]),
        body=fields["body"],
    )


def reopen_verified(data: bytes) -> Envelope:
    """Parse bytes this process already verified with `open_envelope` and kept (an aggregator's
    own update log), without checking the signature again. Never for bytes from elsewhere."""
    fields = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_refuse_ext, use_list=True)
    if not isinstance(fields, dict):
        raise RejectedMessage(RejectReason.MALFORMED, "top level is not a map")
    for name, kind in _HEADER_TYPES.items():
        if not isinstance(fields.get(name), kind):
            raise RejectedMessage(RejectReason.MALFORMED, f"field {name!r} missing or mistyped")
    return Envelope(
        kind=Kind(fields["kind"]),
        sender=fields["sender"],
        region=fields["region"],
        round_id=fields["round"],
        base_version=fields["base"],
        created_at=float(fields["ts"]),
        body=fields["body"],
    )
