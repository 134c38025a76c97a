"""Anomaly alerts end to end: an edge node daemon (`nacelle edge`, its own process) reads a
recording of a failing gearbox, scores it with the global model, alerts over TLS through its
regional broker and the bridge; the cloud core, with no round open, verifies the alert and
writes it to a real InfluxDB with the schema dashboards are built on. A forged alert on the
same path is refused, counted, and written to InfluxDB as a refusal."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from cloud_core.alerts import alert_point
from cloud_core.daemon import CloudCore
from edge_node.buffer import FeatureBuffer
from nacelle.config import write_config
from nacelle.keys import key_path, registry_path
from simulate.influxdb_server import RunningInfluxDB, start_influxdb
from simulate.vibration import SAMPLE_RATE_HZ, WINDOW_SAMPLES, Fault, raw_windows, turbine_features, turbine_profile
from telemetry import Point
from tests.hierarchy.conftest import Fleet
from wire.envelope import seal
from wire.messages import NodeAlert, alert_envelope
from wire.signing import load_private_key
from wire.topics import RegionTopics

pytestmark = [pytest.mark.broker, pytest.mark.influx]

NODE = "offshore-t00001"


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[RunningInfluxDB]:
    with start_influxdb(tmp_path / "influxdb") as server:
        yield server


async def _alert_rows(influx: RunningInfluxDB, timeout_s: float) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = influx.query_rows('SELECT * FROM "nacelle_alert"')
        if rows:
            return rows
        await asyncio.sleep(0.5)
    return []


async def test_a_failing_turbines_alert_reaches_influxdb_with_no_round_open(
    fleet: Fleet, influx: RunningInfluxDB, tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    profile = turbine_profile(3, 0)
    FeatureBuffer(tmp_path / "node" / "buffer", 8640).append(
        turbine_features(profile, 96), recorded_at=time.time() - 600
    )
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    failing = raw_windows(profile, 16, offset=7, fault=Fault.GEAR_WEAR, severity=3.0).ravel()
    np.save(recordings / "gearbox.npy", failing)
    recorded_at = math.floor(time.time()) - 120 + 0.125  # its mtime: when the windows were recorded
    os.utime(recordings / "gearbox.npy", (recorded_at, recorded_at))
    config = tmp_path / "edge.toml"
    write_config(
        config,
        {
            "node_id": NODE,
            "region": "offshore",
            "registry_path": str(registry_path(fleet.directory)),
            "private_key_path": str(key_path(fleet.directory, NODE)),
            "data_dir": str(tmp_path / "node"),
            "device": "cpu",
            "broker": fleet.endpoint("offshore", NODE),
            "recordings": {
                "directory": str(recordings),
                "sample_rate_hz": SAMPLE_RATE_HZ,
                "window_samples": WINDOW_SAMPLES,
            },
            "alerts": {"scoring_interval_s": 0.5},
        },
    )
    core = fleet.cloud(tmp_path / "cloud", influx={"url": influx.url, "database": influx.database})
    running.append(asyncio.create_task(core.session.run()))  # the session alone: no round opens
    await core.session.connected.wait()
    log = open(tmp_path / "edge.log", "wb")  # noqa: SIM115 - closed below, after the process
    daemon = subprocess.Popen(
        [sys.executable, "-m", "nacelle", "edge", "--config", str(config)], stdout=log, stderr=log
    )
    try:
        # Signed by the region's other node, on this node's topic: the cloud must refuse it.
        forged = NodeAlert(NODE, "offshore", 0, 9.0, 1.0, time.time(), 0)
        async with fleet.client("offshore", identifier="test-forger") as client:
            payload = seal(alert_envelope(forged, time.time()), fleet.node_key("offshore-t00002"))
            await client.publish(RegionTopics("offshore").alert(NODE), payload, qos=1)
        rows = await _alert_rows(influx, timeout_s=60)
        await core.alerts.close()
        fields = {r["fieldKey"]: r["fieldType"] for r in influx.query_rows('SHOW FIELD KEYS FROM "nacelle_alert"')}
        tags = sorted(r["tagKey"] for r in influx.query_rows('SHOW TAG KEYS FROM "nacelle_alert"'))
        refusals = influx.query_rows('SELECT * FROM "nacelle_alert_refusal"')
        daemon.send_signal(signal.SIGTERM)
        returncode = daemon.wait(timeout=20)
    finally:
        daemon.kill()
        log.close()
        if core.metrics is not None:
            core.metrics.close()

    edge_log = (tmp_path / "edge.log").read_text()
    assert len(rows) == 1, edge_log[-3000:]
    [row] = rows
    assert fields == {
        "model_version": "integer",
        "ratio": "float",
        "score": "float",
        "suppressed": "integer",
        "threshold": "float",
    }
    assert tags == ["node", "region"]
    assert (row["region"], row["node"], row["model_version"], row["suppressed"]) == ("offshore", NODE, 0, 0)
    assert row["time"] == round(recorded_at * 1000)  # the window's time, not the arrival's
    assert row["score"] > row["threshold"] > 0
    assert row["ratio"] == pytest.approx(row["score"] / row["threshold"])
    assert (core.alerts.accepted, dict(core.alerts.refused)) == (1, {"bad_signature": 1})
    assert [(r["region"], r["reason"], r["node"], r["count"]) for r in refusals] == [
        ("offshore", "bad_signature", NODE, 1)
    ]
    assert returncode == 0, edge_log[-2000:]


class HeldSpool:
    """A metrics spool whose disk does not answer until `release` is set: the cloud core
    crashes in between."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.lines: list[str] = []

    @property
    def points_written(self) -> int:
        return 0

    def write(self, points: Sequence[Point]) -> int:
        raise AssertionError("alerts go to the spool")

    def write_later(self, points: Sequence[Point]) -> None:
        self.entered.set()
        self.release.wait(30)
        self.lines.extend(point.to_line_protocol() for point in points)

    def close(self) -> None:
        pass


async def test_an_alert_not_yet_spooled_when_the_cloud_core_dies_is_delivered_again(
    fleet: Fleet, tmp_path: Path
) -> None:
    config = fleet.cloud(tmp_path / "cloud").config  # no InfluxDB: the spools are the test's
    key = load_private_key(key_path(fleet.directory, "cloud"))
    held, after = HeldSpool(), HeldSpool()
    after.release.set()
    dying = CloudCore(config, fleet.registry, key, metrics=held)
    dying_task = asyncio.create_task(dying.run())
    try:
        await asyncio.wait_for(dying.session.connected.wait(), 10)
        alert = NodeAlert(NODE, "offshore", 0, 9.0, 1.0, time.time(), 0)
        async with fleet.client("offshore", NODE, identifier="test-alerting-node") as client:
            await client.publish(
                RegionTopics("offshore").alert(NODE),
                seal(alert_envelope(alert, time.time()), fleet.node_key(NODE)),
                qos=1,
            )
        await asyncio.wait_for(asyncio.to_thread(held.entered.wait, 10), 15)
        assert dying.alerts.accepted == 1
    finally:
        dying_task.cancel()  # dies while its point is not on disk: the broker has no acknowledgement
        await asyncio.gather(dying_task, return_exceptions=True)
    assert held.lines == []
    held.release.set()

    restarted = CloudCore(config, fleet.registry, key, metrics=after)
    restarted_task = asyncio.create_task(restarted.run())
    try:
        async with asyncio.timeout(20):
            while not after.lines:
                await asyncio.sleep(0.05)
    finally:
        restarted_task.cancel()
        await asyncio.gather(restarted_task, return_exceptions=True)
    assert restarted.alerts.accepted == 1
    assert after.lines == [alert_point(alert).to_line_protocol()]
