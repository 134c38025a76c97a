"""`nacelle edge` as an operator runs it: a process with a TOML file, trained into a round,
stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_node.buffer import FeatureBuffer
from nacelle.config import write_config
from nacelle.keys import key_path, registry_path
from simulate.vibration import turbine_features, turbine_profile
from tests.hierarchy.conftest import Fleet, first_message
from wire.envelope import Kind, open_envelope
from wire.topics import RegionTopics

pytestmark = [pytest.mark.broker]


async def test_edge_daemon_trains_into_a_round_and_stops_on_sigterm(
    fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    node_id = "offshore-t00001"
    FeatureBuffer(tmp_path / "node" / "buffer", 1000).append(turbine_features(turbine_profile(3, 0), 96))
    config = tmp_path / "edge.toml"
    write_config(
        config,
        {
            "node_id": node_id,
            "region": "offshore",
            "registry_path": str(registry_path(fleet.directory)),
            "private_key_path": str(key_path(fleet.directory, node_id)),
            "data_dir": str(tmp_path / "node"),
            "device": "cpu",
            "broker": fleet.endpoint("offshore", node_id),
        },
    )
    aggregator = fleet.aggregator("offshore", tmp_path / "agg")
    running.append(asyncio.create_task(aggregator.session.run()))
    await aggregator.session.connected.wait()
    # The second node of the region stays away: the round closes at its regional deadline.
    core = fleet.cloud(
        tmp_path / "cloud", regions=["offshore"], schedule={"regional_deadline_s": 8, "global_deadline_s": 20}
    )
    log = open(tmp_path / "edge.log", "wb")  # noqa: SIM115 - closed below, after the process
    daemon = subprocess.Popen(
        [sys.executable, "-m", "nacelle", "edge", "--config", str(config)], stdout=log, stderr=log
    )
    broker = fleet.brokers.regions["offshore"]
    try:
        # "online" is published once subscribed: only then can the round's 8 s deadline be fair to
        # a process that first imports torch on a loaded machine.
        status = await first_message(broker.host, broker.port, RegionTopics("offshore").status(node_id), 90)
        envelope = open_envelope(
            status.payload, max_bytes=4096, keys=fleet.registry.public_key, expected_kind=Kind.STATUS
        )
        [record] = await asyncio.wait_for(core.run(max_rounds=1), timeout=40)
        daemon.send_signal(signal.SIGTERM)
        returncode = daemon.wait(timeout=20)
        after_stop = await first_message(broker.host, broker.port, RegionTopics("offshore").status(node_id))
    finally:
        daemon.kill()
        log.close()

    assert record.updates_accepted == 1 and record.regions["offshore"]["expected"] == 2
    assert envelope.sender == node_id and envelope.body["state"] == "online"
    assert returncode == 0, (tmp_path / "edge.log").read_text()[-2000:]
    stopped = open_envelope(
        after_stop.payload, max_bytes=4096, keys=fleet.registry.public_key, expected_kind=Kind.STATUS
    )
    assert stopped.body["state"] == "offline"  # a clean stop says so; the broker drops the will
