"""cloud_core.rounds and cloud_core.metrics: a global round takes one partial per known region for
its own round and base, merges them into the next model, and reports numbers that add up, as
InfluxDB points of the documented schema."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cloud_core.metrics import round_points
from cloud_core.rounds import CloudRound, RoundRecord, guard_verdict, quorum_verdict, round_record
from learning.aggregation import apply_delta, fedavg
from wire.errors import RejectedMessage, RejectReason
from wire.messages import NodeSummary, RegionalPartial, RoundAnnouncement

SHAPES: dict[str, tuple[int, ...]] = {"0.weight": (3, 2), "0.bias": (3,)}
OPENED = 1_763_900_000.0
CLOSED = OPENED + 4000.5
REGIONS = frozenset({"north", "south", "west"})


def _announcement() -> RoundAnnouncement:
    return RoundAnnouncement(9, 8, OPENED, OPENED + 3600, OPENED + 5400)


def _deltas(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{n: (rng.standard_normal(s) * 0.1).astype(np.float32) for n, s in SHAPES.items()} for _ in range(count)]


def _partial(
    region: str,
    nodes: list[NodeSummary],
    deltas: list[dict[str, np.ndarray]] | None = None,
    *,
    round_id: int = 9,
    base_version: int = 8,
    rejected: dict[str, int] | None = None,
    expected: int = 3,
) -> RegionalPartial:
    deltas = deltas if deltas is not None else _deltas(len(nodes), seed=len(region))
    weighted_sum = {
        name: sum(
            (n.num_samples * d[name].astype(np.float64) for n, d in zip(nodes, deltas, strict=True)), np.zeros(shape)
        ).astype(np.float32)
        for name, shape in SHAPES.items()
    }
    return RegionalPartial(
        region=region,
        round_id=round_id,
        base_version=base_version,
        weighted_sum=weighted_sum,
        total_weight=float(sum(n.num_samples for n in nodes)),
        expected=expected,
        rejected=rejected or {},
        nodes=tuple(nodes),
    )


NORTH_NODES = [NodeSummary("north-t00001", 100, 0.5, 5000), NodeSummary("north-t00002", 300, 0.25, 5400)]
SOUTH_NODES = [NodeSummary("south-t00001", 600, 1.0, 6200)]


def _round_with_two_regions() -> CloudRound:
    cloud_round = CloudRound(_announcement(), REGIONS)
    cloud_round.add(_partial("north", NORTH_NODES, rejected={"bad_signature": 2, "duplicate": 1}))
    cloud_round.add(_partial("south", SOUTH_NODES, rejected={"stale_timestamp": 4}, expected=2))
    return cloud_round


def _reason(cloud_round: CloudRound, partial: RegionalPartial) -> RejectReason:
    with pytest.raises(RejectedMessage) as refused:
        cloud_round.add(partial)
    return refused.value.reason


# -- CloudRound ----------------------------------------------------------------------------


def test_round_is_complete_once_every_region_reported() -> None:
    cloud_round = _round_with_two_regions()
    before = cloud_round.complete()

    cloud_round.add(_partial("west", []))

    assert (before, cloud_round.complete()) == (False, True)
    assert cloud_round.round_id == 9


def test_second_partial_of_a_region_is_duplicate() -> None:
    cloud_round = _round_with_two_regions()

    assert _reason(cloud_round, _partial("north", NORTH_NODES)) is RejectReason.DUPLICATE


def test_partial_of_a_region_outside_the_fleet_is_wrong_region() -> None:
    assert _reason(CloudRound(_announcement(), REGIONS), _partial("east", NORTH_NODES)) is RejectReason.WRONG_REGION


@pytest.mark.parametrize(("round_id", "reason"), [(8, RejectReason.STALE_ROUND), (10, RejectReason.FUTURE_ROUND)])
def test_partial_of_another_round_is_refused(round_id: int, reason: RejectReason) -> None:
    partial = _partial("north", NORTH_NODES, round_id=round_id)

    assert _reason(CloudRound(_announcement(), REGIONS), partial) is reason


def test_partial_built_on_another_model_is_wrong_base_version() -> None:
    partial = _partial("north", NORTH_NODES, base_version=7)

    assert _reason(CloudRound(_announcement(), REGIONS), partial) is RejectReason.WRONG_BASE_VERSION


def test_refused_partial_is_not_kept() -> None:
    cloud_round = CloudRound(_announcement(), REGIONS)

    with pytest.raises(RejectedMessage):
        cloud_round.add(_partial("north", NORTH_NODES, base_version=7))

    assert cloud_round.partials == {}


def test_merged_weights_are_the_base_plus_flat_fedavg_of_every_node() -> None:
    north_deltas, south_deltas = _deltas(2, seed=1), _deltas(1, seed=2)
    cloud_round = CloudRound(_announcement(), REGIONS)
    cloud_round.add(_partial("north", NORTH_NODES, north_deltas))
    cloud_round.add(_partial("south", SOUTH_NODES, south_deltas))
    base = {name: np.ones(shape, np.float32) for name, shape in SHAPES.items()}

    merged = cloud_round.merged_weights(base, server_learning_rate=0.5)

    assert merged is not None
    average = fedavg(north_deltas + south_deltas, [100, 300, 600])
    expected = apply_delta(base, average, 0.5)
    for name in SHAPES:
        np.testing.assert_allclose(merged[name], expected[name], rtol=1e-6)


def test_merged_weights_are_none_when_no_partial_carries_weight() -> None:
    cloud_round = CloudRound(_announcement(), REGIONS)
    cloud_round.add(_partial("north", []))
    cloud_round.add(_partial("south", []))
    base = {name: np.ones(shape, np.float32) for name, shape in SHAPES.items()}

    assert cloud_round.merged_weights(base, 1.0) is None


def test_merged_weights_are_none_when_no_region_reported() -> None:
    base = {name: np.ones(shape, np.float32) for name, shape in SHAPES.items()}

    assert CloudRound(_announcement(), REGIONS).merged_weights(base, 1.0) is None


# -- round_record --------------------------------------------------------------------------


def test_round_record_counts_updates_across_regions() -> None:
    record = round_record(_round_with_two_regions(), 9, "published", CLOSED, partials_refused=2)

    assert (record.round, record.model_version, record.status) == (9, 9, "published")
    assert record.updates_accepted == 3
    assert record.updates_rejected == 2 + 1 + 4
    assert record.partials_refused == 2


def test_round_record_means_are_per_update_bytes_and_sample_weighted_loss() -> None:
    record = round_record(_round_with_two_regions(), 9, "published", CLOSED, 0)

    assert record.bytes_per_update_mean == pytest.approx((5000 + 5400 + 6200) / 3)
    assert record.train_loss_mean == pytest.approx((100 * 0.5 + 300 * 0.25 + 600 * 1.0) / 1000)
    assert record.seconds == pytest.approx(4000.5)


def test_round_record_summarises_every_region_including_silent_ones() -> None:
    record = round_record(_round_with_two_regions(), 9, "published", CLOSED, 0)

    assert list(record.regions) == ["north", "south", "west"]
    assert record.regions["north"] == {
        "reported": True,
        "expected": 3,
        "accepted": 2,
        "rejected": {"bad_signature": 2, "duplicate": 1},
        "total_weight": 400.0,
        "bytes_per_update_mean": 5200.0,
        "quorum_met": True,
    }
    assert record.regions["west"] == {
        "reported": False,
        "expected": 0,
        "accepted": 0,
        "rejected": {},
        "total_weight": 0.0,
        "bytes_per_update_mean": 0.0,
        "quorum_met": False,
    }


def test_round_record_of_a_round_without_updates() -> None:
    record = round_record(CloudRound(_announcement(), REGIONS), 8, "empty", CLOSED, 0)

    assert record.status == "empty"
    assert (record.updates_accepted, record.updates_rejected) == (0, 0)
    assert (record.bytes_per_update_mean, record.train_loss_mean) == (0.0, 0.0)


def test_round_record_json_adds_seconds_rounded_to_milliseconds() -> None:
    record = round_record(_round_with_two_regions(), 9, "published", OPENED + 12.34567, 0)

    data = record.to_json()

    assert data["seconds"] == 12.346
    assert data["round"] == 9 and data["regions"]["south"]["accepted"] == 1


# -- InfluxDB points -----------------------------------------------------------------------

_LINE = re.compile(r"^(?P<measurement>[^, ]+)(?P<tags>(,[^, =]+=[^, ]+)*) (?P<fields>\S+) (?P<time>\d+)$")


def _parse(line: str) -> tuple[str, dict[str, str], dict[str, str], int]:
    match = _LINE.match(line)
    assert match, line
    tags = dict(tag.split("=", 1) for tag in match["tags"].split(",")[1:])
    fields = dict(field.split("=", 1) for field in match["fields"].split(","))
    return match["measurement"], tags, fields, int(match["time"])


def _kind(value: str) -> str:
    if value.startswith('"'):
        return "str"
    if value in ("true", "false"):
        return "bool"
    if value.endswith("i"):
        return "int"
    float(value)
    return "float"


SCHEMA = {
    "nacelle_round": (
        {"status"},
        {
            "round": "int",
            "model_version": "int",
            "updates_accepted": "int",
            "updates_rejected": "int",
            "bytes_per_update_mean": "float",
            "train_loss_mean": "float",
            "seconds": "float",
            "regions_reporting": "int",
            "reason": "str",
            "nodes_suspended": "int",
        },
    ),
    "nacelle_region": (
        {"region"},
        {
            "round": "int",
            "reported": "bool",
            "expected": "int",
            "accepted": "int",
            "rejected": "int",
            "total_weight": "float",
            "bytes_per_update_mean": "float",
            "quorum_met": "bool",
        },
    ),
    "nacelle_rejection": ({"region", "reason"}, {"round": "int", "count": "int"}),
    "nacelle_node": (
        {"region", "node"},
        {"round": "int", "num_samples": "int", "train_loss": "float", "update_bytes": "int", "outlier_score": "float"},
    ),
    "nacelle_model": ({"event"}, {"version": "int", "parent_version": "int", "round": "int"}),
}


def _lines(record: RoundRecord, cloud_round: CloudRound) -> list[tuple[str, dict[str, str], dict[str, str], int]]:
    return [_parse(point.to_line_protocol()) for point in round_points(record, cloud_round, parent_version=8)]


def test_points_follow_the_documented_schema_and_field_types() -> None:
    cloud_round = _round_with_two_regions()
    record = round_record(cloud_round, 9, "published", CLOSED, 0)

    for measurement, tags, fields, _ in _lines(record, cloud_round):
        tag_keys, field_types = SCHEMA[measurement]
        assert set(tags) == tag_keys, measurement
        assert {name: _kind(value) for name, value in fields.items()} == field_types, measurement


def test_float_fields_stay_floats_when_their_value_is_whole() -> None:
    cloud_round = CloudRound(_announcement(), REGIONS)
    cloud_round.add(_partial("north", [NodeSummary("north-t00001", 10, 0.0, 5000)]))
    record = round_record(cloud_round, 9, "published", OPENED + 60.0, 0)

    lines = _lines(record, cloud_round)

    round_fields = next(fields for m, _, fields, _ in lines if m == "nacelle_round")
    node_fields = next(fields for m, _, fields, _ in lines if m == "nacelle_node")
    assert [_kind(round_fields[f]) for f in ("bytes_per_update_mean", "train_loss_mean", "seconds")] == ["float"] * 3
    assert _kind(node_fields["train_loss"]) == "float"


def test_points_count_one_per_region_rejection_reason_and_node() -> None:
    cloud_round = _round_with_two_regions()
    record = round_record(cloud_round, 9, "published", CLOSED, 0)

    measurements = [m for m, _, _, _ in _lines(record, cloud_round)]

    assert measurements.count("nacelle_round") == 1
    assert measurements.count("nacelle_region") == 3
    assert measurements.count("nacelle_rejection") == 3
    assert measurements.count("nacelle_node") == 3
    assert measurements.count("nacelle_model") == 1


def test_round_point_carries_the_records_numbers() -> None:
    cloud_round = _round_with_two_regions()
    record = round_record(cloud_round, 9, "published", CLOSED, 0)

    _, tags, fields, timestamp = next(line for line in _lines(record, cloud_round) if line[0] == "nacelle_round")

    assert tags == {"status": "published"}
    assert fields["round"] == "9i" and fields["updates_accepted"] == "3i" and fields["updates_rejected"] == "7i"
    assert fields["regions_reporting"] == "2i"
    assert float(fields["train_loss_mean"]) == pytest.approx(record.train_loss_mean)
    assert timestamp == int(CLOSED * 1000)


def test_rejection_points_are_tagged_with_region_and_reason() -> None:
    cloud_round = _round_with_two_regions()
    record = round_record(cloud_round, 9, "published", CLOSED, 0)

    rejections = {
        (tags["region"], tags["reason"]): fields["count"]
        for m, tags, fields, _ in _lines(record, cloud_round)
        if m == "nacelle_rejection"
    }

    assert rejections == {
        ("north", "bad_signature"): "2i",
        ("north", "duplicate"): "1i",
        ("south", "stale_timestamp"): "4i",
    }


def test_node_points_are_tagged_with_region_and_node() -> None:
    cloud_round = _round_with_two_regions()
    record = round_record(cloud_round, 9, "published", CLOSED, 0)

    nodes = {
        tags["node"]: (tags["region"], fields["num_samples"], fields["update_bytes"])
        for m, tags, fields, _ in _lines(record, cloud_round)
        if m == "nacelle_node"
    }

    assert nodes == {
        "north-t00001": ("north", "100i", "5000i"),
        "north-t00002": ("north", "300i", "5400i"),
        "south-t00001": ("south", "600i", "6200i"),
    }


def test_no_model_point_when_no_model_was_published() -> None:
    cloud_round = CloudRound(_announcement(), REGIONS)
    record = round_record(cloud_round, 8, "empty", CLOSED, 0)

    measurements = [m for m, _, _, _ in _lines(record, cloud_round)]

    assert "nacelle_model" not in measurements
    assert measurements.count("nacelle_region") == 3


def test_model_point_names_the_new_version_and_its_parent() -> None:
    cloud_round = _round_with_two_regions()
    record = round_record(cloud_round, 9, "published", CLOSED, 0)

    _, tags, fields, _ = next(line for line in _lines(record, cloud_round) if line[0] == "nacelle_model")

    assert tags == {"event": "published"}
    assert fields == {"version": "9i", "parent_version": "8i", "round": "9i"}


# -- quorum and guard ----------------------------------------------------------------------


def _nodes(region: str, count: int) -> list[NodeSummary]:
    return [NodeSummary(f"{region}-t{i:05d}", 100, 0.5, 5000) for i in range(1, count + 1)]


def test_quorum_is_met_when_enough_regions_have_enough_of_their_nodes() -> None:
    cloud_round = CloudRound(_announcement(), REGIONS)
    cloud_round.add(_partial("north", _nodes("north", 2), expected=3))
    cloud_round.add(_partial("south", _nodes("south", 1), expected=4))

    verdict = quorum_verdict(cloud_round, min_node_share=0.5, min_region_share=0.3)

    assert verdict.met and verdict.reason == ""
    assert verdict.regions == {"north": True, "south": False, "west": False}


def test_quorum_failure_names_each_region_that_fell_short() -> None:
    cloud_round = CloudRound(_announcement(), REGIONS)
    cloud_round.add(_partial("north", _nodes("north", 2), expected=3))
    cloud_round.add(_partial("south", _nodes("south", 1), expected=4))

    verdict = quorum_verdict(cloud_round, min_node_share=0.5, min_region_share=0.5)

    assert not verdict.met
    assert (
        "1/3 regions" in verdict.reason
        and "south 1/4 nodes" in verdict.reason
        and "west did not report" in verdict.reason
    )


def test_a_round_with_no_accepted_update_never_meets_quorum() -> None:
    cloud_round = CloudRound(_announcement(), REGIONS)
    for region in REGIONS:
        cloud_round.add(_partial(region, [], expected=0))

    assert not quorum_verdict(cloud_round, min_node_share=0.0, min_region_share=0.0).met


@pytest.mark.parametrize(
    ("candidate", "current", "refused"),
    [(1.0, 1.0, False), (1.09, 1.0, False), (1.11, 1.0, True), (0.5, 1.0, False), (float("nan"), 1.0, True)],
)
def test_guard_refuses_a_model_whose_holdout_loss_rose_beyond_the_tolerance(
    candidate: float, current: float, refused: bool
) -> None:
    assert bool(guard_verdict(candidate, current, max_increase=0.10)) is refused
