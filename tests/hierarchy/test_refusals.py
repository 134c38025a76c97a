"""Bad input over a real broker: refused, logged, counted by reason; the aggregator keeps
running and the round completes with every valid update."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from learning.model import AutoencoderShape, weight_shapes
from tests.hierarchy.conftest import Fleet, announced_round
from wire.envelope import seal
from wire.messages import NodeUpdate, update_envelope
from wire.topics import RegionTopics

pytestmark = [pytest.mark.broker]


async def test_bad_updates_are_counted_and_the_round_completes_with_the_valid_ones(
    fleet: Fleet, tmp_path: Path, running: list[asyncio.Task[None]], caplog: pytest.LogCaptureFixture
) -> None:
    aggregator = fleet.aggregator("offshore", tmp_path / "agg")
    aggregator_task = asyncio.create_task(aggregator.session.run())
    running.append(aggregator_task)
    await aggregator.session.connected.wait()
    core = fleet.cloud(
        tmp_path / "cloud", regions=["offshore"], schedule={"regional_deadline_s": 30, "global_deadline_s": 40}
    )
    cloud_round = asyncio.create_task(core.run(max_rounds=1))
    running.append(cloud_round)
    announcement = await announced_round(fleet, "offshore")
    topics = RegionTopics("offshore")
    delta = {name: np.full(shape, 0.01, np.float32) for name, shape in weight_shapes(AutoencoderShape()).items()}

    def update(node_id: str, signer: str) -> bytes:
        body = NodeUpdate(node_id, "offshore", announcement.round_id, announcement.base_version, delta, 100, 0.2)
        return seal(update_envelope(body, "int8-zstd", time.time()), fleet.node_key(signer))

    first, second = "offshore-t00001", "offshore-t00002"
    with caplog.at_level(logging.WARNING, logger="regional_aggregator"):
        # As the operator: the broker's ACL would stop a node on another's topic before the
        # aggregator sees it (tests/broker/test_security.py); here the aggregator's own checks count.
        async with fleet.client("offshore", identifier="test-publisher") as client:
            for topic, payload in [
                (topics.update(first), b"\xc1 not msgpack"),
                (topics.update(first), update(first, first)),
                (topics.update(first), update(first, first)),  # a second copy counts once
                (topics.update(second), update(first, first)),  # first node on the second's topic
                (topics.update(second), update(second, first)),  # claims to be second, signed by first
                (topics.update(second), update(second, second)),
            ]:
                await client.publish(topic, payload, qos=1)
        [record] = await asyncio.wait_for(cloud_round, timeout=30)

    region = record.regions["offshore"]
    assert (region["accepted"], region["expected"]) == (2, 2)
    assert region["rejected"] == {"malformed": 1, "duplicate": 1, "topic_mismatch": 1, "bad_signature": 1}
    assert record.status == "published" and not aggregator_task.done()
    refusals = [r.getMessage() for r in caplog.records if "refused update" in r.getMessage()]
    assert len(refusals) == 4 and any("bad_signature" in line and second in line for line in refusals)
