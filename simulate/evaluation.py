"""Detection quality of a simulated fleet, three ways on the same data: the federated global
model, each turbine's local-only model, and one centralized model trained on the pooled data.

Every turbine gets held-out windows its training never saw: calibration windows (its alert
threshold is the `THRESHOLD_QUANTILE` of their scores, per model), normal windows of its own
regime, normal windows of a regime it never meets locally (an onshore turbine in a storm), and
windows of each fault. Scores are divided by the turbine's threshold, so pooling across the
fleet compares like with like: a window alarms when its normalised score exceeds 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from learning.batched import reconstruction_errors_many, train_many
from learning.detection import calibrate_threshold, evaluate_detection, roc_points
from learning.model import AutoencoderShape, Weights
from learning.training import TrainingConfig, reconstruction_errors, train_local
from simulate.vibration import Fault, TurbineProfile, turbine_features, unseen_regime

THRESHOLD_QUANTILE = 0.99
# What the federated model should reach: an AUC at most this far below the centralized model's.
FEDERATED_AUC_TARGET_GAP = 0.02
EVAL_WINDOWS = {"calibration": 64, "normal": 64, "unseen": 32, "fault": 16}
# The centralized baseline is what a data centre holding everyone's data would train: a fixed
# budget of epochs over a uniform sample of the pooled windows (capped, or a 10,000-turbine
# fleet would cost more than the whole federated run), batches twice the nodes' size.
CENTRALIZED_MAX_WINDOWS = 30_000
CENTRALIZED_EPOCHS = 20
# Offsets of each window set in a turbine's stream: 0 is its training data.
_OFFSETS = {"calibration": 1, "normal": 2, "unseen": 3, "fault": 4}


@dataclass(frozen=True)
class TurbineEval:
    turbine: str
    region: str
    calibration: np.ndarray
    normal: np.ndarray
    unseen: np.ndarray
    faults: dict[str, np.ndarray]

    def windows(self) -> np.ndarray:
        return np.concatenate([self.calibration, self.normal, self.unseen, *self.faults.values()])


def eval_windows(turbine: str, region: str, profile: TurbineProfile) -> TurbineEval:
    counts = EVAL_WINDOWS
    return TurbineEval(
        turbine=turbine,
        region=region,
        calibration=turbine_features(profile, counts["calibration"], offset=_OFFSETS["calibration"]),
        normal=turbine_features(profile, counts["normal"], offset=_OFFSETS["normal"]),
        unseen=turbine_features(profile, counts["unseen"], offset=_OFFSETS["unseen"], regime=unseen_regime(profile)),
        faults={
            fault.value: turbine_features(profile, counts["fault"], offset=_OFFSETS["fault"] + i, fault=fault)
            for i, fault in enumerate(Fault)
        },
    )


def train_baselines(
    initial: Weights, training: Sequence[np.ndarray], config: TrainingConfig, shape: AutoencoderShape, *, seed: int
) -> tuple[list[Weights], Weights]:
    """Local-only models (one per turbine, `config` as the federated run gave each node in
    total) and the centralized model (see CENTRALIZED_EPOCHS)."""
    local = [
        {name: initial[name] + result.delta[name] for name in initial}
        for result in train_many(initial, list(training), config, shape, seeds=[seed + i for i in range(len(training))])
    ]
    pooled = np.concatenate(training)
    if len(pooled) > CENTRALIZED_MAX_WINDOWS:
        pooled = pooled[np.random.default_rng(seed).choice(len(pooled), CENTRALIZED_MAX_WINDOWS, replace=False)]
    central_plan = TrainingConfig(CENTRALIZED_EPOCHS, config.batch_size * 2, config.learning_rate)
    central = train_local(initial, pooled, central_plan, shape, seed=seed)
    return local, {name: initial[name] + central.delta[name] for name in initial}


def _split(scores: np.ndarray, turbine: TurbineEval) -> dict[str, np.ndarray]:
    sizes = [len(turbine.calibration), len(turbine.normal), len(turbine.unseen), *map(len, turbine.faults.values())]
    parts = np.split(scores, np.cumsum(sizes)[:-1])
    named = {"calibration": parts[0], "normal": parts[1], "unseen": parts[2]}
    named.update(zip(turbine.faults, parts[3:], strict=True))
    return named


def _report(groups: list[dict[str, np.ndarray]], fault_names: Sequence[str]) -> dict[str, Any]:
    normal = np.concatenate([g["normal"] for g in groups])
    unseen = np.concatenate([g["unseen"] for g in groups])
    faults = np.concatenate([g[name] for g in groups for name in fault_names])
    return asdict(evaluate_detection(normal, faults, unseen, 1.0))


def score_model(
    name: str, weights: Sequence[Weights], turbines: Sequence[TurbineEval], shape: AutoencoderShape
) -> dict[str, Any]:
    """Detection figures of one way of training; `weights` is one model for all turbines or one
    per turbine."""
    windows = [t.windows() for t in turbines]
    if len(weights) == 1:
        all_scores = reconstruction_errors(weights[0], np.concatenate(windows), shape)
        scores = np.split(all_scores, np.cumsum([len(w) for w in windows])[:-1])
    else:
        scores = reconstruction_errors_many(list(weights), windows, shape)
    normalised = []
    for turbine, turbine_scores in zip(turbines, scores, strict=True):
        parts = _split(turbine_scores, turbine)
        threshold = calibrate_threshold(parts["calibration"], THRESHOLD_QUANTILE)
        normalised.append({key: value / threshold for key, value in parts.items()})
    fault_names = list(turbines[0].faults)
    report = _report(normalised, fault_names)
    normal = np.concatenate([g["normal"] for g in normalised])
    fpr, tpr = roc_points(normal, np.concatenate([g[f] for g in normalised for f in fault_names]))
    report["roc"] = {"fpr": fpr, "tpr": tpr}
    regions = sorted({t.region for t in turbines})
    report["per_region"] = {
        region: _report([g for g, t in zip(normalised, turbines, strict=True) if t.region == region], fault_names)
        for region in regions
    }
    report["per_fault"] = {fault: _report(normalised, [fault]) for fault in fault_names}
    report["model"] = name
    return report


def detection_summary(models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The `detection` block of the simulator's summary JSON."""
    return {
        "auc_federated": models["federated"]["auc"],
        "auc_local_only": models["local_only"]["auc"],
        "auc_centralized": models["centralized"]["auc"],
        "false_alarm_rate_unseen_regime_federated": models["federated"]["false_alarm_rate_unseen"],
        "false_alarm_rate_unseen_regime_local_only": models["local_only"]["false_alarm_rate_unseen"],
        "false_alarm_rate_unseen_regime_centralized": models["centralized"]["false_alarm_rate_unseen"],
        "threshold_quantile": THRESHOLD_QUANTILE,
        "eval_windows_per_turbine": dict(EVAL_WINDOWS),
        "models": models,
    }
