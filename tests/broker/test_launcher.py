"""Real mosquitto processes: the bridge rules of wire.topics, retained models for late joiners,
packet limits, restarts with persistent sessions, and no process left behind. The brokers run as
in production, with TLS, client certificates and ACLs; the peers here connect as an operator
identity that may use every Nacelle topic (what each fleet identity may do: test_security.py)."""

from __future__ import annotations

import os
import queue
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker.config import BrokerLimits
from broker.launcher import FleetBrokers, FleetSecurity, RunningBroker, start_broker, start_fleet_brokers
from nacelle.keys import create_fleet, ensure_fleet_pki
from nacelle.processes import ServiceError
from nacelle.tls import client_context
from wire.topics import MODEL_TOPIC, PARTIAL_FILTER, ROUND_TOPIC, RegionTopics

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

# Small enough that the oversized-payload test stays fast.
LIMITS = BrokerLimits(max_packet_size=64 * 1024)
REGIONS = ("north", "south")
OPERATOR = "test-operator"


def make_security(directory: Path, operators: tuple[str, ...] = (OPERATOR,)) -> FleetSecurity:
    """A fleet of one node per region, its PKI, and `operators` on every broker's ACL."""
    registry = create_fleet(directory, {region: 1 for region in REGIONS})
    ensure_fleet_pki(directory, registry, extra_identities=operators)
    return FleetSecurity.from_fleet(directory, operators=operators)


class Peer:
    """A paho client on one broker that records what it receives."""

    def __init__(
        self,
        broker: RunningBroker,
        client_id: str | None = None,
        *,
        clean_session: bool = True,
        identity: str = OPERATOR,
    ) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv311,
            clean_session=clean_session,
        )
        context = client_context(broker.endpoint(identity))
        if context is not None:
            self.client.tls_set_context(context)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self._subacks: queue.Queue[int] = queue.Queue()
        self.client.on_connect = lambda *_: self.connected.set()
        self.client.on_disconnect = lambda *_: self.disconnected.set()
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_subscribe = lambda _c, _u, mid, *_: self._subacks.put(mid)
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        assert self.connected.wait(5), f"no CONNACK from {broker.name}"

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        self._subacks.get(timeout=5)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=5)
        assert info.is_published(), f"no PUBACK for {topic}"

    def next(self, timeout_s: float = 5.0) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout_s)

    def received(self, within_s: float) -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        try:
            while True:
                message = self.messages.get(timeout=within_s)
                got.append((message.topic, bytes(message.payload)))
        except queue.Empty:
            return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


Connect = Callable[..., Peer]


@pytest.fixture
def connect() -> Iterator[Connect]:
    peers: list[Peer] = []

    def _connect(broker: RunningBroker, client_id: str | None = None, **kwargs: bool) -> Peer:
        peers.append(Peer(broker, client_id, **kwargs))
        return peers[-1]

    yield _connect
    for peer in peers:
        peer.close()


@pytest.fixture
def security(tmp_path: Path) -> FleetSecurity:
    return make_security(tmp_path / "fleet")


@pytest.fixture
def fleet(tmp_path: Path, security: FleetSecurity) -> Iterator[FleetBrokers]:
    with start_fleet_brokers(REGIONS, tmp_path / "brokers", limits=LIMITS, security=security) as fleet:
        fleet.wait_for_bridges(timeout_s=10)
        yield fleet


def test_retained_model_reaches_a_regional_subscriber_that_connects_later(
    fleet: FleetBrokers, connect: Connect
) -> None:
    # Live subscribers first, so that we know the model has crossed both bridges.
    live = {region: connect(broker) for region, broker in fleet.regions.items()}
    for peer in live.values():
        peer.subscribe(MODEL_TOPIC)
    connect(fleet.cloud).publish(MODEL_TOPIC, b"model-7", retain=True)
    for peer in live.values():
        assert peer.next().payload == b"model-7"

    for broker in fleet.regions.values():
        late = connect(broker)  # a node that was offline when the model was published
        late.subscribe(MODEL_TOPIC)
        message = late.next()
        assert (message.topic, message.payload, message.retain) == (MODEL_TOPIC, b"model-7", True)


def test_model_retained_before_the_regional_broker_starts(
    tmp_path: Path, security: FleetSecurity, connect: Connect
) -> None:
    cloud = start_broker("cloud", tmp_path, role="cloud", security=security)
    with FleetBrokers(cloud=cloud, regions={}) as fleet:
        connect(fleet.cloud).publish(MODEL_TOPIC, b"model-1", retain=True)
        fleet.regions["north"] = start_broker(
            "north", tmp_path, role="regional", region="north", cloud=fleet.cloud, security=security
        )
        fleet.wait_for_bridges(timeout_s=10)
        late = connect(fleet.regions["north"])
        late.subscribe(MODEL_TOPIC)
        message = late.next()
        assert (message.payload, message.retain) == (b"model-1", True)


def test_partial_and_alert_go_out_but_updates_stay_in_the_region(fleet: FleetBrokers, connect: Connect) -> None:
    north = RegionTopics("north")
    cloud_watcher = connect(fleet.cloud)
    cloud_watcher.subscribe("nacelle/v1/#")
    south_watcher = connect(fleet.regions["south"])
    south_watcher.subscribe("nacelle/v1/#")
    node = connect(fleet.regions["north"])

    node.publish(north.update("node-1"), b"update")
    node.publish(north.status("node-1"), b"online")
    node.publish(north.alert("node-1"), b"alert")
    # Last on the same connection and bridge: once it is at the cloud, the others would be too.
    node.publish(north.partial, b"partial")

    assert cloud_watcher.next().topic == north.alert("node-1")
    assert cloud_watcher.next().topic == north.partial
    assert cloud_watcher.received(within_s=0.3) == []
    assert south_watcher.received(within_s=0.3) == []


def test_cloud_aggregator_sees_partials_of_every_region(fleet: FleetBrokers, connect: Connect) -> None:
    aggregator = connect(fleet.cloud)
    aggregator.subscribe(PARTIAL_FILTER)
    for region, broker in fleet.regions.items():
        connect(broker).publish(RegionTopics(region).partial, region.encode())
    messages = [aggregator.next() for _ in REGIONS]
    got = sorted((message.topic, message.payload) for message in messages)
    assert got == sorted((RegionTopics(r).partial, r.encode()) for r in REGIONS)


def test_oversized_packet_disconnects_the_sender(fleet: FleetBrokers, connect: Connect) -> None:
    north = fleet.regions["north"]
    topic = RegionTopics("north").partial
    watcher = connect(north)
    watcher.subscribe(topic)
    sender = connect(north)

    # The limit is on the whole packet: topic and headers count too.
    sender.client.publish(topic, b"x" * LIMITS.max_packet_size, qos=1)
    assert sender.disconnected.wait(5)
    assert watcher.received(within_s=0.5) == []
    assert "disconnected due to oversize packet" in north.log_path.read_text()


def test_restart_keeps_port_and_queued_messages_of_persistent_sessions(fleet: FleetBrokers, connect: Connect) -> None:
    north = fleet.regions["north"]
    topics = RegionTopics("north")
    aggregator = connect(north, "aggregator-north", clean_session=False)
    aggregator.subscribe(topics.update_filter)
    aggregator.close()
    connect(north).publish(topics.update("node-1"), b"queued while away")
    port, pid = north.port, north.pid

    north.restart()

    assert (north.port, north.is_running) == (port, True)
    assert north.pid != pid
    assert (north.data_dir / "mosquitto.db").is_file()  # written on SIGTERM
    aggregator = connect(north, "aggregator-north", clean_session=False)
    message = aggregator.next()
    assert (message.topic, message.payload) == (topics.update("node-1"), b"queued while away")
    fleet.wait_for_bridges(timeout_s=10)


def test_cloud_messages_queue_for_a_regional_broker_that_is_down(fleet: FleetBrokers, connect: Connect) -> None:
    north = fleet.regions["north"]
    node = connect(north, "node-1", clean_session=False)
    node.subscribe(ROUND_TOPIC)
    node.close()
    north.stop()

    # Not retained: only the bridge's persistent session on the cloud broker can keep it.
    connect(fleet.cloud).publish(ROUND_TOPIC, b"round-3")
    north.start()

    node = connect(north, "node-1", clean_session=False)
    message = node.next(timeout_s=10)
    assert (message.payload, message.retain) == (b"round-3", False)


def test_start_fails_fast_when_the_port_is_taken(fleet: FleetBrokers, tmp_path: Path, security: FleetSecurity) -> None:
    with pytest.raises(ServiceError, match="already in use"):
        start_broker("clash", tmp_path, role="cloud", port=fleet.cloud.port, security=security)


def test_start_fails_fast_with_the_log_when_mosquitto_exits(tmp_path: Path, security: FleetSecurity) -> None:
    broker = start_broker("cloud", tmp_path, role="cloud", security=security)
    broker.stop()
    with broker.config_path.open("a") as config:
        config.write("no_such_option 1\n")
    with pytest.raises(ServiceError, match="no_such_option"):
        broker.start()
    assert not broker.is_running


def test_stop_leaves_no_process_behind(tmp_path: Path, security: FleetSecurity) -> None:
    fleet = start_fleet_brokers(REGIONS, tmp_path / "brokers", security=security)
    pids = [broker.pid for broker in fleet.brokers]
    assert all(pid is not None and Path(f"/proc/{pid}").exists() for pid in pids)

    fleet.stop()
    fleet.stop()

    assert not any(broker.is_running for broker in fleet.brokers)
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
