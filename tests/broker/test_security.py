"""Transport security against real mosquitto: only clients with a certificate of the fleet CA
connect, and each identity publishes and reads only what the fleet's ACL grants it."""

from __future__ import annotations

import asyncio
import gc
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from broker.launcher import FleetBrokers, FleetSecurity, RunningBroker, start_fleet_brokers
from cloud_core.lifecycle import publish_release
from cloud_core.model_store import ModelVersion
from learning.model import AutoencoderShape, initial_weights
from nacelle.config import BrokerEndpoint
from nacelle.keys import aggregator_id, create_fleet, key_path, node_id
from nacelle.mqtt import MqttSession, PublishRefused, SessionSpec, publish_once
from nacelle.pki import TlsLayout, ensure_pki
from nacelle.tls import client_context
from wire.signing import load_private_key
from wire.topics import MODEL_TOPIC, RegionTopics

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

REGIONS = {"north": 2, "south": 1}
A, B = node_id("north", 1), node_id("north", 2)
NORTH = RegionTopics("north")
# MQTT v5 reason code of a PUBACK for a publish the broker's ACL refused.
NOT_AUTHORIZED = 0x87


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    create_fleet(tmp_path / "fleet", REGIONS)
    return tmp_path / "fleet"


@pytest.fixture
def brokers(tmp_path: Path, fleet_dir: Path) -> Iterator[FleetBrokers]:
    # The production ACL: no operator identities.
    security = FleetSecurity.from_fleet(fleet_dir)
    with start_fleet_brokers(list(REGIONS), tmp_path / "brokers", security=security) as fleet:
        fleet.wait_for_bridges(timeout_s=10)  # the bridges' own certificates work
        yield fleet


class V5Peer:
    """A paho MQTT v5 client that records PUBACK reason codes and received messages."""

    def __init__(self, broker: RunningBroker, identity: str) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{identity}", protocol=mqtt.MQTTv5)
        context = client_context(broker.endpoint(identity))
        assert context is not None
        self.client.tls_set_context(context)
        self.acks: dict[int, ReasonCode] = {}
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._acked = threading.Condition()
        self.client.on_connect = lambda *_: self._connected.set()
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.on_publish = self._on_publish
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        assert self._connected.wait(5), f"{identity} got no CONNACK"

    def _on_publish(
        self, _client: mqtt.Client, _userdata: object, mid: int, reason: ReasonCode, _props: object
    ) -> None:
        with self._acked:
            self.acks[mid] = reason
            self._acked.notify_all()

    def subscribe(self, topic: str) -> None:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(5)

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish with QoS 1; the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1)
        with self._acked:
            assert self._acked.wait_for(lambda: info.mid in self.acks, timeout=5), f"no PUBACK for {topic}"
            return self.acks[info.mid].value

    def received(self, within_s: float) -> list[tuple[str, bytes]]:
        got = []
        try:
            while True:
                got.append(self.messages.get(timeout=within_s))
        except queue.Empty:
            return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peers() -> Iterator[list[V5Peer]]:
    opened: list[V5Peer] = []
    yield opened
    for peer in opened:
        peer.close()


async def _connects(endpoint: BrokerEndpoint, context_endpoint: BrokerEndpoint | None = None) -> None:
    context = client_context(context_endpoint or endpoint)
    async with aiomqtt.Client(endpoint.host, endpoint.port, tls_context=context, timeout=3) as client:
        # With TLS 1.3 the client finishes its handshake before the broker has checked the
        # client's certificate: only a round trip shows whether the broker kept the connection.
        await client.subscribe(MODEL_TOPIC, qos=1, timeout=3)


async def test_a_client_with_its_certificate_connects(brokers: FleetBrokers) -> None:
    await _connects(brokers.regions["north"].endpoint(A))


async def test_a_client_without_a_certificate_cannot_connect(brokers: FleetBrokers, fleet_dir: Path) -> None:
    north = brokers.regions["north"]
    with pytest.raises(aiomqtt.MqttError):
        # TLS, and the broker's certificate checks out, but no client certificate.
        await _connects(BrokerEndpoint(host=north.host, port=north.port, ca_file=TlsLayout.of_fleet(fleet_dir).ca_cert))
    with pytest.raises(aiomqtt.MqttError):
        await _connects(BrokerEndpoint(host=north.host, port=north.port))  # plain TCP, anonymous


async def test_a_certificate_of_another_ca_cannot_connect(brokers: FleetBrokers, tmp_path: Path) -> None:
    north = brokers.regions["north"]
    # Same CN as a real node, issued by a CA of its own.
    other = TlsLayout(tmp_path / "other" / "tls")
    ensure_pki(other, [A], {})
    fleet = north.endpoint(A)
    impostor = BrokerEndpoint(
        host=north.host, port=north.port, ca_file=fleet.ca_file, cert_file=other.cert(A), key_file=other.key(A)
    )
    with pytest.raises(aiomqtt.MqttError):
        await _connects(impostor)


# paho leaves the socket of a handshake that failed on its side to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_client_refuses_a_broker_of_another_ca(brokers: FleetBrokers, tmp_path: Path) -> None:
    north = brokers.regions["north"]
    other = TlsLayout(tmp_path / "other" / "tls")
    ensure_pki(other, [], {})
    with pytest.raises(aiomqtt.MqttError, match="certificate verify failed"):
        await _connects(BrokerEndpoint(host=north.host, port=north.port, ca_file=other.ca_cert))
    gc.collect()  # the warning, if any, here and not in a later test


def test_a_node_cannot_publish_on_another_nodes_topic(brokers: FleetBrokers, peers: list[V5Peer]) -> None:
    north = brokers.regions["north"]
    aggregator = V5Peer(north, aggregator_id("north"))
    peers.append(aggregator)
    aggregator.subscribe(NORTH.update_filter)
    node_a = V5Peer(north, A)
    peers.append(node_a)

    assert node_a.publish(NORTH.update(B), b"A as B") == NOT_AUTHORIZED
    assert node_a.publish(NORTH.update(A), b"A as A") == 0

    # In order on one connection: once A's own update is in, the forged one would be too.
    assert aggregator.received(within_s=1.0) == [(NORTH.update(A), b"A as A")]


async def test_a_session_raises_when_the_broker_refuses_its_publish(brokers: FleetBrokers) -> None:
    # mosquitto answers an ACL refusal with a PUBACK, reason 0x87; aiomqtt's own publish returns
    # as if the message were delivered.
    session = MqttSession(SessionSpec("node-a", brokers.regions["north"].endpoint(A)))
    task = asyncio.create_task(session.run())
    try:
        await asyncio.wait_for(session.connected.wait(), 10)
        with pytest.raises(PublishRefused, match="Not authorized") as refused:
            await asyncio.wait_for(session.publish(NORTH.update(B), b"A as B"), 10)
        assert refused.value.topic == NORTH.update(B)
        await asyncio.wait_for(session.publish(NORTH.update(A), b"A as A"), 10)  # granted: returns
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_one_shot_publish_raises_when_the_broker_refuses_it(brokers: FleetBrokers, fleet_dir: Path) -> None:
    north = brokers.regions["north"].endpoint(A)
    with pytest.raises(PublishRefused, match="Not authorized"):
        await asyncio.wait_for(
            publish_once(north, "one-shot-a", [(NORTH.update(A), b"A"), (NORTH.update(B), b"B")]), 10
        )
    await asyncio.wait_for(publish_once(north, "one-shot-a", [(NORTH.update(A), b"A as A")]), 10)

    # `nacelle model rollback` publishes the release with the identity of the cloud's config.
    release = ModelVersion(2, 1, 1, time.time(), "")
    weights = initial_weights(AutoencoderShape(), 0)
    key = load_private_key(key_path(fleet_dir, "cloud"))
    with pytest.raises(PublishRefused, match=MODEL_TOPIC):
        await asyncio.wait_for(publish_release(brokers.cloud.endpoint(A), release, weights, "cloud", key), 10)
    await asyncio.wait_for(publish_release(brokers.cloud.endpoint("cloud"), release, weights, "cloud", key), 10)


def test_a_node_can_neither_forge_a_model_nor_read_other_nodes_updates(
    brokers: FleetBrokers, peers: list[V5Peer]
) -> None:
    north = brokers.regions["north"]
    node_a, node_b = V5Peer(north, A), V5Peer(north, B)
    peers.extend([node_a, node_b])
    # mosquitto grants the subscription but delivers only what the ACL lets A read.
    node_a.subscribe(NORTH.update_filter)
    node_a.subscribe(MODEL_TOPIC)

    assert node_b.publish(MODEL_TOPIC, b"forged model") == NOT_AUTHORIZED
    assert node_b.publish(NORTH.partial, b"forged partial") == NOT_AUTHORIZED
    assert node_b.publish(NORTH.update(B), b"B's update") == 0
    assert node_a.received(within_s=1.0) == []


def test_a_node_of_another_region_has_no_rights_on_this_regions_broker(
    brokers: FleetBrokers, peers: list[V5Peer]
) -> None:
    north = brokers.regions["north"]
    aggregator = V5Peer(north, aggregator_id("north"))
    peers.append(aggregator)
    aggregator.subscribe(NORTH.update_filter)
    stranger = V5Peer(north, node_id("south", 1))  # a valid certificate, the wrong broker
    peers.append(stranger)

    assert stranger.publish(NORTH.update(node_id("south", 1)), b"x") == NOT_AUTHORIZED
    assert aggregator.received(within_s=0.5) == []


def test_the_bridges_connect_as_themselves(brokers: FleetBrokers) -> None:
    log = brokers.cloud.log_path.read_text()
    for region in REGIONS:
        assert f"u'nacelle-bridge-{region}'" in log
