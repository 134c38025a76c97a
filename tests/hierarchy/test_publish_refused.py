"""A daemon whose publish the broker refuses (its ACL does not grant the identity of its
certificate the topic: tests/broker/test_security.py) says so and loses nothing: the cloud core
stops with the refusal instead of waiting for its own model forever, and an aggregator keeps
the refused round's updates for the restart that hands it in."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from learning.model import AutoencoderShape, weight_shapes
from nacelle.mqtt import PublishRefused
from tests.hierarchy.conftest import Fleet, announced_round
from wire.envelope import seal
from wire.messages import NodeUpdate, update_envelope
from wire.topics import MODEL_TOPIC, RegionTopics

pytestmark = [pytest.mark.broker]

OFFSHORE = RegionTopics("offshore")
NODES = ["offshore-t00001", "offshore-t00002"]


async def test_a_cloud_core_its_broker_refuses_stops_with_the_refusal(fleet: Fleet, tmp_path: Path) -> None:
    core = fleet.cloud(tmp_path / "cloud", broker=fleet.endpoint(None, NODES[0]), regions=["offshore"])
    with pytest.raises(PublishRefused, match=MODEL_TOPIC):
        await asyncio.wait_for(core.run(max_rounds=1), timeout=20)


async def test_an_aggregator_whose_partial_is_refused_hands_the_round_in_after_a_restart(
    fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]], caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "aggregator"
    refused = fleet.aggregator("offshore", state)
    granted = refused.session.publish

    async def publish(topic: str, payload: bytes, *, retain: bool = False) -> None:
        if topic == OFFSHORE.partial:
            raise PublishRefused(topic, "Not authorized")
        await granted(topic, payload, retain=retain)

    refused.session.publish = publish  # type: ignore[method-assign]
    refused_task = asyncio.create_task(refused.session.run())
    running.append(refused_task)
    await refused.session.connected.wait()
    core = fleet.cloud(
        tmp_path / "cloud", regions=["offshore"], schedule={"regional_deadline_s": 60, "global_deadline_s": 90}
    )
    cloud_round = asyncio.create_task(core.run(max_rounds=1))
    running.append(cloud_round)
    announcement = await announced_round(fleet, "offshore")
    delta = {name: np.full(shape, 0.01, np.float32) for name, shape in weight_shapes(AutoencoderShape()).items()}
    with caplog.at_level(logging.ERROR, logger="regional_aggregator"):
        for node in NODES:
            update = NodeUpdate(node, "offshore", announcement.round_id, announcement.base_version, delta, 100, 0.2)
            payload = seal(update_envelope(update, "int8-zstd", time.time()), fleet.node_key(node))
            async with fleet.client("offshore", node, identifier=f"test-{node}") as client:
                await client.publish(OFFSHORE.update(node), payload, qos=1)
        async with asyncio.timeout(20):
            while not any("could not hand in" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.05)

    assert refused.last_closed_round < announcement.round_id
    assert len(list(refused.log.read(announcement.round_id))) == len(NODES)
    assert not refused_task.done() and not cloud_round.done()
    refused_task.cancel()
    await asyncio.gather(refused_task, return_exceptions=True)

    restarted = fleet.aggregator("offshore", state)  # the ACL mended
    running.append(asyncio.create_task(restarted.session.run()))
    [record] = await asyncio.wait_for(cloud_round, timeout=30)
    assert record.status == "published"
    assert record.regions["offshore"]["accepted"] == len(NODES)
