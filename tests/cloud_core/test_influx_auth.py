"""A cloud core configured with an InfluxDB 1.x user writes to a real influxd that has
authentication on (the password from a file, as the Ansible roles deploy it); with a wrong
password its points wait in the spool, and go once the password is mended."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_core.config import CloudConfig
from cloud_core.influx import metrics_writer
from nacelle.config import load_config, write_config
from simulate.influxdb_server import start_influxdb
from telemetry import Point, WritePrecision

pytestmark = [pytest.mark.influx]


def _config(tmp_path: Path, influx: dict[str, object]) -> CloudConfig:
    path = tmp_path / "cloud.toml"
    write_config(
        path,
        {
            "registry_path": "/etc/nacelle/registry.json",
            "private_key_path": "/etc/nacelle/cloud.pem",
            "state_dir": str(tmp_path / "state"),
            "influx": influx,
        },
    )
    return load_config(CloudConfig, path)


def test_points_wait_in_the_spool_until_the_password_is_right(tmp_path: Path) -> None:
    with start_influxdb(tmp_path / "influx", admin=("nacelle", "s3cret")) as server:
        password_file = tmp_path / "influx-password"
        password_file.write_text("wrong\n")
        influx = {"url": server.url, "database": server.database, "username": "nacelle"}
        config = _config(tmp_path, {**influx, "password_file": str(password_file)})
        writer = metrics_writer(config.influx, config.state_dir)
        assert writer is not None
        try:
            writer.write([Point("nacelle_round").field("round", 1).time(1_700_000_000, WritePrecision.S)])
            assert writer.pending_points == 1  # answered 401: kept
        finally:
            writer.close()

        password_file.write_text("s3cret\n")  # mended; the cloud core restarted
        writer = metrics_writer(config.influx, config.state_dir)
        assert writer is not None
        try:
            assert writer.drain(30)
        finally:
            writer.close()
        assert server.query_rows('SELECT "round" FROM "nacelle_round"', epoch="s") == [
            {"time": 1_700_000_000, "round": 1}
        ]
