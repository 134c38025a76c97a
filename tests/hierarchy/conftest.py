"""A real fleet for hierarchy tests: mosquitto brokers with bridges, keys, daemons in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from broker import FleetBrokers, start_fleet_brokers
from cloud_core.config import CloudConfig
from cloud_core.daemon import CloudCore
from learning.model import AutoencoderShape, weight_shapes
from nacelle.config import build_config
from nacelle.keys import aggregator_id, create_fleet, key_path, registry_path
from regional_aggregator.config import RegionConfig
from regional_aggregator.daemon import RegionalAggregator
from wire.envelope import Kind, open_envelope
from wire.messages import RoundAnnouncement, parse_model, parse_round
from wire.registry import FleetRegistry
from wire.signing import load_private_key
from wire.topics import MODEL_TOPIC, ROUND_TOPIC

# Regions of different sizes: the hierarchy must weigh them exactly like flat FedAvg would.
FLEET = {"offshore": 2, "onshore": 5}


@dataclass
class Fleet:
    directory: Path
    registry: FleetRegistry
    brokers: FleetBrokers

    def endpoint(self, region: str | None = None) -> dict[str, object]:
        broker = self.brokers.regions[region] if region else self.brokers.cloud
        return {"host": broker.host, "port": broker.port}

    def aggregator(self, region: str, state_dir: Path, **overrides: object) -> RegionalAggregator:
        config = build_config(
            RegionConfig,
            {
                "region": region,
                "broker": self.endpoint(region),
                "registry_path": registry_path(self.directory),
                "private_key_path": key_path(self.directory, aggregator_id(region)),
                "state_dir": state_dir,
                **overrides,
            },
        )
        return RegionalAggregator.from_config(config)

    def cloud(self, state_dir: Path, **overrides: object) -> CloudCore:
        config = build_config(
            CloudConfig,
            {
                "broker": self.endpoint(),
                "registry_path": registry_path(self.directory),
                "private_key_path": key_path(self.directory, "cloud"),
                "state_dir": state_dir,
                **overrides,
            },
        )
        return CloudCore.from_config(config)

    def node_key(self, node_id: str):
        return load_private_key(key_path(self.directory, node_id))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    registry = create_fleet(tmp_path / "fleet", FLEET)
    with start_fleet_brokers(list(FLEET), tmp_path / "brokers") as brokers:
        brokers.wait_for_bridges(timeout_s=10)
        yield Fleet(tmp_path / "fleet", registry, brokers)


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    """Tasks to cancel at the end of a test, whatever happens in it."""
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def first_message(host: str, port: int, topic: str, timeout_s: float = 20.0) -> aiomqtt.Message:
    async with asyncio.timeout(timeout_s), aiomqtt.Client(host, port) as client:
        await client.subscribe(topic, qos=1)
        async for message in client.messages:
            return message
    raise AssertionError("unreachable")


async def wait_for_model(host: str, port: int, fleet: Fleet, version: int, timeout_s: float = 20.0) -> aiomqtt.Message:
    """The first global model message of `version` a subscriber of this broker sees."""
    shapes = weight_shapes(AutoencoderShape())
    async with asyncio.timeout(timeout_s), aiomqtt.Client(host, port) as client:
        await client.subscribe(MODEL_TOPIC, qos=1)
        async for message in client.messages:
            envelope = open_envelope(
                message.payload,
                max_bytes=1 << 22,
                keys=fleet.registry.public_key,
                expected_kind=Kind.MODEL,
            )
            if parse_model(envelope, shapes).version == version:
                return message
    raise AssertionError("unreachable")


async def announced_round(fleet: Fleet, region: str) -> RoundAnnouncement:
    """The round announcement a region's broker holds, once the cloud has opened one."""
    broker = fleet.brokers.regions[region]
    message = await first_message(broker.host, broker.port, ROUND_TOPIC)
    envelope = open_envelope(
        message.payload, max_bytes=1 << 20, keys=fleet.registry.public_key, expected_kind=Kind.ROUND
    )
    return parse_round(envelope)
