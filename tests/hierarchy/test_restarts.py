"""Crashes and restarts lose nothing: the regional aggregator (SIGKILL), the regional broker and
the cloud core (SIGKILL) each go down in the middle of a round and come back, and the round ends
with every update counted once: the global model equals flat FedAvg of all updates, as an
uninterrupted round's does (tests/hierarchy/test_exact_fedavg.py). Then the cloud link down for
a whole regional deadline: the partial waits in the regional broker and the round completes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cloud_core.model_store import ModelStore
from learning.aggregation import fedavg
from learning.model import AutoencoderShape, Weights, initial_weights, weight_shapes
from nacelle.config import write_config
from nacelle.keys import aggregator_id, key_path, registry_path
from nacelle.processes import start_process, stop_process
from regional_aggregator.refusal_counts import RefusalCountsFile
from regional_aggregator.update_log import UpdateLog
from tests.hierarchy.conftest import FLEET, Fleet, announced_round, first_message
from wire.envelope import seal
from wire.messages import NodeUpdate, RoundAnnouncement, update_envelope
from wire.topics import RegionTopics

pytestmark = [pytest.mark.broker]

SHAPES = weight_shapes(AutoencoderShape())
SCHEDULE = {"regional_deadline_s": 60, "global_deadline_s": 90}


class Updates:
    """Known updates for every node of FLEET, published one by one as the node's own client."""

    def __init__(self, fleet: Fleet) -> None:
        rng = np.random.default_rng(11)
        self.fleet = fleet
        self.deltas: dict[str, Weights] = {}
        self.samples: dict[str, int] = {}
        for region, count in FLEET.items():
            for index in range(1, count + 1):
                node = f"{region}-t{index:05d}"
                self.deltas[node] = {
                    name: rng.normal(0, 0.05, shape).astype(np.float32) for name, shape in SHAPES.items()
                }
                self.samples[node] = int(rng.integers(50, 500))

    def nodes(self, region: str) -> list[str]:
        return [node for node in self.deltas if node.startswith(f"{region}-")]

    async def publish(self, node: str, announcement: RoundAnnouncement) -> None:
        region = node.split("-t")[0]
        update = NodeUpdate(
            node, region, announcement.round_id, announcement.base_version, self.deltas[node], self.samples[node], 0.1
        )
        payload = seal(update_envelope(update, "int8-zstd", time.time()), self.fleet.node_key(node))
        async with self.fleet.client(region, node, identifier=f"test-{node}") as client:
            await client.publish(RegionTopics(region).update(node), payload, qos=1)

    def assert_model_is_fedavg_of_all(self, weights: Weights) -> None:
        nodes = list(self.deltas)
        expected = fedavg([self.deltas[n] for n in nodes], [self.samples[n] for n in nodes])
        start = initial_weights(AutoencoderShape(), 0)
        for name in SHAPES:
            bound = max(float(np.abs(self.deltas[n][name]).max()) for n in nodes) / 127 / 2 + 1e-6
            error = float(np.abs(weights[name] - (start[name] + expected[name])).max())
            assert error <= bound, f"{name}: {error} > {bound} (an update lost or counted twice)"


def _daemon(
    fleet: Fleet, tmp_path: Path, name: str, args: list[str], config: dict[str, object]
) -> subprocess.Popen[bytes]:
    path = tmp_path / f"{name}.toml"
    write_config(path, config)
    return start_process([sys.executable, "-m", "nacelle", *args, "--config", str(path)], tmp_path / f"{name}.log")


def _aggregator_process(fleet: Fleet, tmp_path: Path, region: str) -> subprocess.Popen[bytes]:
    config = {
        "region": region,
        "broker": fleet.endpoint(region, aggregator_id(region)),
        "registry_path": str(registry_path(fleet.directory)),
        "private_key_path": str(key_path(fleet.directory, aggregator_id(region))),
        "state_dir": str(tmp_path / f"agg-{region}"),
    }
    return _daemon(fleet, tmp_path, f"region-{region}", ["region"], config)


def _cloud_process(fleet: Fleet, tmp_path: Path) -> subprocess.Popen[bytes]:
    config = {
        "broker": fleet.endpoint(None, fleet.registry.cloud.member_id),
        "registry_path": str(registry_path(fleet.directory)),
        "private_key_path": str(key_path(fleet.directory, "cloud")),
        "state_dir": str(tmp_path / "cloud"),
        "schedule": SCHEDULE,
    }
    return _daemon(fleet, tmp_path, "cloud", ["cloud", "--rounds", "1"], config)


def _kill(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


async def _until(condition, timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _wait_online(fleet: Fleet, region: str) -> None:
    broker = fleet.brokers.regions[region]
    topic = RegionTopics(region).status(aggregator_id(region))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = await first_message(broker.host, broker.port, topic)
        if b"online" in message.payload:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"aggregator of {region} never came online")


async def test_aggregator_killed_mid_round_loses_nothing(
    fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    updates = Updates(fleet)
    offshore = fleet.aggregator("offshore", tmp_path / "agg-offshore")
    running.append(asyncio.create_task(offshore.session.run()))
    onshore = _aggregator_process(fleet, tmp_path, "onshore")
    try:
        await _wait_online(fleet, "onshore")
        core = fleet.cloud(tmp_path / "cloud", schedule=SCHEDULE)
        cloud_round = asyncio.create_task(core.run(max_rounds=1))
        running.append(cloud_round)
        announcement = await announced_round(fleet, "onshore")
        onshore_nodes = updates.nodes("onshore")
        for node in [*updates.nodes("offshore"), *onshore_nodes[:3]]:
            await updates.publish(node, announcement)
        log = UpdateLog(tmp_path / "agg-onshore" / "updates")
        await _until(lambda: len(list(log.read(announcement.round_id))) == 3, what="3 logged updates")
        async with fleet.client("onshore", onshore_nodes[3], identifier="test-garbled") as client:
            await client.publish(RegionTopics("onshore").update(onshore_nodes[3]), b"\xc1 garbled", qos=1)
        refusals = RefusalCountsFile(tmp_path / "agg-onshore" / "refusals.json")
        await _until(lambda: refusals.load().counts == {"malformed": 1}, what="the refusal counted on disk")

        _kill(onshore)
        for node in onshore_nodes[3:]:  # queued by the broker for the aggregator's session
            await updates.publish(node, announcement)
        onshore = _aggregator_process(fleet, tmp_path, "onshore")

        [record] = await asyncio.wait_for(cloud_round, timeout=60)
    finally:
        stop_process(onshore)

    assert record.status == "published"
    assert record.updates_accepted == sum(FLEET.values())
    assert record.regions["onshore"]["rejected"] == {"malformed": 1}  # counted before the kill
    assert "3 updates recovered from the log" in (tmp_path / "region-onshore.log").read_text()
    updates.assert_model_is_fedavg_of_all(core.weights)


async def test_regional_broker_restarted_mid_round_loses_nothing(
    fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    updates = Updates(fleet)
    aggregators = {region: fleet.aggregator(region, tmp_path / f"agg-{region}") for region in FLEET}
    running.extend(asyncio.create_task(a.session.run()) for a in aggregators.values())
    await asyncio.gather(*(a.session.connected.wait() for a in aggregators.values()))
    core = fleet.cloud(tmp_path / "cloud", schedule=SCHEDULE)
    cloud_round = asyncio.create_task(core.run(max_rounds=1))
    running.append(cloud_round)
    announcement = await announced_round(fleet, "onshore")
    onshore_nodes = updates.nodes("onshore")
    for node in [*updates.nodes("offshore"), *onshore_nodes[:3]]:
        await updates.publish(node, announcement)
    await _until(lambda: aggregators["onshore"].round is not None and len(aggregators["onshore"].round.nodes) == 3)

    fleet.brokers.regions["onshore"].restart()
    for node in onshore_nodes[3:]:  # before the aggregator is back: the broker queues them
        await updates.publish(node, announcement)

    [record] = await asyncio.wait_for(cloud_round, timeout=60)

    assert record.status == "published"
    assert record.updates_accepted == sum(FLEET.values())
    updates.assert_model_is_fedavg_of_all(core.weights)


async def test_cloud_core_killed_mid_round_loses_nothing(
    fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    updates = Updates(fleet)
    aggregators = {region: fleet.aggregator(region, tmp_path / f"agg-{region}") for region in FLEET}
    running.extend(asyncio.create_task(a.session.run()) for a in aggregators.values())
    await asyncio.gather(*(a.session.connected.wait() for a in aggregators.values()))
    cloud = _cloud_process(fleet, tmp_path)
    try:
        announcement = await announced_round(fleet, "onshore")
        for node in updates.nodes("offshore"):
            await updates.publish(node, announcement)
        await _until(lambda: (tmp_path / "cloud" / "partials" / "offshore.msgpack").exists(), what="offshore partial")

        _kill(cloud)
        for node in updates.nodes("onshore"):  # the onshore partial now waits in the cloud broker
            await updates.publish(node, announcement)
        await _until(lambda: aggregators["onshore"].partials_published == 1, what="onshore partial")
        cloud = _cloud_process(fleet, tmp_path)
        cloud.wait(timeout=60)
    finally:
        stop_process(cloud)

    assert cloud.returncode == 0, (tmp_path / "cloud.log").read_text()[-2000:]
    store = ModelStore(tmp_path / "cloud")
    latest = store.latest(list(SHAPES))
    assert latest is not None and latest[0].version == 1
    assert "cloud resumed round 1 with 1 partials" in (tmp_path / "cloud.log").read_text()
    updates.assert_model_is_fedavg_of_all(latest[1])


async def test_partial_waits_out_a_cloud_link_down_for_the_whole_regional_deadline(
    fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    updates = Updates(fleet)
    aggregators = {region: fleet.aggregator(region, tmp_path / f"agg-{region}") for region in FLEET}
    running.extend(asyncio.create_task(a.session.run()) for a in aggregators.values())
    await asyncio.gather(*(a.session.connected.wait() for a in aggregators.values()))
    # The offshore region's last node never reports: its partial goes out at the deadline.
    core = fleet.cloud(tmp_path / "cloud", schedule={"regional_deadline_s": 4, "global_deadline_s": 60})
    cloud_round = asyncio.create_task(core.run(max_rounds=1))
    running.append(cloud_round)
    announcement = await announced_round(fleet, "offshore")
    await updates.publish(updates.nodes("offshore")[0], announcement)
    for node in updates.nodes("onshore"):
        await updates.publish(node, announcement)
    cloud_broker = fleet.brokers.cloud

    cloud_broker.stop()  # the link is down before, during and after the regional deadline
    await _until(lambda: aggregators["offshore"].partials_published == 1, what="offshore partial at its deadline")
    await asyncio.sleep(max(0.0, announcement.regional_deadline + 2 - time.time()))
    cloud_broker.start()

    [record] = await asyncio.wait_for(cloud_round, timeout=60)

    assert record.status == "published"
    assert record.updates_accepted == sum(FLEET.values()) - 1
    assert all(summary["reported"] for summary in record.regions.values())
