"""Regional partials + cloud merge, over real bridged brokers, equal flat FedAvg over all nodes."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from learning.aggregation import fedavg
from learning.model import AutoencoderShape, initial_weights, weight_shapes
from tests.hierarchy.conftest import FLEET, Fleet, announced_round, first_message, wait_for_model
from wire.envelope import Kind, open_envelope, seal
from wire.messages import NodeUpdate, parse_model, update_envelope
from wire.topics import MODEL_TOPIC, ROUND_TOPIC, RegionTopics

pytestmark = [pytest.mark.broker]


async def test_global_model_after_hierarchy_equals_flat_fedavg(
    fleet: Fleet, tmp_path, running: list[asyncio.Task[None]]
) -> None:
    shapes = weight_shapes(AutoencoderShape())
    rng = np.random.default_rng(7)
    aggregators = [fleet.aggregator(region, tmp_path / f"agg-{region}") for region in FLEET]
    running.extend(asyncio.create_task(a.session.run()) for a in aggregators)
    await asyncio.gather(*(a.session.connected.wait() for a in aggregators))
    # Every announcement a node of onshore receives during the round, from before it opens.
    announcements: list[bytes] = []
    subscribed = asyncio.Event()

    async def listen() -> None:
        async with fleet.client("onshore", identifier="test-round-listener") as client:
            await client.subscribe(ROUND_TOPIC, qos=1)
            subscribed.set()
            async for message in client.messages:
                announcements.append(bytes(message.payload))

    running.append(asyncio.create_task(listen()))
    await asyncio.wait_for(subscribed.wait(), timeout=20)
    core = fleet.cloud(tmp_path / "cloud", schedule={"regional_deadline_s": 60, "global_deadline_s": 90})
    cloud_round = asyncio.create_task(core.run(max_rounds=1))
    running.append(cloud_round)

    # Every node publishes a known delta through its own regional broker, as its own client.
    deltas, samples = [], []
    for region, count in FLEET.items():
        announcement = await announced_round(fleet, region)
        for index in range(1, count + 1):
            node_id = f"{region}-t{index:05d}"
            delta = {name: rng.normal(0, 0.05, shape).astype(np.float32) for name, shape in shapes.items()}
            weight = int(rng.integers(50, 500))
            update = NodeUpdate(
                node_id,
                region,
                announcement.round_id,
                announcement.base_version,
                delta,
                weight,
                0.1,
            )
            payload = seal(update_envelope(update, "int8-zstd", time.time()), fleet.node_key(node_id))
            async with fleet.client(region, node_id, identifier=f"test-{node_id}") as client:
                await client.publish(RegionTopics(region).update(node_id), payload, qos=1)
            deltas.append(delta)
            samples.append(weight)

    [record] = await asyncio.wait_for(cloud_round, timeout=60)

    assert record.status == "published"
    assert record.updates_accepted == sum(FLEET.values())
    expected = fedavg(deltas, samples)
    start = initial_weights(AutoencoderShape(), 0)
    for name in shapes:
        # int8 quantization moves each element by at most half its tensor's scale, and a
        # weighted mean of errors is bounded by the largest of them.
        bound = max(float(np.abs(d[name]).max()) for d in deltas) / 127 / 2 + 1e-6
        error = np.abs(core.weights[name] - (start[name] + expected[name])).max()
        assert error <= bound, f"{name}: {error} > {bound}"
    # And what the regional brokers retain, once the bridge has carried it, is that model.
    broker = fleet.brokers.regions["onshore"]
    release = await wait_for_model(broker.host, broker.port, fleet, version=1)
    # The round was announced once: publishing the new model does not announce the closing
    # round again (every node would handle it once more between the model and the next round).
    assert len(announcements) == 1
    late_joiner = await first_message(broker.host, broker.port, MODEL_TOPIC)
    assert late_joiner.retain and late_joiner.payload == release.payload
    model = parse_model(
        open_envelope(
            release.payload,
            max_bytes=1 << 22,
            keys=fleet.registry.public_key,
            expected_kind=Kind.MODEL,
        ),
        shapes,
    )
    for name in shapes:
        np.testing.assert_array_equal(model.weights[name], core.weights[name])
