"""nacelle.mqtt's group commit: with `ack_after`, messages are acknowledged only once the barrier
that started after their handler returned has finished, in the order they arrived."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from nacelle.mqtt import _DeferredAcks


class _Paho:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)


async def test_acknowledgements_wait_for_the_barrier_and_keep_their_order() -> None:
    paho = _Paho()
    release = asyncio.Event()
    barriers = 0

    async def barrier() -> None:
        nonlocal barriers
        barriers += 1
        await release.wait()

    acks = _DeferredAcks(SimpleNamespace(_client=paho), barrier)  # type: ignore[arg-type]
    message: Any = SimpleNamespace
    for mid in (1, 2, 3):
        acks.add(message(mid=mid, qos=1))
    await asyncio.sleep(0)
    acks.add(message(mid=4, qos=1))  # arrives while the first barrier runs: needs a second one
    assert paho.acked == []

    release.set()
    for _ in range(5):
        await asyncio.sleep(0)

    assert paho.acked == [1, 2, 3, 4]
    assert barriers == 2


async def test_a_failing_barrier_acknowledges_nothing() -> None:
    paho = _Paho()

    async def barrier() -> None:
        raise OSError("disk gone")

    acks = _DeferredAcks(SimpleNamespace(_client=paho), barrier)  # type: ignore[arg-type]
    acks.add(SimpleNamespace(mid=1, qos=1))  # type: ignore[arg-type]
    for _ in range(3):
        await asyncio.sleep(0)

    assert paho.acked == []
