"""The regional aggregator daemon: MQTT in, `validate_update` and `RegionalRound` in the middle,
a signed partial out at the deadline or as soon as every expected node is counted."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from learning.model import AutoencoderShape, weight_shapes
from learning.robust import Aggregate, RegionAggregate, WeightedUpdate, aggregate_region, fedavg_from_sum, flatten
from nacelle.files import write_atomically
from nacelle.mqtt import MqttSession, PublishRefused, SessionSpec
from regional_aggregator.config import RegionConfig
from regional_aggregator.refusal_counts import RefusalCountsFile, RoundRefusals
from regional_aggregator.round_state import RegionalRound
from regional_aggregator.update_log import UpdateLog
from regional_aggregator.validation import UpdateLimits, decode_logged, reread_logged, validate_update
from wire.envelope import Kind, open_envelope, seal
from wire.errors import RejectedMessage, RejectReason
from wire.messages import NodeUpdate, parse_round, partial_envelope, status_envelope
from wire.registry import FleetRegistry, NodeStatus, RegistryError
from wire.signing import load_private_key
from wire.topics import ROUND_TOPIC, RegionTopics

log = logging.getLogger(__name__)

# Reasons that only mean "the announcement has not reached us yet": hold, don't refuse.
_EARLY = {RejectReason.NO_OPEN_ROUND, RejectReason.FUTURE_ROUND}


class RegionalAggregator:
    def __init__(
        self,
        config: RegionConfig,
        registry: FleetRegistry,
        signing_key: Ed25519PrivateKey,
        *,
        shape: AutoencoderShape | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if config.region not in registry.aggregators:
            raise ValueError(f"region {config.region!r} has no aggregator in the fleet registry")
        self.config = config
        self.registry = registry
        self.aggregator_id = registry.aggregators[config.region].member_id
        self._key = signing_key
        self._clock = clock
        self._shapes = weight_shapes(shape or AutoencoderShape())
        self._limits = UpdateLimits(config.max_update_bytes, config.max_samples_per_update, config.max_clock_skew_s)
        self.topics = RegionTopics(config.region)
        self.round: RegionalRound | None = None
        self._deadline_task: asyncio.Task[None] | None = None
        self._registry_mtime = config.registry_path.stat().st_mtime_ns if config.registry_path.exists() else None
        self.rejections: Counter[str] = Counter()
        self.partials_published = 0
        self._last_accepted_at = 0.0  # when the open round counted its latest update
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.log = UpdateLog(config.state_dir / "updates", fsync=config.fsync_updates, group_commit=config.group_commit)
        self._held = sum(1 for _ in self.log.read(None))  # updates held for a round not yet announced
        self._state_path = config.state_dir / "aggregator.json"
        self.last_closed_round = (
            json.loads(self._state_path.read_text())["last_closed_round"] if self._state_path.exists() else 0
        )
        self._refusals_file = RefusalCountsFile(config.state_dir / "refusals.json")
        saved = self._refusals_file.load()
        # Refused before any round opened: counted in the next. Those of a round still to be
        # handed in are counted again when its retained announcement reopens it.
        self._unassigned_rejections = saved.counts if saved.round_id is None else Counter()
        self._reopened_refusals = saved if (saved.round_id or 0) > self.last_closed_round else None
        offline = seal(status_envelope(self.aggregator_id, config.region, "offline", -1, clock()), signing_key)
        self.session = MqttSession(
            SessionSpec(
                client_id=f"nacelle-region-{config.region}",
                endpoint=config.broker,
                subscriptions=(ROUND_TOPIC, self.topics.update_filter),
                will=aiomqtt.Will(self.topics.status(self.aggregator_id), offline, qos=1, retain=True),
                manual_ack=True,
                ack_after=self._sync_log if config.fsync_updates and config.group_commit else None,
            ),
            handler=self._on_message,
            on_connect=self._on_connect,
        )

    async def run(self) -> None:
        """The daemon until cancelled: its session, then the refusal counts saved."""
        try:
            await self.session.run()
        finally:
            self._refusals_file.flush()

    @classmethod
    def from_config(cls, config: RegionConfig) -> RegionalAggregator:
        return cls(
            config,
            FleetRegistry.load(config.registry_path),
            load_private_key(config.private_key_path),
        )

    async def _sync_log(self) -> None:
        """The update log on disk up to now, off the event loop: updates keep arriving meanwhile."""
        await asyncio.to_thread(UpdateLog.sync_paths, self.log.pending_sync())

    async def _on_connect(self) -> None:
        online = status_envelope(self.aggregator_id, self.config.region, "online", -1, self._clock())
        await self.session.publish(self.topics.status(self.aggregator_id), seal(online, self._key), retain=True)

    async def _on_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        topic = str(message.topic)
        if topic == ROUND_TOPIC:
            await self._on_round(payload)
        else:
            await self._on_update(payload, topic.rsplit("/", 1)[-1])

    async def _on_round(self, payload: bytes) -> None:
        cloud = self.registry.cloud
        try:
            envelope = open_envelope(
                payload,
                max_bytes=self.config.max_update_bytes,
                keys=self.registry.keys_for(cloud.member_id),
                expected_kind=Kind.ROUND,
            )
            announcement = parse_round(envelope)
        except RejectedMessage as exc:
            self._refuse("round announcement", cloud.member_id, exc)
            return
        current = self.round.round_id if self.round else self.last_closed_round
        if announcement.round_id <= current:
            return  # the retained announcement of a round we already handled
        if self.round is not None:
            await self._close(f"superseded by round {announcement.round_id}")
        self._reload_registry()
        expected = frozenset(
            n.member_id for n in self.registry.nodes_in(self.config.region) if n.status is NodeStatus.ACTIVE
        )
        self.round = RegionalRound.open(self.config.region, announcement, expected, self._shapes)
        self.round.rejected.update(self._unassigned_rejections)
        self._unassigned_rejections.clear()
        reopened, self._reopened_refusals = self._reopened_refusals, None
        if reopened is not None and reopened.round_id == announcement.round_id:
            self.round.rejected.update(reopened.counts)
        for stale in self.log.rounds():
            if stale != announcement.round_id:
                self.log.discard(stale)  # a round that closed, or one the cloud moved past while we were down
        replayed = 0
        for node_id, logged in self.log.read(announcement.round_id):
            replayed += self._replay(logged, node_id)
        log.info(
            "region %s opened round %d (base v%d, %d nodes expected, deadline in %.0fs%s)",
            self.config.region,
            announcement.round_id,
            announcement.base_version,
            len(expected),
            announcement.regional_deadline - self._clock(),
            f", {replayed} updates recovered from the log" if replayed else "",
        )
        self._deadline_task = asyncio.create_task(self._close_at_deadline(self.round))
        held = self.log.start_early_replay()
        self._held = 0
        for node_id, early_payload in held:
            await self._on_update(early_payload, node_id)
        self.log.finish_early_replay()  # only now: each is in its round's log, held again or refused
        if self.round is not None and self.round.complete():
            await self._close("every expected node reported")

    def _reload_registry(self) -> None:
        """Pick up the operator's suspensions (`nacelle registry suspend`) at each round."""
        path = self.config.registry_path
        try:
            mtime = path.stat().st_mtime_ns
            if mtime != self._registry_mtime:
                self.registry = FleetRegistry.load(path)
                self._registry_mtime = mtime
        except (OSError, RegistryError) as exc:
            log.error("region %s keeps its registry: reloading %s failed: %s", self.config.region, path, exc)

    def _validate(self, payload: bytes, topic_node_id: str) -> NodeUpdate:
        open_round = self.round
        return validate_update(
            payload,
            topic_node_id,
            region=self.config.region,
            registry=self.registry,
            open_round=open_round.announcement if open_round else None,
            counted=open_round.nodes if open_round else (),
            shapes=self._shapes,
            limits=self._limits,
            now=self._clock(),
            last_closed_round=self.last_closed_round,
        )

    def _replay(self, payload: bytes, node_id: str) -> int:
        """Count an update from the log again after a restart (it was accepted before)."""
        assert self.round is not None
        try:
            update = self._validate(payload, node_id)
        except RejectedMessage as exc:
            log.warning("region %s drops a logged update of %s on replay: %s", self.config.region, node_id, exc)
            return 0
        self.round.accept(update, len(payload))
        return 1

    async def _on_update(self, payload: bytes, topic_node_id: str) -> None:
        try:
            update = self._validate(payload, topic_node_id)
        except RejectedMessage as exc:
            if exc.reason in _EARLY and self._held < self.config.max_early_updates:
                self.log.append(None, topic_node_id, payload)
                self._held += 1
                return
            self._refuse("update", topic_node_id, exc)
            return
        open_round = self.round
        assert open_round is not None
        # On disk before the broker is acknowledged: MqttSession acks after this handler, and with
        # group commit only once the fsync that followed it (`_sync_log`) has returned.
        self.log.append(open_round.round_id, topic_node_id, payload)
        open_round.accept(update, len(payload))
        self._last_accepted_at = self._clock()
        if open_round.complete():
            await self._close("every expected node reported")

    def _refuse(self, what: str, sender: str, exc: RejectedMessage) -> None:
        self.rejections[exc.reason.value] += 1
        if self.round is not None:
            self.round.reject(exc.reason)
            self._refusals_file.save_soon(RoundRefusals(self.round.round_id, self.round.rejected))
        else:
            self._unassigned_rejections[exc.reason.value] += 1
            self._refusals_file.save_soon(RoundRefusals(None, self._unassigned_rejections))
        log.warning("region %s refused %s from %s: %s", self.config.region, what, sender, exc)

    async def _close_at_deadline(self, regional_round: RegionalRound) -> None:
        await asyncio.sleep(max(0.0, regional_round.announcement.regional_deadline - self._clock()))
        if self.round is regional_round:
            await self._close("deadline")

    def _aggregate(self, closing: RegionalRound) -> RegionAggregate | None:
        if not closing.nodes or closing.weighted_sum is None:
            return None
        codec = closing.announcement.codec
        policy = self.config.robust.policy()

        def read(only: Collection[str] | None, *, verify: bool = True) -> Iterator[WeightedUpdate]:
            seen: set[str] = set()
            for node_id, payload in self.log.read(closing.round_id):
                if node_id in closing.nodes and node_id not in seen and (only is None or node_id in only):
                    seen.add(node_id)
                    if verify:
                        update = decode_logged(payload, self.registry, self._shapes, self._limits, codec)
                    else:
                        update = reread_logged(payload, self._shapes, codec)
                    yield WeightedUpdate(node_id, float(update.num_samples), flatten(update.delta))

        if policy.aggregate is Aggregate.FEDAVG:
            # What changes the sum is verified again (the log is a file on disk); the pass that
            # only scores outliers reads back what this process verified and logged itself.
            def reader(only: Collection[str] | None) -> Iterator[WeightedUpdate]:
                return read(only, verify=only is not None)

            return fedavg_from_sum(closing.weighted_sum, closing.weights, closing.norms, reader, policy)
        return aggregate_region(lambda: read(None), closing.norms.values(), policy)

    async def _close(self, why: str) -> None:
        closing, self.round = self.round, None
        if closing is None:
            return
        if self._deadline_task is not None and self._deadline_task is not asyncio.current_task():
            self._deadline_task.cancel()
        closing_started = time.perf_counter()
        aggregate = self._aggregate(closing)
        partial = closing.to_partial(aggregate)
        payload = seal(partial_envelope(partial, self.aggregator_id, self._clock()), self._key)
        try:
            await self.session.publish(self.topics.partial, payload)
        except PublishRefused as exc:
            log.error(
                "region %s could not hand in round %d: %s. Its %d updates stay in the log: once the "
                "broker's ACL grants %s the topic, a restart closes the round again (until the cloud "
                "opens the next one)",
                self.config.region,
                closing.round_id,
                exc,
                len(closing.nodes),
                self.aggregator_id,
            )
            return
        self.last_closed_round = closing.round_id
        write_atomically(self._state_path, json.dumps({"last_closed_round": closing.round_id}).encode())
        self._refusals_file.save(RoundRefusals(None, self._unassigned_rejections))
        self.log.discard(closing.round_id)
        self.partials_published += 1
        suspects = sorted(
            (n.outlier_score, n.node_id) for n in partial.nodes if n.outlier_score > self.config.robust.outlier_warning
        )
        for score, node_id in suspects:
            log.warning(
                "region %s round %d: %s's update is %.1f times further from the consensus than is typical "
                "(suspected poisoning; `nacelle registry suspend %s` refuses its updates)",
                self.config.region,
                closing.round_id,
                node_id,
                score,
                node_id,
            )
        log.info(
            "region %s closed round %d (%s, %s): %d/%d nodes, %d refused, weight %.0f, partial %d bytes; "
            "last update counted %.2fs after the round opened, aggregated and published in %.2fs",
            self.config.region,
            closing.round_id,
            why,
            self.config.robust.aggregate.value,
            partial.accepted,
            partial.expected,
            sum(partial.rejected.values()),
            partial.total_weight,
            len(payload),
            max(0.0, self._last_accepted_at - closing.announcement.opened_at),
            time.perf_counter() - closing_started,
        )
