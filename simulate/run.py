"""`nacelle simulate`: a whole fleet on one machine. Real mosquitto brokers (one per region,
bridged to a cloud broker), a real InfluxDB, one real aggregator process per region, the real
cloud core process, and every turbine an `EdgeNode` with its own MQTT client id, key, TLS client
certificate, buffer and synthetic vibration. The turbines share one process, with one training
process per core and one that synthesises their sensors' windows: that is the only shortcut,
and nothing that crosses the wire changes because of it."""

from __future__ import annotations

import asyncio
import functools
import gc
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import numpy as np
import torch

from broker import FleetBrokers, FleetSecurity, start_fleet_brokers
from cloud_core.config import InfluxConfig, TrainingPlanConfig
from cloud_core.influx import SPOOL_DIR, influx_sender
from cloud_core.model_store import ModelStore
from edge_node.buffer import FeatureBuffer
from edge_node.config import EdgeConfig
from edge_node.node import EdgeNode, read_model
from learning.model import AutoencoderShape, weight_shapes
from learning.training import TrainingConfig
from nacelle.config import BrokerEndpoint, build_config, write_config
from nacelle.files import write_atomically
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
from simulate.batch_scorer import BatchScorer
from simulate.batch_trainer import MAX_BATCH, BatchTrainer, training_processes, training_workers
from simulate.drift_study import StudySettings, study_command
from simulate.evaluation import (
    FEDERATED_AUC_TARGET_GAP,
    detection_summary,
    eval_windows,
    score_model,
    train_baselines,
)
from simulate.incidents import NIGHTS_NEEDED, IncidentContext, Incidents
from simulate.influxdb_server import RunningInfluxDB, start_influxdb
from simulate.live import keep_running
from simulate.report import write_report
from simulate.sensor import Synthesis, TurbineSensor, alert_summary, plan_faults, stored_alert_count
from simulate.shared_model import SharedModelReader
from simulate.turbines import fleet_profile
from simulate.turns import Turns
from simulate.vibration import TurbineProfile, turbine_features
from telemetry import MetricsWriteError, spooled_points
from wire.envelope import Kind, open_envelope
from wire.messages import NodeAlert
from wire.registry import FleetRegistry
from wire.signing import load_private_key
from wire.topics import RegionTopics

log = logging.getLogger(__name__)

# Local-only baselines cost one model per turbine: past this many, an evenly spread sample of
# the fleet is evaluated (the federated model is the same for all, so the sample is fair).
EVAL_MAX_TURBINES = 2000
# A simulated night lasts seconds, not a day: a turbine may alert once a night (the nodes'
# hourly default would let each failing turbine alert once in a whole run).
SIM_ALERT_INTERVAL_S = 0.5
# The guard's holdout: a few windows of up to this many turbines, from a stretch of each one's
# stream that neither training (offset 0) nor the detection evaluation (1-7) uses.
HOLDOUT_TURBINES, HOLDOUT_WINDOWS_PER_TURBINE, HOLDOUT_OFFSET = 64, 8, 11
# Turbines handling a round's messages at once (simulate.turns): two training batches' worth,
# so that both training processes have a batch to start on early.
TURN_SLOTS = 2 * MAX_BATCH
# Allocations between collections of the youngest generation while the fleet runs (Python's
# default: 700): most of a round's objects die young, and a pass walks what is still alive.
GC_YOUNG_THRESHOLD = 50_000


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
    # An existing InfluxDB instead of a started one: v1 API with influx_database (which must
    # exist; as influx_user when it has authentication on), or v2 API (/api/v2/write) with org,
    # bucket and a token (in a file, or given here).
    influx_url: str | None = None
    influx_database: str = "nacelle"
    influx_user: str | None = None
    influx_password_file: Path | None = None
    influx_password: str | None = field(default=None, repr=False)
    influx_org: str | None = None
    influx_bucket: str | None = None
    influx_token_file: Path | None = None
    influx_token: str | None = field(default=None, repr=False)
    # Rounds close as soon as every node has reported; the deadline only bounds a stuck run.
    regional_deadline_s: float = 600.0
    night_gap_s: float = 1.0
    evaluate: bool = True
    # After the last night, serve the fleet until Ctrl-C, a round every live_interval_s (simulate.live).
    keep_running: bool = False
    live_interval_s: float = 600.0
    # Turbines that develop a fault during the run, and the windows every turbine records each
    # night between rounds, scores and may alert on (simulate.sensor).
    faulty_share: float = 0.05
    live_windows: int = 8
    fault_severity: float = 1.0  # as in the detection evaluation
    # Scheduled incidents for the dashboards to show (simulate.incidents); needs 4 nights.
    incidents: bool = False
    # Where the turbines' buffers and state go (default WORKDIR/nodes, emptied first). Each real
    # turbine writes to a disk of its own; ten thousand simulated ones share one, whose flushes
    # (the buffer's fsync, the renames of atomic writes) then queue behind each other: a
    # memory-backed directory (/dev/shm/...) takes that simulation artefact out of the round.
    # Aggregators and the cloud core keep theirs in WORKDIR/state, on the real disk.
    node_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.turbines < 1 or self.regions < 1 or self.nights < 1:
            raise ValueError("turbines, regions and nights must be at least 1")
        if not 0.0 <= self.faulty_share <= 1.0:
            raise ValueError(f"the share of faulty turbines must be in [0, 1], got {self.faulty_share}")
        if self.live_windows < 1 or not self.fault_severity > 0:
            raise ValueError("live windows per night and the fault severity must be positive")
        if self.live_interval_s <= 0:
            raise ValueError(f"the live round interval must be positive, got {self.live_interval_s}")
        if self.turbines < self.regions:
            raise ValueError(f"{self.turbines} turbines cannot fill {self.regions} regions")
        if self.incidents and (self.nights < NIGHTS_NEEDED or self.turbines < 3 * self.regions):
            raise ValueError(f"--incidents needs {NIGHTS_NEEDED} nights and at least 3 turbines per region")
        if self.influx_user is not None or self.influx_password_file is not None:
            if self.influx_url is None or self.influx_api == "v2":
                raise ValueError("--influx-user is for the v1 API of an existing server (--influx-url)")
            if self.influx_user is None:
                raise ValueError("--influx-password-file needs --influx-user")
            if (self.influx_password is None) == (self.influx_password_file is None):
                raise ValueError("--influx-user needs a password: --influx-password-file or INFLUX_PASSWORD, one")
            if self.influx_password_file is not None and not self.influx_password_file.is_file():
                raise ValueError(f"--influx-password-file {self.influx_password_file}: no such file")
        if self.influx_api == "v2":
            if self.influx_url is None:
                raise ValueError("the v2 API options need --influx-url: the simulator starts only an InfluxDB 1.x")
            if self.influx_org is None or self.influx_bucket is None:
                raise ValueError("the v2 API needs both --influx-org and --influx-bucket")
            if (self.influx_token is None) == (self.influx_token_file is None):
                raise ValueError("the v2 API needs a token: --influx-token-file or INFLUX_TOKEN, one of them")
            if self.influx_token_file is not None and not self.influx_token_file.is_file():
                raise ValueError(f"--influx-token-file {self.influx_token_file}: no such file")

    @property
    def influx_api(self) -> str:
        v2_options = (self.influx_org, self.influx_bucket, self.influx_token_file, self.influx_token)
        return "v2" if any(option is not None for option in v2_options) else "v1"


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


def raise_open_file_limit(turbines: int) -> None:
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
        self.node_dir = (settings.node_dir or settings.workdir / "nodes").resolve()
        self.region_list = region_names(settings.regions)
        self.daemons: list[Any] = []
        self.stack = ExitStack()
        self.profiles: dict[str, tuple[str, TurbineProfile]] = {}
        self.incidents: list[str] = []  # what --incidents did, for the summary
        self.sensors: dict[str, TurbineSensor] = {}
        self.started_at = time.time()
        # The nights' alerts as the turbines published them, and how many InfluxDB holds.
        self.alerts: list[NodeAlert] = []
        self.alerts_stored: int | None = None
        self.influx_url = settings.influx_url or ""
        self.influx_config = InfluxConfig()  # the cloud core's [influx], once InfluxDB is up
        # What simulate.live needs to describe and watch a fleet left running.
        self.processes: dict[str, subprocess.Popen[bytes]] = {}  # daemons by name (their log's)
        self.brokers: FleetBrokers | None = None
        self.influx: RunningInfluxDB | None = None  # None when --influx-url names one
        self.cloud_config: Path | None = None
        self.trainer: BatchTrainer | None = None  # the fleet's, once built (bench/ reads its timings)
        self.nodes: list[EdgeNode] = []

    @property
    def influx_target(self) -> str:
        """Where in InfluxDB the metrics go, for people: never the token."""
        settings = self.settings
        if settings.influx_api == "v1":
            return f"database {settings.influx_database}"
        return f"bucket {settings.influx_bucket} of org {settings.influx_org} (v2 API)"

    def start_daemon(self, name: str, args: list[str]) -> None:
        process = start_process([sys.executable, "-m", "nacelle", *args], self.workdir / "logs" / f"{name}.log")
        self.daemons.append(process)
        self.processes[name] = process
        self.stack.callback(stop_process, process)

    def _influx_config(self, url: str) -> InfluxConfig:
        settings = self.settings
        if settings.influx_api == "v1":
            if settings.influx_user is None:
                return InfluxConfig(url=url, database=settings.influx_database)
            password_file = settings.influx_password_file or self._secret_file(
                "influx-password", settings.influx_password
            )
            return InfluxConfig(
                url=url,
                database=settings.influx_database,
                username=settings.influx_user,
                password_file=password_file.resolve(),
            )
        token_file = settings.influx_token_file or self._secret_file("influx-token", settings.influx_token)
        return InfluxConfig(
            url=url, api="v2", org=settings.influx_org, bucket=settings.influx_bucket, token_file=token_file.resolve()
        )

    def _secret_file(self, name: str, secret: str | None) -> Path:
        """A secret that came from the environment, in a file (0600): the cloud core reads files."""
        path = self.workdir / "config" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, (secret or "").encode(), 0o600)
        return path

    def _configs(
        self, brokers: FleetBrokers, registry: FleetRegistry, influx: InfluxConfig
    ) -> tuple[dict[str, Path], Path]:
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
                    "regional_deadline_s": self.regional_deadline_s,
                    "global_deadline_s": self.regional_deadline_s + 60.0,
                },
                "training": {"epochs": self.settings.epochs, "learning_rate": self.settings.learning_rate},
                "influx": influx.model_dump(mode="json", exclude_none=True),
                "guard": {"holdout_path": str(self._write_holdout(registry))},
            },
        )
        return region_configs, cloud_config

    @property
    def regional_deadline_s(self) -> float:
        """With incidents a storm night leaves regions waiting for turbines that never report:
        close it after about twice what a round of this many turbines takes (~14 ms each)."""
        if self.settings.incidents:
            return min(self.settings.regional_deadline_s, 20.0 + 0.03 * self.settings.turbines)
        return self.settings.regional_deadline_s

    def _write_holdout(self, registry: FleetRegistry) -> Path:
        """The cloud's synthetic holdout for the publish guard: normal windows, never trained
        on, of an even sample of the fleet's turbines (the operator of a real fleet brings theirs)."""
        members = sorted(registry.nodes.values(), key=lambda m: m.member_id)
        step = max(1, len(members) // HOLDOUT_TURBINES)
        windows = [
            turbine_features(
                fleet_profile(self.settings.seed, index, self.region_list.index(member.region)),
                HOLDOUT_WINDOWS_PER_TURBINE,
                offset=HOLDOUT_OFFSET,
            )
            for index, member in list(enumerate(members))[::step]
        ]
        path = self.workdir / "state" / "cloud-holdout.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.concatenate(windows))
        return path

    def _build_fleet(
        self, registry: FleetRegistry, brokers: FleetBrokers, executor: ThreadPoolExecutor
    ) -> list[EdgeNode]:
        fleet = self.workdir / "fleet"
        trusted = registry.keys_for(registry.cloud.member_id)
        workers = training_workers(len(registry.nodes))
        training = training_processes(workers)
        self.stack.callback(training.shutdown, cancel_futures=True)
        trainer = BatchTrainer(AutoencoderShape(), training, workers=workers, expected=len(registry.nodes))
        self.trainer = trainer
        scorer = BatchScorer(AutoencoderShape(), executor, max_nodes=MAX_BATCH, expected=len(registry.nodes))
        turns = Turns(TURN_SLOTS)
        model_reader: SharedModelReader | None = None
        synthesis = Synthesis()
        self.stack.callback(synthesis.shutdown)
        settings = self.settings
        members = sorted(registry.nodes.values(), key=lambda m: m.member_id)
        faults = plan_faults(
            [m.member_id for m in members],
            settings.faulty_share,
            settings.nights,
            seed=settings.seed,
            severity=settings.fault_severity,
        )
        nodes = []
        started = time.monotonic()
        for index, member in enumerate(members):
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
                    "data_dir": self.node_dir / member.member_id,
                    "device": "cpu",
                    "alerts": {"min_interval_s": SIM_ALERT_INTERVAL_S},
                },
            )
            if model_reader is None:  # the same keys and limit for every turbine (its config's)
                model_reader = SharedModelReader(
                    functools.partial(
                        read_model,
                        max_bytes=config.max_message_bytes,
                        keys=trusted,
                        shapes=weight_shapes(AutoencoderShape()),
                    )
                )
            profile = fleet_profile(settings.seed, index, self.region_list.index(member.region))
            sensor = TurbineSensor(
                profile,
                FeatureBuffer(config.data_dir / "buffer", config.max_windows),
                settings.live_windows,
                faults.get(member.member_id),
                last_night=settings.nights,
                synthesis=synthesis,
            )
            node = EdgeNode(
                config,
                signing_key=load_private_key(config.private_key_path),
                trusted=trusted,
                train_executor=executor,
                trainer=trainer,
                scorer=scorer,
                feed=sensor,
                take_turn=turns,
                model_reader=model_reader,
            )
            # Recorded before the run; what the turbine records each night comes after.
            history = turbine_features(profile, settings.windows_per_turbine)
            node.buffer.append(history, recorded_at=self.started_at - 86_400)
            sensor.record(night=1)
            self.profiles[member.member_id] = (member.region, profile)
            self.sensors[member.member_id] = sensor
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
        if settings.node_dir is not None:
            _prepare_workdir(self.node_dir)
        raise_open_file_limit(settings.turbines)
        if settings.influx_url is not None:  # before anything starts: a wrong URL or name fails now
            _check_influx(self._influx_config(settings.influx_url))
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
        self.influx_config = influx_config = self._influx_config(influx_url)
        _say(
            f"  influxdb: {influx_url} {self.influx_target}" + ("" if self.influx else " (existing, not started here)")
        )
        region_configs, cloud_config = self._configs(brokers, registry, influx_config)
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
        self.nodes = nodes
        node_tasks = [asyncio.create_task(node.session.run()) for node in nodes]
        thresholds = gc.get_threshold()
        try:
            await asyncio.wait_for(asyncio.gather(*(n.session.connected.wait() for n in nodes)), timeout=120)
            _say(f"  turbines connected: {len(nodes)}")
            # The fleet's objects (millions at ten thousand turbines) live as long as the run:
            # frozen, the collector stops walking them, and it runs a fiftieth as often. Before,
            # its passes took 1.2-1.8 s of a 2,000-turbine round, on the event loop every turbine
            # shares (full passes 0.3-0.6 s each).
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
            self.start_daemon("cloud", ["cloud", "--config", str(cloud_config), "--rounds", str(settings.nights)])
            incidents = self._incidents(registry, brokers, nodes, node_tasks) if settings.incidents else None
            records = await self._follow_rounds(nodes, incidents)
            self._collect_alerts(nodes)
            if after_nights is not None:
                await after_nights(records)
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()  # a process that goes on (a test session) collects the fleet again
            for task in node_tasks:
                task.cancel()
            await asyncio.gather(*node_tasks, return_exceptions=True)

        return records

    def _collect_alerts(self, nodes: list[EdgeNode]) -> None:
        """The nights' alerts, now: the nights' cloud core wrote each one before it exited (a
        node scores a night's windows before its update, and the sensors record nothing past
        the last night), and InfluxDB stops before the summary."""
        self.alerts = sorted((a for n in nodes for a in n.scoring.recent_alerts), key=lambda a: a.window_ts)
        if self.settings.influx_api != "v1":
            return  # a v2 bucket is not read back here
        try:
            self.alerts_stored = stored_alert_count(
                self.influx_url,
                self.settings.influx_database,
                self.started_at,
                auth=self.influx_config.v1_credentials(),
            )
        except httpx.HTTPError as exc:
            log.warning("cannot count the alerts InfluxDB holds: %s", exc)

    def _incidents(
        self, registry: FleetRegistry, brokers: FleetBrokers, nodes: list[EdgeNode], tasks: list[asyncio.Task[None]]
    ) -> Incidents:
        fleet = self.workdir / "fleet"
        return Incidents(
            IncidentContext(
                registry_path=registry_path(fleet),
                registry=registry,
                nodes=nodes,
                node_tasks=tasks,
                store=ModelStore(self.workdir / "state" / "cloud"),
                cloud_endpoint=brokers.cloud.endpoint(registry.cloud.member_id),
                cloud_key=load_private_key(key_path(fleet, registry.cloud.member_id)),
                region_endpoint=lambda region, identity: brokers.regions[region].endpoint(identity),
                influx=self.influx_config,
                say=_say,
                happened=self.incidents,
            )
        )

    async def _follow_rounds(self, nodes: list[EdgeNode], incidents: Incidents | None = None) -> list[dict[str, Any]]:
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
                if incidents is not None:
                    await incidents.after_round(record["round"])
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
            "round", "model_version", "status", "opened_at", "closed_at", "updates_accepted",
            "updates_rejected", "bytes_per_update_mean", "train_loss_mean", "seconds", "regions",
        )  # fmt: skip
        rounds = [{key: record[key] for key in keys} for record in records]
        # The storm night of --incidents fails quorum, and the round open during the rollback
        # is superseded: that is the incidents working.
        expected = {"published", "quorum_failed", "superseded"} if settings.incidents else {"published"}
        ok = len(rounds) == settings.nights and all(r["status"] in expected for r in rounds)
        summary = {
            "ok": ok,
            "turbines": settings.turbines,
            "regions": settings.regions,
            "region_names": self.region_list,
            "nights": settings.nights,
            "rounds": rounds,
            "influx": {
                "url": self.influx_url,
                "api": settings.influx_api,
                "target": self.influx_target,
                "database": settings.influx_database if settings.influx_api == "v1" else None,
                "org": settings.influx_org,
                "bucket": settings.influx_bucket,
                # Points the cloud core could not deliver before it stopped: they wait in its
                # spool and go out when a cloud core runs on this state directory again.
                "points_spooled": spooled_points(self.workdir / "state" / "cloud" / SPOOL_DIR),
                "points_written": sum(record["points_written"] for record in records),
            },
            "workdir": str(self.workdir),
            "wall_seconds": round(wall_s, 1),
        }
        summary["alerts"] = alert_summary(self.alerts, self.sensors, self.alerts_stored)
        if settings.incidents:
            summary["incidents"] = list(self.incidents)
        if detection is not None:
            summary["detection"] = detection
        return summary


def _check_influx(config: InfluxConfig) -> None:
    """Fail at start, naming the cause, rather than spool every round's metrics for nothing."""
    with influx_sender(config) as sender:
        try:
            sender.check()
        except MetricsWriteError as exc:
            raise ServiceError(f"InfluxDB at {config.url} cannot take metrics: {exc}") from exc


def _print_alerts(alerts: dict[str, Any]) -> None:
    stored = "" if alerts["stored"] is None else f", {alerts['stored']} stored in InfluxDB"
    precision = "" if alerts["precision"] is None else f" (precision {alerts['precision']:.2f})"
    _say(
        f"\nalerts: {alerts['count']} sent{stored}; {alerts['from_faulty']} from turbines with a fault{precision}; "
        f"{alerts['faulty_turbines_alerted']} of {alerts['faulty_turbines']} faulty turbines alerted, "
        f"{alerts['healthy_turbines_alerted']} healthy ones did"
    )


def _round_row(record: dict[str, Any]) -> str:
    return (
        f"{record['round']:>5} {'v' + str(record['model_version']):>6} {record['updates_accepted']:>9} "
        f"{record['updates_rejected']:>9} {record['bytes_per_update_mean']:>13,.0f} "
        f"{record['train_loss_mean']:>11.4f} {record['seconds']:>8.1f}"
    )


def _print_detection(detection: dict[str, Any], settings: SimulationSettings) -> None:
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
    gap = models["centralized"]["auc"] - models["federated"]["auc"]
    if gap <= FEDERATED_AUC_TARGET_GAP:
        return
    try:
        study = StudySettings(
            turbines=settings.turbines,
            regions=settings.regions,
            nights=settings.nights,
            epochs=tuple(dict.fromkeys((settings.epochs, 60))),
            learning_rate=settings.learning_rate,
            windows_per_turbine=settings.windows_per_turbine,
            seed=settings.seed,
        )
    except ValueError:  # a fleet the study cannot take (fewer than 2 turbines in a region)
        return
    _say(
        f"federated AUC is {gap:.3f} below centralized (the target: within {FEDERATED_AUC_TARGET_GAP}). "
        f"Why, on this fleet (README, 'What the figures say'):\n  {study_command(study)}"
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
        for sensor in simulation.sensors.values():  # live rounds get live windows too
            sensor.last_night = None
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
        _print_detection(detection, settings)
    _print_alerts(summary["alerts"])
    summary_path = settings.summary_json or simulation.workdir / "summary.json"
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2))
    _say(f"\nsummary: {summary_path.resolve()}")
    _say(f"report:  {write_report(summary, summary_path.with_name('report.html')).resolve()}")
    influx = summary["influx"]
    _say(
        f"{'OK' if summary['ok'] else 'FAILED'}: {len(summary['rounds'])} rounds in {summary['wall_seconds']}s, "
        f"{influx['points_written']} points written to InfluxDB ({influx['target']})"
        + (f", {influx['points_spooled']} still spooled for it" if influx["points_spooled"] else "")
    )
    return summary
