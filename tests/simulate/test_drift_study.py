"""simulate.drift_study: the controls change only what they say they change, FedAvg is the
fleet's weighted mean of real local runs, and the command prints and writes figures computed
from trained models."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from learning.aggregation import fedavg
from learning.batched import train_many
from learning.model import AutoencoderShape, initial_weights
from learning.training import TrainingConfig
from simulate.drift_study import (
    StudySettings,
    cosine,
    fedavg_rounds,
    main,
    parse_settings,
    shuffled_datasets,
    study_command,
)
from simulate.run import SimulationSettings, _print_detection

SHAPE = AutoencoderShape()


def test_shuffled_datasets_deal_out_the_same_windows_in_the_same_sizes() -> None:
    rng = np.random.default_rng(1)
    datasets = [rng.standard_normal((n, 4)).astype(np.float32) for n in (5, 9, 3)]

    shuffled = shuffled_datasets(datasets, seed=0)

    assert [len(d) for d in shuffled] == [5, 9, 3]
    before = sorted(map(tuple, np.concatenate(datasets).tolist()))
    assert sorted(map(tuple, np.concatenate(shuffled).tolist())) == before
    assert not np.array_equal(shuffled[0], datasets[0])


def test_cosine_is_one_for_updates_pulling_the_same_way_and_minus_one_for_opposite_ones() -> None:
    update = {"a": np.array([1.0, -2.0], np.float32), "b": np.array([[0.5]], np.float32)}
    scaled = {name: 3 * value for name, value in update.items()}
    opposite = {name: -value for name, value in update.items()}

    assert cosine(update, scaled) == pytest.approx(1.0)
    assert cosine(update, opposite) == pytest.approx(-1.0)
    assert cosine(update, {name: 0 * value for name, value in update.items()}) == 0.0


def test_a_fedavg_round_applies_the_window_weighted_mean_of_the_nodes_local_runs() -> None:
    rng = np.random.default_rng(2)
    datasets = [rng.standard_normal((n, SHAPE.n_features)).astype(np.float32) for n in (8, 16, 8)]
    initial = initial_weights(SHAPE, 0)
    config = TrainingConfig(epochs=1, batch_size=8)

    final, agreement = fedavg_rounds(initial, datasets, ["east", "west", "west"], config, 1, SHAPE, seed=5)

    results = train_many(initial, datasets, config, SHAPE, seeds=[5, 6, 7])
    mean = fedavg([r.delta for r in results], [8, 16, 8])
    for name in initial:
        np.testing.assert_allclose(final[name], initial[name] + mean[name], atol=1e-6)
    east, west = results[0].delta, fedavg([results[1].delta, results[2].delta], [16, 8])
    assert agreement == [pytest.approx(cosine(east, west), abs=1e-6)]


def test_one_region_has_no_agreement_to_report() -> None:
    datasets = [np.zeros((4, SHAPE.n_features), np.float32)] * 2

    _, agreement = fedavg_rounds(
        initial_weights(SHAPE, 0), datasets, ["north"] * 2, TrainingConfig(1, 4), 2, SHAPE, seed=0
    )

    assert agreement == []


def test_the_command_prints_each_run_and_writes_figures_from_trained_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "drift.json"

    assert main(["--turbines", "6", "--nights", "2", "--epochs", "1,2", "--windows", "32", "--json", str(out)]) == 0

    printed = capsys.readouterr().out
    study = json.loads(out.read_text())
    names = [(run["name"], run["epochs"]) for run in study["runs"]]
    assert names == [
        ("federated", 1),
        ("shuffled", 1),
        ("federated", 2),
        ("shuffled", 2),
        ("offshore alone", 1),
        ("onshore alone", 1),
    ]
    for run in study["runs"]:
        assert len(run["errors"]) == 2 and all(np.isfinite(run["errors"])) and min(run["errors"]) > 0
        assert len(run["agreement"]) == (0 if "alone" in run["name"] else 2)
        assert 0 <= run["detection"]["auc"] <= 1
        assert run["name"] in printed
    federated, shuffled = study["runs"][0], study["runs"][1]
    assert federated["errors"] != shuffled["errors"]  # different data per node, different models
    assert set(study["baselines"]) == {"centralized", "local_only"}
    assert "cosine by round" in printed and str(out) in printed


@pytest.mark.parametrize(
    "settings",
    [StudySettings(), StudySettings(turbines=1000, regions=3, nights=4, epochs=(5,), learning_rate=1e-3, seed=9)],
)
def test_the_printed_command_runs_the_study_with_the_same_settings(settings: StudySettings) -> None:
    words = shlex.split(study_command(settings))

    assert words[:3] == ["python", "-m", "simulate.drift_study"]
    assert parse_settings(words[3:]) == (settings, None)


def _detection(federated_auc: float) -> dict[str, object]:
    figures = {"auc": 0.0, "precision": 0.5, "recall": 0.5, "false_alarm_rate_seen": 0.01}
    models = {
        name: {**figures, "auc": auc, "false_alarm_rate_unseen": 0.05, "per_region": {}}
        for name, auc in [("federated", federated_auc), ("local_only", 0.91), ("centralized", 0.92)]
    }
    return {"models": models, "turbines_evaluated": 300, "threshold_quantile": 0.99}


def test_a_simulation_missing_the_federated_target_prints_the_study_of_its_own_fleet(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = SimulationSettings(turbines=300, regions=2, nights=12, epochs=5, seed=3)

    _print_detection(_detection(0.832), settings)
    missed = capsys.readouterr().out
    _print_detection(_detection(0.905), settings)
    met = capsys.readouterr().out

    assert "0.088 below centralized" in missed
    expected = StudySettings(
        turbines=300, regions=2, nights=12, epochs=(5, 60), learning_rate=settings.learning_rate, seed=3
    )
    assert study_command(expected) in missed
    assert "drift_study" not in met
