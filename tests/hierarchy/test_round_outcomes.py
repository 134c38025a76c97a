"""How a round ends when it should not change the model, over real brokers and daemons: below
quorum, refused by the holdout guard; and an update that arrives after its region closed the
round is refused as late and counted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from learning.model import AutoencoderShape, weight_shapes
from tests.hierarchy.conftest import FLEET, Fleet, announced_round
from wire.envelope import seal
from wire.messages import NodeUpdate, RoundAnnouncement, update_envelope
from wire.topics import RegionTopics

pytestmark = [pytest.mark.broker]

SHAPES = weight_shapes(AutoencoderShape())


async def _publish(fleet: Fleet, node: str, announcement: RoundAnnouncement, scale: float = 0.01) -> None:
    region = node.split("-t")[0]
    delta = {name: np.full(shape, scale, np.float32) for name, shape in SHAPES.items()}
    update = NodeUpdate(node, region, announcement.round_id, announcement.base_version, delta, 100, 0.2)
    payload = seal(update_envelope(update, "int8-zstd", time.time()), fleet.node_key(node))
    async with fleet.client(region, node, identifier=f"test-{node}") as client:
        await client.publish(RegionTopics(region).update(node), payload, qos=1)


async def _aggregators(fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]]):
    aggregators = {region: fleet.aggregator(region, tmp_path / f"agg-{region}") for region in FLEET}
    running.extend(asyncio.create_task(a.session.run()) for a in aggregators.values())
    await asyncio.gather(*(a.session.connected.wait() for a in aggregators.values()))
    return aggregators


async def test_a_round_below_quorum_keeps_the_old_model_and_says_why(
    fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    await _aggregators(fleet, tmp_path, running)
    core = fleet.cloud(
        tmp_path / "cloud",
        schedule={"regional_deadline_s": 3, "global_deadline_s": 20},
        quorum={"min_node_share": 0.5, "min_region_share": 1.0},
    )
    cloud_round = asyncio.create_task(core.run(max_rounds=1))
    running.append(cloud_round)
    announcement = await announced_round(fleet, "onshore")
    await _publish(fleet, "offshore-t00001", announcement)  # 1/2 offshore: enough
    await _publish(fleet, "onshore-t00001", announcement)  # 1/5 onshore: not enough

    [record] = await asyncio.wait_for(cloud_round, timeout=30)

    assert record.status == "quorum_failed"
    assert record.model_version == 0 and core.model.version == 0 and core.store.versions() == [0]
    assert "onshore 1/5 nodes" in record.reason
    assert record.regions["offshore"]["quorum_met"] and not record.regions["onshore"]["quorum_met"]


async def test_the_guard_refuses_a_model_that_got_worse_on_the_holdout(
    fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    holdout = tmp_path / "holdout.npy"
    np.save(holdout, np.random.default_rng(0).normal(0, 1, (64, 64)).astype(np.float32))
    await _aggregators(fleet, tmp_path, running)
    core = fleet.cloud(
        tmp_path / "cloud",
        schedule={"regional_deadline_s": 30, "global_deadline_s": 40},
        guard={"holdout_path": str(holdout), "max_loss_increase": 0.1},
    )
    cloud_round = asyncio.create_task(core.run(max_rounds=1))
    running.append(cloud_round)
    announcement = await announced_round(fleet, "onshore")
    for region, count in FLEET.items():
        for index in range(1, count + 1):  # every node agrees, on a step that wrecks the model
            await _publish(fleet, f"{region}-t{index:05d}", announcement, scale=2.0)

    [record] = await asyncio.wait_for(cloud_round, timeout=30)

    assert record.status == "guard_refused" and "holdout loss would rise" in record.reason
    assert record.updates_accepted == sum(FLEET.values())
    assert core.model.version == 0 and core.store.versions() == [0]


async def test_an_update_after_its_region_closed_the_round_is_refused_as_late(
    fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    aggregators = await _aggregators(fleet, tmp_path, running)
    core = fleet.cloud(tmp_path / "cloud", schedule={"regional_deadline_s": 2, "global_deadline_s": 20})
    cloud_round = asyncio.create_task(core.run(max_rounds=1))
    running.append(cloud_round)
    announcement = await announced_round(fleet, "offshore")
    await _publish(fleet, "offshore-t00001", announcement)
    offshore = aggregators["offshore"]
    deadline = time.monotonic() + 20
    while offshore.partials_published == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)

    await _publish(fleet, "offshore-t00002", announcement)  # its region closed at the deadline
    while offshore.rejections["late"] == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)

    assert offshore.rejections == {"late": 1}
    [record] = await asyncio.wait_for(cloud_round, timeout=30)
    assert record.regions["offshore"]["accepted"] == 1
