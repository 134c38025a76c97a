"""Why the federated model trails the centralized one on a simulated fleet: FedAvg without the
wire, on the fleet `nacelle simulate` builds, beside controls that each take one cause away.

- federated: every turbine trains on its own windows, the fleet averages the deltas (what a
  simulated night does, minus MQTT, signatures and the nightly windows recorded during a run);
- shuffled: the same windows dealt out to the turbines at random (IID): the same data and
  budget without the drift of each node towards its own spectrum;
- one region alone: FedAvg among one region's turbines, whose speed ranges overlap;
- agreement: per round, the cosine between the regions' mean updates (+1: they pull the same
  way; −1: each undoes the other's).

Every model is scored as `simulate.evaluation` scores the simulator's (per-turbine thresholds,
held-out windows), and `error` is the mean reconstruction error on held-out normal windows.

    python -m simulate.drift_study --turbines 300 --nights 12 --epochs 5,60

Not for: the product's rounds (see `nacelle simulate`); nothing here reads or writes files
except the optional JSON report.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cloud_core.config import ModelConfig, TrainingPlanConfig
from learning.aggregation import apply_delta, fedavg
from learning.batched import train_many
from learning.model import AutoencoderShape, Weights, initial_weights
from learning.training import TrainingConfig, reconstruction_errors
from nacelle.keys import region_names
from simulate.evaluation import TurbineEval, eval_windows, score_model, train_baselines
from simulate.turbines import fleet_members, fleet_profile
from simulate.vibration import turbine_features

Say = Callable[[str], None]


@dataclass(frozen=True)
class StudySettings:
    turbines: int = 300
    regions: int = 2
    nights: int = 12
    # Each gives a federated and a shuffled run; the regions alone use the first. The nodes'
    # plan by default, and 60, which is enough for the shuffled windows to reach centralized.
    epochs: tuple[int, ...] = (TrainingPlanConfig().epochs, 60)
    learning_rate: float = TrainingPlanConfig().learning_rate
    windows_per_turbine: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.regions < 1 or self.turbines < 2 * self.regions:
            raise ValueError("StudySettings: at least 2 turbines per region and 1 region")
        if self.nights < 1 or self.windows_per_turbine < 1 or not self.epochs or min(self.epochs) < 1:
            raise ValueError("StudySettings: nights, windows_per_turbine and every epochs value must be positive")


@dataclass
class FedAvgRun:
    name: str
    epochs: int
    turbines: int
    errors: list[float] = field(default_factory=list)  # after each round
    centralized_error: float = float("nan")  # the centralized model's, on the same turbines
    agreement: list[float] = field(default_factory=list)  # per round; empty with one region
    detection: dict[str, Any] = field(default_factory=dict)  # of the final model, see `_figures`


def cosine(left: Weights, right: Weights) -> float:
    """Cosine between two updates, all tensors flattened into one vector."""
    a = np.concatenate([np.ravel(left[name]) for name in left]).astype(np.float64)
    b = np.concatenate([np.ravel(right[name]) for name in left]).astype(np.float64)
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norms if norms > 0 else 0.0


def shuffled_datasets(datasets: Sequence[np.ndarray], seed: int) -> list[np.ndarray]:
    """The same windows dealt out at random, each turbine keeping its number of windows."""
    pooled = np.concatenate(datasets)
    pooled = pooled[np.random.default_rng(seed).permutation(len(pooled))]
    return np.split(pooled, np.cumsum([len(d) for d in datasets])[:-1])


def fedavg_rounds(
    initial: Weights,
    datasets: Sequence[np.ndarray],
    regions: Sequence[str],
    config: TrainingConfig,
    rounds: int,
    shape: AutoencoderShape,
    *,
    seed: int,
    after_round: Callable[[Weights], None] | None = None,
) -> tuple[Weights, list[float]]:
    """`rounds` of FedAvg from `initial` (each node `config` on its dataset, deltas averaged by
    window count); returns the final weights and, per round, the mean pairwise cosine between
    the regions' averaged updates (nothing when there is one region)."""
    names = sorted(set(regions))
    members = {region: [i for i, r in enumerate(regions) if r == region] for region in names}
    weights, agreement = initial, []
    for round_index in range(rounds):
        results = train_many(
            weights,
            datasets,
            config,
            shape,
            seeds=[seed + round_index * len(datasets) + i for i in range(len(datasets))],
        )

        deltas = [result.delta for result in results]
        counts = [result.num_samples for result in results]
        if len(names) > 1:
            regional = [fedavg([deltas[i] for i in members[r]], [counts[i] for i in members[r]]) for r in names]
            agreement.append(float(np.mean([cosine(a, b) for a, b in itertools.combinations(regional, 2)])))
        weights = apply_delta(weights, fedavg(deltas, counts))
        if after_round is not None:
            after_round(weights)
    return weights, agreement


def mean_normal_error(weights: Weights, turbines: Sequence[TurbineEval], shape: AutoencoderShape) -> float:
    return float(np.mean(reconstruction_errors(weights, np.concatenate([t.normal for t in turbines]), shape)))


def study_command(settings: StudySettings) -> str:
    """The command line that runs this study with `settings`."""
    return (
        f"python -m simulate.drift_study --turbines {settings.turbines} --regions {settings.regions} "
        f"--nights {settings.nights} --epochs {','.join(map(str, settings.epochs))} "
        f"--learning-rate {settings.learning_rate} --windows {settings.windows_per_turbine} --seed {settings.seed}"
    )


def run_study(settings: StudySettings, say: Say = print) -> dict[str, Any]:
    """Baselines, then a FedAvg run per control; the figures as plain data (see `format_study`)."""
    shape = AutoencoderShape()
    started = time.monotonic()
    fleet = fleet_members(settings.turbines, settings.regions)
    profiles = [fleet_profile(settings.seed, index, member.region_index) for index, member in enumerate(fleet)]
    regions = [member.region for member in fleet]
    training = [turbine_features(profile, settings.windows_per_turbine) for profile in profiles]
    turbines = [eval_windows(m.node_id, m.region, p) for m, p in zip(fleet, profiles, strict=True)]
    initial = initial_weights(shape, ModelConfig().init_seed)  # the cloud core's first model, as simulated
    say(
        f"drift study: {len(fleet)} turbines, {settings.regions} region(s), {settings.windows_per_turbine} windows each"
    )

    total_epochs = settings.epochs[0] * settings.nights
    local, central = train_baselines(
        initial, training, TrainingConfig(total_epochs, learning_rate=settings.learning_rate), shape, seed=settings.seed
    )
    baselines = {
        "centralized": _figures(score_model("centralized", [central], turbines, shape)),
        "local_only": _figures(score_model("local_only", local, turbines, shape)),
    }
    say(f"  baselines trained and scored ({time.monotonic() - started:.0f}s)")

    def fedavg_run(name: str, epochs: int, chosen: Sequence[int], datasets: Sequence[np.ndarray]) -> FedAvgRun:
        run = FedAvgRun(name, epochs, len(chosen))
        evaluated = [turbines[i] for i in chosen]
        final, run.agreement = fedavg_rounds(
            initial,
            datasets,
            [regions[i] for i in chosen],
            TrainingConfig(epochs, learning_rate=settings.learning_rate),
            settings.nights,
            shape,
            seed=settings.seed,
            after_round=lambda weights: run.errors.append(mean_normal_error(weights, evaluated, shape)),
        )
        run.detection = _figures(score_model(name, [final], evaluated, shape))
        run.centralized_error = mean_normal_error(central, evaluated, shape)
        elapsed = time.monotonic() - started
        auc = run.detection["auc"]
        say(f"  {name}, local epochs {epochs}: error {run.errors[-1]:.3f}, AUC {auc:.3f} ({elapsed:.0f}s)")
        return run

    everyone = range(len(fleet))
    runs = []
    for epochs in settings.epochs:
        runs.append(fedavg_run("federated", epochs, everyone, training))
        runs.append(fedavg_run("shuffled", epochs, everyone, shuffled_datasets(training, settings.seed)))
    if settings.regions > 1:
        for region in region_names(settings.regions):
            chosen = [i for i, r in enumerate(regions) if r == region]
            runs.append(fedavg_run(f"{region} alone", settings.epochs[0], chosen, [training[i] for i in chosen]))
    return {
        "settings": {**asdict(settings), "epochs": list(settings.epochs)},
        "baselines": baselines,
        "runs": [asdict(r) for r in runs],
    }


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "auc": report["auc"],
        "false_alarm_rate_unseen": report["false_alarm_rate_unseen"],
        "auc_per_fault": {fault: figures["auc"] for fault, figures in report["per_fault"].items()},
    }


def format_study(study: dict[str, Any]) -> str:
    """The study as the table `main` prints."""
    lines = [
        f"{'model':<22} {'epochs':>6} {'turbines':>8} {'error':>7} {'central':>8} {'AUC':>6} {'unseen FA':>10}"
        "  AUC per fault",
    ]
    for name, figures in study["baselines"].items():
        lines.append(f"{name.replace('_', '-'):<22} {'':>6} {'':>8} {'':>7} {'':>8} {_detection(figures)}")
    for run in study["runs"]:
        lines.append(
            f"{run['name']:<22} {run['epochs']:>6} {run['turbines']:>8} {run['errors'][-1]:>7.3f} "
            f"{run['centralized_error']:>8.3f} {_detection(run['detection'])}"
        )
    lines.append(
        "error: mean reconstruction error on held-out normal windows after the last round; "
        "central: the centralized model's on the same turbines"
    )
    for run in study["runs"]:
        if run["agreement"]:
            lines.append(
                f"regions' updates, cosine by round ({run['name']}, local epochs {run['epochs']}): "
                + " ".join(f"{c:+.2f}" for c in run["agreement"])
            )
    return "\n".join(lines)


def _detection(figures: dict[str, Any]) -> str:
    faults = ", ".join(f"{fault} {auc:.2f}" for fault, auc in figures["auc_per_fault"].items())
    return f"{figures['auc']:>6.3f} {figures['false_alarm_rate_unseen']:>10.1%}  {faults}"


def parse_settings(argv: Sequence[str] | None = None) -> tuple[StudySettings, Path | None]:
    """The study's settings and the JSON path (if any) from command-line arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m simulate.drift_study",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="example: python -m simulate.drift_study --turbines 300 --epochs 5,60 --json runs/drift.json",
    )
    defaults = StudySettings()
    parser.add_argument("--turbines", type=int, default=defaults.turbines, help="default %(default)s")
    parser.add_argument("--regions", type=int, default=defaults.regions, help="default %(default)s")
    parser.add_argument("--nights", type=int, default=defaults.nights, help="FedAvg rounds (default %(default)s)")
    parser.add_argument(
        "--epochs",
        default=",".join(map(str, defaults.epochs)),
        help="local epochs a round, comma-separated: a federated and a shuffled run for each (default %(default)s)",
    )
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="default %(default)s")
    parser.add_argument(
        "--windows", type=int, default=defaults.windows_per_turbine, help="training windows per turbine (%(default)s)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="the fleet's seed, as in nacelle simulate")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        epochs = tuple(int(value) for value in args.epochs.split(","))
    except ValueError:
        parser.error(f"--epochs: whole numbers separated by commas, got {args.epochs!r}")
    try:
        settings = StudySettings(
            turbines=args.turbines,
            regions=args.regions,
            nights=args.nights,
            epochs=epochs,
            learning_rate=args.learning_rate,
            windows_per_turbine=args.windows,
            seed=args.seed,
        )
    except ValueError as error:
        parser.error(str(error))
    return settings, args.json


def main(argv: Sequence[str] | None = None) -> int:
    settings, json_path = parse_settings(argv)
    study = run_study(settings)
    print(format_study(study))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(study, indent=2))
        print(f"figures: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
