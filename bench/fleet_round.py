"""A whole round of `nacelle simulate` against its floor.

The round: the simulator as `nacelle simulate` runs it (TLS, every turbine its own MQTT client,
key and signed update, fsynced update logs, a real InfluxDB), `nights` rounds, no evaluation.
Each size runs in a subprocess of its own (`python -m bench.fleet_round`), so that peak memory
is the round's and nothing else's. The last round is taken apart along its critical path:

    opened ─ fan-out ─▶ first training batch ─ training ─▶ last batch trained ─ publish ─▶ last
    update acknowledged ─ transit + ingest ─▶ last update counted ─ aggregation ─▶ partials at
    the cloud ─ merge + publish ─▶ closed

from the trainer's and the nodes' own timings and the aggregators' and cloud's log lines (one
machine, one clock). Beside it, CPU seconds per process over the whole run and peak memory.

The floor: the same number of models, the same data sizes and generator, epochs and batch size,
trained by `learning.batched.train_many` (a thread per core in one process, or a single-threaded
process per core, whichever is faster; one thread on a one-core machine), nothing else: no wire,
no signing, no brokers. round seconds / floor seconds is what the wire costs.

Beside them, the wire alone (`bench.wire_floor`): the CPU a round's MQTT traffic takes with
nothing else, which bounds the round from below at floor + wire CPU / cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import queue
import re
import resource
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.results import Section

SIZES = {"tiny": [6], "small": [200], "full": [1000, 10000]}
NIGHTS = 2
WINDOWS = 256
EPOCHS = 5
LIVE_WINDOWS = 8

_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
_REGION_CLOSED = re.compile(
    _STAMP + r".*region (\S+) closed round (\d+) .*last update counted ([\d.]+)s after the round opened, "
    r"aggregated and published in ([\d.]+)s"
)
_CLOUD_PARTIAL = re.compile(_STAMP + r".*cloud got region (\S+)'s partial for round (\d+)")


def _log_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _proc_status(pid: int) -> dict[str, int]:
    """VmHWM (peak resident) and CPU seconds (user + system, ×100) of a live process."""
    figures = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    figures["peak_mb"] = int(line.split()[1]) // 1024
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        figures["cpu_cs"] = round(100 * (int(fields[11]) + int(fields[12])) / ticks)
    except OSError:
        pass
    return figures


async def _simulate(turbines: int, workdir: Path, node_dir: Path | None) -> dict[str, Any]:
    from simulate.run import Simulation, SimulationSettings

    logging.getLogger("edge_node").setLevel(logging.WARNING)
    logging.getLogger("broker").setLevel(logging.WARNING)
    settings = SimulationSettings(
        turbines=turbines,
        regions=2,
        nights=NIGHTS,
        workdir=workdir,
        epochs=EPOCHS,
        windows_per_turbine=WINDOWS,
        live_windows=LIVE_WINDOWS,
        evaluate=False,
        node_dir=node_dir,
    )
    simulation = Simulation(settings)
    processes: dict[str, dict[str, int]] = {}

    def measure() -> None:
        pids = {name: process.pid for name, process in simulation.processes.items()}
        if simulation.brokers is not None:
            pids["broker-cloud"] = simulation.brokers.cloud.pid or 0
            pids.update({f"broker-{r}": b.pid or 0 for r, b in simulation.brokers.regions.items()})
        if simulation.trainer is not None:
            for number, pid in enumerate(simulation.trainer.worker_pids(), 1):
                pids[f"simulator (training process {number})"] = pid
        for name, pid in pids.items():
            figures = _proc_status(pid)
            if figures:  # VmHWM and CPU only grow: the last sample of a process is its figure
                processes[name] = figures

    async def sample() -> None:  # the cloud core exits after its last round: sample while it runs
        while True:
            measure()
            await asyncio.sleep(1.0)

    async def before_stopping(records: list[dict[str, Any]]) -> None:
        measure()

    started = time.monotonic()
    sampler = asyncio.create_task(sample())
    try:
        with simulation.stack:
            records = await simulation.run(before_stopping)
    finally:
        sampler.cancel()
    wall = time.monotonic() - started
    trainer, nodes = simulation.trainer, simulation.nodes
    assert trainer is not None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    processes["simulator (turbines)"] = {
        "peak_mb": usage.ru_maxrss // 1024,
        "cpu_cs": round(100 * (usage.ru_utime + usage.ru_stime)),
    }
    return {
        "turbines": turbines,
        "wall_s": wall,
        "records": records,
        "spans": trainer.spans,
        "encode_sign_s": sum(node.encode_sign_s for node in nodes),
        "updates": sum(node.updates_published for node in nodes),
        "last_published_at": max(node.last_published_at for node in nodes),
        "processes": processes,
        "logs": {path.stem: path.read_text() for path in (workdir / "logs").glob("*.log")},
    }


def _covered_seconds(spans: list[list[float]]) -> float:
    """Seconds during which at least one of the (started, finished, ...) spans ran."""
    covered, reached = 0.0, float("-inf")
    for started, finished, *_ in sorted(spans):
        covered += max(0.0, finished - max(started, reached))
        reached = max(reached, finished)
    return covered


def critical_path(run: dict[str, Any]) -> dict[str, float]:
    """The last round's seconds along its critical path (see the module docstring)."""
    record = run["records"][-1]
    round_id, opened, closed = record["round"], record["opened_at"], record["closed_at"]
    spans = [span for span in run["spans"] if opened <= span[0] <= closed]
    counted, aggregated = opened, 0.0
    partials = opened
    for name, text in run["logs"].items():
        for line in text.splitlines():
            match = _REGION_CLOSED.match(line)
            if match and int(match.group(3)) == round_id:
                counted = max(counted, opened + float(match.group(4)))
                aggregated = max(aggregated, float(match.group(5)))
            match = _CLOUD_PARTIAL.match(line) if name == "cloud" else None
            if match and int(match.group(3)) == round_id:
                partials = max(partials, _log_time(match.group(1)))
    first_batch = min((span[0] for span in spans), default=opened)
    last_batch = max((span[1] for span in spans), default=opened)
    published = run["last_published_at"]
    return {
        "round_s": closed - opened,
        "fan_out_s": first_batch - opened,
        "training_s": last_batch - first_batch,
        "training_busy_s": _covered_seconds(spans),
        "last_publish_s": max(0.0, published - last_batch),
        "transit_ingest_s": max(0.0, counted - published),
        "aggregation_s": aggregated,
        "cloud_merge_publish_s": max(0.0, closed - partials),
    }


def _floor_datasets(turbines: int, nights: int, indices: range | None = None) -> list[Any]:
    """Each turbine's windows at the last night (or those of `indices`), as the round trains them."""
    import numpy as np

    from simulate.sensor import LIVE_OFFSET
    from simulate.turbines import fleet_members, fleet_profile
    from simulate.vibration import turbine_features

    members = fleet_members(turbines, 2)
    datasets = []
    for index in indices if indices is not None else range(len(members)):
        profile = fleet_profile(0, index, members[index].region_index)
        blocks = [turbine_features(profile, WINDOWS)]
        blocks += [turbine_features(profile, LIVE_WINDOWS, offset=LIVE_OFFSET + n) for n in range(1, nights + 1)]
        datasets.append(np.concatenate(blocks).astype(np.float32))
    return datasets


def _train_floor(datasets: list[Any], nights: int) -> None:
    from learning.batched import train_many
    from learning.model import AutoencoderShape, initial_weights
    from learning.training import TrainingConfig

    shape = AutoencoderShape()
    plan = TrainingConfig(epochs=EPOCHS, batch_size=32, learning_rate=3e-3)
    train_many(initial_weights(shape, 0), datasets, plan, shape, seeds=nights)


def _floor_worker(turbines: int, nights: int, indices: range, barrier: Any, spans: Any) -> None:
    import torch

    torch.set_num_threads(1)
    datasets = _floor_datasets(turbines, nights, indices)
    _train_floor(datasets[:16], nights)  # torch's first call sets itself up
    barrier.wait()  # every worker has its data: training starts together
    began = time.time()
    _train_floor(datasets, nights)
    spans.put((began, time.time()))


def _floor_in_processes(turbines: int, nights: int, indices: range, workers: int) -> float:
    """Seconds to train the models of `indices` split over `workers` single-threaded processes,
    from the first start to the last finish (making the data is not counted)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, spans = context.Barrier(workers), context.Queue()
    share = -(-len(indices) // workers)
    processes = [
        context.Process(
            target=_floor_worker, args=(turbines, nights, indices[w * share : (w + 1) * share], barrier, spans)
        )
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    finished: list[tuple[float, float]] = []
    try:
        while len(finished) < workers:
            try:
                finished.append(spans.get(timeout=1.0))
            except queue.Empty:
                failed = [process.exitcode for process in processes if process.exitcode not in (None, 0)]
                if failed:
                    raise RuntimeError(f"a floor training process failed (exit codes {failed})") from None
    finally:
        for process in processes:
            if process.exitcode is None and len(finished) < workers:
                process.terminate()  # the others would wait at the barrier for ever
            process.join()
    return max(end for _, end in finished) - min(start for start, _ in finished)


def floor_seconds(turbines: int, nights: int = NIGHTS) -> dict[str, Any]:
    """Train the round's models on the round's data sizes with `train_many` and nothing else, the
    faster of two ways on a machine with several cores: one process with a thread per core, and
    a single-threaded process per core (which wins varies from run to run here: both are run)."""
    import torch

    cores = os.cpu_count() or 1

    def threaded(threads: int) -> float:
        torch.set_num_threads(threads)
        datasets = _floor_datasets(turbines, nights)
        _train_floor(datasets[:16], nights)  # torch's first call sets itself up
        began = time.perf_counter()
        _train_floor(datasets, nights)
        return time.perf_counter() - began

    if cores == 1:
        ways = {"1 thread": threaded(1)}
    else:
        ways = {
            f"{cores} threads": threaded(cores),
            f"{cores} processes": _floor_in_processes(turbines, nights, range(turbines), cores),
        }
    fastest = min(ways, key=lambda way: ways[way])
    return {"floor_s": ways[fastest], "way": fastest, "ways_s": ways}


def _subprocess(args: list[str], timeout_s: float, module: str = "bench.fleet_round") -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if output.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{output.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def node_dir() -> Path | None:
    """Memory-backed storage for the simulated turbines' own files, when the machine has it
    (see SimulationSettings.node_dir: one shared disk would queue ten thousand turbines' flushes)."""
    shm = Path("/dev/shm")
    return shm / f"nacelle-bench-nodes-{os.getpid()}" if shm.is_dir() and os.access(shm, os.W_OK) else None


def run(size: str, workdir: Path) -> Section:
    section = Section("fleet_round", f"Whole round ({NIGHTS} nights, the last one taken apart) against the floor")
    timing = Section("fleet_round_parts", "Where the last round's time goes; CPU seconds and peak memory per process")
    wire_parts = Section("wire_floor", "The wire alone (bench.wire_floor): CPU milliseconds per turbine and round")
    cores = os.cpu_count() or 1
    for turbines in SIZES[size]:
        floor = _subprocess(["--floor", "--turbines", str(turbines)], timeout_s=3600)
        wire = _subprocess(["--turbines", str(turbines)], 3600, module="bench.wire_floor")
        wire_cpu_s = sum(wire["cpu_s_per_round"].values())
        wire_parts.add(
            turbines=turbines,
            **dict(sorted(wire["cpu_ms_per_turbine"].items(), key=lambda item: (item[0] != "fleet", item[0]))),
            all_processes=1000 * wire_cpu_s / turbines,
            round_s=min(wire["round_s"][1:]),
        )
        nodes = node_dir()
        args = ["--turbines", str(turbines), "--workdir", str(workdir / f"round-{turbines}")]
        result = _subprocess([*args, *(["--node-dir", str(nodes)] if nodes else [])], 3600)
        path = result["critical_path"]
        rounds = [record["seconds"] for record in result["records"]]
        section.add(
            turbines=turbines,
            **{f"round{i + 1}_s": seconds for i, seconds in enumerate(rounds)},
            floor_s=floor["floor_s"],
            floor_way=floor["way"],
            last_round_over_floor=rounds[-1] / floor["floor_s"],
            wire_cpu_s=wire_cpu_s,
            floor_and_wire_s=floor["floor_s"] + wire_cpu_s / cores,
            encode_sign_ms_per_update=1000 * result["encode_sign_s"] / max(1, result["updates"]),
            wall_s=result["wall_s"],
        )
        timing.add(case=f"{turbines} turbines: critical path", **{k: round(v, 2) for k, v in path.items()})
        for name, figures in sorted(result["processes"].items()):
            timing.add(
                case=f"{turbines} turbines: {name}",
                cpu_s=figures.get("cpu_cs", 0) / 100,
                peak_mb=figures.get("peak_mb"),
            )
    section.notes.append(
        "round: `nacelle simulate` with TLS, per-turbine keys and certificates, fsynced update logs on disk; "
        "the turbines' own buffers and state in /dev/shm (each real turbine has a disk of its own); "
        f"{WINDOWS} windows + {LIVE_WINDOWS} a night per turbine, {EPOCHS} epochs, batch 32. "
        "floor: the same models and data sizes trained by learning.batched.train_many alone "
        "(the fastest of 1 thread, a thread per core, and a single-threaded process per core). "
        "wire_cpu_s: the CPU seconds a round's MQTT traffic alone takes, all processes together (below); "
        f"floor_and_wire_s = floor_s + wire_cpu_s / {cores} cores, a round's lower bound even if nothing "
        "else cost anything (no signing, checks, storage or hand-offs to training)."
    )
    wire_parts.notes.append(
        "the same brokers, clients (MqttSession, one per turbine with its own certificate) and message sizes "
        f"(bytes: {wire['bytes']}), nothing opened, signed, trained or stored; {wire['rounds_counted']} rounds "
        "after a first; round_s: the fastest of them."
    )
    return _merge(section, timing, wire_parts)


def _merge(section: Section, *parts: Section) -> Section:
    for part in parts:
        section.notes.extend(["", part.title + ":", *_indented(part), *(f"  {note}" for note in part.notes)])
    return section


def _indented(timing: Section) -> list[str]:
    from bench.results import table

    return table(timing.rows).splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_round")
    parser.add_argument("--turbines", type=int, required=True)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument(
        "--node-dir", type=Path, help="the turbines' buffers and state (simulate.run.SimulationSettings)"
    )
    parser.add_argument("--floor", action="store_true", help="measure the floor instead of the round")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.floor:
        result = floor_seconds(args.turbines)
    else:
        try:
            result = asyncio.run(_simulate(args.turbines, args.workdir, args.node_dir))
        finally:
            if args.node_dir is not None:
                shutil.rmtree(args.node_dir, ignore_errors=True)  # memory-backed: give it back
        result["critical_path"] = critical_path(result)
        del result["logs"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
