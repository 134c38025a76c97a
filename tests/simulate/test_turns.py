"""simulate.turns: a simulated fleet's turbines take turns at the shared event loop."""

from __future__ import annotations

import asyncio

import pytest

from simulate.turns import Turns


async def _take(turns: Turns, name: str, continuing: bool, order: list[str], hold: asyncio.Event) -> None:
    async with turns(continuing):
        order.append(name)
        await hold.wait()


async def test_a_turbine_continuing_a_round_goes_before_one_starting_it() -> None:
    turns, order, hold = Turns(1), [], asyncio.Event()
    first = asyncio.create_task(_take(turns, "first", False, order, hold))
    await asyncio.sleep(0)
    waiting = [
        asyncio.create_task(_take(turns, name, continuing, order, hold))
        for name, continuing in [("starting-1", False), ("continuing", True), ("starting-2", False)]
    ]
    await asyncio.sleep(0.01)
    assert order == ["first"] and turns.waited == 3
    hold.set()
    await asyncio.wait_for(asyncio.gather(first, *waiting), 5)
    assert order == ["first", "continuing", "starting-1", "starting-2"]


async def test_slots_bound_the_turbines_at_work_and_a_cancelled_wait_loses_no_slot() -> None:
    turns, order, hold = Turns(2), [], asyncio.Event()
    holders = [asyncio.create_task(_take(turns, f"h{i}", False, order, hold)) for i in range(2)]
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(_take(turns, "cancelled", True, order, hold))
    later = [asyncio.create_task(_take(turns, f"l{i}", False, order, hold)) for i in range(2)]
    await asyncio.sleep(0.01)
    assert order == ["h0", "h1"]
    cancelled.cancel()
    hold.set()
    await asyncio.wait_for(asyncio.gather(*holders, *later), 5)
    assert order == ["h0", "h1", "l0", "l1"]
    async with turns(False), turns(False):  # both slots came back
        pass


def test_turns_need_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        Turns(0)
