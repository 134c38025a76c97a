"""Flower's simulation engine and `nacelle simulate`, side by side, in one invocation.

Same autoencoder (`learning.model`), same data (each client's 256 windows of the simulator's
turbine of that index), same epochs (5), batch size (32) and learning rate, same number of
clients, every client training every round, FedAvg. Flower runs its Ray backend with the
`num_cpus` per client that made it fastest on this machine (`FLOWER_NUM_CPUS`; measured, see
README), each client `learning.training.train_local` on one torch thread. Nacelle runs
`nacelle simulate` in full: brokers, TLS, signed updates, aggregators, cloud core, InfluxDB;
the turbines' own buffers and state in /dev/shm where the machine has it, as in fleet_round.
Seconds per round are the mean over rounds after the first (both have start-up work in round 1:
Ray's actors, Nacelle's first model download), with round 1 and the whole wall time beside them;
for both, a round is from the end of the one before to its own end (Flower's server-side
evaluation after aggregating; the cloud core's decision), so the work between rounds counts.

Flower lives in its own virtualenv, `.bench-venv/flower` (git-ignored), made on first use with
pinned versions; it is never a dependency of Nacelle or of its tests. torch is pinned to
Nacelle's exact version: any other would download gigabytes.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.fleet_round import node_dir
from bench.machine import REPO
from bench.results import Section

FLOWER_VENV = REPO / ".bench-venv" / "flower"
FLOWER_REQUIREMENTS = ["flwr[simulation]==1.42.0", "torch==2.13.0"]
FLOWER_NUM_CPUS = 1.0  # Ray CPUs per client: on 2 cores, two clients at a time beat one with both cores
WINDOWS = 256
# (client counts, rounds)
SIZES = {"tiny": ([4], 2), "small": ([100], 3), "full": ([100, 1000], 3)}


def flower_python() -> Path:
    """The Flower virtualenv's python, created and installed first if missing."""
    python = FLOWER_VENV / "bin" / "python"
    stamp = FLOWER_VENV / ".installed"
    wanted = " ".join(FLOWER_REQUIREMENTS)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(FLOWER_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *FLOWER_REQUIREMENTS], check=True)
    stamp.write_text(wanted)
    return python


def _versions(python: Path) -> str:
    code = (
        "import flwr, ray, torch; print(f'flwr {flwr.__version__}, ray {ray.__version__}, torch {torch.__version__}')"
    )
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def write_data(path: Path, clients: int) -> None:
    """Client i's windows: those `nacelle simulate` gives its i-th turbine (seed 0) before night 1."""
    from simulate.turbines import fleet_members, fleet_profile
    from simulate.vibration import turbine_features

    members = fleet_members(clients, 2)
    data = np.stack([turbine_features(fleet_profile(0, i, m.region_index), WINDOWS) for i, m in enumerate(members)])
    np.save(path, data.astype(np.float32))


def run_flower(clients: int, rounds: int, workdir: Path, num_cpus: float = FLOWER_NUM_CPUS) -> dict[str, Any]:
    python = flower_python()
    data = workdir / f"flower-data-{clients}.npy"
    write_data(data, clients)
    out = workdir / f"flower-{clients}.json"
    began = time.time()
    command = [
        str(python),
        str(REPO / "bench" / "flower_app.py"),
        *["--data", str(data), "--clients", str(clients), "--rounds", str(rounds)],
        *["--num-cpus", str(num_cpus), "--out", str(out)],
    ]
    log = workdir / f"flower-{clients}.log"
    with open(log, "w") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=workdir, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"Flower failed ({result.returncode}); see {log}")
    times = json.loads(out.read_text())
    ended = times["ended"]  # ended[0]: before round 1
    return {
        "rounds_s": [b - a for a, b in itertools.pairwise(ended)],
        "wall_s": time.time() - began,
        "versions": _versions(python),
    }


def run_nacelle(clients: int, rounds: int, workdir: Path) -> dict[str, Any]:
    """`nacelle simulate`, the turbines' own files in memory as in the fleet round benchmark
    (Flower's clients keep theirs in memory too)."""
    summary = workdir / f"nacelle-{clients}.json"
    nodes = node_dir()
    command = [
        str(Path(sys.executable).with_name("nacelle")),
        "simulate",
        *["--turbines", str(clients), "--nights", str(rounds), "--windows", str(WINDOWS), "--epochs", "5"],
        *["--no-evaluation", "--workdir", str(workdir / f"nacelle-{clients}"), "--summary-json", str(summary)],
        *(["--node-dir", str(nodes)] if nodes else []),
    ]
    began = time.time()
    log = workdir / f"nacelle-{clients}.log"
    try:
        with open(log, "w") as handle:
            result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    finally:
        if nodes is not None:
            shutil.rmtree(nodes, ignore_errors=True)
    if result.returncode != 0:
        raise RuntimeError(f"nacelle simulate failed ({result.returncode}); see {log}")
    return {"rounds_s": nacelle_periods(json.loads(summary.read_text())["rounds"]), "wall_s": time.time() - began}


def nacelle_periods(records: list[dict[str, Any]]) -> list[float]:
    """Seconds per round as Flower's are measured, from one round's end to the next's: round 1
    from its opening, each later one from the previous round's close, so the cloud's work
    between rounds (storing and publishing the model, metrics, opening the next) counts."""
    ends = [records[0]["opened_at"]] + [record["closed_at"] for record in records]
    return [later - earlier for earlier, later in itertools.pairwise(ends)]


def _steady(rounds_s: list[float]) -> float:
    later = rounds_s[1:] or rounds_s
    return sum(later) / len(later)


def run(size: str, workdir: Path) -> Section:
    counts, rounds = SIZES[size]
    workdir.mkdir(parents=True, exist_ok=True)
    section = Section("flower", f"Flower simulation vs nacelle simulate, seconds per round ({rounds} rounds)")
    versions = ""
    for clients in counts:
        flower = run_flower(clients, rounds, workdir)
        nacelle = run_nacelle(clients, rounds, workdir)
        versions = flower["versions"]
        section.add(
            clients=clients,
            flower_s_per_round=_steady(flower["rounds_s"]),
            nacelle_s_per_round=_steady(nacelle["rounds_s"]),
            flower_over_nacelle=_steady(flower["rounds_s"]) / _steady(nacelle["rounds_s"]),
            flower_round1_s=flower["rounds_s"][0],
            nacelle_round1_s=nacelle["rounds_s"][0],
            flower_wall_s=flower["wall_s"],
            nacelle_wall_s=nacelle["wall_s"],
        )
    section.notes.append(
        f"Flower: {versions}, Ray backend, {FLOWER_NUM_CPUS:g} CPU per client, learning.training.train_local per "
        "client. Nacelle: nacelle simulate with TLS, signed updates, brokers, aggregators, cloud core and InfluxDB, "
        "the turbines' own buffers and state in /dev/shm (as in fleet_round), "
        f"{WINDOWS} windows per client (+8 a night recorded live). s_per_round: mean of rounds 2.., each from the "
        "previous round's end to its own; wall: everything from start to exit."
    )
    return section


if __name__ == "__main__":  # python -m bench.flower: make the virtualenv only
    print(flower_python(), _versions(flower_python()), file=sys.stderr)
    os._exit(0)
