"""What simulated turbines record between rounds, and which of them fail.

Every night (night n is round n) each turbine scores the live windows it recorded since the
last round, then trains; once its update is out it records the next night's handful into its
buffer (`TurbineSensor`, the node's `WindowFeed`: kept off the start of the next round, where
every turbine waits for the slowest). Nights a turbine missed (it was away, or did not train)
are recorded when the next round reaches it. Night 1's are recorded when the fleet is built, and
none after the run's last night: windows scored when the last model arrives would alert a cloud
core that has already gone (a fleet left running lifts the limit: `last_night = None`).

A share of the fleet (`plan_faults`) develops a fault during the run: from its onset night on,
its live windows carry that fault (`simulate.vibration.Fault`), growing worse each night: its
severity is the planned one at onset, then half of it more every night, up to twice it. The nodes score, alert, and the
alerts cross the real brokers to the cloud core and InfluxDB; `alert_summary` then says how
many were sent and stored, and how many came from a turbine that really had a fault when the
window was recorded (a precision figure).
"""

from __future__ import annotations

import asyncio
import functools
import math
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from edge_node.buffer import FeatureBuffer
from simulate.vibration import Fault, TurbineProfile, turbine_features
from wire.messages import NodeAlert

# Night n's live windows are block LIVE_OFFSET + n of the turbine's window stream: never the
# training (0) or evaluation (1..7) blocks.
LIVE_OFFSET = 1000
# A fault grows: severity × (1 + 0.5 · nights since onset), at most × 2 (three nights on).
FAULT_GROWTH_PER_NIGHT = 0.5
FAULT_GROWTH_CAP = 2.0


@dataclass(frozen=True)
class FaultPlan:
    fault: Fault
    onset_night: int  # live windows of this night and after carry the fault
    severity: float  # at onset

    def severity_on(self, night: int) -> float:
        grown = 1.0 + FAULT_GROWTH_PER_NIGHT * (night - self.onset_night)
        return self.severity * min(FAULT_GROWTH_CAP, grown)


def plan_faults(
    node_ids: Sequence[str], share: float, nights: int, *, seed: int, severity: float
) -> dict[str, FaultPlan]:
    """`ceil(share · turbines)` turbines, each with a fault type and an onset night drawn
    uniformly; deterministic in `seed`."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"the share of faulty turbines must be in [0, 1], got {share}")
    rng = np.random.default_rng([seed, 0xFA17])
    chosen = sorted(rng.choice(len(node_ids), math.ceil(share * len(node_ids)), replace=False).tolist())
    faults = list(Fault)
    return {
        node_ids[index]: FaultPlan(faults[int(rng.integers(len(faults)))], int(rng.integers(1, nights + 1)), severity)
        for index in chosen
    }


class TurbineSensor:
    """One turbine's live windows, once per night, into its node's buffer."""

    def __init__(
        self,
        profile: TurbineProfile,
        buffer: FeatureBuffer,
        windows: int,
        plan: FaultPlan | None,
        *,
        last_night: int | None = None,
        synthesis: Synthesis | None = None,
    ) -> None:
        self.profile = profile
        self.buffer = buffer
        self.windows = windows
        self.plan = plan
        self.last_night = last_night  # None: no end
        # Where the windows are synthesised (None: a thread of this process).
        self.synthesis = synthesis
        self.night = 0  # the last night recorded, or being recorded by `_recording`
        self._recording: asyncio.Future[None] | None = None
        self.faulty_since: float | None = None  # when its first faulty windows were recorded

    async def __call__(self, through_night: int) -> None:
        """Every night up to `through_night` not recorded yet (and not past `last_night`)."""
        if self.last_night is not None:
            through_night = min(through_night, self.last_night)
        nights = range(self.night + 1, through_night + 1)
        if nights:
            self.night = through_night  # a second call meanwhile waits for these, adds nothing
            self._recording = asyncio.ensure_future(self._record(self._recording, nights))
        if self._recording is not None:
            await asyncio.shield(self._recording)  # a caller cancelled leaves the recording be

    async def _record(self, earlier: asyncio.Future[None] | None, nights: range) -> None:
        if earlier is not None:
            await asyncio.wait([earlier])  # nights reach the buffer in order (its failure is its callers')
        # Synthesis (about 1 ms a night) and the fsynced append happen off the process that
        # serves every turbine's MQTT client: in its threads they held the GIL in the event
        # loop's way, and the next round's model and announcement wait for the loop.
        for night in nights:
            spec = self._window_spec(night)
            if self.synthesis is None:  # a thread of this process: this buffer
                record = functools.partial(_record_into, self.buffer, spec)
                recorded_at = await asyncio.get_running_loop().run_in_executor(None, record)
            else:
                recorded_at = await self.synthesis.record(self.buffer.directory, self.buffer.capacity, spec)
            self._recorded(night, recorded_at)

    def record(self, night: int) -> None:
        self.night = max(self.night, night)
        self._recorded(night, _record_into(self.buffer, self._window_spec(night)))

    def _faulty(self, night: int) -> FaultPlan | None:
        return self.plan if self.plan is not None and night >= self.plan.onset_night else None

    def _window_spec(self, night: int) -> dict[str, Any]:
        """`turbine_features` arguments of this turbine's windows of `night`."""
        plan = self._faulty(night)
        return {
            "profile": self.profile,
            "count": self.windows,
            "offset": LIVE_OFFSET + night,
            "fault": plan.fault if plan is not None else None,
            "severity": plan.severity_on(night) if plan is not None else 1.0,
        }

    def _recorded(self, night: int, recorded_at: float) -> None:
        if self._faulty(night) is not None and self.faulty_since is None:
            self.faulty_since = recorded_at


def _record_into(buffer: FeatureBuffer, window_spec: dict[str, Any]) -> float:
    """Synthesise a night's windows (`turbine_features(**window_spec)`) into `buffer`; when they
    were recorded (Unix s, whole ms, as the buffer keeps it and alerts report it: comparable
    exactly)."""
    features = turbine_features(**window_spec)
    recorded_at = round(time.time() * 1000) / 1000
    buffer.append(features, recorded_at=recorded_at)
    return recorded_at


@functools.cache
def _buffer(directory: Path, capacity: int) -> FeatureBuffer:
    return FeatureBuffer(directory, capacity)  # kept: it knows its chunks' sizes, every append needs them


def _record_nights(requests: list[tuple[Path, int, dict[str, Any]]]) -> list[float | Exception]:
    """`_record_into` each (buffer directory, capacity, window spec), in the synthesis process
    (which lives as long as one simulation); each node's own buffer object sees its chunk
    appear, and old ones go, on its next read. A failure is that recording's, not the batch's."""
    recorded: list[float | Exception] = []
    for directory, capacity, window_spec in requests:
        try:
            recorded.append(_record_into(_buffer(directory, capacity), window_spec))
        except Exception as exc:
            recorded.append(exc)
    return recorded


class Synthesis:
    """One worker process that synthesises every turbine's live windows (spawned: see
    `simulate.batch_trainer.training_processes`). Recordings asked for within `gather_s` go
    to it as one call: a call of its own each cost the fleet's process about a millisecond of
    pickling, queueing and wake-ups. It runs at the lowest CPU priority (nice 19): a real
    turbine records on hardware of its own, and a night asked for during a round is not needed
    before the next one, so it takes only the cores' idle moments (1,000 turbines: rounds that
    record the next night took 2.57-2.70 s instead of 2.77-3.14, three runs each)."""

    def __init__(self, *, gather_s: float = 0.05, max_batch: int = 256) -> None:
        self._executor = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=os.nice, initargs=(19,)
        )
        self._gather_s = gather_s
        self._max_batch = max_batch
        self._pending: list[tuple[tuple[Path, int, dict[str, Any]], asyncio.Future[float]]] = []
        self._gatherer: asyncio.Task[None] | None = None
        self.calls = 0  # batches sent to the worker

    async def record(self, directory: Path, capacity: int, window_spec: dict[str, Any]) -> float:
        """`_record_into` the buffer in `directory`; when the windows were recorded."""
        recorded: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pending.append(((directory, capacity, window_spec), recorded))
        if len(self._pending) >= self._max_batch:
            self._send()
        elif self._gatherer is None or self._gatherer.done():
            self._gatherer = asyncio.create_task(self._send_gathered())
        return await recorded

    async def _send_gathered(self) -> None:
        await asyncio.sleep(self._gather_s)
        self._send()

    def _send(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        self.calls += 1
        call = functools.partial(_record_nights, [request for request, _ in batch])
        sent = asyncio.get_running_loop().run_in_executor(self._executor, call)
        sent.add_done_callback(functools.partial(_hand_out, [future for _, future in batch]))

    def shutdown(self) -> None:
        if self._gatherer is not None:
            self._gatherer.cancel()
        self._executor.shutdown(cancel_futures=True)


def _hand_out(futures: list[asyncio.Future[float]], sent: asyncio.Future[list[float | Exception]]) -> None:
    if sent.cancelled():
        return  # the simulation is stopping: so are the sensors waiting
    failure = sent.exception()
    outcomes: list[float | BaseException] = [failure] * len(futures) if failure else list(sent.result())
    for future, outcome in zip(futures, outcomes, strict=True):
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def stored_alert_count(url: str, database: str, since: float, *, auth: tuple[str, str] | None = None) -> int:
    """`nacelle_alert` points in an InfluxDB 1.x database from `since` (Unix s) on."""
    query = f'SELECT count("score") FROM "nacelle_alert" WHERE time >= {math.floor(since * 1000)}ms'
    response = httpx.post(f"{url}/query", params={"db": database, "q": query}, auth=auth, timeout=30.0)
    response.raise_for_status()
    series = response.json()["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


def alert_summary(
    published: Sequence[NodeAlert], sensors: Mapping[str, TurbineSensor], stored: int | None
) -> dict[str, Any]:
    """The `alerts` block of the simulator's summary: the alerts the turbines published, judged
    against the faults they really had, and how many InfluxDB holds (None: not read back)."""

    def true_alert(alert: NodeAlert) -> bool:
        sensor = sensors.get(alert.node_id)
        since = None if sensor is None else sensor.faulty_since
        return since is not None and alert.window_ts >= since

    faulty = {node for node, sensor in sensors.items() if sensor.faulty_since is not None}
    alerted = {alert.node_id for alert in published}
    true = sum(1 for alert in published if true_alert(alert))
    return {
        "count": len(published),
        "stored": stored,
        "from_faulty": true,
        "precision": true / len(published) if published else None,
        "suppressed": sum(alert.suppressed for alert in published),
        "faulty_turbines": len(faulty),
        "faulty_turbines_alerted": len(alerted & faulty),
        "healthy_turbines_alerted": len(alerted - faulty),
        "faults": {
            node: {"fault": s.plan.fault.value, "onset_night": s.plan.onset_night}
            for node, s in sorted(sensors.items())
            if s.plan is not None
        },
    }
