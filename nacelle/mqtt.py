"""One MQTT v5 session with persistence and reconnection, the transport every daemon shares.

Reconnects with capped exponential backoff and full jitter (a region that comes back online must
not reconnect all at once), keeps its broker-side session (clean_start off, bounded session
expiry) so QoS 1 messages published while it was away are delivered, and retries a publish
across a reconnect (at-least-once: receivers deduplicate on node id + round).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.types import PahoSocket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from nacelle.config import BrokerEndpoint
from nacelle.tls import client_context

log = logging.getLogger(__name__)

# A node offline for a week must still find its queued messages; longer and abandoned
# sessions pile up on the broker (mosquitto's persistent_client_expiration is the backstop).
DEFAULT_SESSION_EXPIRY_S = 7 * 24 * 3600
# Cap of the reconnect backoff: a fleet reconnects within a minute of the broker's return.
RECONNECT_CAP_S = 30.0

MessageHandler = Callable[[aiomqtt.Message], Awaitable[None]]

_PAHO_PROPERTIES_INIT = Properties.__init__


def _share_property_tables() -> None:
    """paho's `Properties.__init__` builds its lookup tables (property names, ids and types:
    constants, and only ever read) anew for every MQTT v5 packet read or written, several per
    message with its acknowledgement. Built once here and shared by every instance: that was
    7% of the simulated fleet's process in a round (tests/nacelle/test_mqtt_properties.py checks
    that an instance still looks as paho makes it)."""
    template = Properties(PacketTypes.PUBLISH)
    tables = (template.types, template.names, template.properties)

    def shared_init(self: Properties, packetType: int) -> None:
        self.packetType = packetType
        self.types, self.names, self.properties = tables

    Properties.__init__ = shared_init  # type: ignore[method-assign]


_share_property_tables()


class PublishRefused(Exception):
    """The broker acknowledged a publish with an MQTT v5 failure reason code: its ACL does not
    grant the topic, a quota was exceeded. The message was not delivered, and sending it again
    will not change that, so it is not retried."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"the broker refused the publish to {topic}: {reason}")
        self.topic = topic
        self.reason = reason


class _Client(aiomqtt.Client):
    """aiomqtt's client with four changes.

    Its keep-alive housekeeping (paho's `loop_misc`: a PINGREQ when the link has been quiet for
    the keep-alive interval) runs every `keepalive / 6` seconds instead of every second. A
    simulated fleet holds ten thousand clients in one event loop: a wake-up per client per
    second cost 13% of a core there (3% at one per five seconds), and a ping at most
    keepalive/6 late stays well inside the broker's 1.5 × keepalive.

    Its socket sends without Nagle's algorithm (TCP_NODELAY), which paho leaves on. With it, a
    packet written while an earlier one is unacknowledged waits for that acknowledgement, and
    the broker's TCP delays acknowledgements by up to 40 ms: the second TLS record of a message,
    or a PUBACK written right after a publish, could wait that long. An aggregator's partial
    waited 33 ms for its PUBACK, 2 ms without; a 1,000-turbine round took 9% less (with the
    brokers' `set_tcp_nodelay`, broker.config). The cost is a few more small packets.

    On the event loop's own thread it registers a socket's writer directly: aiomqtt goes through
    `call_soon_threadsafe`, whose wake-up byte costs a system call per packet, since paho may
    call from the thread that connects. A fleet of clients on one loop spent 5% less CPU on its
    MQTT traffic (`bench.wire_floor`, 2,000 clients, three runs each way).

    `publish_acknowledged` reads the PUBACK's reason code, which aiomqtt's `publish` ignores: a
    publish the broker's ACL refuses (mosquitto answers 0x87, "Not authorized") returned as if
    delivered, and a node whose identity did not match its topics believed every update sent."""

    def __init__(self, *args: object, keepalive: int, **kwargs: object) -> None:
        super().__init__(*args, keepalive=keepalive, **kwargs)  # type: ignore[arg-type]
        self._misc_interval_s = max(1.0, keepalive / 6)
        self._acknowledgements: dict[int, asyncio.Future[ReasonCode]] = {}  # by message id

    async def publish_acknowledged(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """QoS 1: returns once the broker acknowledged the message, raises `PublishRefused` when
        the acknowledgement is a refusal, aiomqtt.MqttError when it cannot be sent or times out."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        acknowledged = asyncio.get_running_loop().create_future()
        self._acknowledgements[info.mid] = acknowledged  # the PUBACK is read on a later turn
        try:
            async with asyncio.timeout(self.timeout):
                reason = await acknowledged
        except TimeoutError:
            raise aiomqtt.MqttError("Operation timed out") from None
        finally:
            self._acknowledgements.pop(info.mid, None)
        if reason.is_failure:
            raise PublishRefused(topic, reason.getName())

    def _on_publish(
        self, client: paho.Client, userdata: object, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        acknowledged = self._acknowledgements.pop(mid, None)
        if acknowledged is not None and not acknowledged.done():
            acknowledged.set_result(reason_code)
        super()._on_publish(client, userdata, mid, reason_code, properties)

    def _on_socket_open(self, client: paho.Client, userdata: object, sock: PahoSocket) -> None:
        with contextlib.suppress(OSError, AttributeError):  # not TCP (a websocket): nothing to set
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super()._on_socket_open(client, userdata, sock)

    def _on_socket_register_write(self, client: paho.Client, userdata: object, sock: PahoSocket) -> None:
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if not on_loop:  # paho's connect runs in an executor thread
            super()._on_socket_register_write(client, userdata, sock)
            return

        def write() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # as aiomqtt's: a broken connection ends the session
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        self._loop.add_writer(sock.fileno(), write)

    async def _misc_loop(self) -> None:  # overrides aiomqtt.Client._misc_loop (tests/nacelle/test_mqtt.py)
        while self._client.loop_misc() == paho.MQTT_ERR_SUCCESS:
            await asyncio.sleep(self._misc_interval_s)


def full_jitter_delay(attempt: int, base_s: float = 0.5, cap_s: float = RECONNECT_CAP_S) -> float:
    return random.uniform(0.0, min(cap_s, base_s * 2**attempt))


@dataclass(frozen=True)
class SessionSpec:
    client_id: str
    endpoint: BrokerEndpoint
    subscriptions: Sequence[str] = ()
    will: aiomqtt.Will | None = None
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S
    # paho's default of 20 in-flight QoS 1 messages throttles an aggregator's partial and a
    # node's burst after a reconnect; mosquitto's own limit is set in broker/.
    max_inflight: int = 100
    # Acknowledge a QoS 1 message only once the handler has returned (paho acks on receipt by
    # default): a daemon that crashes mid-message gets it again from the broker instead of
    # losing it. The handler must then be idempotent.
    manual_ack: bool = False
    # With manual_ack: acknowledge only once this has returned, called after the handlers of the
    # messages it covers: one call covers every message handled before it started (group commit:
    # one fsync for every update that arrived during the previous one, instead of one each).
    # Acknowledgements keep the order the messages arrived in.
    ack_after: Callable[[], Awaitable[None]] | None = None


class MqttSession:
    """Keeps one client connected; hands every received message to `handler`, in order."""

    def __init__(
        self,
        spec: SessionSpec,
        handler: MessageHandler | None = None,
        on_connect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.spec = spec
        self._handler = handler
        self._on_connect = on_connect
        self._client: _Client | None = None
        self.connected = asyncio.Event()
        self.handler_errors = 0
        # Built once, so that bad TLS files fail here (ConfigError naming the field) and not on
        # every reconnect attempt; reconnects reuse it (a renewed certificate needs a restart).
        self._tls_context = client_context(spec.endpoint)

    def _new_client(self) -> _Client:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.spec.session_expiry_s
        return _Client(
            self.spec.endpoint.host,
            self.spec.endpoint.port,
            identifier=self.spec.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            keepalive=self.spec.endpoint.keepalive_s,
            will=self.spec.will,
            properties=properties,
            max_inflight_messages=self.spec.max_inflight,
            tls_context=self._tls_context,
            timeout=10,
        )

    async def run(self) -> None:
        """Connect, subscribe, dispatch; reconnect on any broker failure until cancelled."""
        attempt = 0
        while True:
            client = self._new_client()
            # aiomqtt does not expose paho's manual_ack; its paho client is the only way in.
            client._client.manual_ack_set(self.spec.manual_ack)
            try:
                async with client:
                    self._client = client
                    for topic in self.spec.subscriptions:
                        await client.subscribe(topic, qos=1)
                    self.connected.set()
                    if attempt:
                        log.info("%s reconnected after %d attempts", self.spec.client_id, attempt)
                    attempt = 0
                    if self._on_connect is not None:
                        await self._on_connect()
                    acks = _DeferredAcks(client, self.spec.ack_after) if self.spec.ack_after else None
                    try:
                        async for message in client.messages:
                            if self._handler is not None:
                                await self._dispatch(message)
                            if acks is not None:
                                acks.add(message)
                            elif self.spec.manual_ack:
                                client._client.ack(message.mid, message.qos)
                            _raise_if_cancel_was_swallowed()
                    except asyncio.CancelledError:
                        await self._publish_will(client)
                        raise
                    finally:
                        if acks is not None:
                            acks.stop()  # unacknowledged messages come again from the broker
            except aiomqtt.MqttError as exc:
                delay = full_jitter_delay(attempt)
                attempt += 1
                log.warning(
                    "%s: broker %s:%d: %s; retrying in %.1fs",
                    self.spec.client_id,
                    self.spec.endpoint.host,
                    self.spec.endpoint.port,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
            finally:
                self.connected.clear()
                self._client = None

    async def _publish_will(self, client: aiomqtt.Client) -> None:
        """On a clean stop the broker discards the last will, so say it ourselves: otherwise a
        node stopped for maintenance would show as online until it comes back."""
        will = self.spec.will
        if will is None:
            return
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await asyncio.wait_for(client.publish(will.topic, will.payload, qos=1, retain=will.retain), timeout=2.0)

    async def _dispatch(self, message: aiomqtt.Message) -> None:
        """Hand a message to the handler; a bug triggered by one message must not stop the
        daemon for every other one (refusals are the handler's business and never get here)."""
        assert self._handler is not None
        try:
            await self._handler(message)
        except (aiomqtt.MqttError, asyncio.CancelledError):
            raise
        except Exception:
            self.handler_errors += 1
            log.exception("%s: handling a message on %s failed", self.spec.client_id, message.topic)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish with QoS 1 once the broker acknowledged it, waiting out disconnections. Retries
        back off like reconnects (capped, full jitter): thousands of clients of one overloaded
        process must not retry in lockstep, nor each log every attempt. A refusal by the broker
        raises `PublishRefused` at once."""
        attempt = 0
        while True:
            await self.connected.wait()
            client = self._client
            if client is None:
                await asyncio.sleep(0.05)
                continue
            try:
                await client.publish_acknowledged(topic, payload, retain=retain)
                return
            except aiomqtt.MqttError as exc:
                delay = full_jitter_delay(attempt)
                level = logging.WARNING if attempt == 0 else logging.DEBUG
                log.log(
                    level, "%s: publish to %s failed (%s); retrying in %.1fs", self.spec.client_id, topic, exc, delay
                )
                attempt += 1
                await asyncio.sleep(delay)


async def publish_once(
    endpoint: BrokerEndpoint, client_id: str, messages: Sequence[tuple[str, bytes]], *, retain: bool = False
) -> None:
    """Publish `messages` (topic, payload) with QoS 1 as a short-lived client of its own, each
    acknowledged before the next: for one-shot tools, not daemons (no reconnection, no retry).
    Raises `PublishRefused` when the broker refuses one, aiomqtt.MqttError when it cannot connect
    or send."""
    client = _Client(
        endpoint.host,
        endpoint.port,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,  # a refusal is only told in an MQTT v5 PUBACK
        keepalive=endpoint.keepalive_s,
        tls_context=client_context(endpoint),
        timeout=10,
    )
    async with client:
        for topic, payload in messages:
            await client.publish_acknowledged(topic, payload, retain=retain)


class _DeferredAcks:
    """Acknowledgements held until `barrier` (SessionSpec.ack_after) has returned after them."""

    def __init__(self, client: aiomqtt.Client, barrier: Callable[[], Awaitable[None]]) -> None:
        self._client = client
        self._barrier = barrier
        self._pending: list[tuple[int, int]] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, message: aiomqtt.Message) -> None:
        self._pending.append((message.mid, message.qos))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []  # handled before the barrier starts: covered
            try:
                await self._barrier()
            except Exception:
                log.exception("acknowledgement barrier failed; %d messages stay unacknowledged", len(batch))
                return
            for mid, qos in batch:
                self._client._client.ack(mid, qos)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _raise_if_cancel_was_swallowed() -> None:
    """Python 3.11's asyncio.wait_for (aiomqtt's publish waits with it) returns the result
    instead of raising when the cancel arrives just as the awaited operation completes. The
    handler then returns normally and the session would read its next message instead of
    stopping: a fleet of hundreds of nodes stopped after a model broadcast left a few running."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def run_until_stopped(sessions: Sequence[MqttSession], stop: asyncio.Event) -> None:
    """Run sessions until `stop` is set, then cancel them (used by every daemon's main)."""
    tasks = [asyncio.create_task(session.run()) for session in sessions]
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper:
                task.result()  # a session only ends by raising: surface it
    finally:
        for task in [*tasks, stopper]:
            task.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)
