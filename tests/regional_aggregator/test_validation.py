"""regional_aggregator.validation: real signed updates from a real (tiny) fleet, one test per
reason an update is refused, and the update that passes every check."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nacelle.keys import create_fleet, key_path
from regional_aggregator.validation import UpdateLimits, validate_update
from wire.envelope import Envelope, Kind, seal
from wire.errors import RejectedMessage, RejectReason
from wire.messages import NodeUpdate, RoundAnnouncement, status_envelope, update_envelope
from wire.registry import FleetRegistry, NodeStatus
from wire.signing import generate_key, load_private_key

SHAPES: dict[str, tuple[int, ...]] = {"0.weight": (4, 3), "0.bias": (4,)}
NOW = 1_763_900_000.0
ROUND_ID, BASE_VERSION = 5, 4
LIMITS = UpdateLimits(max_bytes=64 * 1024, max_samples=1000, max_clock_skew_s=300.0)
NODE, OTHER_NODE, SOUTH_NODE = "north-t00001", "north-t00002", "south-t00001"


@dataclasses.dataclass(frozen=True)
class Fleet:
    directory: Path
    registry: FleetRegistry

    def key(self, member_id: str) -> Ed25519PrivateKey:
        return load_private_key(key_path(self.directory, member_id))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    directory = tmp_path_factory.mktemp("fleet")
    return Fleet(directory, create_fleet(directory, {"north": 3, "south": 3}))


def _announcement(**changes: object) -> RoundAnnouncement:
    fields: dict[str, object] = {
        "round_id": ROUND_ID,
        "base_version": BASE_VERSION,
        "opened_at": NOW - 60,
        "regional_deadline": NOW + 3600,
        "global_deadline": NOW + 5400,
    }
    fields.update(changes)
    return RoundAnnouncement(**fields)  # type: ignore[arg-type]


def _delta() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {name: (rng.standard_normal(shape) * 0.01).astype(np.float32) for name, shape in SHAPES.items()}


def _update_payload(
    fleet: Fleet,
    sender: str = NODE,
    *,
    region: str = "north",
    round_id: int = ROUND_ID,
    base_version: int = BASE_VERSION,
    created_at: float = NOW,
    num_samples: int = 100,
    signer: str | None = None,
    key: Ed25519PrivateKey | None = None,
) -> bytes:
    update = NodeUpdate(sender, region, round_id, base_version, _delta(), num_samples, 0.4)
    return seal(update_envelope(update, "int8-zstd", created_at), key or fleet.key(signer or sender))


def _validate(
    fleet: Fleet,
    payload: bytes,
    topic_node_id: str = NODE,
    *,
    region: str = "north",
    registry: FleetRegistry | None = None,
    open_round: RoundAnnouncement | object | None = ...,
    counted: frozenset[str] = frozenset(),
    limits: UpdateLimits = LIMITS,
    now: float = NOW,
    last_closed_round: int = 0,
) -> NodeUpdate:
    return validate_update(
        payload,
        topic_node_id,
        region=region,
        registry=registry or fleet.registry,
        open_round=_announcement() if open_round is ... else open_round,  # type: ignore[arg-type]
        counted=counted,
        shapes=SHAPES,
        limits=limits,
        now=now,
        last_closed_round=last_closed_round,
    )


def _reason(fleet: Fleet, payload: bytes, topic_node_id: str = NODE, **options: object) -> RejectReason:
    with pytest.raises(RejectedMessage) as refused:
        _validate(fleet, payload, topic_node_id, **options)  # type: ignore[arg-type]
    return refused.value.reason


def _fp32_body_with(value: float) -> dict[str, object]:
    """An fp32 delta body holding `value`; built by hand since encode_arrays refuses non-finite."""
    raw = np.zeros(sum(int(np.prod(s)) for s in SHAPES.values()), "<f4")
    raw[3] = value
    return {
        "codec": "fp32-zstd",
        "tensors": [[name, list(shape), 1.0] for name, shape in SHAPES.items()],
        "data": zstandard.ZstdCompressor().compress(raw.tobytes()),
    }


# -- accepted ------------------------------------------------------------------------------


def test_a_valid_update_is_accepted_as_sent(fleet: Fleet) -> None:
    update = _validate(fleet, _update_payload(fleet))

    assert (update.node_id, update.region, update.round_id, update.base_version) == (NODE, "north", 5, 4)
    assert update.num_samples == 100
    assert update.train_loss == pytest.approx(0.4)
    for name, original in _delta().items():
        assert np.abs(update.delta[name] - original).max() <= float(np.abs(original).max()) / 127 / 2 * 1.0001


@pytest.mark.parametrize("created_at", [NOW - 60 - 300, NOW + 300], ids=["earliest", "latest"])
def test_timestamps_at_the_edges_of_the_window_are_accepted(fleet: Fleet, created_at: float) -> None:
    assert _validate(fleet, _update_payload(fleet, created_at=created_at)).node_id == NODE


def test_an_update_is_accepted_while_other_nodes_are_already_counted(fleet: Fleet) -> None:
    update = _validate(fleet, _update_payload(fleet), counted=frozenset({OTHER_NODE}))

    assert update.node_id == NODE


# -- refused -------------------------------------------------------------------------------


def test_an_update_published_on_another_nodes_topic_is_topic_mismatch(fleet: Fleet) -> None:
    assert _reason(fleet, _update_payload(fleet), topic_node_id=OTHER_NODE) is RejectReason.TOPIC_MISMATCH


def test_an_update_from_a_node_of_another_region_is_wrong_region(fleet: Fleet) -> None:
    payload = _update_payload(fleet, SOUTH_NODE, region="south")

    assert _reason(fleet, payload, SOUTH_NODE, region="north") is RejectReason.WRONG_REGION


def test_a_node_claiming_another_region_in_its_envelope_is_wrong_region(fleet: Fleet) -> None:
    payload = _update_payload(fleet, SOUTH_NODE, region="north")

    assert _reason(fleet, payload, SOUTH_NODE, region="north") is RejectReason.WRONG_REGION


def test_a_node_of_this_region_signing_for_another_region_is_wrong_region(fleet: Fleet) -> None:
    payload = _update_payload(fleet, NODE, region="south")

    assert _reason(fleet, payload, NODE, region="north") is RejectReason.WRONG_REGION


def test_an_update_from_a_suspended_node_is_suspended_sender(fleet: Fleet) -> None:
    nodes = dict(fleet.registry.nodes)
    nodes[NODE] = dataclasses.replace(nodes[NODE], status=NodeStatus.SUSPENDED)
    registry = dataclasses.replace(fleet.registry, nodes=nodes)

    assert _reason(fleet, _update_payload(fleet), registry=registry) is RejectReason.SUSPENDED_SENDER


def test_an_update_from_a_node_missing_from_the_registry_is_unknown_sender(fleet: Fleet) -> None:
    payload = _update_payload(fleet, "north-t00099", key=generate_key())

    assert _reason(fleet, payload, "north-t00099") is RejectReason.UNKNOWN_SENDER


def test_an_update_signed_as_the_regions_aggregator_is_unknown_sender(fleet: Fleet) -> None:
    payload = _update_payload(fleet, "aggregator-north")

    assert _reason(fleet, payload, "aggregator-north") is RejectReason.UNKNOWN_SENDER


def test_an_update_signed_with_another_nodes_key_is_bad_signature(fleet: Fleet) -> None:
    payload = _update_payload(fleet, NODE, signer=OTHER_NODE)

    assert _reason(fleet, payload) is RejectReason.BAD_SIGNATURE


def test_an_update_while_no_round_is_open_is_no_open_round(fleet: Fleet) -> None:
    assert _reason(fleet, _update_payload(fleet), open_round=None) is RejectReason.NO_OPEN_ROUND


def test_an_update_for_an_earlier_round_is_stale_round(fleet: Fleet) -> None:
    payload = _update_payload(fleet, round_id=ROUND_ID - 1)

    assert _reason(fleet, payload) is RejectReason.STALE_ROUND


def test_an_update_for_a_later_round_is_future_round(fleet: Fleet) -> None:
    payload = _update_payload(fleet, round_id=ROUND_ID + 1)

    assert _reason(fleet, payload) is RejectReason.FUTURE_ROUND


def test_an_update_trained_from_another_model_version_is_wrong_base_version(fleet: Fleet) -> None:
    payload = _update_payload(fleet, base_version=BASE_VERSION - 1)

    assert _reason(fleet, payload) is RejectReason.WRONG_BASE_VERSION


def test_an_update_signed_before_the_round_opened_is_stale_timestamp(fleet: Fleet) -> None:
    payload = _update_payload(fleet, created_at=NOW - 60 - 300 - 1)

    assert _reason(fleet, payload) is RejectReason.STALE_TIMESTAMP


def test_an_update_signed_too_far_in_the_future_is_stale_timestamp(fleet: Fleet) -> None:
    payload = _update_payload(fleet, created_at=NOW + 300 + 1)

    assert _reason(fleet, payload) is RejectReason.STALE_TIMESTAMP


def test_a_second_update_from_a_counted_node_is_duplicate(fleet: Fleet) -> None:
    payload = _update_payload(fleet)

    assert _reason(fleet, payload, counted=frozenset({NODE})) is RejectReason.DUPLICATE


def test_an_update_over_the_size_limit_is_oversized(fleet: Fleet) -> None:
    payload = _update_payload(fleet)
    limits = dataclasses.replace(LIMITS, max_bytes=len(payload) - 1)

    assert _reason(fleet, payload, limits=limits) is RejectReason.OVERSIZED


def test_bytes_that_are_not_an_envelope_are_malformed(fleet: Fleet) -> None:
    assert _reason(fleet, b"\x93\x01\x02") is RejectReason.MALFORMED


def test_a_signed_update_with_a_mistyped_field_is_malformed(fleet: Fleet) -> None:
    body = {"delta": _fp32_body_with(0.0), "num_samples": "100", "train_loss": 0.4}
    envelope = Envelope(Kind.UPDATE, NODE, "north", ROUND_ID, BASE_VERSION, NOW, body)

    assert _reason(fleet, seal(envelope, fleet.key(NODE))) is RejectReason.MALFORMED


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_signed_update_with_a_non_finite_delta_is_non_finite(fleet: Fleet, value: float) -> None:
    body = {"delta": _fp32_body_with(value), "num_samples": 100, "train_loss": 0.4}
    envelope = Envelope(Kind.UPDATE, NODE, "north", ROUND_ID, BASE_VERSION, NOW, body)

    fp32_round = _announcement(codec="fp32-zstd")

    assert _reason(fleet, seal(envelope, fleet.key(NODE)), open_round=fp32_round) is RejectReason.NON_FINITE


def test_an_update_of_zero_samples_is_bad_value(fleet: Fleet) -> None:
    assert _reason(fleet, _update_payload(fleet, num_samples=0)) is RejectReason.BAD_VALUE


def test_an_update_of_more_samples_than_allowed_is_bad_value(fleet: Fleet) -> None:
    payload = _update_payload(fleet, num_samples=LIMITS.max_samples + 1)

    assert _reason(fleet, payload) is RejectReason.BAD_VALUE


def test_an_update_of_another_architecture_is_shape_mismatch(fleet: Fleet) -> None:
    body = {"delta": _fp32_body_with(0.0), "num_samples": 100, "train_loss": 0.4}
    body["delta"]["tensors"] = [["0.bias", [4], 1.0], ["0.weight", [4, 3], 1.0]]  # type: ignore[index]
    envelope = Envelope(Kind.UPDATE, NODE, "north", ROUND_ID, BASE_VERSION, NOW, body)

    fp32_round = _announcement(codec="fp32-zstd")

    assert _reason(fleet, seal(envelope, fleet.key(NODE)), open_round=fp32_round) is RejectReason.SHAPE_MISMATCH


def test_an_update_in_another_codec_than_the_round_announced_is_bad_value(fleet: Fleet) -> None:
    body = {"delta": _fp32_body_with(0.0), "num_samples": 100, "train_loss": 0.4}
    envelope = Envelope(Kind.UPDATE, NODE, "north", ROUND_ID, BASE_VERSION, NOW, body)

    assert _reason(fleet, seal(envelope, fleet.key(NODE))) is RejectReason.BAD_VALUE  # the round is int8-zstd


def test_a_status_message_on_an_update_topic_is_wrong_kind(fleet: Fleet) -> None:
    payload = seal(status_envelope(NODE, "north", "online", BASE_VERSION, NOW), fleet.key(NODE))

    assert _reason(fleet, payload) is RejectReason.WRONG_KIND


def test_the_signature_is_checked_before_round_state(fleet: Fleet) -> None:
    # A forged update must be counted as forged, not as "no open round" (which the daemon holds).
    payload = _update_payload(fleet, NODE, signer=OTHER_NODE)

    assert _reason(fleet, payload, open_round=None) is RejectReason.BAD_SIGNATURE


def test_an_update_for_the_round_just_closed_is_late(fleet: Fleet) -> None:
    # The region closed ROUND_ID at its deadline; the next round is not announced yet.
    late = _update_payload(fleet, created_at=NOW + 3700)

    reason = _reason(fleet, late, open_round=None, last_closed_round=ROUND_ID, now=NOW + 3700)

    assert reason is RejectReason.LATE


def test_an_update_for_a_round_closed_before_the_last_one_is_stale(fleet: Fleet) -> None:
    old = _update_payload(fleet, round_id=ROUND_ID - 1)

    assert _reason(fleet, old, open_round=None, last_closed_round=ROUND_ID) is RejectReason.STALE_ROUND


def test_an_update_for_a_future_round_is_still_held_as_early_when_none_is_open(fleet: Fleet) -> None:
    early = _update_payload(fleet, round_id=ROUND_ID + 1)

    assert _reason(fleet, early, open_round=None, last_closed_round=ROUND_ID) is RejectReason.NO_OPEN_ROUND


def test_an_update_for_round_zero_is_stale_not_late_before_any_round_closed(fleet: Fleet) -> None:
    never = _update_payload(fleet, round_id=0)

    assert _reason(fleet, never, last_closed_round=0) is RejectReason.STALE_ROUND
