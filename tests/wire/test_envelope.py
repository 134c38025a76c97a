"""wire.envelope: sealed envelopes open to what was sealed, and anything tampered with, unsigned,
oversized or not plain msgpack is refused with a RejectedMessage and its reason."""

from __future__ import annotations

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.envelope import Envelope, Kind, canonical_bytes, open_envelope, seal
from wire.errors import RejectedMessage, RejectReason

SENDER = "north-t00001"
MAX_BYTES = 64 * 1024
SENDER_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()


def _known(sender: str) -> Ed25519PublicKey | None:
    return SENDER_KEY.public_key() if sender == SENDER else None


def _everyone_known(sender: str) -> Ed25519PublicKey | None:
    return SENDER_KEY.public_key()


def _envelope(**changes: object) -> Envelope:
    fields: dict[str, object] = {
        "kind": Kind.UPDATE,
        "sender": SENDER,
        "region": "north",
        "round_id": 7,
        "base_version": 6,
        "created_at": 1763900000.25,
        "body": {
            "num_samples": 10,
            "train_loss": 0.5,
            "delta": {"codec": "fp32-zstd", "tensors": [["w", [2], 1.0]], "data": bytes(range(20))},
        },
    }
    fields.update(changes)
    return Envelope(**fields)  # type: ignore[arg-type]


def _open(data: bytes, **overrides: object) -> Envelope:
    options: dict[str, object] = {"max_bytes": MAX_BYTES, "keys": _known}
    options.update(overrides)
    return open_envelope(data, **options)  # type: ignore[arg-type]


def _reason(data: bytes, **overrides: object) -> RejectReason:
    with pytest.raises(RejectedMessage) as refused:
        _open(data, **overrides)
    return refused.value.reason


def _signed_fields(fields: dict[str, object], key: Ed25519PrivateKey = SENDER_KEY) -> bytes:
    """Serialise hand-made header fields with a valid signature over them."""
    return msgpack.packb({**fields, "sig": key.sign(canonical_bytes(fields))}, use_bin_type=True)


def _unsigned_fields(**changes: object) -> dict[str, object]:
    fields = {
        "v": 1,
        "kind": "update",
        "sender": SENDER,
        "region": "north",
        "round": 7,
        "base": 6,
        "ts": 1763900000.25,
        "body": {"num_samples": 10},
    }
    fields.update(changes)
    return fields


def _body_span(sealed: bytes, body: dict[str, object]) -> range:
    packed_body = canonical_bytes(body)
    start = sealed.index(packed_body)
    return range(start, start + len(packed_body))


def test_sealed_envelope_opens_to_the_same_envelope() -> None:
    envelope = _envelope()

    opened = _open(seal(envelope, SENDER_KEY), expected_kind=Kind.UPDATE)

    assert opened == envelope


def test_integer_timestamp_opens_as_float() -> None:
    opened = _open(seal(_envelope(created_at=1763900000), SENDER_KEY))

    assert opened.created_at == 1763900000.0
    assert isinstance(opened.created_at, float)


def test_sealing_is_independent_of_dict_insertion_order() -> None:
    body = {"b": 1, "a": {"y": [1, {"q": 2, "p": 3}], "x": b"raw"}}
    reordered = {"a": {"x": b"raw", "y": [1, {"p": 3, "q": 2}]}, "b": 1}

    assert canonical_bytes(body) == canonical_bytes(reordered)
    assert seal(_envelope(body=body), SENDER_KEY) == seal(_envelope(body=reordered), SENDER_KEY)


def test_canonical_bytes_sort_keys_at_every_depth() -> None:
    packed = canonical_bytes({"z": {"b": 1, "a": 2}, "m": 0})

    assert msgpack.unpackb(packed, object_pairs_hook=list) == [("m", 0), ("z", [("a", 2), ("b", 1)])]


def test_flipping_any_byte_is_never_accepted() -> None:
    sealed = seal(_envelope(), SENDER_KEY)

    accepted = []
    for index in range(len(sealed)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(sealed)
            tampered[index] ^= mask
            try:
                _open(bytes(tampered))
            except RejectedMessage:
                continue
            accepted.append((index, mask))

    assert accepted == []


def test_flipping_a_byte_of_the_body_is_a_bad_signature_or_malformed() -> None:
    envelope = _envelope()
    sealed = seal(envelope, SENDER_KEY)

    reasons = set()
    for index in _body_span(sealed, envelope.body):
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(sealed)
            tampered[index] ^= mask
            reasons.add(_reason(bytes(tampered)))

    assert reasons <= {RejectReason.BAD_SIGNATURE, RejectReason.MALFORMED}
    assert RejectReason.BAD_SIGNATURE in reasons


@pytest.mark.parametrize(
    "changes",
    [{"region": "south"}, {"round_id": 8}, {"base_version": 5}, {"created_at": 1763900000.5}],
    ids=["region", "round", "base", "ts"],
)
def test_a_changed_header_field_under_the_original_signature_is_a_bad_signature(
    changes: dict[str, object],
) -> None:
    original = msgpack.unpackb(seal(_envelope(), SENDER_KEY), raw=False)
    forged = msgpack.unpackb(seal(_envelope(**changes), OTHER_KEY), raw=False)
    forged["sig"] = original["sig"]

    assert _reason(msgpack.packb(forged, use_bin_type=True)) is RejectReason.BAD_SIGNATURE


def test_signature_by_another_key_is_a_bad_signature() -> None:
    assert _reason(seal(_envelope(), OTHER_KEY)) is RejectReason.BAD_SIGNATURE


def test_sender_missing_from_the_registry_is_unknown_sender() -> None:
    sealed = seal(_envelope(sender="north-t00099"), SENDER_KEY)

    assert _reason(sealed) is RejectReason.UNKNOWN_SENDER


def test_schema_version_2_is_unknown_schema_even_when_signed() -> None:
    assert _reason(_signed_fields(_unsigned_fields(v=2))) is RejectReason.UNKNOWN_SCHEMA


def test_missing_schema_version_is_unknown_schema() -> None:
    fields = _unsigned_fields()
    del fields["v"]

    assert _reason(_signed_fields(fields)) is RejectReason.UNKNOWN_SCHEMA


def test_oversized_data_is_refused_before_it_is_parsed() -> None:
    garbage = b"\xc1" * (MAX_BYTES + 1)  # 0xc1 is never valid msgpack

    assert _reason(garbage) is RejectReason.OVERSIZED


def test_valid_envelope_one_byte_over_the_limit_is_oversized() -> None:
    sealed = seal(_envelope(), SENDER_KEY)

    def lookup_must_not_run(sender: str) -> Ed25519PublicKey | None:
        raise AssertionError("keys looked up for an oversized message")

    assert _reason(sealed, max_bytes=len(sealed) - 1, keys=lookup_must_not_run) is RejectReason.OVERSIZED


def test_envelope_exactly_at_the_limit_is_accepted() -> None:
    sealed = seal(_envelope(), SENDER_KEY)

    assert _open(sealed, max_bytes=len(sealed)).sender == SENDER


def test_msgpack_ext_type_in_the_body_is_malformed() -> None:
    data = _signed_fields(_unsigned_fields(body={"payload": msgpack.ExtType(42, b"pickle?")}))

    assert _reason(data, keys=_everyone_known) is RejectReason.MALFORMED


def test_msgpack_timestamp_ext_in_the_body_is_malformed() -> None:
    data = _signed_fields(_unsigned_fields(body={"when": msgpack.Timestamp(1, 0)}))

    assert _reason(data, keys=_everyone_known) is RejectReason.MALFORMED


@pytest.mark.parametrize("top_level", [[1, 2, 3], "update", 7, None, b"\x00" * 8])
def test_top_level_that_is_not_a_map_is_malformed(top_level: object) -> None:
    assert _reason(msgpack.packb(top_level, use_bin_type=True)) is RejectReason.MALFORMED


def test_bytes_that_are_not_msgpack_are_malformed() -> None:
    assert _reason(b"\xc1\xc1\xc1") is RejectReason.MALFORMED


def test_truncated_envelope_is_malformed() -> None:
    sealed = seal(_envelope(), SENDER_KEY)

    assert _reason(sealed[:-10]) is RejectReason.MALFORMED


def test_integer_map_keys_are_malformed() -> None:
    data = msgpack.packb({1: "x", "v": 1}, use_bin_type=True)

    assert _reason(data) is RejectReason.MALFORMED


@pytest.mark.parametrize(
    "changes",
    [
        {"round": True},
        {"round": "7"},
        {"base": 6.0},
        {"ts": "yesterday"},
        {"body": [1, 2]},
        {"sender": 5},
        {"region": None},
        {"kind": 3},
    ],
    ids=["round-bool", "round-str", "base-float", "ts-str", "body-list", "sender-int", "region-none", "kind-int"],
)
def test_mistyped_header_field_is_malformed(changes: dict[str, object]) -> None:
    assert _reason(_signed_fields(_unsigned_fields(**changes))) is RejectReason.MALFORMED


def test_missing_signature_is_malformed() -> None:
    assert _reason(msgpack.packb(_unsigned_fields(), use_bin_type=True)) is RejectReason.MALFORMED


def test_signature_of_the_wrong_type_is_malformed() -> None:
    fields = {**_unsigned_fields(), "sig": "not bytes"}

    assert _reason(msgpack.packb(fields, use_bin_type=True)) is RejectReason.MALFORMED


def test_extra_unsigned_field_is_a_bad_signature() -> None:
    fields = msgpack.unpackb(seal(_envelope(), SENDER_KEY), raw=False)
    fields["extra"] = "smuggled"

    assert _reason(msgpack.packb(fields, use_bin_type=True)) is RejectReason.BAD_SIGNATURE


def test_unexpected_kind_is_wrong_kind() -> None:
    sealed = seal(_envelope(kind=Kind.STATUS), SENDER_KEY)

    assert _reason(sealed, expected_kind=Kind.UPDATE) is RejectReason.WRONG_KIND


def test_unknown_kind_is_wrong_kind() -> None:
    assert _reason(_signed_fields(_unsigned_fields(kind="firmware"))) is RejectReason.WRONG_KIND


def test_body_with_mixed_str_and_bytes_keys_is_malformed() -> None:
    fields = {**_unsigned_fields(body={"a": 1, b"b": 2}), "sig": bytes(64)}

    assert _reason(msgpack.packb(fields, use_bin_type=True)) is RejectReason.MALFORMED


def test_deeply_nested_body_is_malformed() -> None:
    depth = 600
    header = {key: value for key, value in _unsigned_fields().items() if key != "body"}
    pairs = b"".join(msgpack.packb(k) + msgpack.packb(v, use_bin_type=True) for k, v in header.items())
    pairs += msgpack.packb("sig") + msgpack.packb(bytes(64), use_bin_type=True)
    nested_body = b"\x81\xa1x" + b"\x91" * depth + b"\xc0"  # {"x": [[[...[nil]...]]]}
    data = bytes([0x80 | (len(header) + 2)]) + pairs + msgpack.packb("body") + nested_body

    assert _reason(data) is RejectReason.MALFORMED


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_rejected_message(data: bytes) -> None:
    with pytest.raises(RejectedMessage):
        _open(data, keys=_everyone_known)


_PLAIN = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=120)
@given(
    st.dictionaries(
        st.sampled_from(["v", "kind", "sender", "region", "round", "base", "ts", "body", "sig", "x"]),
        _PLAIN,
    )
)
def test_random_header_maps_raise_only_rejected_message(fields: dict[str, object]) -> None:
    with pytest.raises(RejectedMessage):
        _open(msgpack.packb(fields, use_bin_type=True), keys=_everyone_known)
