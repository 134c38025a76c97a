"""simulate.fleet_file and simulate.live without processes: what fleet.json says about a fleet
left running, the command lines printed for the operator, and the live cloud configuration."""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path

import pytest

from nacelle.config import write_config
from simulate.fleet_file import (
    OBSERVER_ID,
    BrokerAddress,
    LiveFleet,
    fleet_json,
    mosquitto_sub_command,
    usage,
    write_fleet_file,
)
from simulate.live import live_cloud_config
from simulate.run import SimulationSettings


def _fleet(tmp_path: Path) -> LiveFleet:
    fleet_dir = tmp_path / "fleet"
    fleet_dir.mkdir(exist_ok=True)
    return LiveFleet(
        workdir=tmp_path,
        fleet_dir=fleet_dir,
        cloud_broker=BrokerAddress("127.0.0.1", 40000, 101),
        regional_brokers={
            "onshore": BrokerAddress("127.0.0.1", 40002, 103),
            "offshore": BrokerAddress("::1", 40001, 102),
        },
        nodes={"onshore-t00001": "onshore", "offshore-t00002": "offshore", "offshore-t00001": "offshore"},
        influx_url="http://127.0.0.1:48086",
        influx_database="nacelle",
        influx_pid=104,
        cloud_config=tmp_path / "config" / "cloud-live.toml",
        round_interval_s=600.0,
        processes={"broker-cloud": 101, "influxd": 104, "region-offshore": 105, "cloud-live": 107},
        simulator_pid=100,
    )


def test_fleet_json_names_brokers_nodes_influxdb_keys_and_pids(tmp_path: Path) -> None:
    data = fleet_json(_fleet(tmp_path))

    assert data["schema"] == 1
    assert data["brokers"]["cloud"] == {"host": "127.0.0.1", "port": 40000, "pid": 101}
    assert list(data["brokers"]["regions"]) == ["offshore", "onshore"]
    assert data["brokers"]["regions"]["offshore"] == {"host": "::1", "port": 40001, "pid": 102}
    assert data["nodes"] == {"offshore-t00001": "offshore", "offshore-t00002": "offshore", "onshore-t00001": "onshore"}
    assert list(data["nodes"]) == sorted(data["nodes"])
    assert data["influxdb"] == {"url": "http://127.0.0.1:48086", "database": "nacelle", "pid": 104}
    assert data["registry"] == str(tmp_path / "fleet" / "registry.json")
    assert data["keys_dir"] == str(tmp_path / "fleet" / "keys")
    assert data["processes"]["cloud-live"] == 107
    assert data["simulator_pid"] == 100
    assert data["cloud_core"]["round_interval_s"] == 600.0
    assert data["topics"]["model"] == "nacelle/v1/global/model"
    assert json.loads(json.dumps(data)) == data


def test_tls_is_null_without_certificates_and_the_directory_with_them(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    assert fleet_json(fleet)["tls"] is None

    (fleet.fleet_dir / "tls").mkdir()

    assert fleet_json(fleet)["tls"] == str(fleet.fleet_dir / "tls")


def test_mosquitto_sub_without_tls_dials_the_regional_broker_in_plain_tcp(tmp_path: Path) -> None:
    command = mosquitto_sub_command(fleet_json(_fleet(tmp_path)), "onshore")

    assert command[:5] == ["mosquitto_sub", "-h", "127.0.0.1", "-p", "40002"]
    assert command[command.index("-t") + 1] == "nacelle/v1/global/#"
    assert "--cafile" not in command


def test_mosquitto_sub_with_tls_presents_the_observer_certificate(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    tls = fleet.fleet_dir / "tls"
    tls.mkdir()
    for name in ["ca.crt", f"{OBSERVER_ID}.crt", f"{OBSERVER_ID}.key"]:
        (tls / name).write_text("x")

    command = mosquitto_sub_command(fleet_json(fleet), "offshore")

    assert command[command.index("--cafile") + 1] == str(tls / "ca.crt")
    assert command[command.index("--cert") + 1] == str(tls / f"{OBSERVER_ID}.crt")
    assert command[command.index("--key") + 1] == str(tls / f"{OBSERVER_ID}.key")


def test_usage_says_where_the_file_is_and_how_to_watch_suspend_query_and_stop(tmp_path: Path) -> None:
    data = fleet_json(_fleet(tmp_path))

    text = usage(data, tmp_path / "fleet.json")

    assert str(tmp_path / "fleet.json") in text
    assert shlex.join(mosquitto_sub_command(data, "offshore")) in text
    assert f"nacelle registry suspend offshore-t00001 --reason test --registry {data['registry']}" in text
    assert "http://127.0.0.1:48086/query?db=nacelle" in text
    assert "kill -TERM 100" in text and "Ctrl-C" in text
    assert "plain TCP" in text


def test_fleet_file_is_replaced_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    path.write_text("{}")
    data = fleet_json(_fleet(tmp_path))

    write_fleet_file(path, data)

    assert json.loads(path.read_text()) == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet", "fleet.json"]


def test_live_cloud_config_changes_only_the_round_interval(tmp_path: Path) -> None:
    nights = tmp_path / "config" / "cloud.toml"
    values = {
        "registry_path": "/f/registry.json",
        "broker": {"host": "127.0.0.1", "port": 1884, "ca_file": "/f/tls/ca.crt"},
        "schedule": {"interval_s": 1.0, "regional_deadline_s": 600.0, "global_deadline_s": 660.0},
        "training": {"epochs": 5},
    }
    write_config(nights, values)

    live = live_cloud_config(nights, 42.0)

    assert live == tmp_path / "config" / "cloud-live.toml"
    written = tomllib.loads(live.read_text())
    assert written["schedule"]["interval_s"] == 42.0
    written["schedule"]["interval_s"] = 1.0
    assert written == values
    assert tomllib.loads(nights.read_text())["schedule"]["interval_s"] == 1.0


@pytest.mark.parametrize("interval", [0.0, -1.0])
def test_a_live_interval_that_is_not_positive_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="live round interval"):
        SimulationSettings(keep_running=True, live_interval_s=interval)
