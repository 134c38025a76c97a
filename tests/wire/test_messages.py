"""wire.messages: every message kind survives seal → open → parse, and each parser refuses
mistyped, missing and out-of-range fields with the documented reason."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wire.codec import encode_arrays
from wire.envelope import Envelope, Kind, open_envelope, seal
from wire.errors import RejectedMessage, RejectReason
from wire.messages import (
    ModelRelease,
    NodeAlert,
    NodeSummary,
    NodeUpdate,
    RegionalPartial,
    RoundAnnouncement,
    alert_envelope,
    model_envelope,
    parse_alert,
    parse_model,
    parse_partial,
    parse_round,
    parse_update,
    partial_envelope,
    round_envelope,
    status_envelope,
    update_envelope,
)

SHAPES: dict[str, tuple[int, ...]] = {"0.weight": (4, 3), "0.bias": (4,)}
KEY = Ed25519PrivateKey.generate()
MAX_SAMPLES = 1000
NOW = 1_763_900_000.0


def _tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in SHAPES.items()}


def _through_the_wire(envelope: Envelope, kind: Kind) -> Envelope:
    return open_envelope(seal(envelope, KEY), max_bytes=1 << 20, keys=lambda _: KEY.public_key(), expected_kind=kind)


def _announcement(**changes: object) -> RoundAnnouncement:
    fields: dict[str, object] = {
        "round_id": 7,
        "base_version": 6,
        "opened_at": NOW,
        "regional_deadline": NOW + 3600,
        "global_deadline": NOW + 5400,
        "epochs": 3,
        "batch_size": 16,
        "learning_rate": 5e-3,
        "codec": "fp32-zstd",
    }
    fields.update(changes)
    return RoundAnnouncement(**fields)  # type: ignore[arg-type]


def _update(**changes: object) -> NodeUpdate:
    fields: dict[str, object] = {
        "node_id": "north-t00001",
        "region": "north",
        "round_id": 7,
        "base_version": 6,
        "delta": _tensors(),
        "num_samples": 120,
        "train_loss": 0.25,
    }
    fields.update(changes)
    return NodeUpdate(**fields)  # type: ignore[arg-type]


def _partial() -> RegionalPartial:
    return RegionalPartial(
        region="north",
        round_id=7,
        base_version=6,
        weighted_sum=_tensors(1),
        total_weight=300.0,
        expected=3,
        rejected={"bad_signature": 2, "duplicate": 1},
        nodes=(NodeSummary("north-t00001", 100, 0.5, 5200, 0.8), NodeSummary("north-t00002", 200, 0.25, 5300, 1.2)),
    )


def _with_body(envelope: Envelope, **changes: object) -> Envelope:
    """`envelope` with body fields replaced; a value of `...` deletes the field."""
    body = dict(envelope.body)
    for name, value in changes.items():
        if value is ...:
            del body[name]
        else:
            body[name] = value
    return Envelope(
        envelope.kind,
        envelope.sender,
        envelope.region,
        envelope.round_id,
        envelope.base_version,
        envelope.created_at,
        body,
    )


def _refusal(parse, *args, **kwargs) -> RejectReason:  # type: ignore[no-untyped-def]
    with pytest.raises(RejectedMessage) as refused:
        parse(*args, **kwargs)
    return refused.value.reason


# -- round trips ---------------------------------------------------------------------------


def test_round_announcement_round_trips() -> None:
    announcement = _announcement()

    parsed = parse_round(_through_the_wire(round_envelope(announcement, "cloud"), Kind.ROUND))

    assert parsed == announcement


def test_top_k_round_announces_its_fraction_and_others_do_not() -> None:
    topk = dataclasses.replace(_announcement(), codec="topk-int8-zstd", topk_fraction=0.125)

    parsed = parse_round(_through_the_wire(round_envelope(topk, "cloud"), Kind.ROUND))

    assert parsed == topk
    assert "topk_fraction" not in round_envelope(_announcement(), "cloud").body


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, float("nan")])
def test_round_with_an_impossible_top_k_fraction_is_refused(fraction: float) -> None:
    envelope = round_envelope(dataclasses.replace(_announcement(), codec="topk-int8-zstd"), "cloud")
    envelope.body["topk_fraction"] = fraction

    with pytest.raises(RejectedMessage):
        parse_round(_through_the_wire(envelope, Kind.ROUND))


def test_round_envelope_is_sent_by_the_cloud_for_no_region() -> None:
    envelope = round_envelope(_announcement(), "cloud")

    assert (envelope.kind, envelope.sender, envelope.region) == (Kind.ROUND, "cloud", "")
    assert (envelope.round_id, envelope.base_version) == (7, 6)


def test_model_release_round_trips_bit_exact() -> None:
    release = ModelRelease(version=4, round_id=3, parent_version=3, weights=_tensors(2))

    parsed = parse_model(_through_the_wire(model_envelope(release, "cloud", NOW), Kind.MODEL), SHAPES)

    assert (parsed.version, parsed.round_id, parsed.parent_version) == (4, 3, 3)
    for name in SHAPES:
        np.testing.assert_array_equal(parsed.weights[name], release.weights[name])


def test_fp32_update_round_trips_bit_exact() -> None:
    update = _update()

    parsed = parse_update(
        _through_the_wire(update_envelope(update, "fp32-zstd", NOW), Kind.UPDATE), SHAPES, max_samples=MAX_SAMPLES
    )

    assert (parsed.node_id, parsed.region, parsed.round_id, parsed.base_version) == ("north-t00001", "north", 7, 6)
    assert (parsed.num_samples, parsed.train_loss) == (120, 0.25)
    for name in SHAPES:
        np.testing.assert_array_equal(parsed.delta[name], update.delta[name])


def test_int8_update_round_trips_within_half_a_quantization_step() -> None:
    update = _update()

    parsed = parse_update(
        _through_the_wire(update_envelope(update, "int8-zstd", NOW), Kind.UPDATE), SHAPES, max_samples=MAX_SAMPLES
    )

    for name, original in update.delta.items():
        half_step = float(np.abs(original).max()) / 127 / 2
        assert np.abs(parsed.delta[name] - original).max() <= half_step * 1.0001


def test_partial_round_trips_with_its_node_summaries_and_rejections() -> None:
    partial = _partial()

    parsed = parse_partial(_through_the_wire(partial_envelope(partial, "aggregator-north", NOW), Kind.PARTIAL), SHAPES)

    assert parsed.region == "north"
    assert (parsed.round_id, parsed.base_version, parsed.total_weight, parsed.expected) == (7, 6, 300.0, 3)
    assert parsed.rejected == {"bad_signature": 2, "duplicate": 1}
    assert parsed.nodes == partial.nodes
    assert parsed.accepted == 2
    for name in SHAPES:
        np.testing.assert_array_equal(parsed.weighted_sum[name], partial.weighted_sum[name])


def test_status_round_trips_with_the_senders_model_version() -> None:
    envelope = status_envelope("north-t00001", "north", "offline", 5, NOW)

    opened = _through_the_wire(envelope, Kind.STATUS)

    assert opened.body == {"state": "offline"}
    assert (opened.sender, opened.region, opened.round_id, opened.base_version) == ("north-t00001", "north", 0, 5)


# -- round announcements -------------------------------------------------------------------


def test_round_announcing_an_unknown_codec_is_bad_value() -> None:
    envelope = _with_body(round_envelope(_announcement(), "cloud"), codec="int4-lz4")

    assert _refusal(parse_round, envelope) is RejectReason.BAD_VALUE


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"codec": 8}, RejectReason.MALFORMED),
        ({"codec": ...}, RejectReason.MALFORMED),
        ({"regional_deadline": ...}, RejectReason.MALFORMED),
        ({"global_deadline": "tomorrow"}, RejectReason.MALFORMED),
        ({"epochs": True}, RejectReason.MALFORMED),
        ({"opened_at": math.nan}, RejectReason.NON_FINITE),
        ({"regional_deadline": math.inf}, RejectReason.NON_FINITE),
        ({"epochs": 0}, RejectReason.BAD_VALUE),
        ({"batch_size": 0}, RejectReason.BAD_VALUE),
        ({"learning_rate": -1e-3}, RejectReason.BAD_VALUE),
    ],
    ids=[
        "codec-int",
        "codec-missing",
        "deadline-missing",
        "deadline-str",
        "epochs-bool",
        "opened-nan",
        "deadline-inf",
        "epochs-0",
        "batch-0",
        "lr-negative",
    ],
)
def test_round_with_a_bad_field_is_refused(changes: dict[str, object], reason: RejectReason) -> None:
    envelope = _with_body(round_envelope(_announcement(), "cloud"), **changes)

    assert _refusal(parse_round, envelope) is reason


def test_round_with_zero_learning_rate_is_bad_value() -> None:
    envelope = round_envelope(_announcement(learning_rate=0.0), "cloud")

    assert _refusal(parse_round, envelope) is RejectReason.BAD_VALUE


# -- models --------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "reason"), [(..., RejectReason.MALFORMED), ("4", RejectReason.MALFORMED)])
def test_model_without_an_integer_version_is_malformed(version: object, reason: RejectReason) -> None:
    release = ModelRelease(version=4, round_id=3, parent_version=3, weights=_tensors())
    envelope = _with_body(model_envelope(release, "cloud", NOW), version=version)

    assert _refusal(parse_model, envelope, SHAPES) is reason


def test_model_of_another_architecture_is_shape_mismatch() -> None:
    release = ModelRelease(version=4, round_id=3, parent_version=3, weights={"0.weight": np.zeros((4, 3), np.float32)})

    assert _refusal(parse_model, model_envelope(release, "cloud", NOW), SHAPES) is RejectReason.SHAPE_MISMATCH


# -- updates -------------------------------------------------------------------------------


@pytest.mark.parametrize("num_samples", [0, -1, MAX_SAMPLES + 1])
def test_update_with_num_samples_out_of_range_is_bad_value(num_samples: int) -> None:
    envelope = update_envelope(_update(num_samples=num_samples), "int8-zstd", NOW)

    assert _refusal(parse_update, envelope, SHAPES, max_samples=MAX_SAMPLES) is RejectReason.BAD_VALUE


def test_update_with_exactly_max_samples_is_accepted() -> None:
    envelope = update_envelope(_update(num_samples=MAX_SAMPLES), "int8-zstd", NOW)

    assert parse_update(envelope, SHAPES, max_samples=MAX_SAMPLES).num_samples == MAX_SAMPLES


@pytest.mark.parametrize("train_loss", [math.nan, math.inf, -math.inf])
def test_update_with_non_finite_train_loss_is_non_finite(train_loss: float) -> None:
    envelope = update_envelope(_update(train_loss=train_loss), "int8-zstd", NOW)

    assert _refusal(parse_update, envelope, SHAPES, max_samples=MAX_SAMPLES) is RejectReason.NON_FINITE


def test_update_with_negative_train_loss_is_bad_value() -> None:
    envelope = update_envelope(_update(train_loss=-0.1), "int8-zstd", NOW)

    assert _refusal(parse_update, envelope, SHAPES, max_samples=MAX_SAMPLES) is RejectReason.BAD_VALUE


@pytest.mark.parametrize(
    "changes",
    [
        {"num_samples": "120"},
        {"num_samples": 120.0},
        {"num_samples": True},
        {"num_samples": ...},
        {"train_loss": "low"},
        {"train_loss": ...},
        {"delta": ...},
        {"delta": b"raw bytes"},
    ],
    ids=[
        "samples-str",
        "samples-float",
        "samples-bool",
        "samples-missing",
        "loss-str",
        "loss-missing",
        "delta-missing",
        "delta-bytes",
    ],
)
def test_update_with_a_mistyped_or_missing_field_is_malformed(changes: dict[str, object]) -> None:
    envelope = _with_body(update_envelope(_update(), "int8-zstd", NOW), **changes)

    assert _refusal(parse_update, envelope, SHAPES, max_samples=MAX_SAMPLES) is RejectReason.MALFORMED


def test_update_of_another_architecture_is_shape_mismatch() -> None:
    envelope = _with_body(
        update_envelope(_update(), "int8-zstd", NOW),
        delta=encode_arrays({"0.weight": np.zeros((3, 4), np.float32), "0.bias": np.zeros(4, np.float32)}, "int8-zstd"),
    )

    assert _refusal(parse_update, envelope, SHAPES, max_samples=MAX_SAMPLES) is RejectReason.SHAPE_MISMATCH


# -- partials ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"rejected": {"bad_signature": "2"}}, RejectReason.MALFORMED),
        ({"rejected": [["bad_signature", 2]]}, RejectReason.MALFORMED),
        ({"rejected": ...}, RejectReason.MALFORMED),
        ({"nodes": [["north-t00001", 100, 0.5]]}, RejectReason.MALFORMED),
        ({"nodes": [["north-t00001", "many", 0.5, 5200]]}, RejectReason.MALFORMED),
        ({"nodes": [7]}, RejectReason.MALFORMED),
        ({"nodes": ...}, RejectReason.MALFORMED),
        ({"expected": 2.5}, RejectReason.MALFORMED),
        ({"total_weight": ...}, RejectReason.MALFORMED),
        ({"total_weight": -1.0}, RejectReason.BAD_VALUE),
        ({"total_weight": math.nan}, RejectReason.NON_FINITE),
        ({"weighted_sum": ...}, RejectReason.MALFORMED),
    ],
    ids=[
        "rejected-str-count",
        "rejected-list",
        "rejected-missing",
        "node-3-fields",
        "node-samples-str",
        "node-not-list",
        "nodes-missing",
        "expected-float",
        "weight-missing",
        "weight-negative",
        "weight-nan",
        "sum-missing",
    ],
)
def test_partial_with_a_bad_field_is_refused(changes: dict[str, object], reason: RejectReason) -> None:
    envelope = _with_body(partial_envelope(_partial(), "aggregator-north", NOW), **changes)

    assert _refusal(parse_partial, envelope, SHAPES) is reason


def test_partial_with_an_infinite_node_sample_count_is_refused() -> None:
    envelope = _with_body(
        partial_envelope(_partial(), "aggregator-north", NOW), nodes=[["north-t00001", math.inf, 0.5, 5200]]
    )

    _refusal(parse_partial, envelope, SHAPES)


def test_partial_with_a_nan_node_train_loss_is_non_finite() -> None:
    envelope = _with_body(
        partial_envelope(_partial(), "aggregator-north", NOW), nodes=[["north-t00001", 100, math.nan, 5200]]
    )

    assert _refusal(parse_partial, envelope, SHAPES) is RejectReason.NON_FINITE


def test_partial_node_rows_of_older_aggregators_read_with_outlier_score_zero() -> None:
    envelope = _with_body(
        partial_envelope(_partial(), "aggregator-north", NOW), nodes=[["north-t00001", 100, 0.5, 5200]]
    )

    [node] = parse_partial(envelope, SHAPES).nodes

    assert node == NodeSummary("north-t00001", 100, 0.5, 5200, 0.0)


@pytest.mark.parametrize(
    ("score", "reason"),
    [(math.nan, RejectReason.NON_FINITE), (-1.0, RejectReason.BAD_VALUE), ("1", RejectReason.MALFORMED)],
)
def test_partial_with_an_impossible_outlier_score_is_refused(score: object, reason: RejectReason) -> None:
    envelope = _with_body(
        partial_envelope(_partial(), "aggregator-north", NOW), nodes=[["north-t00001", 100, 0.5, 5200, score]]
    )

    assert _refusal(parse_partial, envelope, SHAPES) is reason


# -- alerts ----------------------------------------------------------------------------------

ALERT = NodeAlert("north-t00001", "north", 6, 0.84, 0.4, NOW - 30.5, 3)


def test_alert_round_trips_with_the_model_version_in_the_envelope() -> None:
    envelope = _through_the_wire(alert_envelope(ALERT, NOW), Kind.ALERT)

    header = (envelope.sender, envelope.region, envelope.round_id, envelope.base_version)
    assert header == ("north-t00001", "north", 0, 6)
    assert parse_alert(envelope) == ALERT
    assert parse_alert(envelope).ratio == pytest.approx(2.1)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"score": math.nan}, RejectReason.NON_FINITE),
        ({"score": math.inf}, RejectReason.NON_FINITE),
        ({"threshold": -math.inf}, RejectReason.NON_FINITE),
        ({"window_ts": math.nan}, RejectReason.NON_FINITE),
        ({"threshold": 0.0}, RejectReason.BAD_VALUE),
        ({"score": 0.4}, RejectReason.BAD_VALUE),  # not above the threshold: not an alert
        ({"score": -1.0}, RejectReason.BAD_VALUE),
        ({"window_ts": 0.0}, RejectReason.BAD_VALUE),
        ({"suppressed": -1}, RejectReason.BAD_VALUE),
        ({"suppressed": 2**63}, RejectReason.BAD_VALUE),  # InfluxDB integers are int64
        ({"score": 1e300, "threshold": 1e-300}, RejectReason.NON_FINITE),  # the ratio overflows
        ({"suppressed": 1.5}, RejectReason.MALFORMED),
        ({"suppressed": True}, RejectReason.MALFORMED),
        ({"score": "0.9"}, RejectReason.MALFORMED),
        ({"window_ts": ...}, RejectReason.MALFORMED),
    ],
)
def test_alert_with_a_bad_field_is_refused(changes: dict[str, object], reason: RejectReason) -> None:
    envelope = _with_body(alert_envelope(ALERT, NOW), **changes)

    assert _refusal(parse_alert, envelope) is reason


@pytest.mark.parametrize("version", [-1, 2**63])
def test_alert_scored_by_an_impossible_model_version_is_bad_value(version: int) -> None:
    envelope = alert_envelope(dataclasses.replace(ALERT, model_version=version), NOW)

    assert _refusal(parse_alert, envelope) is RejectReason.BAD_VALUE
