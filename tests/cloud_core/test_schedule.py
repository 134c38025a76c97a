"""cloud_core.daemon: with --resume-schedule a restarted cloud core opens its first round one
schedule interval after the last logged round, not at once (no broker needed: only the wait)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud_core.config import CloudConfig
from cloud_core.daemon import CloudCore
from nacelle.config import build_config
from nacelle.keys import create_fleet, key_path, registry_path
from wire.registry import FleetRegistry
from wire.signing import load_private_key

NOW = 1_763_900_000.0
INTERVAL_S = 600.0


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fleet")
    create_fleet(directory, {"north": 1})
    return directory


def _core(fleet_dir: Path, state_dir: Path) -> CloudCore:
    config = build_config(
        CloudConfig,
        {
            "registry_path": registry_path(fleet_dir),
            "private_key_path": key_path(fleet_dir, "cloud"),
            "state_dir": state_dir,
            "schedule": {"interval_s": INTERVAL_S},
        },
    )
    registry = FleetRegistry.load(config.registry_path)
    return CloudCore(config, registry, load_private_key(config.private_key_path), clock=lambda: NOW)


def _log_round(state_dir: Path, opened_at: float) -> None:
    with open(state_dir / "rounds.jsonl", "a") as log:
        log.write(json.dumps({"round": 1, "opened_at": opened_at}) + "\n")


def test_without_a_logged_round_the_first_round_is_due_at_once(fleet_dir: Path, tmp_path: Path) -> None:
    assert _core(fleet_dir, tmp_path).seconds_until_scheduled_round() == 0.0


def test_the_next_round_is_due_one_interval_after_the_last_one_opened(fleet_dir: Path, tmp_path: Path) -> None:
    core = _core(fleet_dir, tmp_path)
    _log_round(tmp_path, NOW - 100.0)

    assert core.seconds_until_scheduled_round() == pytest.approx(INTERVAL_S - 100.0)


def test_a_round_overdue_is_due_at_once(fleet_dir: Path, tmp_path: Path) -> None:
    core = _core(fleet_dir, tmp_path)
    _log_round(tmp_path, NOW - 2 * INTERVAL_S)

    assert core.seconds_until_scheduled_round() == 0.0
