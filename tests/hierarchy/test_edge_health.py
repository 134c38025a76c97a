"""`nacelle edge-health` against real brokers: it connects with the node's own certificate (the
ACL lets a node read its own status and the model, nothing else), verifies both signatures, and
is healthy only when the node is online at the fleet's model version."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_node.config import EdgeConfig
from edge_node.health import check
from learning.model import AutoencoderShape, initial_weights
from nacelle.cli import main
from nacelle.config import build_config, write_config
from nacelle.keys import key_path, registry_path
from tests.hierarchy.conftest import Fleet
from wire.envelope import seal
from wire.messages import ModelRelease, model_envelope, status_envelope
from wire.signing import generate_key, load_private_key
from wire.topics import MODEL_TOPIC, RegionTopics

pytestmark = [pytest.mark.broker]

NODE = "offshore-t00001"


def _config(fleet: Fleet, tmp_path: Path) -> EdgeConfig:
    return build_config(
        EdgeConfig,
        {
            "node_id": NODE,
            "region": "offshore",
            "registry_path": registry_path(fleet.directory),
            "private_key_path": key_path(fleet.directory, NODE),
            "data_dir": tmp_path / "node",
            "broker": fleet.endpoint("offshore", NODE),
        },
    )


async def _retain(fleet: Fleet, region: str | None, topic: str, payload: bytes) -> None:
    async with fleet.client(region) as client:
        await client.publish(topic, payload, qos=1, retain=True)


def _model(fleet: Fleet, version: int) -> bytes:
    release = ModelRelease(version, version, version - 1, initial_weights(AutoencoderShape(), 0))
    return seal(model_envelope(release, "cloud", time.time()), load_private_key(key_path(fleet.directory, "cloud")))


def _status(fleet: Fleet, state: str, version: int, key: Ed25519PrivateKey | None = None) -> bytes:
    envelope = status_envelope(NODE, "offshore", state, version, time.time())
    return seal(envelope, key or fleet.node_key(NODE))


async def test_a_node_online_at_the_fleets_model_is_healthy(fleet: Fleet, tmp_path: Path) -> None:
    await _retain(fleet, None, MODEL_TOPIC, _model(fleet, 3))  # on the cloud broker: the bridge carries it
    await _retain(fleet, "offshore", RegionTopics("offshore").status(NODE), _status(fleet, "online", 3))

    health = await check(_config(fleet, tmp_path), timeout_s=20)

    assert health.healthy, health.message
    assert "with model v3" in health.message


async def test_a_node_behind_the_fleets_model_is_unhealthy_once_the_wait_is_over(fleet: Fleet, tmp_path: Path) -> None:
    await _retain(fleet, None, MODEL_TOPIC, _model(fleet, 3))
    await _retain(fleet, "offshore", RegionTopics("offshore").status(NODE), _status(fleet, "online", 2))

    started = time.monotonic()
    health = await check(_config(fleet, tmp_path), timeout_s=3)

    assert not health.healthy and "with model v2; the fleet's model is v3" in health.message
    assert 2.5 < time.monotonic() - started < 15


async def test_a_forged_status_is_not_believed(fleet: Fleet, tmp_path: Path) -> None:
    await _retain(fleet, None, MODEL_TOPIC, _model(fleet, 3))
    await _retain(fleet, "offshore", RegionTopics("offshore").status(NODE), _status(fleet, "online", 3, generate_key()))

    health = await check(_config(fleet, tmp_path), timeout_s=3)

    assert not health.healthy and "no status" in health.message and "bad_signature" in health.message


async def test_the_command_exits_1_and_says_why_without_a_status(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edge.toml"
    write_config(config, _config(fleet, tmp_path).model_dump(mode="json", exclude_none=True))

    code = await asyncio.to_thread(main, ["edge-health", "--config", str(config), "--timeout", "2"])

    assert code == 1
    assert capsys.readouterr().out.startswith(f"unhealthy: {NODE}: no status on the broker yet")
