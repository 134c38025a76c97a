"""`nacelle simulate --keep-running`: after the last night the simulated fleet stays up — brokers,
InfluxDB, aggregators, the turbines (still connected, still training when a round opens) and a
cloud core that goes on opening a round every `--live-interval` seconds, the first one that long
after the last night's round opened. `fleet.json` in the work directory says how to reach all of
it; the simulator then waits for Ctrl-C or SIGTERM, prints each round as it closes, and stops
everything (and removes fleet.json) when told to or when one of its processes dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nacelle.config import write_config
from nacelle.processes import ServiceError
from simulate.fleet_file import FLEET_FILE_NAME, BrokerAddress, LiveFleet, fleet_json, usage, write_fleet_file

if TYPE_CHECKING:
    from simulate.run import Simulation

LIVE_CLOUD = "cloud-live"  # its log: logs/cloud-live.log; the nights' cloud core logs to cloud.log
_POLL_S = 1.0


def live_cloud_config(cloud_config: Path, interval_s: float) -> Path:
    """The nights' cloud configuration with the live round interval, next to it."""
    values = tomllib.loads(cloud_config.read_text())
    values["schedule"]["interval_s"] = interval_s
    path = cloud_config.with_name(f"{LIVE_CLOUD}.toml")
    write_config(path, values)
    return path


def _running(processes: dict[str, subprocess.Popen[bytes]]) -> dict[str, subprocess.Popen[bytes]]:
    return {name: process for name, process in processes.items() if process.poll() is None}


def describe(simulation: Simulation, cloud_config: Path, daemons: dict[str, subprocess.Popen[bytes]]) -> LiveFleet:
    brokers, influx = simulation.brokers, simulation.influx
    assert brokers is not None, "keep_running runs after the brokers started"
    broker_pids = {f"broker-{b.name}": b.pid for b in brokers.brokers if b.pid is not None}
    influx_pid = {"influxd": influx.process.pid} if influx is not None else {}
    return LiveFleet(
        workdir=simulation.workdir,
        fleet_dir=simulation.workdir / "fleet",
        cloud_broker=BrokerAddress(brokers.cloud.host, brokers.cloud.port, brokers.cloud.pid),
        regional_brokers={r: BrokerAddress(b.host, b.port, b.pid) for r, b in brokers.regions.items()},
        nodes={node_id: region for node_id, (region, _) in simulation.profiles.items()},
        influx_url=simulation.influx_url,
        influx_database=simulation.settings.influx_database,
        influx_pid=None if influx is None else influx.process.pid,
        cloud_config=cloud_config,
        round_interval_s=simulation.settings.live_interval_s,
        processes={**broker_pids, **influx_pid, **{name: p.pid for name, p in daemons.items()}},
        simulator_pid=os.getpid(),
    )


async def keep_running(simulation: Simulation, show_round: Callable[[dict[str, Any]], None]) -> None:
    """Start the live cloud core, write fleet.json, then serve until Ctrl-C or SIGTERM."""
    assert simulation.cloud_config is not None, "keep_running runs after the nights"
    cloud_config = live_cloud_config(simulation.cloud_config, simulation.settings.live_interval_s)
    # --resume-schedule: the nights' cloud core has just exited; a new one must not open a round
    # at once, only when the live interval since the last one has passed.
    simulation.start_daemon(LIVE_CLOUD, ["cloud", "--config", str(cloud_config), "--resume-schedule"])
    daemons = _running(simulation.processes)
    path = simulation.workdir / FLEET_FILE_NAME
    data = fleet_json(describe(simulation, cloud_config, daemons))
    write_fleet_file(path, data)
    # Stale once the fleet stops: ports and pids a tool must not mistake for a live fleet.
    simulation.stack.callback(path.unlink, missing_ok=True)
    print(usage(data, path), flush=True)
    await _serve(simulation, daemons, show_round)
    print("\nstopping the fleet", flush=True)


async def _serve(
    simulation: Simulation, daemons: dict[str, subprocess.Popen[bytes]], show_round: Callable[[dict[str, Any]], None]
) -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    round_log = simulation.workdir / "state" / "cloud" / "rounds.jsonl"
    shown = len(_records(round_log))
    try:
        while not stopped.is_set():
            _check_alive(simulation, daemons)
            records = _records(round_log)
            for record in records[shown:]:
                show_round(record)
            shown = len(records)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), timeout=_POLL_S)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _records(round_log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in round_log.read_text().splitlines()] if round_log.exists() else []


def _check_alive(simulation: Simulation, daemons: dict[str, subprocess.Popen[bytes]]) -> None:
    """A fleet with a dead part is not what fleet.json promises: stop it all, saying which."""
    dead = [name for name, process in daemons.items() if process.poll() is not None]
    if simulation.brokers is not None:
        dead += [f"broker {b.name}" for b in simulation.brokers.brokers if not b.is_running]
    if simulation.influx is not None and simulation.influx.process.poll() is not None:
        dead.append("influxd")
    if dead:
        raise ServiceError(f"{', '.join(dead)} stopped; logs under {simulation.workdir / 'logs'}")
