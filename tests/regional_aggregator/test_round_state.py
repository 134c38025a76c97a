"""regional_aggregator.round_state: a region's round records accepted updates (summary and norm),
counts refusals by reason, knows when it is complete or due, and turns an aggregate into the
partial it ships."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from learning.robust import RobustPolicy, WeightedUpdate, aggregate_region, flatten, iterate
from regional_aggregator.round_state import RegionalRound
from wire.envelope import Kind, open_envelope, seal
from wire.errors import RejectReason
from wire.messages import NodeSummary, NodeUpdate, RoundAnnouncement, parse_partial, partial_envelope

SHAPES: dict[str, tuple[int, ...]] = {"0.weight": (4, 3), "0.bias": (4,)}
OPENED, DEADLINE = 1_763_900_000.0, 1_763_903_600.0
EXPECTED = frozenset({"north-t00001", "north-t00002", "north-t00003"})


def _round(expected: frozenset[str] = EXPECTED) -> RegionalRound:
    announcement = RoundAnnouncement(5, 4, OPENED, DEADLINE, DEADLINE + 1800)
    return RegionalRound.open("north", announcement, expected, SHAPES)


def _update(node_id: str, num_samples: int, seed: int, loss: float = 0.5) -> NodeUpdate:
    rng = np.random.default_rng(seed)
    delta = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in SHAPES.items()}
    return NodeUpdate(node_id, "north", 5, 4, delta, num_samples, loss)


def test_an_open_round_knows_its_id_and_has_counted_nothing() -> None:
    regional = _round()

    assert regional.round_id == 5
    assert regional.nodes == {}
    assert regional.norms == {}


def test_accepting_records_the_node_summary_with_its_wire_size() -> None:
    regional = _round()

    regional.accept(_update("north-t00001", 120, seed=1, loss=0.75), wire_bytes=5123)

    assert regional.nodes == {"north-t00001": NodeSummary("north-t00001", 120, 0.75, 5123)}


def test_accepting_records_the_norm_of_the_delta() -> None:
    regional = _round()
    update = _update("north-t00001", 120, seed=1)

    regional.accept(update, wire_bytes=5123)

    expected = np.sqrt(sum(float((array.astype(np.float64) ** 2).sum()) for array in update.delta.values()))
    assert regional.norms["north-t00001"] == pytest.approx(expected, rel=1e-6)


UNCLIPPED_FEDAVG = RobustPolicy(clip_multiplier=None)


def _aggregate(regional: RegionalRound, updates: list[NodeUpdate], policy: RobustPolicy = UNCLIPPED_FEDAVG):
    source = iterate(WeightedUpdate(u.node_id, float(u.num_samples), flatten(u.delta)) for u in updates)
    return aggregate_region(source, regional.norms.values(), policy)


def test_partial_holds_the_sample_weighted_sum_of_the_accepted_deltas() -> None:
    regional = _round()
    updates = [_update("north-t00001", 100, seed=1), _update("north-t00002", 300, seed=2)]
    for update in updates:
        regional.accept(update, wire_bytes=5000)

    partial = regional.to_partial(_aggregate(regional, updates))

    assert (partial.region, partial.round_id, partial.base_version) == ("north", 5, 4)
    assert partial.total_weight == 400.0
    for name in SHAPES:
        expected = sum(u.num_samples * u.delta[name].astype(np.float64) for u in updates)
        np.testing.assert_allclose(partial.weighted_sum[name], expected, rtol=1e-6)


def test_partial_lists_expected_accepted_and_refused() -> None:
    regional = _round()
    update = _update("north-t00002", 50, seed=2)
    regional.accept(update, wire_bytes=4000)
    regional.reject(RejectReason.BAD_SIGNATURE)
    regional.reject(RejectReason.DUPLICATE)
    regional.reject(RejectReason.BAD_SIGNATURE)

    partial = regional.to_partial(_aggregate(regional, [update]))

    assert partial.expected == 3
    assert partial.accepted == 1
    assert [n.node_id for n in partial.nodes] == ["north-t00002"]
    assert partial.rejected == {"bad_signature": 2, "duplicate": 1}


def test_partial_carries_each_nodes_outlier_score() -> None:
    regional = _round()
    updates = [_update(node, 100, seed=i) for i, node in enumerate(sorted(EXPECTED))]
    for update in updates:
        regional.accept(update, wire_bytes=5000)
    aggregate = _aggregate(regional, updates, RobustPolicy())

    partial = regional.to_partial(aggregate)

    assert {n.node_id: n.outlier_score for n in partial.nodes} == aggregate.outlier_scores
    assert len(set(aggregate.outlier_scores.values())) == 3


def test_partial_of_a_round_nobody_reported_to_carries_zero_weight() -> None:
    partial = _round().to_partial(None)

    assert partial.total_weight == 0.0
    assert partial.accepted == 0
    assert all(not array.any() for array in partial.weighted_sum.values())


def test_partial_crosses_the_wire_exactly() -> None:
    regional = _round()
    update = _update("north-t00001", 100, seed=1)
    regional.accept(update, wire_bytes=5000)
    regional.reject(RejectReason.STALE_TIMESTAMP)
    key = Ed25519PrivateKey.generate()
    partial = regional.to_partial(_aggregate(regional, [update]))

    opened = open_envelope(
        seal(partial_envelope(partial, "aggregator-north", DEADLINE), key),
        max_bytes=1 << 20,
        keys=lambda _: key.public_key(),
        expected_kind=Kind.PARTIAL,
    )
    parsed = parse_partial(opened, SHAPES)

    assert (parsed.total_weight, parsed.expected, parsed.rejected, parsed.nodes) == (
        100.0,
        3,
        {"stale_timestamp": 1},
        partial.nodes,
    )
    for name in SHAPES:
        np.testing.assert_array_equal(parsed.weighted_sum[name], partial.weighted_sum[name])


def test_round_is_incomplete_until_every_expected_node_is_counted() -> None:
    regional = _round()

    completeness = []
    for index, node in enumerate(sorted(EXPECTED)):
        completeness.append(regional.complete())
        regional.accept(_update(node, 10, seed=index), wire_bytes=1000)
    completeness.append(regional.complete())

    assert completeness == [False, False, False, True]


def test_an_unexpected_node_does_not_complete_the_round() -> None:
    regional = _round(frozenset({"north-t00001"}))

    regional.accept(_update("north-t00009", 10, seed=0), wire_bytes=1000)

    assert not regional.complete()


def test_a_round_expecting_nobody_is_never_complete() -> None:
    regional = _round(frozenset())

    regional.accept(_update("north-t00001", 10, seed=0), wire_bytes=1000)

    assert not regional.complete()


@pytest.mark.parametrize(
    ("now", "due"),
    [(OPENED, False), (DEADLINE - 0.001, False), (DEADLINE, True), (DEADLINE + 60, True)],
    ids=["opened", "just-before", "deadline", "after"],
)
def test_an_incomplete_round_is_due_at_its_regional_deadline(now: float, due: bool) -> None:
    assert _round().due(now) is due


def test_a_complete_round_is_due_before_its_deadline() -> None:
    regional = _round(frozenset({"north-t00001"}))
    regional.accept(_update("north-t00001", 10, seed=0), wire_bytes=1000)

    assert regional.due(OPENED)


def test_refusals_are_counted_per_reason() -> None:
    regional = _round()

    for reason in [RejectReason.OVERSIZED, RejectReason.MALFORMED, RejectReason.OVERSIZED]:
        regional.reject(reason)

    assert regional.rejected == {"oversized": 2, "malformed": 1}
