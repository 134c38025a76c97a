"""The edge node daemon: follows the retained global model and round announcements, trains when
a round is open, publishes one signed update per round. The decisions are `training_decision`
(pure); the rest is wiring between MQTT, the on-disk buffer and `learning.training`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import aiomqtt
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_node.buffer import FeatureBuffer
from edge_node.config import EdgeConfig
from edge_node.recordings import RecordingIngestor
from edge_node.state import NodeState, NodeStateStore
from learning.model import AutoencoderShape, Weights, weight_shapes
from learning.training import LocalResult, TrainingConfig, resolve_device, train_local
from nacelle.mqtt import MqttSession, SessionSpec
from wire.envelope import KeyLookup, Kind, open_envelope, seal
from wire.errors import RejectedMessage
from wire.messages import (
    NodeUpdate,
    RoundAnnouncement,
    parse_model,
    parse_round,
    status_envelope,
    update_envelope,
)
from wire.registry import FleetRegistry
from wire.signing import load_private_key
from wire.topics import MODEL_TOPIC, ROUND_TOPIC, RegionTopics

log = logging.getLogger(__name__)


# (global weights, windows, plan, seed) → the local result; seed is the round id.
Trainer = Callable[[Weights, np.ndarray, TrainingConfig, int], Awaitable[LocalResult]]


@dataclass(frozen=True)
class Decision:
    train: bool
    reason: str


def training_decision(
    announcement: RoundAnnouncement, state: NodeState, windows: int, min_windows: int, now: float
) -> Decision:
    """Whether to train for `announcement` now. `wait_for_model` means: train once it arrives."""
    if state.last_trained_round >= announcement.round_id:
        return Decision(False, "already_trained")
    if now > announcement.regional_deadline:
        return Decision(False, "round_closed")
    if state.model_version != announcement.base_version:
        return Decision(False, "wait_for_model")
    if windows < min_windows:
        return Decision(False, "not_enough_data")
    return Decision(True, "ok")


class EdgeNode:
    def __init__(
        self,
        config: EdgeConfig,
        *,
        signing_key: Ed25519PrivateKey,
        trusted: KeyLookup,
        shape: AutoencoderShape | None = None,
        train_executor: Executor | None = None,
        trainer: Trainer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`train_executor` runs training and file ingestion off the event loop (default: the
        loop's thread pool). `trainer` replaces local training altogether; the simulator uses
        it to train many nodes' rounds in one batch, with the same result per node."""
        self.config = config
        self.shape = shape or AutoencoderShape()
        self._shapes = weight_shapes(self.shape)
        self._key = signing_key
        self._trusted = trusted
        self._executor = train_executor
        self._trainer = trainer or self._train_here
        self._clock = clock
        self.topics = RegionTopics(config.region)
        self.buffer = FeatureBuffer(config.data_dir / "buffer", config.max_windows)
        self.recordings = (
            None
            if config.recordings is None
            else RecordingIngestor(
                config.recordings, self.buffer, config.data_dir / "recordings.json", n_bins=self.shape.n_features
            )
        )
        self._store = NodeStateStore(config.data_dir / "state")
        self.state, self.weights = self._store.load()
        self.rejections: Counter[str] = Counter()
        self.updates_published = 0
        self.last_update_bytes = 0
        self._round: RoundAnnouncement | None = None
        offline = seal(
            status_envelope(config.node_id, config.region, "offline", self.state.model_version, clock()),
            signing_key,
        )
        self.session = MqttSession(
            SessionSpec(
                client_id=f"nacelle-edge-{config.node_id}",
                endpoint=config.broker,
                subscriptions=(MODEL_TOPIC, ROUND_TOPIC),
                will=aiomqtt.Will(self.topics.status(config.node_id), offline, qos=1, retain=True),
            ),
            handler=self._on_message,
            on_connect=self._on_connect,
        )

    @classmethod
    def from_config(cls, config: EdgeConfig) -> EdgeNode:
        registry = FleetRegistry.load(config.registry_path)
        return cls(
            config,
            signing_key=load_private_key(config.private_key_path),
            trusted=registry.keys_for(registry.cloud.member_id),
        )

    async def _on_connect(self) -> None:
        status = status_envelope(
            self.config.node_id,
            self.config.region,
            "online",
            self.state.model_version,
            self._clock(),
        )
        await self.session.publish(self.topics.status(self.config.node_id), seal(status, self._key), retain=True)
        await self._ingest_recordings()

    async def _ingest_recordings(self) -> None:
        """New recordings → buffer, in the executor like training (file I/O and FFTs). Bad files
        are the ingestor's to log and skip; nothing here may stop the node."""
        if self.recordings is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.recordings.ingest)
        except Exception:
            log.exception("node %s: ingesting recordings failed", self.config.node_id)

    async def _on_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        topic = str(message.topic)
        try:
            if topic == MODEL_TOPIC:
                self._accept_model(payload)
            elif topic == ROUND_TOPIC:
                envelope = open_envelope(
                    payload,
                    max_bytes=self.config.max_message_bytes,
                    keys=self._trusted,
                    expected_kind=Kind.ROUND,
                )
                self._round = parse_round(envelope)
        except RejectedMessage as exc:
            self.rejections[exc.reason.value] += 1
            log.warning("node %s refused %s: %s", self.config.node_id, topic, exc)
            return
        await self._maybe_train()

    def _accept_model(self, payload: bytes) -> None:
        envelope = open_envelope(
            payload,
            max_bytes=self.config.max_message_bytes,
            keys=self._trusted,
            expected_kind=Kind.MODEL,
        )
        release = parse_model(envelope, self._shapes)
        if release.version <= self.state.model_version:
            return
        self.weights = release.weights
        self.state.model_version = release.version
        self.state.model_round = release.round_id
        self._store.save(self.state, self.weights)
        log.info("node %s loaded global model v%d", self.config.node_id, release.version)

    async def _train_here(self, base: Weights, windows: np.ndarray, plan: TrainingConfig, seed: int) -> LocalResult:
        device = resolve_device(self.config.device)
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: train_local(base, windows, plan, self.shape, seed=seed, device=device)
        )

    async def _maybe_train(self) -> None:
        announcement = self._round
        if announcement is None or self.weights is None:
            return
        await self._ingest_recordings()
        windows = self.buffer.windows()
        decision = training_decision(announcement, self.state, len(windows), self.config.min_windows, self._clock())
        if not decision.train:
            log.debug(
                "node %s skips round %d: %s",
                self.config.node_id,
                announcement.round_id,
                decision.reason,
            )
            return
        plan = TrainingConfig(announcement.epochs, announcement.batch_size, announcement.learning_rate)
        result = await self._trainer(self.weights, windows, plan, announcement.round_id)
        update = NodeUpdate(
            node_id=self.config.node_id,
            region=self.config.region,
            round_id=announcement.round_id,
            base_version=announcement.base_version,
            delta=result.delta,
            num_samples=result.num_samples,
            train_loss=result.train_loss,
        )
        payload = seal(update_envelope(update, announcement.codec, self._clock()), self._key)
        await self.session.publish(self.topics.update(self.config.node_id), payload)
        # Recorded only after the broker acknowledged: a crash before this retrains and
        # republishes, and the aggregator counts the second copy once.
        self.state.last_trained_round = announcement.round_id
        self._store.save(self.state)
        self.updates_published += 1
        self.last_update_bytes = len(payload)
        log.info(
            "node %s published round %d update: %d samples, loss %.4f, %d bytes",
            self.config.node_id,
            announcement.round_id,
            result.num_samples,
            result.train_loss,
            len(payload),
        )
