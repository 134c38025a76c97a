"""Edge alerts: the pure decisions (threshold, crossings, persistence, rate limit, warm-up) and
one scoring pass over a real on-disk buffer with a stand-in scorer and publisher (no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_node.alerts import (
    AlertRule,
    CalibrationError,
    Gate,
    PlannedAlert,
    ScoringState,
    alert_threshold,
    gate_windows,
    warmup_chunks,
)
from edge_node.buffer import FeatureBuffer
from edge_node.config import AlertsConfig
from edge_node.scoring import LiveScoring
from edge_node.state import NodeStateStore
from learning.model import Weights
from wire.messages import NodeAlert

NOW = 1_763_900_000.0
RULE = AlertRule(min_crossings=2, crossing_window=4, min_interval_s=3600.0)


# -- threshold -------------------------------------------------------------------------------


def test_threshold_is_the_quantile_of_the_normal_scores() -> None:
    scores = np.linspace(0.0, 1.0, 1001)

    assert alert_threshold(scores, 0.995) == pytest.approx(0.995)


def test_a_model_that_reproduces_every_window_gives_no_threshold() -> None:
    with pytest.raises(CalibrationError):
        alert_threshold(np.zeros(100), 0.995)


@pytest.mark.parametrize("scores", [np.array([]), np.array([0.1, np.nan])])
def test_no_threshold_from_no_scores_or_non_finite_ones(scores: np.ndarray) -> None:
    with pytest.raises(ValueError):
        alert_threshold(scores, 0.995)


# -- crossings and the rate limit -------------------------------------------------------------


def test_one_crossing_alone_is_noise_not_an_alert() -> None:
    planned, gate = gate_windows(np.array([0.1, 0.9, 0.1]), 0.5, RULE, Gate(), NOW)

    assert planned == [] and gate == Gate((False, True, False), None, 0)


def test_a_second_crossing_within_the_window_alerts_on_that_window() -> None:
    planned, gate = gate_windows(np.array([0.9, 0.1, 0.8, 0.1]), 0.5, RULE, Gate(), NOW)

    assert planned == [PlannedAlert(index=2, suppressed=0)]
    assert gate.last_alert_at == NOW


def test_crossings_remembered_from_the_previous_pass_count() -> None:
    _, gate = gate_windows(np.array([0.1, 0.9]), 0.5, RULE, Gate(), NOW)

    planned, _ = gate_windows(np.array([0.7]), 0.5, RULE, gate, NOW + 60)

    assert planned == [PlannedAlert(index=0, suppressed=0)]


def test_crossings_further_apart_than_the_window_never_alert() -> None:
    scores = np.array([0.9, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.9])

    assert gate_windows(scores, 0.5, RULE, Gate(), NOW)[0] == []


def test_exactly_the_threshold_does_not_cross() -> None:
    assert gate_windows(np.array([0.5, 0.5, 0.5]), 0.5, RULE, Gate(), NOW)[0] == []


def test_one_pass_sends_one_alert_and_counts_the_rest_for_the_next() -> None:
    planned, gate = gate_windows(np.full(6, 0.9), 0.5, RULE, Gate(), NOW)

    # The second window completes two crossings and fires; windows 3..6 would have fired too.
    assert planned == [PlannedAlert(index=1, suppressed=0)]
    assert gate.suppressed == 4


def test_the_rate_limit_holds_alerts_back_and_reports_them_once_it_has_passed() -> None:
    _, gate = gate_windows(np.full(2, 0.9), 0.5, RULE, Gate(), NOW)

    held, gate = gate_windows(np.full(3, 0.9), 0.5, RULE, gate, NOW + 3599)
    sent, gate = gate_windows(np.full(2, 0.9), 0.5, RULE, gate, NOW + 3600)

    assert held == []
    assert sent == [PlannedAlert(index=0, suppressed=3)]
    assert gate.last_alert_at == NOW + 3600 and gate.suppressed == 1


def test_without_a_rate_limit_every_firing_crossing_alerts() -> None:
    rule = AlertRule(min_crossings=1, crossing_window=1, min_interval_s=0.0)

    planned, gate = gate_windows(np.array([0.9, 0.1, 0.9]), 0.5, rule, Gate(), NOW)

    assert [p.index for p in planned] == [0, 2] and gate.suppressed == 0


def test_a_clock_set_back_does_not_silence_the_node() -> None:
    gate = Gate((True,), last_alert_at=NOW + 86_400, suppressed=0)

    planned, _ = gate_windows(np.array([0.9]), 0.5, RULE, gate, NOW)

    assert planned == [PlannedAlert(index=0, suppressed=0)]


@pytest.mark.parametrize(("crossings", "window", "interval"), [(0, 4, 0.0), (5, 4, 0.0), (1, 1, -1.0)])
def test_impossible_rules_are_refused(crossings: int, window: int, interval: float) -> None:
    with pytest.raises(ValueError):
        AlertRule(crossings, window, interval)


def test_alerts_config_refuses_more_crossings_than_its_window() -> None:
    with pytest.raises(ValueError, match="min_crossings"):
        AlertsConfig(min_crossings=9, crossing_window=8)


# -- warm-up and state -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "baseline", "taken"),
    [([96, 16], 0, 1), ([32, 32, 16], 0, 2), ([8, 8], 0, 2), ([16], 64, 0), ([], 0, 0)],
)
def test_warm_up_takes_the_oldest_chunks_until_the_baseline_is_large_enough(
    sizes: list[int], baseline: int, taken: int
) -> None:
    assert warmup_chunks(sizes, baseline, 64) == taken


def test_scoring_state_survives_json_and_forgets_evicted_chunks() -> None:
    state = ScoringState(3, 40, [1, 3], Gate((True, False), NOW, 2))

    after = state.advanced(5, 8, [5], Gate((True,), NOW + 1, 0), oldest_chunk=2)

    assert ScoringState.from_json(state.to_json()) == state
    assert after == ScoringState(5, 48, [3, 5], Gate((True,), NOW + 1, 0))


# -- one scoring pass over a real buffer --------------------------------------------------------

WEIGHTS: Weights = {"w": np.zeros(1, np.float32)}


def _windows(scores: list[float]) -> np.ndarray:
    """Windows whose first feature is the score the stand-in scorer gives them."""
    windows = np.zeros((len(scores), 4), np.float32)
    windows[:, 0] = scores
    return windows


class Node:
    """A node's buffer, state and scoring, with a scorer that reads scores off the windows."""

    def __init__(self, directory: Path, **alerts: object) -> None:
        self.buffer = FeatureBuffer(directory / "buffer", 10_000)
        self.store = NodeStateStore(directory / "state")
        self.sent: list[NodeAlert] = []
        self.scored: list[int] = []  # windows per scorer call
        self.failing = False
        config = AlertsConfig(**{"min_calibration_windows": 64, **alerts})  # type: ignore[arg-type]
        self.scoring = LiveScoring(
            config,
            self.buffer,
            self.store,
            node_id="north-t00001",
            region="north",
            scorer=self._score,
            publish=self._publish,
            clock=lambda: NOW,
        )

    async def _score(self, weights: Weights, version: int, windows: np.ndarray) -> np.ndarray:
        self.scored.append(len(windows))
        return windows[:, 0].astype(np.float64)

    async def _publish(self, alert: NodeAlert) -> None:
        if self.failing:
            raise ConnectionError("broker away")
        self.sent.append(alert)


def _normal(count: int, seed: int = 0) -> np.ndarray:
    return _windows(list(np.random.default_rng(seed).uniform(0.1, 0.2, count)))


async def test_a_new_node_takes_its_first_windows_as_baseline_and_alerts_on_later_faulty_ones(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.buffer.append(_normal(96), recorded_at=NOW - 3600)
    node.buffer.append(_windows([0.15, 0.9, 0.95, 0.15]), recorded_at=NOW - 10.25)

    [alert] = await node.scoring.run_pass(WEIGHTS, 3)

    threshold = node.scoring.threshold
    assert threshold is not None and 0.19 < threshold <= 0.2
    assert alert == NodeAlert("north-t00001", "north", 3, pytest.approx(0.95), threshold, NOW - 10.25, 0)
    assert node.scored == [96 + 4]  # baseline and live windows in one call
    assert node.sent == [alert]


async def test_a_restarted_node_neither_scores_nor_alerts_twice(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.buffer.append(_normal(96))
    node.buffer.append(_windows([0.9, 0.9]))
    await node.scoring.run_pass(WEIGHTS, 3)

    restarted = Node(tmp_path)

    assert await restarted.scoring.run_pass(WEIGHTS, 3) == [] and restarted.scored == []


async def test_windows_wait_for_a_baseline_large_enough_to_calibrate_on(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.buffer.append(_normal(32))
    assert await node.scoring.run_pass(WEIGHTS, 3) == []  # all of it became the baseline
    node.buffer.append(_windows([0.9, 0.9]))

    assert await node.scoring.run_pass(WEIGHTS, 3) == [] and node.scored == []
    assert node.store.load_scoring().windows_scored == 0


async def test_a_failed_publish_scores_the_same_windows_again_next_pass(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.buffer.append(_normal(96))
    node.buffer.append(_windows([0.9, 0.9]))
    node.failing = True
    with pytest.raises(ConnectionError):
        await node.scoring.run_pass(WEIGHTS, 3)
    node.failing = False

    [alert] = await node.scoring.run_pass(WEIGHTS, 3)

    assert alert.score == pytest.approx(0.9)


async def test_chunks_that_crossed_are_left_out_when_a_new_model_is_calibrated(tmp_path: Path) -> None:
    node = Node(tmp_path, min_interval_s=0.0)
    node.buffer.append(_normal(96))
    node.buffer.append(_windows([5.0] * 100))  # a failing turbine: far more than the baseline
    await node.scoring.run_pass(WEIGHTS, 3)
    node.buffer.append(_windows([5.0, 5.0]))

    alerts = await node.scoring.run_pass(WEIGHTS, 4)  # the new model calibrates on the 96 alone

    assert [(a.model_version, a.threshold < 0.21) for a in alerts] == [(4, True), (4, True)]
    assert node.scored[-1] == 96 + 2
    assert node.store.load_scoring().anomalous_chunks == [1, 2]


async def test_a_node_with_alerts_disabled_scores_nothing(tmp_path: Path) -> None:
    node = Node(tmp_path, enabled=False)
    node.buffer.append(_normal(96))
    node.buffer.append(_windows([0.9, 0.9]))

    assert await node.scoring.run_pass(WEIGHTS, 3) == [] and node.scored == []
