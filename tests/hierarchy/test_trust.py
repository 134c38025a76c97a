"""Every kind of bad update over a real broker is refused with its own reason, counted, and the
round completes with every valid update; a region with the robust policy is not pulled by a
poisoned update and names its sender."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from learning.model import AutoencoderShape, initial_weights, weight_shapes
from nacelle.keys import registry_path
from nacelle.registry_admin import set_status
from tests.hierarchy.conftest import Fleet, announced_round
from wire.envelope import Envelope, canonical_bytes, seal
from wire.messages import NodeUpdate, update_envelope
from wire.registry import NodeStatus
from wire.topics import RegionTopics

pytestmark = [pytest.mark.broker]

REGION = "onshore"  # five nodes in FLEET
SHAPES = weight_shapes(AutoencoderShape())


def _node(index: int) -> str:
    return f"{REGION}-t{index:05d}"


async def _start(fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]], **aggregator_overrides: object):
    aggregator = fleet.aggregator(REGION, tmp_path / "agg", **aggregator_overrides)
    task = asyncio.create_task(aggregator.session.run())
    running.append(task)
    await aggregator.session.connected.wait()
    core = fleet.cloud(
        tmp_path / "cloud", regions=[REGION], schedule={"regional_deadline_s": 30, "global_deadline_s": 40}
    )
    cloud_round = asyncio.create_task(core.run(max_rounds=1))
    running.append(cloud_round)
    return aggregator, task, core, cloud_round, await announced_round(fleet, REGION)


def _signed_fields(fields: dict[str, object], key: Ed25519PrivateKey) -> bytes:
    return canonical_bytes({**fields, "sig": key.sign(canonical_bytes(fields))})


async def test_each_kind_of_bad_update_is_refused_with_its_reason(
    fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]], caplog: pytest.LogCaptureFixture
) -> None:
    set_status(registry_path(fleet.directory), [_node(5)], NodeStatus.SUSPENDED, reason="test")
    _, task, _, cloud_round, announcement = await _start(fleet, tmp_path, running)
    topics = RegionTopics(REGION)
    delta = {name: np.full(shape, 0.01, np.float32) for name, shape in SHAPES.items()}

    def envelope(node_id: str, round_id: int = announcement.round_id) -> Envelope:
        body = NodeUpdate(node_id, REGION, round_id, announcement.base_version, delta, 100, 0.2)
        return update_envelope(body, "int8-zstd", time.time())

    def update(node_id: str, signer: str | None = None, round_id: int = announcement.round_id) -> bytes:
        return seal(envelope(node_id, round_id), fleet.node_key(signer or node_id))

    wrong_schema = {**envelope(_node(1))._fields(), "v": 2}
    poisoned_scale = envelope(_node(3))
    poisoned_scale.body["delta"]["tensors"][0][2] = float("nan")
    stranger = "onshore-t00099"
    bad = [
        (_node(1), b"\xc1 not msgpack", "malformed"),
        (_node(1), _signed_fields(wrong_schema, fleet.node_key(_node(1))), "unknown_schema"),
        (_node(2), update(_node(2), signer=_node(1)), "bad_signature"),
        (stranger, seal(envelope(stranger), Ed25519PrivateKey.generate()), "unknown_sender"),
        (_node(5), update(_node(5)), "suspended_sender"),
        (_node(2), update(_node(2), round_id=announcement.round_id - 1), "stale_round"),
        (_node(4), b"\x00" * (300 * 1024), "oversized"),
        (_node(3), seal(poisoned_scale, fleet.node_key(_node(3))), "non_finite"),
    ]
    with caplog.at_level(logging.WARNING, logger="regional_aggregator"):
        async with fleet.client(REGION) as client:
            await client.publish(topics.update(_node(1)), update(_node(1)), qos=1)
            await client.publish(topics.update(_node(1)), update(_node(1)), qos=1)  # replayed: counts once
            for node_id, payload, _ in bad:
                await client.publish(topics.update(node_id), payload, qos=1)
            for index in (2, 3, 4):
                await client.publish(topics.update(_node(index)), update(_node(index)), qos=1)
        [record] = await asyncio.wait_for(cloud_round, timeout=30)

    region = record.regions[REGION]
    assert (region["accepted"], region["expected"]) == (4, 4)  # the suspended node is not expected
    assert region["rejected"] == {"duplicate": 1, **{reason: 1 for _, _, reason in bad}}
    assert record.status == "published" and not task.done()
    refusals = [r.getMessage() for r in caplog.records if "refused update" in r.getMessage()]
    assert len(refusals) == len(bad) + 1
    assert any("suspended_sender" in line and _node(5) in line for line in refusals)


async def test_a_trimmed_mean_region_is_not_pulled_by_a_poisoned_update_and_names_its_sender(
    fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]], caplog: pytest.LogCaptureFixture
) -> None:
    _, _, core, cloud_round, announcement = await _start(
        fleet, tmp_path, running, robust={"aggregate": "trimmed_mean", "trim_fraction": 0.2}
    )
    rng = np.random.default_rng(3)
    honest = {name: np.full(shape, 0.01, np.float32) for name, shape in SHAPES.items()}
    attacker = _node(5)
    with caplog.at_level(logging.WARNING, logger="regional_aggregator"):
        async with fleet.client(REGION) as client:
            for index in range(1, 6):
                node_id = _node(index)
                delta = {
                    name: (-20 * value if node_id == attacker else value + rng.normal(0, 5e-4, value.shape)).astype(
                        np.float32
                    )
                    for name, value in honest.items()
                }
                body = NodeUpdate(node_id, REGION, announcement.round_id, announcement.base_version, delta, 100, 0.2)
                payload = seal(update_envelope(body, "int8-zstd", time.time()), fleet.node_key(node_id))
                await client.publish(RegionTopics(REGION).update(node_id), payload, qos=1)
        [record] = await asyncio.wait_for(cloud_round, timeout=30)

    assert record.status == "published"
    start = initial_weights(AutoencoderShape(), 0)
    for name in SHAPES:
        moved = core.weights[name] - start[name]
        np.testing.assert_allclose(moved, 0.01, atol=2.5e-3)  # plain FedAvg: far below 0
    warnings = [r.getMessage() for r in caplog.records if "suspected poisoning" in r.getMessage()]
    assert len(warnings) == 1 and attacker in warnings[0]
