"""MqttSession against a real mosquitto: how it stops."""

from __future__ import annotations

import asyncio
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
