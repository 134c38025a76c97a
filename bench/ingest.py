"""Regional ingest: how many updates a region's aggregator takes per second and per core, and how
its memory grows with the number of updates in a round.

- pure code: a real `RegionalAggregator` fed signed updates by calling its message handler
  directly (its MQTT session never connects; publishing the partial is recorded, not sent):
  verify, decode, log (fsync as configured), accumulate, and the close with its aggregation.
  Updates per second per core = updates / CPU seconds of the one thread doing it.
- through mosquitto: the aggregator daemon as its own process behind a real regional broker
  (TLS, client certificates, ACL, bridged to a cloud broker that carries the round announcement),
  every update published by its node's own MQTT client over its own TLS connection; from the
  first publish to the partial reaching an observer.
- memory: the pure-code path in a fresh process per size, updates streamed from a file, peak
  resident memory and the Python heap's peak (tracemalloc) of the ingest and close alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from bench.results import Section

REGION = "offshore"
# Pure code: the update log is fsynced once per this many updates, as the daemon's group commit
# does under load (one fsync for what arrived during the previous one; the broker lets at most
# max_inflight_messages = 100 wait for their acknowledgement).
SYNC_EVERY = 20
PURE_RUNS = 3
# (pure updates, mosquitto updates, memory sizes)
SIZES = {"tiny": (50, 20, [20, 40]), "small": (1000, 300, [1000, 5000]), "full": (5000, 2000, [1000, 10000, 50000])}


def _fleet(directory: Path, nodes: int, *, tls: bool) -> Any:
    """A one-region fleet: keys (and certificates) of `nodes` nodes, its aggregator and the cloud."""
    from nacelle.keys import create_fleet
    from wire.registry import FleetRegistry

    if (directory / "registry.json").exists():
        return FleetRegistry.load(directory / "registry.json")
    if tls:
        return create_fleet(directory, {REGION: nodes})
    # Keys only (no certificates): the pure path needs no TLS, and 50,000 certificates take minutes.
    from cryptography.hazmat.primitives import serialization

    from nacelle.keys import CLOUD_ID, aggregator_id, node_id
    from wire.registry import Member
    from wire.signing import generate_key, public_key_hex, save_private_key

    def member(member_id: str, region: str = "") -> Any:
        key = generate_key()
        if not member_id.startswith(f"{REGION}-t"):
            save_private_key(key, directory / "keys" / f"{member_id}.pem")
        return Member(member_id, public_key_hex(key), region), key

    cloud, _ = member(CLOUD_ID)
    aggregator, _ = member(aggregator_id(REGION), REGION)
    nodes_and_keys = [member(node_id(REGION, i), REGION) for i in range(1, nodes + 1)]
    registry = FleetRegistry(
        cloud=cloud, aggregators={REGION: aggregator}, nodes={m.member_id: m for m, _ in nodes_and_keys}
    )
    directory.mkdir(parents=True, exist_ok=True)
    registry.save(directory / "registry.json")
    with open(directory / "node-keys.msgpack", "wb") as file:
        for m, key in nodes_and_keys:
            raw = key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            file.write(msgpack.packb([m.member_id, raw]))
    return registry


def _node_keys(directory: Path) -> Iterator[tuple[str, Any]]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    with open(directory / "node-keys.msgpack", "rb") as file:
        for member_id, raw in msgpack.Unpacker(file, raw=False):
            yield member_id, Ed25519PrivateKey.from_private_bytes(raw)


def _announcement(opened_at: float) -> Any:
    from wire.messages import RoundAnnouncement

    return RoundAnnouncement(1, 0, opened_at, opened_at + 3600, opened_at + 3700, 5, 32, 3e-3, "int8-zstd")


def _deltas(count: int) -> list[dict[str, np.ndarray]]:
    """A few realistic deltas (the codec's cost depends on their values): trained, not random."""
    from learning.batched import train_many
    from learning.model import AutoencoderShape, initial_weights
    from learning.training import TrainingConfig
    from simulate.turbines import fleet_profile
    from simulate.vibration import turbine_features

    shape = AutoencoderShape()
    data = [turbine_features(fleet_profile(3, i, i % 2), 256) for i in range(count)]
    results = train_many(initial_weights(shape, 0), data, TrainingConfig(5, 32, 3e-3), shape, seeds=1)
    return [result.delta for result in results]


def write_updates(directory: Path, path: Path, opened_at: float) -> int:
    """Every node's signed update of round 1, as a msgpack stream of [node id, payload]."""
    from wire.envelope import seal
    from wire.messages import NodeUpdate, update_envelope

    deltas = _deltas(16)
    count = 0
    with open(path, "wb") as file:
        for index, (member_id, key) in enumerate(_node_keys(directory)):
            update = NodeUpdate(member_id, REGION, 1, 0, deltas[index % len(deltas)], 256, 0.3)
            file.write(msgpack.packb([member_id, seal(update_envelope(update, "int8-zstd", opened_at + 1), key)]))
            count += 1
    return count


def _read_updates(path: Path) -> Iterator[tuple[str, bytes]]:
    with open(path, "rb") as file:
        yield from msgpack.Unpacker(file, raw=False)


def _aggregator(directory: Path, state_dir: Path, *, fsync: bool) -> Any:
    from regional_aggregator.config import RegionConfig
    from regional_aggregator.daemon import RegionalAggregator
    from wire.registry import FleetRegistry
    from wire.signing import load_private_key

    config = RegionConfig(
        region=REGION,
        registry_path=directory / "registry.json",
        private_key_path=directory / "keys" / f"aggregator-{REGION}.pem",
        state_dir=state_dir,
        fsync_updates=fsync,
    )
    aggregator = RegionalAggregator(
        config, FleetRegistry.load(config.registry_path), load_private_key(config.private_key_path)
    )
    published: list[bytes] = []

    async def publish(topic: str, payload: bytes, *, retain: bool = False) -> None:
        published.append(payload)

    aggregator.session.publish = publish  # type: ignore[method-assign]
    return aggregator, published


def _round_payload(directory: Path, opened_at: float) -> bytes:
    from wire.envelope import seal
    from wire.messages import round_envelope
    from wire.signing import load_private_key

    return seal(round_envelope(_announcement(opened_at), "cloud"), load_private_key(directory / "keys" / "cloud.pem"))


async def _ingest(
    directory: Path, updates: Path, state_dir: Path, opened_at: float, *, fsync: bool, ready: Any = None
) -> dict[str, Any]:
    aggregator, published = _aggregator(directory, state_dir, fsync=fsync)
    await aggregator._on_round(_round_payload(directory, opened_at))
    if ready is not None:
        ready()  # the aggregator is up (its registry loaded) and the round open
    cpu, wall = time.process_time(), time.perf_counter()
    count, before_last = 0, cpu
    for node, payload in _read_updates(updates):
        before_last = time.process_time()  # the last update closes the round: its time is the close's
        await aggregator._on_update(payload, node)
        count += 1
        if count % SYNC_EVERY == 0:  # what the session's ack barrier does (group commit)
            aggregator.log.sync()
    end = time.process_time()
    cpu, wall = end - cpu, time.perf_counter() - wall
    if not published:
        raise RuntimeError(f"the aggregator did not close its round after {count} updates: {aggregator.rejections}")
    return {
        "updates": count,
        "cpu_s": cpu,
        "ingest_cpu_s": cpu - (end - before_last),
        "close_cpu_s": end - before_last,
        "wall_s": wall,
        "refused": sum(aggregator.rejections.values()),
    }


def pure_ingest(workdir: Path, count: int, *, fsync: bool, runs: int = 1) -> dict[str, Any]:
    """The fastest of `runs` ingests of the same updates, each by a fresh aggregator."""
    directory = workdir / f"fleet-{count}"
    opened_at = time.time()
    _fleet(directory, count, tls=False)
    updates = directory / "updates.msgpack"
    write_updates(directory, updates, opened_at)
    results = []
    for run in range(runs):
        state = workdir / f"state-{count}-{'fsync' if fsync else 'nofsync'}-{run}"
        results.append(asyncio.run(_ingest(directory, updates, state, opened_at, fsync=fsync)))
    return min(results, key=lambda result: result["cpu_s"])


def _vm(field: str) -> float:
    """A field of /proc/self/status in MB (VmHWM: peak resident; ru_maxrss would carry the
    parent's peak across exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory_child(directory: Path, updates: Path, state_dir: Path, opened_at: float) -> dict[str, Any]:
    """Run in a fresh process: peak memory of ingest + close over the updates in `updates`."""
    import regional_aggregator.daemon  # noqa: F401  (imports are not the aggregator's round)

    at_open: dict[str, float] = {}

    def ready() -> None:
        at_open["heap"] = tracemalloc.get_traced_memory()[0]
        at_open["rss"] = _vm("VmRSS")
        tracemalloc.reset_peak()

    tracemalloc.start()
    result = asyncio.run(_ingest(directory, updates, state_dir, opened_at, fsync=False, ready=ready))
    _, heap_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result.update(
        peak_rss_mb=_vm("VmHWM"),
        rss_at_open_mb=at_open["rss"],
        heap_at_open_mb=at_open["heap"] / 2**20,
        heap_growth_mb=(heap_peak - at_open["heap"]) / 2**20,
    )
    return result


def memory(workdir: Path, count: int) -> dict[str, Any]:
    directory = workdir / f"fleet-{count}"
    opened_at = time.time()
    _fleet(directory, count, tls=False)
    updates = directory / "updates.msgpack"
    write_updates(directory, updates, opened_at)
    args = [str(directory), str(updates), str(workdir / f"memory-state-{count}"), repr(opened_at)]
    output = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "memory", *args], capture_output=True, text=True, check=False
    )
    if output.returncode != 0:
        raise RuntimeError(f"memory run of {count} updates failed:\n{output.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


async def _through_mosquitto(workdir: Path, count: int) -> dict[str, Any]:
    import aiomqtt

    from broker import FleetSecurity, start_fleet_brokers
    from nacelle.config import write_config
    from nacelle.keys import OBSERVER_ID, aggregator_id, key_path, registry_path
    from nacelle.processes import start_process, stop_process
    from nacelle.tls import client_context
    from wire.envelope import seal
    from wire.messages import NodeUpdate, update_envelope
    from wire.signing import load_private_key
    from wire.topics import ROUND_TOPIC, RegionTopics

    fleet = workdir / f"tls-fleet-{count}"
    registry = _fleet(fleet, count, tls=True)
    brokers = start_fleet_brokers([REGION], workdir / f"brokers-{count}", security=FleetSecurity.from_fleet(fleet))
    try:
        brokers.wait_for_bridges(timeout_s=20)
        broker = brokers.regions[REGION]
        config = workdir / f"region-{count}.toml"
        state_dir = workdir / f"mosquitto-state-{count}"
        write_config(
            config,
            {
                "region": REGION,
                "registry_path": str(registry_path(fleet)),
                "private_key_path": str(key_path(fleet, aggregator_id(REGION))),
                "state_dir": str(state_dir),
                "broker": broker.endpoint(aggregator_id(REGION)).model_dump(mode="json", exclude_none=True),
            },
        )
        log_path = workdir / f"region-{count}.log"
        process = start_process([sys.executable, "-m", "nacelle", "region", "--config", str(config)], log_path)
        try:
            opened_at = time.time()
            deltas = _deltas(16)
            ids = sorted(registry.nodes)
            payloads = {
                member_id: seal(
                    update_envelope(
                        NodeUpdate(member_id, REGION, 1, 0, deltas[i % 16], 256, 0.3), "int8-zstd", opened_at + 1
                    ),
                    load_private_key(key_path(fleet, member_id)),
                )
                for i, member_id in enumerate(ids)
            }
            cloud = brokers.cloud.endpoint("cloud")
            async with aiomqtt.Client(cloud.host, cloud.port, tls_context=client_context(cloud)) as client:
                await client.publish(ROUND_TOPIC, _round_payload(fleet, opened_at), qos=1, retain=True)
            deadline = time.monotonic() + 60
            while "opened round 1" not in log_path.read_text():
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"the aggregator did not open the round; see {log_path}")
                await asyncio.sleep(0.1)
            topics = RegionTopics(REGION)
            observer = broker.endpoint(OBSERVER_ID)
            clients = [
                aiomqtt.Client(
                    broker.host,
                    broker.port,
                    identifier=f"nacelle-edge-{member_id}",
                    tls_context=client_context(broker.endpoint(member_id)),
                    protocol=aiomqtt.ProtocolVersion.V5,
                )
                for member_id in ids
            ]
            connect_began = time.monotonic()
            for begin in range(0, len(clients), 200):
                await asyncio.gather(*(c.__aenter__() for c in clients[begin : begin + 200]))
            connect_s = time.monotonic() - connect_began
            async with aiomqtt.Client(observer.host, observer.port, tls_context=client_context(observer)) as watcher:
                await watcher.subscribe(topics.partial, qos=1)
                began = time.monotonic()
                await asyncio.gather(
                    *(c.publish(topics.update(m), payloads[m], qos=1) for c, m in zip(clients, ids, strict=True))
                )
                published_s = time.monotonic() - began
                async with asyncio.timeout(300):
                    async for _ in watcher.messages:
                        break
                partial_s = time.monotonic() - began
            for client in clients:
                await client.__aexit__(None, None, None)
        finally:
            stop_process(process)
    finally:
        brokers.stop()
    return {"updates": count, "connect_s": connect_s, "published_s": published_s, "partial_s": partial_s}


def run(size: str, workdir: Path) -> Section:
    pure_count, mosquitto_count, memory_counts = SIZES[size]
    section = Section("ingest", "Regional ingest: verify + decode + log + accumulate + close, one region")
    for fsync in (False, True):
        # The best of a few runs: on a shared machine, noise only ever adds time.
        result = pure_ingest(workdir, pure_count, fsync=fsync, runs=PURE_RUNS)
        section.add(
            case=f"pure code, {pure_count:,} updates, fsync {'on' if fsync else 'off'}",
            updates_per_s_per_core=result["updates"] / result["ingest_cpu_s"],
            close_us_per_update=1e6 * result["close_cpu_s"] / result["updates"],
            with_close_per_s_per_core=result["updates"] / result["cpu_s"],
            updates_per_s_wall=result["updates"] / result["wall_s"],
            wall_s=result["wall_s"],
        )
    through = asyncio.run(_through_mosquitto(workdir, mosquitto_count))
    section.add(
        case=f"mosquitto + TLS, {mosquitto_count:,} publishers, fsync on",
        updates_per_s_wall=through["updates"] / through["partial_s"],
        wall_s=through["partial_s"],
        publishers_connect_s=through["connect_s"],
    )
    for count in memory_counts:
        result = memory(workdir, count)
        section.add(
            case=f"memory, {count:,} updates in a round",
            peak_rss_mb=result["peak_rss_mb"],
            rss_growth_mb=result["peak_rss_mb"] - result["rss_at_open_mb"],
            heap_at_open_mb=result["heap_at_open_mb"],
            heap_growth_mb=result["heap_growth_mb"],
            heap_bytes_per_update=result["heap_growth_mb"] * 2**20 / result["updates"],
        )
    section.notes.append(
        f"pure code, best of {PURE_RUNS} runs. per core: updates / CPU seconds of the aggregator's one thread for "
        "verify + decode + log + accumulate; close: the round's close (outlier scores re-read every update from "
        f"the log, the partial signed), per update; with close: both. fsync on: one per {SYNC_EVERY} updates "
        "(group commit). Through mosquitto: wall clock from the "
        "first publish to the partial at an observer; publishers, broker and aggregator share the machine's cores. "
        "Memory: a fresh process per size, fsync off; at_open = the aggregator with its registry of that many "
        "nodes and the round open; growth = what ingest and close add at their peak (tracemalloc: Python's "
        "allocations); a list of the round's deltas would be 19 KB per update in float32."
    )
    return section


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    if sys.argv[1] == "memory":
        directory, updates, state_dir, opened_at = sys.argv[2:6]
        print(json.dumps(memory_child(Path(directory), Path(updates), Path(state_dir), float(opened_at))))


if __name__ == "__main__":
    main()
