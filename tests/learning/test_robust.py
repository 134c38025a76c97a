"""learning.robust: plain FedAvg stays exact, clipping bounds what one update can do, the trimmed
mean and the median ignore a hostile minority, and the outlier score singles it out."""

from __future__ import annotations

import numpy as np
import pytest

from learning.aggregation import fedavg
from learning.robust import (
    Aggregate,
    RobustPolicy,
    WeightedUpdate,
    aggregate_region,
    clip_norm_for,
    fedavg_from_sum,
    flatten,
    iterate,
    outlier_scores,
    unflatten,
)

SHAPES: dict[str, tuple[int, ...]] = {"0.weight": (3, 4), "0.bias": (3,)}


def _updates(count: int, seed: int = 0, scale: float = 0.05) -> list[WeightedUpdate]:
    rng = np.random.default_rng(seed)
    return [
        WeightedUpdate(f"n{i}", float(rng.integers(10, 100)), (1.0 + rng.normal(0, scale, 15)).astype(np.float32))
        for i in range(count)
    ]


def _norms(updates: list[WeightedUpdate]) -> list[float]:
    return [float(np.linalg.norm(u.delta)) for u in updates]


def test_fedavg_without_clipping_is_the_weighted_mean() -> None:
    updates = _updates(6)

    result = aggregate_region(iterate(updates), _norms(updates), RobustPolicy(clip_multiplier=None))

    expected = fedavg([{"v": u.delta} for u in updates], [u.weight for u in updates])["v"]
    assert result.total_weight == sum(u.weight for u in updates)
    np.testing.assert_allclose(result.weighted_sum / result.total_weight, expected, rtol=1e-6)
    assert result.clip_norm is None


def test_fedavg_streams_the_source_without_holding_it() -> None:
    updates = _updates(4)
    calls = []

    def source():
        calls.append(1)
        return (u for u in updates)  # a generator: can be walked once per call

    aggregate_region(source, _norms(updates), RobustPolicy())

    assert len(calls) == 2  # one pass to sum, one to score


def test_clipping_scales_a_long_update_down_to_the_multiple_of_the_median_norm() -> None:
    updates = _updates(5)
    attacker = WeightedUpdate("big", 50.0, updates[0].delta * 100)
    policy = RobustPolicy(clip_multiplier=2.0)
    everyone = [*updates, attacker]

    result = aggregate_region(iterate(everyone), _norms(everyone), policy)

    clip = 2.0 * float(np.median(_norms(everyone)))
    assert result.clip_norm == pytest.approx(clip)
    clipped = attacker.delta * (clip / np.linalg.norm(attacker.delta))
    expected = sum(u.weight * u.delta.astype(np.float64) for u in updates) + attacker.weight * clipped
    np.testing.assert_allclose(result.weighted_sum, expected, rtol=1e-5)


@pytest.mark.parametrize("aggregate", [Aggregate.TRIMMED_MEAN, Aggregate.MEDIAN])
def test_robust_aggregates_ignore_a_hostile_minority(aggregate: Aggregate) -> None:
    honest = _updates(8)
    hostile = [WeightedUpdate(f"bad{i}", 50.0, np.full(15, -1e3, np.float32)) for i in range(2)]
    everyone = honest + hostile
    policy = RobustPolicy(aggregate, trim_fraction=0.2, clip_multiplier=None)

    result = aggregate_region(iterate(everyone), _norms(everyone), policy)

    consensus = result.weighted_sum / result.total_weight
    assert np.all(np.abs(consensus - 1.0) < 0.2)  # honest deltas are 1 ± 0.05
    plain = aggregate_region(iterate(everyone), _norms(everyone), RobustPolicy(clip_multiplier=None))
    assert np.all(plain.weighted_sum / plain.total_weight < -100)


def test_outlier_score_singles_out_the_update_that_pulls_elsewhere() -> None:
    honest = _updates(10)
    flipped = WeightedUpdate("flip", 50.0, -honest[0].delta)
    everyone = [*honest, flipped]

    scores = aggregate_region(iterate(everyone), _norms(everyone), RobustPolicy(Aggregate.MEDIAN)).outlier_scores

    assert scores["flip"] > 10
    assert max(scores[u.node_id] for u in honest) < 3


def test_outlier_scores_of_identical_updates_are_zero() -> None:
    assert outlier_scores({"a": 0.0, "b": 0.0}) == {"a": 0.0, "b": 0.0}


def test_outlier_scores_fall_back_on_the_mean_when_most_updates_are_the_consensus() -> None:
    assert outlier_scores({"a": 0.0, "b": 0.0, "c": 3.0}) == {"a": 0.0, "b": 0.0, "c": 3.0}


def test_no_update_is_an_error() -> None:
    for aggregate in Aggregate:
        with pytest.raises(ValueError, match="no update"):
            aggregate_region(iterate([]), [], RobustPolicy(aggregate))


def test_clip_norm_is_off_without_multiplier_or_updates() -> None:
    assert clip_norm_for([1.0, 2.0], RobustPolicy(clip_multiplier=None)) is None
    assert clip_norm_for([], RobustPolicy()) is None


@pytest.mark.parametrize(
    "kwargs", [{"trim_fraction": 0.5}, {"trim_fraction": -0.1}, {"clip_multiplier": 0.0}, {"clip_multiplier": -1.0}]
)
def test_policy_refuses_impossible_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RobustPolicy(**kwargs)  # type: ignore[arg-type]


def test_flatten_and_unflatten_round_trip_in_tensor_order() -> None:
    rng = np.random.default_rng(1)
    weights = {name: rng.normal(size=shape).astype(np.float32) for name, shape in SHAPES.items()}

    back = unflatten(flatten(weights), SHAPES)

    assert list(back) == list(SHAPES)
    for name in SHAPES:
        np.testing.assert_array_equal(back[name], weights[name])
    with pytest.raises(ValueError, match="cannot fill"):
        unflatten(np.zeros(3, np.float32), SHAPES)


def _reader(updates: list[WeightedUpdate], reads: list[set[str] | None]):  # type: ignore[no-untyped-def]
    def read(only):  # type: ignore[no-untyped-def]
        reads.append(None if only is None else set(only))
        return [u for u in updates if only is None or u.node_id in only]

    return read


def test_fedavg_from_the_running_sum_equals_fedavg_over_every_update_also_with_clipping() -> None:
    updates = _updates(6)
    everyone = [*updates, WeightedUpdate("big", 50.0, updates[0].delta * 100)]
    running = sum(u.weight * u.delta.astype(np.float64) for u in everyone)
    norms = dict(zip([u.node_id for u in everyone], _norms(everyone), strict=True))
    policy = RobustPolicy(clip_multiplier=2.0)
    reads: list[set[str] | None] = []

    streamed = fedavg_from_sum(
        running, {u.node_id: u.weight for u in everyone}, norms, _reader(everyone, reads), policy
    )

    reference = aggregate_region(iterate(everyone), _norms(everyone), policy)
    np.testing.assert_allclose(streamed.weighted_sum, reference.weighted_sum, rtol=1e-6)  # the reference clips in fp32
    assert streamed.total_weight == reference.total_weight
    assert streamed.clip_norm == pytest.approx(reference.clip_norm)
    assert streamed.outlier_scores == pytest.approx(reference.outlier_scores)
    assert reads == [{"big"}, None]  # only the clipped update is read for the sum


def test_fedavg_from_the_running_sum_reads_nothing_for_the_sum_when_nothing_is_clipped() -> None:
    updates = _updates(5)
    running = sum(u.weight * u.delta.astype(np.float64) for u in updates)
    norms = {u.node_id: n for u, n in zip(updates, _norms(updates), strict=True)}
    reads: list[set[str] | None] = []

    result = fedavg_from_sum(
        running, {u.node_id: u.weight for u in updates}, norms, _reader(updates, reads), RobustPolicy()
    )

    np.testing.assert_allclose(result.weighted_sum, running)
    assert reads == [None]
