"""`nacelle simulate --influx-url ...`: metrics go to a server the simulator did not start, over
the v1 API (an existing influxd database, with authentication on or off) or the v2 API
(VictoriaMetrics speaking /api/v2/write), and neither the v2 token nor the v1 password shows
anywhere: not in the output, the logs or the configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulate.influxdb_server import start_influxdb
from tests.telemetry.victoria_metrics import start_victoria_metrics

pytestmark = [pytest.mark.broker, pytest.mark.influx, pytest.mark.slow]

TOKEN = "tok-3f9a-never-shown"
PASSWORD = "pw-81c2-never-shown"


def simulate(workdir: Path, *influx_options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "nacelle", "simulate", "--turbines", "4", "--nights", "1", "--windows", "96"]
    command += ["--no-evaluation", "--workdir", str(workdir), *influx_options]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)


def test_v2_api_to_an_existing_server_stores_every_point_and_hides_the_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    workdir = tmp_path / "sim"
    with start_victoria_metrics(tmp_path / "vm") as vm:
        result = simulate(
            workdir,
            *("--influx-url", vm.url, "--influx-org", "ops", "--influx-bucket", "nacelle"),
            *("--influx-token-file", str(token_file)),
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        summary = json.loads((workdir / "summary.json").read_text())
        influx = summary["influx"]
        assert (influx["api"], influx["bucket"], influx["org"], influx["points_spooled"]) == ("v2", "nacelle", "ops", 0)
        assert "bucket nacelle of org ops (v2 API) (existing, not started here)" in result.stdout
        assert f"{influx['points_written']} points written to InfluxDB" in result.stdout

        # Every measurement has a `round` field: one exported sample per point, none twice.
        nodes = vm.samples("nacelle_node_round", expected=4)
        assert sorted(dict(labels)["node"] for labels in nodes) == [
            "offshore-t00001", "offshore-t00002", "onshore-t00001", "onshore-t00002",
        ]  # fmt: skip
        assert all(len(samples) == 1 for samples in nodes.values())
        per_measurement = {
            m: sum(map(len, vm.samples(f"{m}_round", expected=1).values()))
            for m in ("nacelle_round", "nacelle_region", "nacelle_node", "nacelle_model")
        }
        assert per_measurement["nacelle_round"] == 1
        assert sum(per_measurement.values()) == influx["points_written"]

    cloud_toml = (workdir / "config" / "cloud.toml").read_text()
    assert f'token_file = "{token_file}"' in cloud_toml
    seen = [result.stdout, result.stderr, cloud_toml, json.dumps(summary)]
    seen += [log.read_text(errors="replace") for log in (workdir / "logs").glob("*.log")]
    assert not [text for text in seen if TOKEN in text]


def test_v1_api_into_a_database_that_does_not_exist_fails_at_once_naming_it(tmp_path: Path) -> None:
    with start_influxdb(tmp_path / "influx") as influx:
        result = simulate(tmp_path / "sim", "--influx-url", influx.url, "--influx-db", "no_such_db")
    assert result.returncode == 1
    assert 'database not found: "no_such_db"' in result.stderr
    assert not (tmp_path / "sim" / "brokers").exists()  # it stopped before starting anything


def test_v2_options_without_a_token_are_refused(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin"}  # no INFLUX_TOKEN
    result = simulate(tmp_path / "sim", "--influx-url", "http://127.0.0.1:9", "--influx-bucket", "b", env=env)
    assert result.returncode == 2
    assert "--influx-org" in result.stderr
    result = simulate(
        tmp_path / "sim", *("--influx-url", "http://127.0.0.1:9", "--influx-bucket", "b", "--influx-org", "o"), env=env
    )
    assert result.returncode == 2 and "needs a token" in result.stderr


def test_v1_api_with_authentication_stores_the_points_as_the_user_and_hides_the_password(tmp_path: Path) -> None:
    workdir = tmp_path / "sim"
    with start_influxdb(tmp_path / "influx", admin=("nacelle-sim", PASSWORD)) as influx:
        wrong = simulate(
            tmp_path / "wrong",
            *("--influx-url", influx.url, "--influx-user", "nacelle-sim"),
            env={**os.environ, "INFLUX_PASSWORD": "not-it"},
        )
        assert wrong.returncode == 1 and "401" in wrong.stderr  # checked before anything starts

        result = simulate(
            workdir,
            *("--influx-url", influx.url, "--influx-user", "nacelle-sim"),
            env={**os.environ, "INFLUX_PASSWORD": PASSWORD},
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        summary = json.loads((workdir / "summary.json").read_text())
        [count] = influx.query_rows('SELECT count("round") FROM "nacelle_node"')
        assert count["count"] == 4 and summary["influx"]["points_spooled"] == 0
        assert summary["alerts"]["stored"] is not None  # read back as the user, too

    password_file = workdir / "config" / "influx-password"
    assert password_file.read_text() == PASSWORD and password_file.stat().st_mode & 0o777 == 0o600
    cloud_toml = (workdir / "config" / "cloud.toml").read_text()
    assert f'password_file = "{password_file.resolve()}"' in cloud_toml
    seen = [result.stdout, result.stderr, cloud_toml, json.dumps(summary)]
    seen += [log.read_text(errors="replace") for log in (workdir / "logs").glob("*.log")]
    assert not [text for text in seen if PASSWORD in text]
