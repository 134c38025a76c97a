"""A node whose update the broker refuses (its ACL: tests/broker/test_security.py shows the
session raising) says so and does not count the round as trained."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_node.config import EdgeConfig
from edge_node.node import EdgeNode
from learning.model import AutoencoderShape, initial_weights
from nacelle.config import build_config
from nacelle.mqtt import PublishRefused
from tests.nacelle.test_config import EDGE
from wire.messages import RoundAnnouncement


async def test_a_refused_update_leaves_the_round_untrained_and_is_counted(tmp_path: Path) -> None:
    config = build_config(EdgeConfig, {**EDGE, "data_dir": tmp_path / "data"})
    node = EdgeNode(config, signing_key=Ed25519PrivateKey.generate(), trusted=lambda sender: None)
    node.buffer.append(np.random.default_rng(0).normal(size=(96, 64)).astype(np.float32), recorded_at=time.time())
    node.weights = initial_weights(AutoencoderShape(), 0)
    node.state.model_version = 0  # the round's base model, as if received
    now = time.time()
    node._round = RoundAnnouncement(
        round_id=1, base_version=0, opened_at=now, regional_deadline=now + 600, global_deadline=now + 900
    )
    refusing = True
    published: list[str] = []

    async def publish(topic: str, payload: bytes, *, retain: bool = False) -> None:
        if refusing:
            raise PublishRefused(topic, "Not authorized")
        published.append(topic)

    node.session.publish = publish  # type: ignore[method-assign]

    training = await node._training_due()
    assert training is not None
    await node._train_and_publish(training)
    assert node.publishes_refused == 1
    assert node.updates_published == 0
    assert node.state.last_trained_round < 1

    refusing = False  # the ACL mended: the same round is trained and sent on its next message
    training = await node._training_due()
    assert training is not None
    await node._train_and_publish(training)
    assert published == [node.topics.update(config.node_id)]
    assert node.state.last_trained_round == 1
