"""A small simulated fleet end to end: real brokers, aggregator and cloud processes, a real
InfluxDB, and the numbers InfluxDB holds afterwards match the summary."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloud_core.model_store import ModelStore
from learning.model import AutoencoderShape, weight_shapes
from simulate.evaluation import eval_windows, score_model
from simulate.influxdb_server import RunningInfluxDB, start_influxdb
from simulate.run import SimulationSettings, run_simulation
from simulate.turbines import fleet_members, fleet_profile

pytestmark = [pytest.mark.broker, pytest.mark.influx, pytest.mark.slow]


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (a run's work directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


@dataclass(frozen=True)
class SimulatedRun:
    settings: SimulationSettings
    summary: dict[str, Any]
    influx: RunningInfluxDB


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedRun]:
    """One small run shared by the tests of this module: it is the slow part."""
    tmp_path = tmp_path_factory.mktemp("simulated")
    with start_influxdb(tmp_path / "influxdb") as influx:
        settings = SimulationSettings(
            turbines=12,
            regions=2,
            nights=2,
            windows_per_turbine=96,
            workdir=tmp_path / "sim",
            node_dir=tmp_path / "nodes",  # as --node-dir puts them, e.g. in /dev/shm
            summary_json=tmp_path / "summary.json",
            influx_url=influx.url,
            # Half the fleet fails, badly: whatever the onset night, faults are there to alert on.
            faulty_share=0.5,
            fault_severity=3.0,
        )
        yield SimulatedRun(settings, asyncio.run(run_simulation(settings)), influx)


def test_influxdb_answers_with_the_numbers_of_the_summary(simulated: SimulatedRun) -> None:
    summary, influx, settings = simulated.summary, simulated.influx, simulated.settings

    assert summary["ok"] and json.loads(settings.summary_json.read_text()) == summary
    rows = influx.query_rows(
        'SELECT "round", "model_version", "updates_accepted", "updates_rejected", '
        '"bytes_per_update_mean", "seconds" FROM "nacelle_round" ORDER BY time'
    )
    assert [
        {key: row[key] for key in ("round", "model_version", "updates_accepted", "updates_rejected")} for row in rows
    ] == [
        {key: r[key] for key in ("round", "model_version", "updates_accepted", "updates_rejected")}
        for r in summary["rounds"]
    ]
    for row, reported in zip(rows, summary["rounds"], strict=True):
        assert row["bytes_per_update_mean"] == pytest.approx(reported["bytes_per_update_mean"])
        assert row["seconds"] == pytest.approx(reported["seconds"], abs=1e-3)
    assert [r["updates_accepted"] for r in summary["rounds"]] == [12, 12]
    per_node = influx.query_rows('SELECT count("train_loss") FROM "nacelle_node" WHERE "round" = 2 GROUP BY "region"')
    assert {row["region"]: row["count"] for row in per_node} == {"offshore": 6, "onshore": 6}
    measurements = ["nacelle_round", "nacelle_region", "nacelle_node", "nacelle_model"]
    stored = sum(influx.query_rows(f'SELECT count("round") FROM "{m}"')[0]["count"] for m in measurements)
    assert stored == summary["influx"]["points_written"] > 0
    assert processes_mentioning(str(settings.workdir)) == []


def test_the_turbines_state_is_in_the_node_dir_not_the_workdir(simulated: SimulatedRun) -> None:
    settings = simulated.settings
    assert settings.node_dir is not None

    nodes = sorted(p.name for p in settings.node_dir.iterdir() if p.is_dir())
    assert len(nodes) == 12 and nodes[0] == "offshore-t00001"
    assert (settings.node_dir / nodes[0] / "state" / "state.json").exists()
    assert not (settings.workdir / "nodes").exists()


def test_the_faulty_turbines_alerts_arrived_in_influxdb(simulated: SimulatedRun) -> None:
    alerts = simulated.summary["alerts"]
    rows = simulated.influx.query_rows('SELECT * FROM "nacelle_alert" ORDER BY time')

    assert alerts["count"] == alerts["stored"] == len(rows) > 0
    assert alerts["faulty_turbines"] == 6 and len(alerts["faults"]) == 6
    assert 0 < alerts["from_faulty"] <= alerts["count"]
    assert alerts["precision"] == alerts["from_faulty"] / alerts["count"]
    assert {row["node"] for row in rows} & set(alerts["faults"])
    for row in rows:
        assert row["region"] == row["node"].split("-t")[0]
        assert row["score"] > row["threshold"] > 0 and row["ratio"] == pytest.approx(row["score"] / row["threshold"])
        assert row["model_version"] in (0, 1)  # nights score with the model they train from
    # Each night's windows are scored before the night's round: at most one alert a night each.
    assert max(Counter(row["node"] for row in rows).values()) <= simulated.settings.nights


def test_detection_figures_come_from_the_models_the_run_produced(simulated: SimulatedRun) -> None:
    detection = simulated.summary["detection"]
    shape = AutoencoderShape()
    store = ModelStore(simulated.settings.workdir / "state" / "cloud")
    version, weights = store.latest(list(weight_shapes(shape)))  # type: ignore[misc]
    assert version.version == 2  # the model of the last night, not the initial one
    assert set(detection) >= {
        "auc_federated", "auc_local_only", "auc_centralized",
        "false_alarm_rate_unseen_regime_federated", "false_alarm_rate_unseen_regime_local_only",
    }  # fmt: skip
    assert detection["turbines_evaluated"] == 12
    # Scoring the stored global model again on the same turbines gives the reported figures.
    members = fleet_members(simulated.settings.turbines, simulated.settings.regions)
    turbines = [
        eval_windows(m.node_id, m.region, fleet_profile(simulated.settings.seed, index, m.region_index))
        for index, m in enumerate(members)
    ]
    rescored = score_model("federated", [weights], turbines, shape)
    assert rescored["auc"] == pytest.approx(detection["auc_federated"])
    assert detection["auc_local_only"] != pytest.approx(detection["auc_federated"])
    assert 0.5 < detection["auc_centralized"] <= 1.0


def test_report_is_written_next_to_the_summary_with_the_detection_table(simulated: SimulatedRun) -> None:
    report = simulated.settings.summary_json.with_name("report.html").read_text()

    assert f"{simulated.summary['detection']['auc_federated']:.3f}" in report
    assert report.count("<img") >= 4


def nacelle(*args: str) -> list[str]:
    return [sys.executable, "-m", "nacelle", *args]


def test_demo_command_runs_twice_in_the_same_place_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "demo"
    command = nacelle(
        "simulate",
        "--turbines",
        "8",
        "--nights",
        "1",
        "--windows",
        "96",
        "--workdir",
        str(workdir),
        "--summary-json",
        str(workdir / "summary.json"),
    )
    for _ in range(2):
        result = subprocess.run(command, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert "OK: 1 rounds" in result.stdout
        assert json.loads((workdir / "summary.json").read_text())["ok"] is True
        assert processes_mentioning(str(workdir)) == []


def test_ctrl_c_stops_every_process_the_simulation_started(tmp_path: Path) -> None:
    workdir = tmp_path / "interrupted"
    with subprocess.Popen(
        nacelle(
            "simulate",
            "--turbines",
            "8",
            "--nights",
            "50",
            "--windows",
            "96",
            "--workdir",
            str(workdir),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            for line in process.stdout:
                if "turbines connected" in line:
                    break
            # Keep reading: a simulator blocked on a full stdout pipe could not stop either.
            stdout = process.stdout
            threading.Thread(target=lambda: stdout.read(), daemon=True).start()
            time.sleep(1.0)  # mid-round: brokers, InfluxDB, aggregators and cloud are all up
            assert len(processes_mentioning(str(workdir))) >= 5
            process.send_signal(signal.SIGINT)
            # Each process gets SIGTERM, then SIGKILL after 10 s (nacelle.processes): a loaded
            # 2-core machine may need that for several of them.
            process.wait(timeout=120)
        finally:
            process.kill()

    assert process.returncode == 130
    assert processes_mentioning(str(workdir)) == []
