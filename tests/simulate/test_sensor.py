"""The simulator's live windows and faults (simulate.sensor) and its batched scoring
(simulate.batch_scorer): no brokers, a buffer on disk."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from edge_node.buffer import FeatureBuffer
from learning.model import AutoencoderShape, initial_weights
from learning.training import reconstruction_errors
from simulate.batch_scorer import BatchScorer, score_window_sets
from simulate.sensor import LIVE_OFFSET, FaultPlan, Synthesis, TurbineSensor, alert_summary, plan_faults
from simulate.vibration import Fault, turbine_features, turbine_profile
from wire.messages import NodeAlert

NODES = [f"north-t{i:05d}" for i in range(1, 41)]


def test_a_share_of_the_fleet_fails_the_same_way_for_the_same_seed() -> None:
    plans = plan_faults(NODES, 0.05, 12, seed=3, severity=1.0)

    assert len(plans) == 2 and plans == plan_faults(NODES, 0.05, 12, seed=3, severity=1.0)
    assert all(1 <= plan.onset_night <= 12 for plan in plans.values())
    assert plan_faults(NODES, 0.0, 12, seed=3, severity=1.0) == {}
    assert len(plan_faults(NODES, 0.01, 12, seed=3, severity=1.0)) == 1  # a share of 40 rounds up


def test_a_fault_grows_from_its_onset_to_twice_its_severity() -> None:
    plan = FaultPlan(Fault.GEAR_WEAR, onset_night=3, severity=1.2)

    assert [plan.severity_on(night) for night in (3, 4, 5, 9)] == pytest.approx([1.2, 1.8, 2.4, 2.4])


def _sensor(tmp_path: Path, plan: FaultPlan | None) -> TurbineSensor:
    return TurbineSensor(turbine_profile(5, 0), FeatureBuffer(tmp_path / "buffer", 1000), 4, plan)


async def test_each_night_is_recorded_once_and_missed_nights_are_caught_up(tmp_path: Path) -> None:
    sensor = _sensor(tmp_path, None)

    await sensor(1)
    await sensor(1)
    await sensor(3)

    windows, _, sequences = sensor.buffer.read_recorded(sensor.buffer.chunks())
    assert sequences.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    np.testing.assert_array_equal(windows[4:8], turbine_features(sensor.profile, 4, offset=LIVE_OFFSET + 2))


async def test_nothing_is_recorded_past_the_last_night_until_the_limit_is_lifted(tmp_path: Path) -> None:
    sensor = TurbineSensor(turbine_profile(5, 0), FeatureBuffer(tmp_path / "buffer", 1000), 4, None, last_night=2)

    await sensor(3)
    assert [c.sequence for c in sensor.buffer.chunks()] == [0, 1]
    sensor.last_night = None  # a fleet left running
    await sensor(3)

    assert len(sensor.buffer.chunks()) == 3


async def test_windows_carry_the_fault_from_its_onset_night_on(tmp_path: Path) -> None:
    plan = FaultPlan(Fault.IMBALANCE, onset_night=2, severity=1.0)
    sensor = _sensor(tmp_path, plan)

    await sensor(1)
    assert sensor.faulty_since is None
    await sensor(3)

    windows = sensor.buffer.windows()
    profile = sensor.profile
    np.testing.assert_array_equal(windows[:4], turbine_features(profile, 4, offset=LIVE_OFFSET + 1))
    faulty = turbine_features(profile, 4, offset=LIVE_OFFSET + 3, fault=Fault.IMBALANCE, severity=1.5)
    np.testing.assert_array_equal(windows[8:], faulty)
    assert sensor.faulty_since == sensor.buffer.chunks()[1].recorded_at


def test_an_alert_is_true_when_its_window_was_recorded_after_the_fault_began(tmp_path: Path) -> None:
    faulty, healthy = _sensor(tmp_path / "a", FaultPlan(Fault.GEAR_WEAR, 2, 1.0)), _sensor(tmp_path / "b", None)
    faulty.faulty_since = 1_763_900_100.0
    sensors = {"north-t00001": faulty, "north-t00002": healthy}

    def alert(node: str, window_ts: float) -> NodeAlert:
        return NodeAlert(node, "north", 1, 0.9, 0.4, window_ts, 0)

    summary = alert_summary(
        [alert("north-t00001", 1_763_900_100.0), alert("north-t00001", 1_763_900_099.999), alert("north-t00002", 1e9)],
        sensors,
        stored=3,
    )

    assert (summary["count"], summary["stored"], summary["from_faulty"]) == (3, 3, 1)
    assert summary["precision"] == pytest.approx(1 / 3)
    assert (summary["faulty_turbines"], summary["faulty_turbines_alerted"], summary["healthy_turbines_alerted"]) == (
        1,
        1,
        1,
    )
    assert summary["faults"] == {"north-t00001": {"fault": "gear_wear", "onset_night": 2}}


def test_no_alerts_means_no_precision() -> None:
    assert alert_summary([], {}, stored=None)["precision"] is None


# -- batched scoring -------------------------------------------------------------------------

SHAPE = AutoencoderShape()


@pytest.mark.parametrize("max_windows", [1, 7, 10_000])
def test_window_sets_scored_together_score_as_each_alone(max_windows: int) -> None:
    weights = initial_weights(SHAPE, 1)
    rng = np.random.default_rng(0)
    sets = [rng.standard_normal((n, SHAPE.n_features)).astype(np.float32) for n in (5, 0, 9, 1)]

    scores = score_window_sets(weights, sets, SHAPE, max_windows)

    assert [len(s) for s in scores] == [5, 0, 9, 1]
    for windows, got in zip(sets, scores, strict=True):
        if len(windows):
            np.testing.assert_allclose(got, reconstruction_errors(weights, windows, SHAPE), rtol=1e-5)


async def test_the_batch_scorer_scores_each_model_version_with_its_own_weights() -> None:
    old, new = initial_weights(SHAPE, 1), initial_weights(SHAPE, 2)
    windows = np.random.default_rng(1).standard_normal((6, SHAPE.n_features)).astype(np.float32)
    with ThreadPoolExecutor(1) as executor:
        scorer = BatchScorer(SHAPE, executor, gather_s=0.01)
        got = await asyncio.gather(scorer(old, 1, windows), scorer(new, 2, windows), scorer(old, 1, windows[:2]))

    np.testing.assert_allclose(got[0], reconstruction_errors(old, windows, SHAPE), rtol=1e-5)
    np.testing.assert_allclose(got[1], reconstruction_errors(new, windows, SHAPE), rtol=1e-5)
    np.testing.assert_allclose(got[2], got[0][:2], rtol=1e-5)
    assert scorer.passes == 2 and scorer.windows_scored == 14


async def test_the_batch_scorer_scores_a_full_pass_at_once_and_hands_failures_to_every_node() -> None:
    weights = initial_weights(SHAPE, 1)
    windows = np.random.default_rng(1).standard_normal((3, SHAPE.n_features)).astype(np.float32)
    with ThreadPoolExecutor(1) as executor:
        scorer = BatchScorer(SHAPE, executor, gather_s=60.0, max_nodes=2)  # a gather that never ends here
        got = await asyncio.wait_for(asyncio.gather(*(scorer(weights, 1, windows) for _ in range(4))), 30)
        assert scorer.passes == 2 and all(len(scores) == 3 for scores in got)

        wrong = np.zeros((3, SHAPE.n_features + 1), np.float32)
        failed = await asyncio.wait_for(
            asyncio.gather(scorer(weights, 1, wrong), scorer(weights, 1, wrong), return_exceptions=True), 30
        )
        assert all(isinstance(outcome, Exception) for outcome in failed)


async def test_the_batch_scorer_scores_a_version_once_the_fleet_has_asked() -> None:
    weights = initial_weights(SHAPE, 1)
    windows = np.random.default_rng(1).standard_normal((3, SHAPE.n_features)).astype(np.float32)
    with ThreadPoolExecutor(1) as executor:
        scorer = BatchScorer(SHAPE, executor, gather_s=60.0, max_nodes=10, expected=3)  # the gathering never ends here
        got = await asyncio.wait_for(asyncio.gather(*(scorer(weights, 1, windows) for _ in range(3))), 30)
        assert scorer.passes == 1 and [len(scores) for scores in got] == [3, 3, 3]

        fewer = asyncio.gather(*(scorer(weights, 2, windows) for _ in range(2)))
        await asyncio.sleep(0.2)
        assert not fewer.done()  # two of three: the rest may still come
        fewer.cancel()


async def test_a_synthesis_process_records_into_the_buffer_the_node_reads(tmp_path: Path) -> None:
    plan = FaultPlan(Fault.GEAR_WEAR, onset_night=2, severity=1.0)
    node_buffer = FeatureBuffer(tmp_path / "buffer", 1000)  # the node's own object, as in the simulator
    synthesis = Synthesis()
    try:
        sensor = TurbineSensor(
            turbine_profile(5, 0), FeatureBuffer(tmp_path / "buffer", 1000), 4, plan, synthesis=synthesis
        )
        await sensor(1)
        assert len(node_buffer.windows()) == 4
        await sensor(3)
    finally:
        synthesis.shutdown()

    chunks = node_buffer.chunks()
    assert [c.sequence for c in chunks] == [0, 1, 2]
    np.testing.assert_array_equal(
        node_buffer.windows()[:4], turbine_features(sensor.profile, 4, offset=LIVE_OFFSET + 1)
    )
    assert sensor.faulty_since == chunks[1].recorded_at


async def test_the_synthesis_process_takes_a_fleets_recordings_in_one_call_and_fails_only_the_bad_one(
    tmp_path: Path,
) -> None:
    synthesis = Synthesis(gather_s=0.5)
    try:
        sensors = [
            TurbineSensor(turbine_profile(i, 0), FeatureBuffer(tmp_path / f"b{i}", 1000), 4, None, synthesis=synthesis)
            for i in range(3)
        ]
        broken = FeatureBuffer(tmp_path / "broken", 1000)
        broken.directory.rmdir()
        broken.directory.write_text("a file where the buffer's directory was")
        sensors.append(TurbineSensor(turbine_profile(9, 0), broken, 4, None, synthesis=synthesis))
        outcomes = await asyncio.wait_for(asyncio.gather(*(s(1) for s in sensors), return_exceptions=True), 60)
    finally:
        synthesis.shutdown()
    assert synthesis.calls == 1
    assert outcomes[:3] == [None, None, None] and isinstance(outcomes[3], Exception)
    for index in range(3):
        np.testing.assert_array_equal(
            FeatureBuffer(tmp_path / f"b{index}", 1000).windows(),
            turbine_features(turbine_profile(index, 0), 4, offset=LIVE_OFFSET + 1),
        )
