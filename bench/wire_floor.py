"""The wire alone: what a round's MQTT traffic costs with no training, no signing, no checks.

The same brokers as `nacelle simulate` (TLS, ACLs, bridges), the same clients (`MqttSession`,
one per turbine with its own certificate, as the edge node builds it) and the same messages
(real sealed payloads, made once before the rounds): the cloud publishes a model and a round
announcement, every turbine receives both, publishes its status and its update, each
acknowledged, and a stand-in aggregator per region receives the updates. Nothing is opened,
verified, decoded, trained or stored. Rounds follow each other at once.

What it yields is CPU seconds per turbine and round, per process: the turbines' process, the
brokers, the aggregators' side. With the floor (training alone, `bench.fleet_round`) it bounds
the round from below on a machine of `cores` cores: no schedule makes a round shorter than
(floor CPU + wire CPU + sealing + ingest) / cores, which is how the README shows what
"round ≤ 1.5× the floor" would need.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.fleet_round import _proc_status

ROUNDS = 4  # the first is not counted: connections and retained messages settle


def _payloads(fleet: Path, registry: Any) -> tuple[bytes, bytes, dict[str, tuple[bytes, bytes]]]:
    """A real model and round announcement from the cloud, and each node's status and update."""
    from learning.model import AutoencoderShape, initial_weights
    from nacelle.keys import CLOUD_ID, key_path, load_private_key
    from wire.envelope import seal
    from wire.messages import (
        ModelRelease,
        NodeUpdate,
        RoundAnnouncement,
        model_envelope,
        round_envelope,
        status_envelope,
        update_envelope,
    )

    now = time.time()
    weights = initial_weights(AutoencoderShape(), 0)
    cloud_key = load_private_key(key_path(fleet, CLOUD_ID))
    model = seal(model_envelope(ModelRelease(2, 1, 1, weights), CLOUD_ID, now), cloud_key)
    announcement = RoundAnnouncement(2, 2, now, now + 3600, now + 7200, epochs=5)
    round_payload = seal(round_envelope(announcement, CLOUD_ID), cloud_key)
    rng = np.random.default_rng(0)
    per_node = {}
    for member in registry.nodes.values():
        key = load_private_key(key_path(fleet, member.member_id))
        delta = {name: (0.01 * rng.standard_normal(w.shape)).astype(np.float32) for name, w in weights.items()}
        update = NodeUpdate(member.member_id, member.region, 2, 2, delta, 264, 0.1)
        status = status_envelope(member.member_id, member.region, "online", 2, now)
        per_node[member.member_id] = (seal(status, key), seal(update_envelope(update, "int8-zstd", now), key))
    return model, round_payload, per_node


class _WireTurbine:
    """A turbine's session as `edge_node.EdgeNode` builds it; on every new pair of model and
    announcement it publishes its status, then its update, each acknowledged."""

    def __init__(self, member: Any, endpoint: Any, status: bytes, update: bytes) -> None:
        import aiomqtt

        from nacelle.mqtt import MqttSession, SessionSpec
        from wire.topics import MODEL_TOPIC, ROUND_TOPIC, RegionTopics

        topics = RegionTopics(member.region)
        self._status, self._update = (
            (topics.status(member.member_id), status),
            (topics.update(member.member_id), update),
        )
        self._seen = {MODEL_TOPIC: 0, ROUND_TOPIC: 0}
        self._answered = 0
        self.session = MqttSession(
            SessionSpec(
                client_id=f"nacelle-edge-{member.member_id}",
                endpoint=endpoint,
                subscriptions=(MODEL_TOPIC, ROUND_TOPIC),
                will=aiomqtt.Will(topics.status(member.member_id), b"offline", qos=1, retain=True),
            ),
            handler=self._on_message,
        )

    async def _on_message(self, message: Any) -> None:
        self._seen[str(message.topic)] += 1
        if min(self._seen.values()) > self._answered:
            self._answered += 1
            await self.session.publish(*self._status, retain=True)
            await self.session.publish(*self._update)


@dataclass(frozen=True)
class _CloudSide:
    """What the process standing in for the cloud core and the aggregators needs."""

    aggregator_endpoints: dict[str, Any]  # by region
    cloud_endpoint: Any
    turbines: int
    rounds: int
    model: bytes
    announcement: bytes


def _daemons(side: _CloudSide, ready: Any, reports: Any) -> None:
    """The cloud's publishes and the aggregators' receiving, in a process of their own."""
    asyncio.run(_daemons_async(side, ready, reports))


async def _daemons_async(side: _CloudSide, ready: Any, reports: Any) -> None:
    import aiomqtt

    from nacelle.mqtt import MqttSession, SessionSpec, publish_once
    from wire.topics import MODEL_TOPIC, ROUND_TOPIC, RegionTopics

    received = 0
    all_in = asyncio.Event()

    async def count(message: aiomqtt.Message) -> None:
        nonlocal received
        if str(message.topic) != ROUND_TOPIC:
            received += 1
            if received % side.turbines == 0:
                all_in.set()

    sessions = [
        MqttSession(
            SessionSpec(
                client_id=f"nacelle-region-{region}",
                endpoint=endpoint,
                subscriptions=(ROUND_TOPIC, RegionTopics(region).update_filter),
                manual_ack=True,
            ),
            handler=count,
        )
        for region, endpoint in side.aggregator_endpoints.items()
    ]
    tasks = [asyncio.create_task(session.run()) for session in sessions]
    await asyncio.gather(*(session.connected.wait() for session in sessions))
    await asyncio.to_thread(ready.wait)  # every turbine connected
    for _ in range(side.rounds):
        all_in.clear()
        opened = time.time()
        messages = [(MODEL_TOPIC, side.model), (ROUND_TOPIC, side.announcement)]
        await publish_once(side.cloud_endpoint, "nacelle-cloud", messages, retain=True)
        await all_in.wait()
        reports.put((opened, time.time()))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def measure(turbines: int, workdir: Path, rounds: int = ROUNDS) -> dict[str, Any]:
    from broker import FleetSecurity, start_fleet_brokers
    from nacelle.keys import CLOUD_ID, aggregator_id, create_fleet, region_names, split_turbines
    from simulate.run import raise_open_file_limit

    regions = region_names(2)
    raise_open_file_limit(turbines)
    fleet = workdir / "fleet"
    registry = create_fleet(fleet, split_turbines(turbines, regions))
    model, announcement, per_node = _payloads(fleet, registry)
    brokers = start_fleet_brokers(regions, workdir / "brokers", security=FleetSecurity.from_fleet(fleet))
    try:
        brokers.wait_for_bridges(timeout_s=20)
        context = multiprocessing.get_context("spawn")
        ready, reports = context.Event(), context.Queue()
        side = _CloudSide(
            {region: brokers.regions[region].endpoint(aggregator_id(region)) for region in regions},
            brokers.cloud.endpoint(CLOUD_ID),
            turbines,
            rounds,
            model,
            announcement,
        )
        daemons = context.Process(target=_daemons, args=(side, ready, reports))
        daemons.start()
        sessions = [
            _WireTurbine(
                member, brokers.regions[member.region].endpoint(member.member_id), *per_node[member.member_id]
            ).session
            for member in registry.nodes.values()
        ]
        tasks = [asyncio.create_task(session.run()) for session in sessions]
        pids = {"fleet": os.getpid(), "aggregators": daemons.pid or 0, "broker-cloud": brokers.cloud.pid or 0}
        pids.update({f"broker-{r}": b.pid or 0 for r, b in brokers.regions.items()})
        try:
            await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in sessions)), timeout=300)
            ready.set()
            spans, cpu = [], []
            for _ in range(rounds):
                spans.append(await asyncio.to_thread(reports.get, True, 600))
                cpu.append({name: _proc_status(pid).get("cpu_cs", 0) for name, pid in pids.items()})
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            daemons.join(timeout=10)
            if daemons.is_alive():
                daemons.terminate()
    finally:
        brokers.stop()
    counted = rounds - 1
    status, update = next(iter(per_node.values()))
    cpu_s = {name: (cpu[-1][name] - cpu[0][name]) / 100 / counted for name in pids}
    return {
        "turbines": turbines,
        "rounds_counted": counted,
        "round_s": [end - start for start, end in spans],
        "cpu_s_per_round": cpu_s,
        "cpu_ms_per_turbine": {name: 1000 * seconds / turbines for name, seconds in cpu_s.items()},
        "bytes": {"model": len(model), "round": len(announcement), "status": len(status), "update": len(update)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.wire_floor",
        description="CPU per turbine and round of a round's MQTT traffic alone (prints JSON).",
    )
    parser.add_argument("--turbines", type=int, required=True, help="clients, each with its own certificate")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"default {ROUNDS}, the first not counted")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: the first is not counted")
    with tempfile.TemporaryDirectory(prefix="nacelle-wire-") as workdir:
        result = asyncio.run(measure(args.turbines, Path(workdir), args.rounds))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
