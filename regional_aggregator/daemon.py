"""The regional aggregator daemon: MQTT in, `validate_update` and `RegionalRound` in the middle,
a signed partial out at the deadline or as soon as every expected node is counted."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from learning.model import AutoencoderShape, weight_shapes
from nacelle.mqtt import MqttSession, SessionSpec
from regional_aggregator.config import RegionConfig
from regional_aggregator.round_state import RegionalRound
from regional_aggregator.validation import UpdateLimits, validate_update
from wire.envelope import Kind, open_envelope, seal
from wire.errors import RejectedMessage, RejectReason
from wire.messages import parse_round, partial_envelope, status_envelope
from wire.registry import FleetRegistry, NodeStatus
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
        self._early: list[tuple[bytes, str]] = []
        self._unassigned_rejections: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self.partials_published = 0
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self._state_path = config.state_dir / "aggregator.json"
        self.last_closed_round = (
            json.loads(self._state_path.read_text())["last_closed_round"] if self._state_path.exists() else 0
        )
        offline = seal(status_envelope(self.aggregator_id, config.region, "offline", -1, clock()), signing_key)
        self.session = MqttSession(
            SessionSpec(
                client_id=f"nacelle-region-{config.region}",
                endpoint=config.broker,
                subscriptions=(ROUND_TOPIC, self.topics.update_filter),
                will=aiomqtt.Will(self.topics.status(self.aggregator_id), offline, qos=1, retain=True),
            ),
            handler=self._on_message,
            on_connect=self._on_connect,
        )

    @classmethod
    def from_config(cls, config: RegionConfig) -> RegionalAggregator:
        return cls(
            config,
            FleetRegistry.load(config.registry_path),
            load_private_key(config.private_key_path),
        )

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
        expected = frozenset(
            n.member_id for n in self.registry.nodes_in(self.config.region) if n.status is NodeStatus.ACTIVE
        )
        self.round = RegionalRound.open(self.config.region, announcement, expected, self._shapes)
        self.round.rejected.update(self._unassigned_rejections)
        self._unassigned_rejections.clear()
        log.info(
            "region %s opened round %d (base v%d, %d nodes expected, deadline in %.0fs)",
            self.config.region,
            announcement.round_id,
            announcement.base_version,
            len(expected),
            announcement.regional_deadline - self._clock(),
        )
        self._deadline_task = asyncio.create_task(self._close_at_deadline(self.round))
        early, self._early = self._early, []
        for early_payload, node_id in early:
            await self._on_update(early_payload, node_id)

    async def _on_update(self, payload: bytes, topic_node_id: str) -> None:
        open_round = self.round
        try:
            update = validate_update(
                payload,
                topic_node_id,
                region=self.config.region,
                registry=self.registry,
                open_round=open_round.announcement if open_round else None,
                counted=open_round.nodes if open_round else (),
                shapes=self._shapes,
                limits=self._limits,
                now=self._clock(),
            )
        except RejectedMessage as exc:
            if exc.reason in _EARLY and len(self._early) < self.config.max_early_updates:
                self._early.append((payload, topic_node_id))
                return
            self._refuse("update", topic_node_id, exc)
            return
        assert open_round is not None
        open_round.accept(update, len(payload))
        if open_round.complete():
            await self._close("every expected node reported")

    def _refuse(self, what: str, sender: str, exc: RejectedMessage) -> None:
        self.rejections[exc.reason.value] += 1
        if self.round is not None:
            self.round.reject(exc.reason)
        else:
            self._unassigned_rejections[exc.reason.value] += 1
        log.warning("region %s refused %s from %s: %s", self.config.region, what, sender, exc)

    async def _close_at_deadline(self, regional_round: RegionalRound) -> None:
        await asyncio.sleep(max(0.0, regional_round.announcement.regional_deadline - self._clock()))
        if self.round is regional_round:
            await self._close("deadline")

    async def _close(self, why: str) -> None:
        closing, self.round = self.round, None
        if closing is None:
            return
        if self._deadline_task is not None and self._deadline_task is not asyncio.current_task():
            self._deadline_task.cancel()
        partial = closing.to_partial()
        payload = seal(partial_envelope(partial, self.aggregator_id, self._clock()), self._key)
        await self.session.publish(self.topics.partial, payload)
        self.last_closed_round = closing.round_id
        self._state_path.write_text(json.dumps({"last_closed_round": closing.round_id}))
        self.partials_published += 1
        log.info(
            "region %s closed round %d (%s): %d/%d nodes, %d refused, weight %.0f, partial %d bytes",
            self.config.region,
            closing.round_id,
            why,
            partial.accepted,
            partial.expected,
            sum(partial.rejected.values()),
            partial.total_weight,
            len(payload),
        )
