"""learning.detection: thresholds are quantiles of a turbine's own normal scores, reports count
alarms correctly (and define the no-alarm and no-unseen cases), AUC behaves at its extremes, and
ROC points are a thinned, monotone curve from (0, 0) to (1, 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from learning.detection import DetectionReport, calibrate_threshold, evaluate_detection, roc_points


def test_calibrate_threshold_is_the_quantile_of_normal_scores() -> None:
    scores = np.arange(101, dtype=np.float64)  # 0 … 100

    assert calibrate_threshold(scores, 0.99) == pytest.approx(99.0)
    assert calibrate_threshold(scores, 0.5) == pytest.approx(50.0)
    assert calibrate_threshold(scores, 1.0) == pytest.approx(100.0)


def test_calibrated_threshold_leaves_about_one_minus_quantile_false_alarms() -> None:
    rng = np.random.default_rng(0)
    calibration, fresh = rng.gamma(2.0, size=20_000), rng.gamma(2.0, size=20_000)

    threshold = calibrate_threshold(calibration, 0.99)

    assert isinstance(threshold, float)
    assert np.mean(fresh > threshold) == pytest.approx(0.01, abs=0.003)


@pytest.mark.parametrize(("scores", "quantile"), [(np.array([]), 0.99), (np.ones(5), 1.5), (np.array([np.nan]), 0.9)])
def test_calibrate_threshold_refuses_bad_input(scores: np.ndarray, quantile: float) -> None:
    with pytest.raises(ValueError):
        calibrate_threshold(scores, quantile)


def test_perfect_separation_gives_auc_precision_and_recall_of_one() -> None:
    normal = np.linspace(0.0, 0.9, 50)
    faults = np.linspace(1.5, 3.0, 20)
    unseen = np.array([0.2, 0.5])

    report = evaluate_detection(normal, faults, unseen, threshold=1.0)

    assert report == DetectionReport(
        auc=1.0,
        precision=1.0,
        recall=1.0,
        false_alarm_rate_seen=0.0,
        false_alarm_rate_unseen=0.0,
        n_normal=50,
        n_fault=20,
        n_unseen=2,
    )


def test_identical_distributions_give_auc_near_one_half() -> None:
    rng = np.random.default_rng(1)

    report = evaluate_detection(rng.normal(size=20_000), rng.normal(size=20_000), np.array([]), threshold=1.0)

    assert report.auc == pytest.approx(0.5, abs=0.02)


def test_alarm_counts_give_precision_recall_and_false_alarm_rates() -> None:
    normal = np.array([0.1, 0.5, 1.2, 0.9, 2.0])  # 2 of 5 alarm
    faults = np.array([3.0, 0.4, 1.1, 5.0])  # 3 of 4 alarm
    unseen = np.array([1.5, 0.2, 1.01, 0.3, 0.99, 1.0, 4.0, 0.0])  # 3 of 8 alarm; 1.0 itself does not

    report = evaluate_detection(normal, faults, unseen, threshold=1.0)

    assert report.precision == pytest.approx(3 / 5)
    assert report.recall == pytest.approx(3 / 4)
    assert report.false_alarm_rate_seen == pytest.approx(2 / 5)
    assert report.false_alarm_rate_unseen == pytest.approx(3 / 8)
    assert (report.n_normal, report.n_fault, report.n_unseen) == (5, 4, 8)


def test_the_threshold_moves_the_alarms_but_not_the_auc() -> None:
    normal, faults = np.array([1.0, 2.0, 3.0]), np.array([2.5, 4.0])

    low = evaluate_detection(normal, faults, np.array([]), threshold=0.0)
    high = evaluate_detection(normal, faults, np.array([]), threshold=np.array(3.5))

    assert low.auc == high.auc == pytest.approx(5 / 6)
    assert (low.recall, low.false_alarm_rate_seen, low.precision) == (1.0, 1.0, pytest.approx(2 / 5))
    assert (high.recall, high.false_alarm_rate_seen, high.precision) == (0.5, 0.0, 1.0)


def test_no_alarms_gives_precision_one_and_recall_zero() -> None:
    report = evaluate_detection(np.array([0.1, 0.2]), np.array([0.3, 0.4]), np.array([0.5]), threshold=10.0)

    assert report.precision == 1.0
    assert report.recall == 0.0
    assert report.false_alarm_rate_seen == 0.0
    assert report.auc == 1.0


def test_no_unseen_windows_gives_a_nan_unseen_false_alarm_rate() -> None:
    report = evaluate_detection(np.array([0.1, 2.0]), np.array([3.0]), np.array([]), threshold=1.0)

    assert math.isnan(report.false_alarm_rate_unseen)
    assert report.n_unseen == 0


@pytest.mark.parametrize(
    ("normal", "faults", "threshold"),
    [
        (np.array([]), np.array([1.0]), 1.0),
        (np.array([1.0]), np.array([]), 1.0),
        (np.array([1.0]), np.array([np.inf]), 1.0),
        (np.array([1.0]), np.array([2.0]), np.array([1.0, 2.0])),
        (np.ones((2, 2)), np.array([2.0]), 1.0),
    ],
)
def test_evaluate_detection_refuses_bad_input(
    normal: np.ndarray, faults: np.ndarray, threshold: np.ndarray | float
) -> None:
    with pytest.raises(ValueError):
        evaluate_detection(normal, faults, np.array([]), threshold)


@pytest.mark.parametrize("max_points", [2, 10, 200])
def test_roc_points_are_monotone_from_origin_to_one_one_within_max_points(max_points: int) -> None:
    rng = np.random.default_rng(2)
    normal, faults = rng.normal(size=3_000), rng.normal(loc=1.0, size=1_000)

    fpr, tpr = roc_points(normal, faults, max_points=max_points)

    assert len(fpr) == len(tpr) <= max_points
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert all(isinstance(value, float) for value in fpr + tpr)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_roc_points_keep_a_short_curve_whole() -> None:
    normal, faults = np.array([0.0, 1.0, 2.5]), np.array([2.0, 3.0])

    fpr, tpr = roc_points(normal, faults)

    expected_fpr, expected_tpr, _ = roc_curve([0, 0, 0, 1, 1], np.concatenate([normal, faults]))
    assert (fpr, tpr) == (expected_fpr.tolist(), expected_tpr.tolist())
    assert len(fpr) > 2


def test_roc_points_refuse_fewer_than_two_points() -> None:
    with pytest.raises(ValueError, match="max_points"):
        roc_points(np.array([0.0]), np.array([1.0]), max_points=1)
