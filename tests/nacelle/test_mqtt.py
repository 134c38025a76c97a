"""MqttSession against a real mosquitto: how it stops."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from broker.launcher import RunningBroker, start_broker
from nacelle.mqtt import MqttSession, SessionSpec

pytestmark = [pytest.mark.broker]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RunningBroker]:
    running = start_broker("cloud", tmp_path, role="cloud")
    yield running
    running.stop()


async def test_a_cancel_the_handler_swallowed_still_stops_the_session(broker: RunningBroker) -> None:
    handling = asyncio.Event()
    swallowed: list[str] = []

    async def handler(message: aiomqtt.Message) -> None:
        # What Python 3.11's asyncio.wait_for does when a cancel meets a completing publish.
        handling.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            swallowed.append(str(message.topic))

    session = MqttSession(SessionSpec("stopper", broker.endpoint(), subscriptions=("t/#",)), handler=handler)
    task = asyncio.create_task(session.run())
    await asyncio.wait_for(session.connected.wait(), 10)
    async with aiomqtt.Client(broker.host, broker.port) as publisher:
        await publisher.publish("t/1", b"x", qos=1)
    await asyncio.wait_for(handling.wait(), 10)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 15)
    assert swallowed == ["t/1"]
    assert not session.connected.is_set()


def test_the_housekeeping_it_replaces_is_still_aiomqtts() -> None:
    # nacelle.mqtt._Client overrides this private method to space out keep-alive wake-ups; an
    # aiomqtt that renamed it would silently bring back one wake-up per client per second.
    assert callable(getattr(aiomqtt.Client, "_misc_loop", None))


async def test_an_idle_session_keeps_its_connection_past_the_keepalive(broker: RunningBroker) -> None:
    # Nothing is published for almost 3 keep-alive intervals: the broker drops a client silent
    # for 1.5 of them (checked every few seconds), unless the client's housekeeping pings it.
    # Without the pings this fails (checked with an interval of 100 s).
    connects: list[float] = []

    async def on_connect() -> None:
        connects.append(asyncio.get_running_loop().time())

    endpoint = broker.endpoint().model_copy(update={"keepalive_s": 5})
    session = MqttSession(SessionSpec("idler", endpoint), on_connect=on_connect)
    task = asyncio.create_task(session.run())
    try:
        await asyncio.wait_for(session.connected.wait(), 10)
        await asyncio.sleep(14)
        assert session.connected.is_set()
        assert len(connects) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_session_sends_without_nagles_delay(broker: RunningBroker) -> None:
    # paho leaves Nagle's algorithm on; with it, a packet written behind an unacknowledged one
    # waits for the broker's delayed ACK (up to 40 ms a hop).
    session = MqttSession(SessionSpec("prompt", broker.endpoint()))
    task = asyncio.create_task(session.run())
    try:
        await asyncio.wait_for(session.connected.wait(), 10)
        assert session._client is not None
        sock = session._client._client.socket()
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        await asyncio.wait_for(session.publish("t/1", b"x" * 40_000), 10)  # still goes through
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_publishes_from_the_event_loop_do_not_wake_it_through_its_self_pipe(broker: RunningBroker) -> None:
    # aiomqtt registers a socket's writer with call_soon_threadsafe, a system call per packet,
    # since paho may call from its connect thread; on the loop's own thread it is not needed.
    session = MqttSession(SessionSpec("direct", broker.endpoint()))
    task = asyncio.create_task(session.run())
    loop = asyncio.get_running_loop()
    threadsafe_calls: list[object] = []
    original = loop.call_soon_threadsafe
    try:
        await asyncio.wait_for(session.connected.wait(), 10)

        def counted(callback: object, *args: object, **kwargs: object) -> object:
            threadsafe_calls.append(callback)
            return original(callback, *args, **kwargs)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        for number in range(20):
            await asyncio.wait_for(session.publish(f"t/{number}", b"x" * 100), 10)
    finally:
        loop.call_soon_threadsafe = original  # type: ignore[method-assign]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert threadsafe_calls == []
