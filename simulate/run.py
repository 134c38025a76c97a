"""`nacelle simulate`: a whole fleet on one machine. Real mosquitto brokers (one per region,
bridged to a cloud broker), a real InfluxDB, one real aggregator process per region, the real
cloud core process, and every turbine an `EdgeNode` with its own MQTT client id, key, TLS client
certificate, buffer and synthetic vibration. The turbines share one process and one training thread: that is the only
shortcut, and nothing that crosses the wire changes because of it."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import torch

from broker import FleetBrokers, FleetSecurity, start_fleet_brokers
from cloud_core.config import TrainingPlanConfig
from cloud_core.model_store import ModelStore
from edge_node.config import EdgeConfig
from edge_node.node import EdgeNode
from learning.model import AutoencoderShape, weight_shapes
from learning.training import TrainingConfig
from nacelle.config import BrokerEndpoint, build_config, write_config
from nacelle.keys import (
    OBSERVER_ID,
    aggregator_id,
    create_fleet,
    key_path,
    region_names,
    registry_path,
    split_turbines,
)
from nacelle.processes import ServiceError, start_process, stop_process
from nacelle.tls import client_context
from simulate.batch_trainer import BatchTrainer
from simulate.evaluation import detection_summary, eval_windows, score_model, train_baselines
from simulate.influxdb_server import RunningInfluxDB, start_influxdb
from simulate.live import keep_running
from simulate.report import write_report
from simulate.vibration import TurbineProfile, turbine_features, turbine_profile
from wire.envelope import Kind, open_envelope
from wire.registry import FleetRegistry
from wire.signing import load_private_key
from wire.topics import RegionTopics

log = logging.getLogger(__name__)

# Local-only baselines cost one model per turbine: past this many, an evenly spread sample of
# the fleet is evaluated (the federated model is the same for all, so the sample is fair).
EVAL_MAX_TURBINES = 2000


@dataclass(frozen=True)
class SimulationSettings:
    turbines: int = 200
    regions: int = 2
    nights: int = 2
    workdir: Path = Path("runs/sim")
    summary_json: Path | None = None
    epochs: int = TrainingPlanConfig().epochs
    learning_rate: float = TrainingPlanConfig().learning_rate
    windows_per_turbine: int = 256
    seed: int = 0
    influx_url: str | None = None
    influx_database: str = "nacelle"
    # Rounds close as soon as every node has reported; the deadline only bounds a stuck run.
    regional_deadline_s: float = 600.0
    night_gap_s: float = 1.0
    evaluate: bool = True
    # After the last night, serve the fleet until Ctrl-C, a round every live_interval_s (simulate.live).
    keep_running: bool = False
    live_interval_s: float = 600.0

    def __post_init__(self) -> None:
        if self.turbines < 1 or self.regions < 1 or self.nights < 1:
            raise ValueError("turbines, regions and nights must be at least 1")
        if self.live_interval_s <= 0:
            raise ValueError(f"the live round interval must be positive, got {self.live_interval_s}")
        if self.turbines < self.regions:
            raise ValueError(f"{self.turbines} turbines cannot fill {self.regions} regions")


def _say(message: str) -> None:
    print(message, flush=True)


async def _wait_online(endpoint: BrokerEndpoint, topic: str, registry: FleetRegistry, timeout_s: float) -> None:
    """Wait for a daemon's retained, signed `online` status."""
    client = aiomqtt.Client(endpoint.host, endpoint.port, tls_context=client_context(endpoint))
    async with asyncio.timeout(timeout_s), client:
        await client.subscribe(topic, qos=1)
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            envelope = open_envelope(payload, max_bytes=4096, keys=registry.public_key, expected_kind=Kind.STATUS)
            if envelope.body.get("state") == "online":
                return


def _toml(endpoint: BrokerEndpoint) -> dict[str, Any]:
    """A `[broker]` table: paths as strings, unset TLS fields left out (TOML has no null)."""
    return endpoint.model_dump(mode="json", exclude_none=True)


_MARKER = ".nacelle-simulation"
AfterNights = Callable[[list[dict[str, Any]]], Awaitable[None]]


def fleet_profile(fleet_seed: int, index: int, region_index: int) -> TurbineProfile:
    """The vibration profile of the `index`-th turbine (in node id order) of a simulated fleet."""
    return turbine_profile(fleet_seed * 1_000_003 + index, region_index)


def _raise_open_file_limit(turbines: int) -> None:
    """Every turbine holds a socket here and one in its regional broker (which inherits this
    limit): the usual soft limit of 1024 would stop a fleet of a thousand at connect time."""
    needed = turbines + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ServiceError(
            f"{turbines} turbines need about {needed} open files, but this user may open {hard}: "
            "raise the hard limit (ulimit -Hn, /etc/security/limits.conf) or simulate fewer"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class WorkdirError(ValueError):
    """The work directory holds something other than an earlier simulation."""


def _prepare_workdir(workdir: Path) -> None:
    """Empty the work directory of an earlier run, but never a directory we did not create."""
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / _MARKER).exists():
            raise WorkdirError(f"refusing to empty {workdir}: it is not a Nacelle simulation directory")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / _MARKER).touch()


class Simulation:
    def __init__(self, settings: SimulationSettings) -> None:
        self.settings = settings
        self.workdir = settings.workdir.resolve()
        self.region_list = region_names(settings.regions)
        self.daemons: list[Any] = []
        self.stack = ExitStack()
        self.profiles: dict[str, tuple[str, TurbineProfile]] = {}
        self.influx_url = settings.influx_url or ""
        # What simulate.live needs to describe and watch a fleet left running.
        self.processes: dict[str, subprocess.Popen[bytes]] = {}  # daemons by name (their log's)
        self.brokers: FleetBrokers | None = None
        self.influx: RunningInfluxDB | None = None  # None when --influx-url names one
        self.cloud_config: Path | None = None

    def start_daemon(self, name: str, args: list[str]) -> None:
        process = start_process([sys.executable, "-m", "nacelle", *args], self.workdir / "logs" / f"{name}.log")
        self.daemons.append(process)
        self.processes[name] = process
        self.stack.callback(stop_process, process)

    def _configs(self, brokers: FleetBrokers, registry: FleetRegistry, influx_url: str) -> tuple[dict[str, Path], Path]:
        fleet = self.workdir / "fleet"
        config_dir = self.workdir / "config"
        region_configs = {}
        for region in self.region_list:
            broker = brokers.regions[region]
            path = config_dir / f"region-{region}.toml"
            write_config(
                path,
                {
                    "region": region,
                    "registry_path": str(registry_path(fleet)),
                    "private_key_path": str(key_path(fleet, aggregator_id(region))),
                    "state_dir": str(self.workdir / "state" / f"region-{region}"),
                    "broker": _toml(broker.endpoint(aggregator_id(region))),
                },
            )
            region_configs[region] = path
        cloud_config = config_dir / "cloud.toml"
        write_config(
            cloud_config,
            {
                "registry_path": str(registry_path(fleet)),
                "private_key_path": str(key_path(fleet, "cloud")),
                "state_dir": str(self.workdir / "state" / "cloud"),
                "broker": _toml(brokers.cloud.endpoint(registry.cloud.member_id)),
                "schedule": {
                    "interval_s": self.settings.night_gap_s,
                    "regional_deadline_s": self.settings.regional_deadline_s,
                    "global_deadline_s": self.settings.regional_deadline_s + 60.0,
                },
                "training": {"epochs": self.settings.epochs, "learning_rate": self.settings.learning_rate},
                "influx": {"url": influx_url, "database": self.settings.influx_database},
            },
        )
        return region_configs, cloud_config

    def _build_fleet(
        self, registry: FleetRegistry, brokers: FleetBrokers, executor: ThreadPoolExecutor
    ) -> list[EdgeNode]:
        fleet = self.workdir / "fleet"
        trusted = registry.keys_for(registry.cloud.member_id)
        trainer = BatchTrainer(AutoencoderShape(), executor)
        nodes = []
        started = time.monotonic()
        for index, member in enumerate(sorted(registry.nodes.values(), key=lambda m: m.member_id)):
            broker = brokers.regions[member.region]
            config = build_config(
                EdgeConfig,
                {
                    "node_id": member.member_id,
                    "region": member.region,
                    # Every turbine authenticates with its own certificate (CN: its node id).
                    "broker": broker.endpoint(member.member_id),
                    "registry_path": registry_path(fleet),
                    "private_key_path": key_path(fleet, member.member_id),
                    "data_dir": self.workdir / "nodes" / member.member_id,
                    "device": "cpu",
                },
            )
            node = EdgeNode(
                config,
                signing_key=load_private_key(config.private_key_path),
                trusted=trusted,
                train_executor=executor,
                trainer=trainer,
            )
            profile = fleet_profile(self.settings.seed, index, self.region_list.index(member.region))
            node.buffer.append(turbine_features(profile, self.settings.windows_per_turbine))
            self.profiles[member.member_id] = (member.region, profile)
            nodes.append(node)
            if (index + 1) % max(1, len(registry.nodes) // 5) == 0:
                _say(
                    f"  fleet: {index + 1}/{len(registry.nodes)} turbines with data ({time.monotonic() - started:.1f}s)"
                )
        return nodes

    async def run(self, after_nights: AfterNights | None = None) -> list[dict[str, Any]]:
        """Start everything, run the nights, return the cloud's round records. `after_nights`
        runs before anything stops, the turbines still connected (--keep-running)."""
        settings = self.settings
        _prepare_workdir(self.workdir)
        _raise_open_file_limit(settings.turbines)
        fleet = self.workdir / "fleet"
        started = time.monotonic()
        registry = create_fleet(fleet, split_turbines(settings.turbines, self.region_list))
        fleet_s = time.monotonic() - started
        _say(
            f"nacelle simulate: {settings.turbines} turbines in regions {', '.join(self.region_list)}, "
            f"{settings.nights} nights; work directory {self.workdir}"
        )
        _say(f"  keys and TLS certificates: {len(registry.nodes)} turbines ({fleet_s:.1f}s)")
        brokers = start_fleet_brokers(
            self.region_list, self.workdir / "brokers", security=FleetSecurity.from_fleet(fleet)
        )
        self.stack.callback(brokers.stop)
        self.brokers = brokers
        brokers.wait_for_bridges(timeout_s=20)
        _say(
            f"  brokers: cloud :{brokers.cloud.port}, "
            + ", ".join(f"{r} :{b.port}" for r, b in brokers.regions.items())
        )
        influx_url = settings.influx_url
        if influx_url is None:
            influx = start_influxdb(self.workdir / "influxdb", database=settings.influx_database)
            self.stack.callback(influx.stop)
            self.influx = influx
            influx_url = influx.url
        self.influx_url = influx_url
        _say(f"  influxdb: {influx_url} database {settings.influx_database}")
        region_configs, cloud_config = self._configs(brokers, registry, influx_url)
        self.cloud_config = cloud_config
        for region, path in region_configs.items():
            self.start_daemon(f"region-{region}", ["region", "--config", str(path)])
        for region in self.region_list:
            broker = brokers.regions[region]
            topic = RegionTopics(region).status(aggregator_id(region))
            await _wait_online(broker.endpoint(OBSERVER_ID), topic, registry, 60)
        _say(f"  aggregators online: {len(self.region_list)}")

        torch.set_num_threads(1)  # the other core serves brokers and daemons
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-training")
        self.stack.callback(executor.shutdown, cancel_futures=True)
        nodes = self._build_fleet(registry, brokers, executor)
        node_tasks = [asyncio.create_task(node.session.run()) for node in nodes]
        try:
            await asyncio.wait_for(asyncio.gather(*(n.session.connected.wait() for n in nodes)), timeout=120)
            _say(f"  turbines connected: {len(nodes)}")
            self.start_daemon("cloud", ["cloud", "--config", str(cloud_config), "--rounds", str(settings.nights)])
            records = await self._follow_rounds(nodes)
            if after_nights is not None:
                await after_nights(records)
        finally:
            for task in node_tasks:
                task.cancel()
            await asyncio.gather(*node_tasks, return_exceptions=True)

        return records

    async def _follow_rounds(self, nodes: list[EdgeNode]) -> list[dict[str, Any]]:
        round_log = self.workdir / "state" / "cloud" / "rounds.jsonl"
        cloud = self.daemons[-1]
        printed = 0
        last_progress, last_trained = 0.0, 0
        _say(
            f"\n{'round':>5} {'model':>6} {'accepted':>9} {'rejected':>9} {'bytes/update':>13} "
            f"{'train loss':>11} {'seconds':>8}"
        )
        while True:
            records = [json.loads(line) for line in round_log.read_text().splitlines()] if round_log.exists() else []
            for record in records[printed:]:
                _say(_round_row(record))
            printed = len(records)
            if cloud.poll() is not None:
                if cloud.returncode != 0 or printed < self.settings.nights:
                    raise ServiceError(
                        f"cloud core exited with {cloud.returncode} after {printed} rounds; "
                        f"see {self.workdir / 'logs' / 'cloud.log'}"
                    )
                return records
            if time.monotonic() - last_progress > 5:
                trained = sum(1 for n in nodes if n.state.last_trained_round > printed)
                if 0 < trained < len(nodes) and trained != last_trained:
                    _say(f"  round {printed + 1}: {trained}/{len(nodes)} turbines trained and published")
                last_progress, last_trained = time.monotonic(), trained
            await asyncio.sleep(0.25)

    def evaluate(self) -> dict[str, Any]:
        """Detection quality of the final global model against local-only and centralized
        baselines on the same turbines (see simulate.evaluation)."""
        settings = self.settings
        shape = AutoencoderShape()
        names = list(weight_shapes(shape))
        store = ModelStore(self.workdir / "state" / "cloud")
        latest = store.latest(names)
        if latest is None:
            raise ServiceError("the cloud core stored no model")
        first = store.load(store.versions()[0], names)
        chosen = sorted(self.profiles)[:: max(1, math.ceil(len(self.profiles) / EVAL_MAX_TURBINES))]
        started = time.monotonic()
        _say(f"\nevaluating detection on {len(chosen)} turbines: federated vs local-only vs centralized")
        training = [turbine_features(self.profiles[t][1], settings.windows_per_turbine) for t in chosen]
        # Every baseline gets as many epochs as the federated run gave each node in total.
        plan = TrainingConfig(epochs=settings.epochs * settings.nights, learning_rate=settings.learning_rate)
        local, central = train_baselines(first[1], training, plan, shape, seed=settings.seed)
        _say(f"  baselines trained ({time.monotonic() - started:.1f}s)")
        turbines = [eval_windows(t, *self.profiles[t]) for t in chosen]
        models = {
            "federated": score_model("federated", [latest[1]], turbines, shape),
            "local_only": score_model("local_only", local, turbines, shape),
            "centralized": score_model("centralized", [central], turbines, shape),
        }
        _say(f"  scored ({time.monotonic() - started:.1f}s)")
        return {**detection_summary(models), "turbines_evaluated": len(chosen)}

    def summary(self, records: list[dict[str, Any]], detection: dict[str, Any] | None, wall_s: float) -> dict[str, Any]:
        settings = self.settings
        keys = (
            "round", "model_version", "status", "updates_accepted", "updates_rejected",
            "bytes_per_update_mean", "train_loss_mean", "seconds", "regions",
        )  # fmt: skip
        rounds = [{key: record[key] for key in keys} for record in records]
        ok = len(rounds) == settings.nights and all(r["status"] == "published" for r in rounds)
        summary = {
            "ok": ok,
            "turbines": settings.turbines,
            "regions": settings.regions,
            "region_names": self.region_list,
            "nights": settings.nights,
            "rounds": rounds,
            "influx": {
                "url": self.influx_url,
                "database": settings.influx_database,
                "points_written": sum(record["points_written"] for record in records),
            },
            "workdir": str(self.workdir),
            "wall_seconds": round(wall_s, 1),
        }
        if detection is not None:
            summary["detection"] = detection
        return summary


def _round_row(record: dict[str, Any]) -> str:
    return (
        f"{record['round']:>5} {'v' + str(record['model_version']):>6} {record['updates_accepted']:>9} "
        f"{record['updates_rejected']:>9} {record['bytes_per_update_mean']:>13,.0f} "
        f"{record['train_loss_mean']:>11.4f} {record['seconds']:>8.1f}"
    )


def _print_detection(detection: dict[str, Any]) -> None:
    models = detection["models"]
    _say(
        f"\ndetection ({detection['turbines_evaluated']} turbines; alert threshold per turbine at the "
        f"{detection['threshold_quantile']:.0%} quantile of its own normal windows)"
    )
    _say(f"{'model':<12} {'AUC':>6} {'precision':>10} {'recall':>7} {'false alarms':>13} {'unseen regime':>14}")
    for name in ("federated", "local_only", "centralized"):
        m = models[name]
        _say(
            f"{name.replace('_', '-'):<12} {m['auc']:>6.3f} {m['precision']:>10.3f} {m['recall']:>7.3f} "
            f"{m['false_alarm_rate_seen']:>13.1%} {m['false_alarm_rate_unseen']:>14.1%}"
        )
    for region, figures in sorted(models["federated"]["per_region"].items()):
        local = models["local_only"]["per_region"][region]
        central = models["centralized"]["per_region"][region]
        _say(
            f"  {region}: AUC federated {figures['auc']:.3f}, local-only {local['auc']:.3f}, "
            f"centralized {central['auc']:.3f}; unseen-regime false alarms federated "
            f"{figures['false_alarm_rate_unseen']:.1%}, local-only {local['false_alarm_rate_unseen']:.1%}"
        )


async def run_simulation(settings: SimulationSettings) -> dict[str, Any]:
    """Run a simulation and stop every process it started, also on errors and Ctrl-C."""
    # Thousands of turbines each logging every round would bury the table; warnings still show.
    logging.getLogger("edge_node").setLevel(logging.WARNING)
    logging.getLogger("broker").setLevel(logging.WARNING)
    started = time.monotonic()
    simulation = Simulation(settings)
    concluded: list[dict[str, Any]] = []

    async def serve(records: list[dict[str, Any]]) -> None:
        # The nights' summary first, while no live round can change the stored models yet.
        concluded.append(_conclude(simulation, records, started))
        await keep_running(simulation, lambda record: _say(_round_row(record)))

    with simulation.stack:
        records = await simulation.run(serve if settings.keep_running else None)
    # The services are stopped by now: the evaluation needs none of them, only the stored model.
    return concluded[0] if concluded else _conclude(simulation, records, started)


def _conclude(simulation: Simulation, records: list[dict[str, Any]], started: float) -> dict[str, Any]:
    """Evaluate, write the summary and the report, print the closing lines."""
    settings = simulation.settings
    detection = simulation.evaluate() if settings.evaluate else None
    summary = simulation.summary(records, detection, time.monotonic() - started)
    if detection is not None:
        _print_detection(detection)
    summary_path = settings.summary_json or simulation.workdir / "summary.json"
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2))
    _say(f"\nsummary: {summary_path.resolve()}")
    _say(f"report:  {write_report(summary, summary_path.with_name('report.html')).resolve()}")
    _say(
        f"{'OK' if summary['ok'] else 'FAILED'}: {len(summary['rounds'])} rounds in {summary['wall_seconds']}s, "
        f"{summary['influx']['points_written']} points written to InfluxDB"
    )
    return summary
