"""A node that missed a round finds the newest global model when it comes back, and trusts only
what the cloud signed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from edge_node.config import EdgeConfig
from edge_node.node import EdgeNode
from learning.model import AutoencoderShape, initial_weights
from nacelle.config import build_config
from nacelle.keys import key_path, registry_path
from simulate.vibration import turbine_features, turbine_profile
from tests.hierarchy.conftest import Fleet, wait_for_model
from wire.envelope import seal
from wire.messages import ModelRelease, model_envelope
from wire.topics import MODEL_TOPIC

pytestmark = [pytest.mark.broker]


def edge_node(fleet: Fleet, node_id: str, data_dir: Path) -> EdgeNode:
    config = build_config(
        EdgeConfig,
        {
            "node_id": node_id,
            "region": "offshore",
            "broker": fleet.endpoint("offshore", node_id),
            "registry_path": registry_path(fleet.directory),
            "private_key_path": key_path(fleet.directory, node_id),
            "data_dir": data_dir,
            "device": "cpu",
        },
    )
    node = EdgeNode(
        config, signing_key=fleet.node_key(node_id), trusted=fleet.registry.keys_for(fleet.registry.cloud.member_id)
    )
    node.buffer.append(turbine_features(turbine_profile(hash(node_id) % 1000, 0), 96))
    return node


async def test_node_offline_during_round_gets_newest_model_on_reconnect(
    fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    aggregator = fleet.aggregator("offshore", tmp_path / "agg")
    online = edge_node(fleet, "offshore-t00001", tmp_path / "n1")
    offline = edge_node(fleet, "offshore-t00002", tmp_path / "n2")
    running.extend(asyncio.create_task(x.session.run()) for x in (aggregator, online))
    await asyncio.gather(aggregator.session.connected.wait(), online.session.connected.wait())
    core = fleet.cloud(
        tmp_path / "cloud",
        regions=["offshore"],
        schedule={"regional_deadline_s": 8, "global_deadline_s": 15},
    )

    [record] = await asyncio.wait_for(core.run(max_rounds=1), timeout=30)
    assert record.status == "published" and record.updates_accepted == 1
    broker = fleet.brokers.regions["offshore"]
    await wait_for_model(broker.host, broker.port, fleet, version=1)  # the bridge has carried it
    running.append(asyncio.create_task(offline.session.run()))
    async with asyncio.timeout(15):
        while offline.state.model_version < 1:
            await asyncio.sleep(0.05)

    assert offline.state.model_version == 1
    for name, array in core.weights.items():
        np.testing.assert_array_equal(offline.weights[name], array)
    assert offline.updates_published == 0  # the round it missed had closed: nothing to train
    # The model survived in the node's state directory, for a restart while offline.
    restarted = edge_node(fleet, "offshore-t00002", tmp_path / "n2")
    assert restarted.state.model_version == 1


async def test_node_refuses_a_model_not_signed_by_the_cloud(
    fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]]
) -> None:
    forged = ModelRelease(99, 5, 4, initial_weights(AutoencoderShape(), seed=666))
    # Signed with a node's key while claiming to come from the cloud.
    payload = seal(model_envelope(forged, "cloud", time.time()), fleet.node_key("offshore-t00001"))
    # As the operator, who may publish a model on the regional broker (no node may): what is
    # tested is the node's signature check, the last line of defence behind the ACL.
    async with fleet.client("offshore") as client:
        await client.publish(MODEL_TOPIC, payload, qos=1, retain=True)
    node = edge_node(fleet, "offshore-t00002", tmp_path / "n2")
    running.append(asyncio.create_task(node.session.run()))
    async with asyncio.timeout(15):
        while not node.rejections:
            await asyncio.sleep(0.05)

    assert node.rejections == {"bad_signature": 1}
    assert node.state.model_version == -1 and node.weights is None
