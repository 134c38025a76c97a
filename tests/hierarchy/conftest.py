"""A real fleet for hierarchy tests: mosquitto brokers with bridges, TLS and ACLs, keys, daemons
in-process.

Every broker requires a client certificate of the fleet's CA, and its ACL decides what each
identity may publish and read (broker.acl). Helpers connect as TEST_OPERATOR, who may read and
write every Nacelle topic, unless told to connect as someone else: pass a node's or
aggregator's id to be held to its ACL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from broker import FleetBrokers, FleetSecurity, RunningBroker, start_fleet_brokers
from cloud_core.config import CloudConfig
from cloud_core.daemon import CloudCore
from learning.model import AutoencoderShape, weight_shapes
from nacelle.config import BrokerEndpoint, build_config
from nacelle.keys import aggregator_id, create_fleet, ensure_fleet_pki, key_path, registry_path
from nacelle.tls import client_context
from regional_aggregator.config import RegionConfig
from regional_aggregator.daemon import RegionalAggregator
from wire.envelope import Kind, open_envelope
from wire.messages import RoundAnnouncement, parse_model, parse_round
from wire.registry import FleetRegistry
from wire.signing import load_private_key
from wire.topics import MODEL_TOPIC, ROUND_TOPIC

# Regions of different sizes: the hierarchy must weigh them exactly like flat FedAvg would.
FLEET = {"offshore": 2, "onshore": 5}
# Reads and writes every Nacelle topic on every broker: injects forged traffic, watches anything.
TEST_OPERATOR = "test-operator"
# Brokers of the running fleets by (host, port): lets first_message, which is given no fleet,
# connect with the operator's certificate.
_brokers: dict[tuple[str, int], RunningBroker] = {}


@dataclass
class Fleet:
    directory: Path
    registry: FleetRegistry
    brokers: FleetBrokers

    def endpoint(self, region: str | None = None, identity: str = TEST_OPERATOR) -> dict[str, object]:
        """A `[broker]` table for a config file or build_config: the regional broker of `region`
        (the cloud broker for None), TLS files of `identity`."""
        return self.broker_endpoint(region, identity).model_dump(mode="json", exclude_none=True)

    def broker_endpoint(self, region: str | None = None, identity: str = TEST_OPERATOR) -> BrokerEndpoint:
        broker = self.brokers.regions[region] if region else self.brokers.cloud
        return broker.endpoint(identity)

    def client(self, region: str | None = None, identity: str = TEST_OPERATOR, **kwargs: Any) -> aiomqtt.Client:
        """An aiomqtt client of `region`'s broker (the cloud's for None) as `identity`."""
        endpoint = self.broker_endpoint(region, identity)
        return aiomqtt.Client(endpoint.host, endpoint.port, tls_context=client_context(endpoint), **kwargs)

    def aggregator(self, region: str, state_dir: Path, **overrides: object) -> RegionalAggregator:
        config = build_config(
            RegionConfig,
            {
                "region": region,
                "broker": self.endpoint(region, aggregator_id(region)),
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
                "broker": self.endpoint(None, self.registry.cloud.member_id),
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
    directory = tmp_path / "fleet"
    registry = create_fleet(directory, FLEET)
    ensure_fleet_pki(directory, registry, extra_identities=[TEST_OPERATOR])
    security = FleetSecurity.from_fleet(directory, operators=(TEST_OPERATOR,))
    with start_fleet_brokers(list(FLEET), tmp_path / "brokers", security=security) as brokers:
        brokers.wait_for_bridges(timeout_s=10)
        addresses = [(broker.host, broker.port) for broker in brokers.brokers]
        _brokers.update(zip(addresses, brokers.brokers, strict=True))
        try:
            yield Fleet(directory, registry, brokers)
        finally:
            for address in addresses:
                _brokers.pop(address, None)


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    """Tasks to cancel at the end of a test, whatever happens in it."""
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _client(host: str, port: int, identity: str = TEST_OPERATOR) -> aiomqtt.Client:
    """A client of a fleet broker as `identity`; plain TCP to a broker of no running fleet."""
    broker = _brokers.get((host, port))
    endpoint = BrokerEndpoint(host=host, port=port) if broker is None else broker.endpoint(identity)
    return aiomqtt.Client(host, port, tls_context=client_context(endpoint))


async def first_message(
    host: str, port: int, topic: str, timeout_s: float = 20.0, identity: str = TEST_OPERATOR
) -> aiomqtt.Message:
    async with asyncio.timeout(timeout_s), _client(host, port, identity) as client:
        await client.subscribe(topic, qos=1)
        async for message in client.messages:
            return message
    raise AssertionError("unreachable")


async def wait_for_model(host: str, port: int, fleet: Fleet, version: int, timeout_s: float = 20.0) -> aiomqtt.Message:
    """The first global model message of `version` a subscriber of this broker sees."""
    shapes = weight_shapes(AutoencoderShape())
    async with asyncio.timeout(timeout_s), _client(host, port) as client:
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
