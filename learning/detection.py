"""Anomaly-detection metrics over arrays of anomaly scores: thresholds, AUC, alarms, ROC points.

For: turning reconstruction errors into per-turbine alert thresholds and scoring how well a model
(federated, local-only, …) separates fault windows from normal ones, pooled across a fleet.

Convention: every function takes anomaly scores where larger means more anomalous. To pool turbines
with different alert thresholds, the caller divides each window's score by its own turbine's
threshold (from `calibrate_threshold`) and evaluates the pooled normalised scores against a single
scalar threshold of 1.0 — so "alarm" means "score > that turbine's threshold" everywhere, and the
AUC is over the normalised scores. `evaluate_detection` accepts only a scalar threshold.

Not for: computing scores (see `learning.training.reconstruction_errors` and
`learning.batched.reconstruction_errors_many`), choosing models, or any I/O — arrays in, numbers out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import precision_score, recall_score, roc_auc_score, roc_curve


def calibrate_threshold(normal_scores: np.ndarray, quantile: float = 0.99) -> float:
    """Alert threshold for one turbine: the `quantile` of its own normal calibration scores.

    Uses numpy's default (linear) quantile interpolation. About (1 - quantile) of normal windows
    like the calibration ones will then score strictly above it and raise a false alarm.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    scores = _scores(normal_scores, "normal_scores")
    if scores.size == 0:
        raise ValueError("normal_scores is empty: cannot calibrate a threshold")
    return float(np.quantile(scores, quantile))


@dataclass(frozen=True)
class DetectionReport:
    """How well scores separate faults from normal windows, and what alarms at a threshold cost.

    auc: ROC AUC of seen-regime normal (label 0) vs fault (label 1) windows.
    precision: of windows alarmed among normal + fault, the fraction that are faults; 1.0 when
        nothing alarms (no alarm is a false alarm; `recall` then reports the misses).
    recall: fraction of fault windows alarmed.
    false_alarm_rate_seen: fraction of seen-regime normal windows alarmed.
    false_alarm_rate_unseen: fraction of unseen-regime normal windows alarmed; NaN when there are
        none (n_unseen == 0).
    """

    auc: float
    precision: float
    recall: float
    false_alarm_rate_seen: float
    false_alarm_rate_unseen: float
    n_normal: int
    n_fault: int
    n_unseen: int


def evaluate_detection(
    normal: np.ndarray,
    faults: np.ndarray,
    unseen: np.ndarray,
    threshold: np.ndarray | float = 1.0,
) -> DetectionReport:
    """Score seen-regime normal, fault and unseen-regime normal windows; alarm = score > threshold.

    `threshold` is one scalar (a float or a size-1 array) applied to every window; for per-turbine
    thresholds pass scores already divided by their turbine's threshold and keep threshold=1.0.
    `normal` and `faults` must be non-empty (AUC needs both classes); `unseen` may be empty.
    """
    normal_scores = _scores(normal, "normal")
    fault_scores = _scores(faults, "faults")
    unseen_scores = _scores(unseen, "unseen")
    if normal_scores.size == 0 or fault_scores.size == 0:
        raise ValueError("normal and faults must both be non-empty: AUC needs both classes")
    limit = np.asarray(threshold, np.float64)
    if limit.size != 1:
        raise ValueError(
            "threshold must be a scalar; for per-turbine thresholds divide each score by its turbine's "
            "threshold and pass threshold=1.0"
        )
    cut = float(limit.reshape(()))
    if math.isnan(cut):
        raise ValueError("threshold is NaN")

    labels = np.concatenate([np.zeros(normal_scores.size, np.int8), np.ones(fault_scores.size, np.int8)])
    scores = np.concatenate([normal_scores, fault_scores])
    alarms = (scores > cut).astype(np.int8)
    return DetectionReport(
        auc=float(roc_auc_score(labels, scores)),
        precision=float(precision_score(labels, alarms, zero_division=1.0)),
        recall=float(recall_score(labels, alarms)),
        false_alarm_rate_seen=float(np.mean(normal_scores > cut)),
        false_alarm_rate_unseen=float(np.mean(unseen_scores > cut)) if unseen_scores.size else math.nan,
        n_normal=int(normal_scores.size),
        n_fault=int(fault_scores.size),
        n_unseen=int(unseen_scores.size),
    )


def roc_points(normal: np.ndarray, faults: np.ndarray, max_points: int = 200) -> tuple[list[float], list[float]]:
    """ROC curve (fpr, tpr) of normal (label 0) vs fault (label 1) scores, for plots and JSON.

    Starts at (0, 0), ends at (1, 1), non-decreasing in both, at most `max_points` points: the
    curve is thinned by keeping evenly spaced points (always the first and the last).
    """
    if max_points < 2:
        raise ValueError("max_points must be at least 2 (the curve's two ends)")
    normal_scores = _scores(normal, "normal")
    fault_scores = _scores(faults, "faults")
    if normal_scores.size == 0 or fault_scores.size == 0:
        raise ValueError("normal and faults must both be non-empty for a ROC curve")
    labels = np.concatenate([np.zeros(normal_scores.size, np.int8), np.ones(fault_scores.size, np.int8)])
    fpr, tpr, _ = roc_curve(labels, np.concatenate([normal_scores, fault_scores]))
    if len(fpr) > max_points:
        keep = np.unique(np.round(np.linspace(0, len(fpr) - 1, max_points)).astype(np.int64))
        fpr, tpr = fpr[keep], tpr[keep]
    return [float(x) for x in fpr], [float(y) for y in tpr]


def _scores(values: np.ndarray, name: str) -> np.ndarray:
    scores = np.asarray(values, np.float64)
    if scores.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of scores, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name} contains NaN or infinite scores")
    return scores
