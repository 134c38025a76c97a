"""Turns at a simulated fleet's shared event loop, so that its first training batches start while
the rest of the fleet still takes in the round's model.

Every turbine of a simulated fleet is a client of one event loop, and the loop serves whatever is
ready in the order it became ready. When a round opens, all of them get the new model at once:
each verifies it, stores it and publishes its status, then takes in the round's announcement,
scores its new windows and asks for training. Served in arrival order, every turbine finishes
each step before any turbine starts the next, so the first training request comes only once
the whole fleet has taken in the model (2.6 s of a 7 s round at 2,000 turbines), and the
training processes' core idles meanwhile.

`Turns` lets at most `slots` turbines do that work at once, and a turbine continuing a round
(handling its announcement) goes before one that starts (handling the model): the first
turbines reach training early, and training overlaps the rest of the fan-out. A turn lasts one
message's handling, up to the training request; nothing waits for a turn while holding one, and
nothing that crosses the wire changes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Turns:
    """An `edge_node.node.TakeTurn`: a semaphore of `slots` that serves continuing turbines
    first, each class in arrival order."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"turns need at least one slot, got {slots}")
        self._free = slots
        # Waiting turbines: [continuing a round, starting one].
        self._waiting: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (deque(), deque())
        self.waited = 0  # turns that had to wait for a slot (the tests look)

    @asynccontextmanager
    async def __call__(self, continuing: bool) -> AsyncIterator[None]:
        await self._acquire(continuing)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, continuing: bool) -> None:
        if self._free and not any(self._waiting):
            self._free -= 1
            return
        self.waited += 1
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[0 if continuing else 1].append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # handed a slot as it was cancelled: pass it on
            raise

    def _release(self) -> None:
        for queue in self._waiting:
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._free += 1
