"""The cloud core daemon: opens rounds, collects the regions' partials, merges them into the next
global model, signs and republishes it (retained), keeps every version, writes metrics.

The open round is persisted (`open_round.json` plus each verified partial under `partials/`),
so a restart mid-round resumes the same round instead of losing what the regions sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_core.alerts import AlertIngest
from cloud_core.config import CloudConfig
from cloud_core.holdout import load_holdout
from cloud_core.influx import metrics_writer
from cloud_core.metrics import round_points
from cloud_core.model_store import ModelStore, ModelVersion, weights_digest
from cloud_core.rounds import CloudRound, QuorumVerdict, RoundRecord, guard_verdict, quorum_verdict, round_record
from cloud_core.schedule import next_round_time
from learning.model import AutoencoderShape, Weights, initial_weights, weight_shapes
from learning.training import reconstruction_errors
from nacelle.files import write_atomically
from nacelle.mqtt import MqttSession, SessionSpec
from telemetry import MetricsWriteError, MetricsWriter
from wire.envelope import Kind, open_envelope, seal
from wire.errors import RejectedMessage, RejectReason
from wire.messages import (
    ModelRelease,
    RoundAnnouncement,
    model_envelope,
    parse_partial,
    round_envelope,
)
from wire.registry import FleetRegistry, NodeStatus, RegistryError
from wire.signing import load_private_key
from wire.topics import ALERT_FILTER, MODEL_TOPIC, PARTIAL_FILTER, ROUND_TOPIC, alert_topic_ids, region_of_partial_topic

log = logging.getLogger(__name__)


class CloudCore:
    def __init__(
        self,
        config: CloudConfig,
        registry: FleetRegistry,
        signing_key: Ed25519PrivateKey,
        *,
        metrics: MetricsWriter | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self._sleep = sleep
        self.registry = registry
        self._key = signing_key
        self._clock = clock
        self.metrics = metrics
        self.shape = AutoencoderShape(config.model.n_features, config.model.hidden, config.model.latent)
        self._shapes = weight_shapes(self.shape)
        self.regions = frozenset(config.regions or registry.regions)
        unknown = self.regions - set(registry.aggregators)
        if unknown:
            raise ValueError(f"regions {sorted(unknown)} have no aggregator in the fleet registry")
        self.store = ModelStore(config.state_dir)
        self._round_log = config.state_dir / "rounds.jsonl"
        self._open_path = config.state_dir / "open_round.json"
        self._closing_path = config.state_dir / "closing_round.json"
        self._partials_dir = config.state_dir / "partials"
        latest = self.store.latest(list(self._shapes))
        if latest is None:
            weights = initial_weights(self.shape, config.model.init_seed)
            latest = (
                ModelVersion(0, 0, -1, clock(), weights_digest(weights), {"origin": "init"}),
                weights,
            )
            self.store.save(*latest)
        self.model, self.weights = latest
        self._holdout = load_holdout(config.guard.holdout_path, self.shape) if config.guard.holdout_path else None
        self._round_changed = asyncio.Event()
        self._published_version: int | None = None
        # Set once the first connection has republished the model: a round is announced after
        # it (the session counts as connected before its on_connect has run).
        self._model_announced = asyncio.Event()
        self.partials_refused = 0
        # Alerts go to InfluxDB whether or not a round is open (cloud_core.alerts).
        self.alerts = AlertIngest(registry, config.alerts, metrics, clock=clock)
        # Before the session starts: partials queued by the broker while we were down arrive
        # as soon as it connects, and must find their round open.
        self.round: CloudRound | None = self._resume_open_round()
        self.session = MqttSession(
            SessionSpec(
                client_id="nacelle-cloud",
                endpoint=config.broker,
                subscriptions=(PARTIAL_FILTER, ALERT_FILTER),
                manual_ack=True,  # a partial is on disk before the broker forgets it
                ack_after=self.alerts.persist,  # and an alert's point in the metrics spool
            ),
            handler=self._on_message,
            on_connect=self._on_connect,
        )

    @classmethod
    def from_config(cls, config: CloudConfig) -> CloudCore:
        metrics = metrics_writer(config.influx, config.state_dir)
        return cls(
            config,
            FleetRegistry.load(config.registry_path),
            load_private_key(config.private_key_path),
            metrics=metrics,
        )

    @property
    def cloud_id(self) -> str:
        return self.registry.cloud.member_id

    def last_round_id(self) -> int:
        if not self._round_log.exists():
            return 0
        lines = self._round_log.read_text().splitlines()
        return json.loads(lines[-1])["round"] if lines else 0

    def seconds_until_scheduled_round(self) -> float:
        """Time left until the next round is due by the schedule (cron, or interval after the
        last logged round); 0 when a round is open (it resumes at once) or one is overdue."""
        if self.round is not None:
            return 0.0
        lines = self._round_log.read_text().splitlines() if self._round_log.exists() else []
        last_opened = float(json.loads(lines[-1])["opened_at"]) if lines else None
        schedule, now = self.config.schedule, self._clock()
        due = next_round_time(
            now, cron=schedule.cron, timezone=schedule.timezone, interval_s=schedule.interval_s, last_opened=last_opened
        )
        return max(0.0, due - now)

    def _refresh_model(self) -> None:
        """Pick up a version written by `nacelle model rollback` while we run: the newest
        version on disk is the fleet's model, never our older copy in memory."""
        newest = self.store.versions()
        if newest and newest[-1] > self.model.version:
            self.model, self.weights = self.store.load(newest[-1], list(self._shapes))
            log.info("cloud now serves model v%d (%s)", self.model.version, self.model.details.get("event", "stored"))

    async def _publish_model(self) -> None:
        self._refresh_model()
        self._published_version = self.model.version
        release = ModelRelease(self.model.version, self.model.round_id, self.model.parent_version, self.weights)
        payload = seal(model_envelope(release, self.cloud_id, self.model.created_at), self._key)
        await self.session.publish(MODEL_TOPIC, payload, retain=True)

    async def _on_connect(self) -> None:
        """Both retained messages again, the model first: a broker that restarted without its
        persistence has neither, and a node needs the model a round is announced from."""
        await self._publish_model()
        if self.round is not None:
            await self._publish_round(self.round.announcement)
        self._model_announced.set()

    async def _publish_round(self, announcement: RoundAnnouncement) -> None:
        await self.session.publish(
            ROUND_TOPIC, seal(round_envelope(announcement, self.cloud_id), self._key), retain=True
        )

    # -- partials ---------------------------------------------------------------------------

    async def _on_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        if alert_topic_ids(str(message.topic)) is not None:
            await self.alerts.handle(payload, str(message.topic))
            return
        topic_region = region_of_partial_topic(str(message.topic)) or "?"
        try:
            self._accept_partial(payload, topic_region)
        except RejectedMessage as exc:
            self.partials_refused += 1
            log.warning("cloud refused partial on region %s's topic: %s", topic_region, exc)
            return
        if self.round is not None:
            write_atomically(self._partials_dir / f"{topic_region}.msgpack", payload)
        self._round_changed.set()

    def _accept_partial(self, payload: bytes, topic_region: str) -> None:
        aggregator = self.registry.aggregators.get(topic_region)

        envelope = open_envelope(
            payload,
            max_bytes=self.config.max_partial_bytes,
            keys=self.registry.keys_for(*([aggregator.member_id] if aggregator else [])),
            expected_kind=Kind.PARTIAL,
        )
        if envelope.region != topic_region:
            raise RejectedMessage(RejectReason.TOPIC_MISMATCH, f"partial of {envelope.region!r} on {topic_region!r}")
        if self.round is None:
            raise RejectedMessage(RejectReason.NO_OPEN_ROUND, f"partial for round {envelope.round_id}, none open")
        partial = parse_partial(envelope, self._shapes)
        self.round.add(partial)
        log.info(
            "cloud got region %s's partial for round %d: %d/%d nodes, weight %.0f",
            partial.region,
            partial.round_id,
            partial.accepted,
            partial.expected,
            partial.total_weight,
        )

    # -- rounds -----------------------------------------------------------------------------

    def _resume_open_round(self) -> CloudRound | None:
        if not self._open_path.exists():
            return None
        data = json.loads(self._open_path.read_text())
        cloud_round = CloudRound(RoundAnnouncement(**data), self.regions)
        self.round = cloud_round  # _accept_partial adds to it
        for path in sorted(self._partials_dir.glob("*.msgpack")):
            try:
                self._accept_partial(path.read_bytes(), path.stem)
            except RejectedMessage as exc:
                log.warning("cloud dropped stored partial %s: %s", path.name, exc)
        log.info(
            "cloud resumed round %d with %d partials",
            cloud_round.round_id,
            len(cloud_round.partials),
        )
        return cloud_round

    def _open_round(self) -> CloudRound:
        self._refresh_model()
        now = self._clock()
        schedule, plan = self.config.schedule, self.config.training
        announcement = RoundAnnouncement(
            round_id=self.last_round_id() + 1,
            base_version=self.model.version,
            opened_at=now,
            regional_deadline=now + schedule.regional_deadline_s,
            global_deadline=now + schedule.global_deadline_s,
            epochs=plan.epochs,
            batch_size=plan.batch_size,
            learning_rate=plan.learning_rate,
            codec=plan.codec,
            topk_fraction=plan.topk_fraction,
        )
        for stale in self._partials_dir.glob("*.msgpack"):
            stale.unlink()
        self._partials_dir.mkdir(parents=True, exist_ok=True)
        _write_json(self._open_path, announcement.__dict__)
        self.round = CloudRound(announcement, self.regions)
        return self.round

    async def run_round(self) -> RoundRecord:
        """Open (or resume) a round, wait for every region or the global deadline, publish."""
        await self._model_announced.wait()
        cloud_round = self.round or self._open_round()
        announcement = cloud_round.announcement
        if self.model.version != self._published_version:  # a rollback stored while we ran
            await self._publish_model()
        await self._publish_round(announcement)
        log.info(
            "cloud opened round %d from model v%d for regions %s",
            announcement.round_id,
            announcement.base_version,
            ", ".join(sorted(self.regions)),
        )
        while not cloud_round.complete():
            remaining = announcement.global_deadline - self._clock()
            if remaining <= 0:
                log.warning(
                    "cloud: round %d hit its global deadline; missing %s",
                    cloud_round.round_id,
                    sorted(self.regions - set(cloud_round.partials)),
                )
                break
            self._round_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._round_changed.wait(), timeout=min(remaining, 5.0))
        return await self._finish(cloud_round)

    def _verdict(
        self, cloud_round: CloudRound, candidate: Weights | None, quorum: QuorumVerdict
    ) -> tuple[str, str, float | None]:
        """(status, reason, holdout loss of the model the round leaves in place)."""
        current_loss = self._holdout_loss(self.weights)
        if candidate is None:
            return "empty", "no node contributed an update", current_loss
        if not quorum.met:
            return "quorum_failed", quorum.reason, current_loss
        if self.model.version != cloud_round.announcement.base_version:
            return "superseded", f"v{self.model.version} was stored during the round (a rollback)", current_loss
        candidate_loss = self._holdout_loss(candidate)
        if candidate_loss is not None and current_loss is not None:
            refusal = guard_verdict(candidate_loss, current_loss, self.config.guard.max_loss_increase)
            if refusal:
                return "guard_refused", refusal, current_loss
        return "published", "", candidate_loss

    def _holdout_loss(self, weights: Weights) -> float | None:
        if self._holdout is None:
            return None
        return float(reconstruction_errors(weights, self._holdout, self.shape).mean())

    def _finished_before_a_crash(self, cloud_round: CloudRound) -> bool:
        """The newest stored version is this round's own result: the cloud core stored it, then
        died before logging the round. Adopt it rather than apply the round a second time."""
        return (
            self.model.round_id == cloud_round.round_id
            and self.model.parent_version == cloud_round.announcement.base_version
            and self.model.details.get("event") == "published"
        )

    def _closing_time(self, round_id: int) -> float:
        """When the round first closed. A cloud core that died after writing the round's metrics
        and before logging the round closes it again: its points, written again at the same
        time, are the same InfluxDB points (series and time) and stored once, not twice."""
        with contextlib.suppress(FileNotFoundError):
            closing = json.loads(self._closing_path.read_text())
            if closing["round_id"] == round_id:
                return float(closing["closed_at"])
        now = self._clock()
        _write_json(self._closing_path, {"round_id": round_id, "closed_at": now})
        return now

    async def _finish(self, cloud_round: CloudRound) -> RoundRecord:
        self._refresh_model()
        already_stored = self._finished_before_a_crash(cloud_round)
        if already_stored:  # merge again from its parent: same partials, same result, stored once
            log.warning("cloud: round %d was stored as v%d before a restart", cloud_round.round_id, self.model.version)
            self.model, self.weights = self.store.load(self.model.parent_version, list(self._shapes))
        parent = self.model
        candidate = cloud_round.merged_weights(self.weights, self.config.server_learning_rate)
        quorum = quorum_verdict(cloud_round, self.config.quorum.min_node_share, self.config.quorum.min_region_share)
        status, reason, holdout_loss = self._verdict(cloud_round, candidate, quorum)
        if reason:
            log.warning("cloud: round %d keeps model v%d: %s", cloud_round.round_id, parent.version, reason)
        now = self._closing_time(cloud_round.round_id)
        published = status == "published" and candidate is not None
        record = round_record(
            cloud_round,
            parent.version + 1 if published else parent.version,
            status,
            now,
            self.partials_refused,
            reason=reason,
            quorum=quorum,
            holdout_loss=holdout_loss,
            nodes_suspended=self._nodes_suspended(),
        )
        if published and candidate is not None:
            self.model = ModelVersion(
                record.model_version,
                cloud_round.round_id,
                parent.version,
                now,
                weights_digest(candidate),
                {
                    "event": "published",
                    "codec": cloud_round.announcement.codec,
                    "regions": record.regions,
                    "updates_accepted": record.updates_accepted,
                    "train_loss_mean": record.train_loss_mean,
                    "holdout_loss": holdout_loss,
                },
            )
            self.weights = candidate
            if already_stored:
                self.model = self.store.load(self.model.version, [])[0]
            else:
                self.store.save(self.model, candidate)
            await self._publish_model()
        written = await self._write_metrics(record, cloud_round, parent.version)
        record = RoundRecord(**{**record.__dict__, "points_written": written})
        with open(self._round_log, "a") as handle:
            handle.write(json.dumps(record.to_json()) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._open_path.unlink(missing_ok=True)
        self._closing_path.unlink(missing_ok=True)
        self.round = None
        self.partials_refused = 0
        log.info(
            "cloud closed round %d: %s v%d, %d updates accepted, %d refused, %.1fs",
            record.round,
            record.status,
            record.model_version,
            record.updates_accepted,
            record.updates_rejected,
            record.seconds,
        )
        return record

    def _nodes_suspended(self) -> int:
        try:
            registry = FleetRegistry.load(self.config.registry_path)
        except (OSError, RegistryError):
            registry = self.registry
        return sum(1 for node in registry.nodes.values() if node.status is NodeStatus.SUSPENDED)

    async def _write_metrics(self, record: RoundRecord, cloud_round: CloudRound, parent_version: int) -> int:
        if self.metrics is None:
            return 0
        points = round_points(record, cloud_round, parent_version)
        try:
            return await asyncio.to_thread(self.metrics.write, points)
        except MetricsWriteError as exc:
            log.error("cloud could not write round %d metrics to InfluxDB: %s", record.round, exc)
            return exc.accepted

    async def run(self, max_rounds: int | None = None, *, resume_schedule: bool = False) -> list[RoundRecord]:
        """Run rounds on the schedule until cancelled or `max_rounds` are done. With `max_rounds`
        (`--once`, `--rounds N`) or an interval schedule the first round opens at once, unless
        `resume_schedule` asks to keep the cadence of the round log (a restart adds no round);
        a cron daemon waits for its first firing. An open round always resumes at once."""
        session = asyncio.create_task(self.session.run())
        at_once = (max_rounds is not None or self.config.schedule.interval_s is not None) and not resume_schedule
        rounds = asyncio.create_task(self._run_rounds(max_rounds, at_once))
        try:
            await asyncio.wait([session, rounds], return_when=asyncio.FIRST_COMPLETED)
            if session.done() and not rounds.done():
                # A session ends only by raising (a publish its broker refused): without it the
                # rounds would wait for the model's first publication forever.
                rounds.cancel()
                session.result()
            return await rounds
        finally:
            rounds.cancel()
            session.cancel()
            await asyncio.gather(session, rounds, return_exceptions=True)
            await self.alerts.close()
            if self.metrics is not None:
                self.metrics.close()

    async def _run_rounds(self, max_rounds: int | None, at_once: bool) -> list[RoundRecord]:
        records: list[RoundRecord] = []
        while max_rounds is None or len(records) < max_rounds:
            if records or not at_once:
                delay = self.seconds_until_scheduled_round()
                if delay > 0:
                    log.info("cloud: next round in %.0fs", delay)
                await self._sleep(delay)
            records.append(await self.run_round())
        return records


def _write_json(path: Path, data: dict) -> None:
    write_atomically(path, json.dumps(data).encode())
