"""The edge node daemon: follows the retained global model and round announcements, trains when
a round is open, publishes one signed update per round, and between rounds scores the windows
that arrive with the newest model, alerting the cloud when they look anomalous
(`edge_node.scoring`). The decisions are `training_decision` and `edge_node.alerts` (pure); the
rest is wiring between MQTT, the on-disk buffer and `learning.training`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import aiomqtt
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_node.buffer import Chunk, FeatureBuffer
from edge_node.config import EdgeConfig
from edge_node.feedback import FEEDBACK_CODECS, Residual, left_over, with_residual
from edge_node.recordings import RecordingIngestor
from edge_node.scoring import LiveScoring, Scorer
from edge_node.state import NodeState, NodeStateStore
from learning.model import AutoencoderShape, Weights, weight_shapes
from learning.training import LocalResult, TrainingConfig, reconstruction_errors, resolve_device, train_local
from nacelle.mqtt import MqttSession, PublishRefused, SessionSpec
from wire.codec import Shapes, decode_arrays
from wire.envelope import KeyLookup, Kind, open_envelope, seal
from wire.errors import RejectedMessage
from wire.messages import (
    ModelRelease,
    NodeAlert,
    NodeUpdate,
    RoundAnnouncement,
    alert_envelope,
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
# (round id) → brings into the buffer what the turbine records up to that round: the simulator's
# synthetic sensor (a real node reads recordings instead). Called with the open round before the
# node scores, and with the next one once its update is out, so the next round need not wait.
WindowFeed = Callable[[int], Awaitable[None]]
# (continuing a round: handling its announcement, not its model) → held while the node handles a
# message, up to its training request: the simulator's turbines share one event loop and take
# turns at it (simulate.turns). A node of its own needs none.
TakeTurn = Callable[[bool], AbstractAsyncContextManager[None]]
# (a model message's payload) → the verified, decoded release; raises RejectedMessage.
ModelReader = Callable[[bytes], ModelRelease]


def _no_turn(continuing: bool) -> AbstractAsyncContextManager[None]:
    return contextlib.nullcontext()


def read_model(payload: bytes, *, max_bytes: int, keys: KeyLookup, shapes: Shapes) -> ModelRelease:
    """A global model message, verified against the cloud's `keys` and decoded to `shapes`."""
    return parse_model(open_envelope(payload, max_bytes=max_bytes, keys=keys, expected_kind=Kind.MODEL), shapes)


@dataclass(frozen=True)
class _Training:
    """What a node trains on for a round: decided while it holds its turn, trained after."""

    announcement: RoundAnnouncement
    windows: np.ndarray
    chunks: list[Chunk]


@dataclass(frozen=True)
class Decision:
    train: bool
    reason: str


def training_decision(
    announcement: RoundAnnouncement,
    state: NodeState,
    windows: int,
    min_windows: int,
    now: float,
    *,
    new_windows: int | None = None,
    min_new_windows: int = 0,
) -> Decision:
    """Whether to train for `announcement` now. `wait_for_model` means: train once it arrives.
    `new_windows`: windows recorded since the node last trained (None: unknown, not checked)."""
    if state.last_trained_round >= announcement.round_id:
        return Decision(False, "already_trained")
    if now > announcement.regional_deadline:
        return Decision(False, "round_closed")
    if state.model_version != announcement.base_version:
        return Decision(False, "wait_for_model")
    if windows < min_windows:
        return Decision(False, "not_enough_data")
    if new_windows is not None and new_windows < min_new_windows:
        return Decision(False, "not_enough_new_data")
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
        scorer: Scorer | None = None,
        feed: WindowFeed | None = None,
        take_turn: TakeTurn = _no_turn,
        model_reader: ModelReader | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`train_executor` runs training, scoring and file ingestion off the event loop
        (default: the loop's thread pool). `trainer` and `scorer` replace local training and
        scoring altogether; the simulator uses them to train and score many nodes in one batch,
        with the same result per node. `feed` is the simulator's sensor (WindowFeed): a call
        returns once every night up to the one asked for is in the buffer. `take_turn` is the
        simulator's too (TakeTurn), and so is `model_reader`, which replaces `read_model` with
        the node's keys and limits (the simulator verifies the model its turbines share once)."""
        self.config = config
        self.shape = shape or AutoencoderShape()
        self._shapes = weight_shapes(self.shape)
        self._key = signing_key
        self._trusted = trusted
        self._executor = train_executor
        self._trainer = trainer or self._train_here
        self._take_turn = take_turn
        self._read_model = model_reader or functools.partial(
            read_model, max_bytes=config.max_message_bytes, keys=trusted, shapes=self._shapes
        )
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
        self._residual = self._store.load_residual()  # error feedback of lossy codecs (edge_node.feedback)
        self.rejections: Counter[str] = Counter()
        self.updates_published = 0
        self.publishes_refused = 0  # by the broker (its ACL): logged as errors, see _publish_refused
        self.last_update_bytes = 0
        # Where a round's time goes (bench/): seconds spent encoding and signing updates, and
        # when the broker acknowledged the last one (Unix s).
        self.encode_sign_s = 0.0
        self.last_published_at = 0.0
        self._round: RoundAnnouncement | None = None
        self._feed = feed
        self._next_feed: asyncio.Task[None] | None = None
        self.scoring = LiveScoring(
            config.alerts,
            self.buffer,
            self._store,
            node_id=config.node_id,
            region=config.region,
            scorer=scorer or self._score_here,
            publish=self._publish_alert,
            clock=clock,
        )
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
        await self._publish_status()
        await self._ingest_recordings()

    async def _publish_status(self) -> None:
        """Retained "online" with the model version this node runs: operators (and rollbacks)
        see which version every node has loaded."""
        status = status_envelope(
            self.config.node_id,
            self.config.region,
            "online",
            self.state.model_version,
            self._clock(),
        )
        try:
            await self.session.publish(self.topics.status(self.config.node_id), seal(status, self._key), retain=True)
        except PublishRefused as exc:  # the status only informs: training goes on without it
            self._publish_refused(exc)

    def _publish_refused(self, exc: PublishRefused) -> None:
        self.publishes_refused += 1
        log.error(
            "node %s: %s; check that its certificate's identity is %s and the broker's ACL",
            self.config.node_id,
            exc,
            self.config.node_id,
        )

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
        async with self._take_turn(topic == ROUND_TOPIC):
            try:
                if topic == MODEL_TOPIC:
                    if self._accept_model(payload):
                        await self._publish_status()
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
            training = await self._training_due()
        if training is not None:
            await self._train_and_publish(training)

    def _accept_model(self, payload: bytes) -> bool:
        """Load a verified, newer global model; False when it is not newer than ours."""
        release = self._read_model(payload)
        if release.version <= self.state.model_version:
            return False
        self.weights = release.weights
        self.state.model_version = release.version
        self.state.model_round = release.round_id
        self._store.save(self.state, self.weights)
        log.info("node %s loaded global model v%d", self.config.node_id, release.version)
        return True

    async def _train_here(self, base: Weights, windows: np.ndarray, plan: TrainingConfig, seed: int) -> LocalResult:
        device = resolve_device(self.config.device)
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: train_local(base, windows, plan, self.shape, seed=seed, device=device)
        )

    # -- alerts ---------------------------------------------------------------------------

    async def run(self) -> None:
        """The daemon: the MQTT session, and a scoring pass every `alerts.scoring_interval_s`."""
        tasks = [asyncio.create_task(self.session.run())]
        if self.config.alerts.enabled:
            tasks.append(asyncio.create_task(self._score_periodically()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _score_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.alerts.scoring_interval_s)
            await self._ingest_recordings()
            await self.score_live()

    async def score_live(self) -> list[NodeAlert]:
        """Score the windows that arrived since the last pass; the alerts published. A failure
        is logged, never raised: scoring must not stop the node from training."""
        try:
            return await self.scoring.run_pass(self.weights, self.state.model_version)
        except Exception:
            log.exception("node %s: scoring live windows failed", self.config.node_id)
            return []

    async def _score_here(self, weights: Weights, version: int, windows: np.ndarray) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: reconstruction_errors(weights, windows, self.shape)
        )

    async def _publish_alert(self, alert: NodeAlert) -> None:
        payload = seal(alert_envelope(alert, self._clock()), self._key)
        try:
            await self.session.publish(self.topics.alert(self.config.node_id), payload)
        except PublishRefused as exc:  # the scoring pass fails: its windows are scored again
            self._publish_refused(exc)
            raise

    # -- rounds -----------------------------------------------------------------------------

    async def _training_due(self) -> _Training | None:
        """What to train on for the open round, once its new windows are scored; None when
        this node does not train for it (now)."""
        announcement = self._round
        if announcement is None or self.weights is None:
            return None
        if self.state.last_trained_round >= announcement.round_id:
            return None  # a new model or a repeated announcement after this node's update: nothing to do
        await self._ingest_recordings()
        if self._feed is not None:
            await self._feed(announcement.round_id)
        # New windows are judged before they are trained on: training on a fault first would
        # teach the model to find it normal.
        await self.score_live()
        chunks = self.buffer.chunks()
        windows = self.buffer.windows(chunks)
        decision = training_decision(
            announcement,
            self.state,
            len(windows),
            self.config.min_windows,
            self._clock(),
            new_windows=sum(self.buffer.size(c) for c in chunks if c.sequence > self.state.trained_through_chunk),
            min_new_windows=self.config.min_new_windows,
        )
        if not decision.train:
            log.debug(
                "node %s skips round %d: %s",
                self.config.node_id,
                announcement.round_id,
                decision.reason,
            )
            return None
        return _Training(announcement, windows, chunks)

    async def _train_and_publish(self, training: _Training) -> None:
        announcement, chunks = training.announcement, training.chunks
        assert self.weights is not None  # _training_due checked
        plan = TrainingConfig(announcement.epochs, announcement.batch_size, announcement.learning_rate)
        result = await self._trainer(self.weights, training.windows, plan, announcement.round_id)
        feedback = announcement.codec in FEEDBACK_CODECS
        carried = self._residual.for_round(announcement.round_id) if feedback and self._residual else None
        update = NodeUpdate(
            node_id=self.config.node_id,
            region=self.config.region,
            round_id=announcement.round_id,
            base_version=announcement.base_version,
            delta=with_residual(result.delta, carried),
            num_samples=result.num_samples,
            train_loss=result.train_loss,
        )
        encode_started = time.perf_counter()
        envelope = update_envelope(update, announcement.codec, self._clock(), topk_fraction=announcement.topk_fraction)
        payload = seal(envelope, self._key)
        self.encode_sign_s += time.perf_counter() - encode_started
        try:
            await self.session.publish(self.topics.update(self.config.node_id), payload)
        except PublishRefused as exc:  # not marked trained: the round is trained again on its next message
            self._publish_refused(exc)
            return
        self.last_published_at = time.time()
        # Kept before the round is marked trained: see edge_node.feedback for a crash in between.
        if feedback:
            sent = decode_arrays(envelope.body["delta"], self._shapes)
            self._residual = Residual(announcement.round_id, left_over(update.delta, sent), carried)
            self._store.save_residual(self._residual)
        elif self._residual is not None:  # the fleet left the lossy codec: nothing more to carry
            self._residual = None
            self._store.clear_residual()
        # Recorded only after the broker acknowledged: a crash before this retrains and
        # republishes, and the aggregator counts the second copy once.
        self.state.last_trained_round = announcement.round_id
        self.state.trained_through_chunk = chunks[-1].sequence if chunks else -1
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
        if self._feed is not None:
            # Not awaited: the next messages of this node wait for this handler, and the next
            # round's `_feed` call waits for this recording.
            self._next_feed = asyncio.create_task(self._feed(announcement.round_id + 1))
