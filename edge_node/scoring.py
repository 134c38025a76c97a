"""One scoring pass of an edge node: the windows that arrived in its buffer since the last pass,
scored with the current global model, become alerts. The decisions are `edge_node.alerts`
(pure); this is the wiring between the buffer, the scorer, the publisher and the node's state.

A pass that fails (scorer, publish) leaves the state as it was: the same windows are scored
again by the next pass, so an alert is published at least once, and a repeat lands on the same
InfluxDB point (same node, same window time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np

from edge_node.alerts import AlertRule, CalibrationError, alert_threshold, gate_windows, warmup_chunks
from edge_node.buffer import Chunk, FeatureBuffer
from edge_node.config import AlertsConfig
from edge_node.state import NodeStateStore
from learning.model import Weights
from wire.messages import NodeAlert

log = logging.getLogger(__name__)

# (global weights, their model version, windows) → one score per window. The version lets a
# shared scorer (the simulator's) batch the nodes that hold the same model.
Scorer = Callable[[Weights, int, np.ndarray], Awaitable[np.ndarray]]
Publish = Callable[[NodeAlert], Awaitable[None]]


class LiveScoring:
    def __init__(
        self,
        config: AlertsConfig,
        buffer: FeatureBuffer,
        store: NodeStateStore,
        *,
        node_id: str,
        region: str,
        scorer: Scorer,
        publish: Publish,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.rule = AlertRule(config.min_crossings, config.crossing_window, config.min_interval_s)
        self.buffer = buffer
        self._store = store
        self.node_id = node_id
        self.region = region
        self._scorer = scorer
        self._publish = publish
        self._clock = clock
        self.state = store.load_scoring()
        # (model version, its threshold): recalibrated whenever the model changes; in memory
        # only, a restart recalibrates on its first pass.
        self._calibrated: tuple[int, float] | None = None
        self._uncalibrated: int | None = None  # the model version last said to lack a baseline
        self._lock = asyncio.Lock()
        self.alerts_sent = 0
        # The latest alerts this node published, for a look at a running node (the simulator
        # judges them against the faults it planted); bounded, a node runs for years.
        self.recent_alerts: deque[NodeAlert] = deque(maxlen=1000)

    @property
    def threshold(self) -> float | None:
        return None if self._calibrated is None else self._calibrated[1]

    async def run_pass(self, weights: Weights | None, version: int) -> list[NodeAlert]:
        """Score what arrived since the last pass with model `version`; the alerts published."""
        if not self.config.enabled or weights is None:
            return []
        async with self._lock:  # the periodic pass and the one before training never overlap
            return await self._pass(weights, version)

    async def _pass(self, weights: Weights, version: int) -> list[NodeAlert]:
        chunks = self.buffer.chunks()
        new = [c for c in chunks if c.sequence > self.state.scored_chunk]
        if not new:
            return []
        anomalous = set(self.state.anomalous_chunks)
        baseline = [c for c in chunks if c.sequence <= self.state.scored_chunk and c.sequence not in anomalous]
        if self.state.windows_scored == 0:
            baseline, new = self._warm_up(baseline, new)
            if not new:
                return []
        calibration = None
        if self._calibrated is None or self._calibrated[0] != version:
            calibration = self.buffer.read(baseline)[-self.config.calibration_windows :]
            if len(calibration) < self.config.min_calibration_windows:
                if self._uncalibrated == version:  # said once per model, not every pass
                    return []
                self._uncalibrated = version
                log.warning(
                    "node %s cannot calibrate model v%d: %d normal windows, %d needed; %d new windows wait",
                    self.node_id,
                    version,
                    len(calibration),
                    self.config.min_calibration_windows,
                    sum(c.size() for c in new),
                )
                return []
        live, recorded_at, sequences = self.buffer.read_recorded(new)
        windows = live if calibration is None else np.concatenate([calibration, live])
        scores = np.asarray(await self._scorer(weights, version, windows), np.float64)
        if calibration is not None:
            try:
                self._calibrated = (version, alert_threshold(scores[: len(calibration)], self.config.quantile))
            except CalibrationError as exc:
                log.warning("node %s: no alert threshold for model v%d: %s", self.node_id, version, exc)
                return []
            scores = scores[len(calibration) :]
            log.info("node %s: alert threshold %.4g for model v%d", self.node_id, self._calibrated[1], version)
        assert self._calibrated is not None
        threshold = self._calibrated[1]
        planned, gate = gate_windows(scores, threshold, self.rule, self.state.gate, self._clock())
        alerts = [
            NodeAlert(
                node_id=self.node_id,
                region=self.region,
                model_version=version,
                score=float(scores[p.index]),
                threshold=threshold,
                window_ts=float(recorded_at[p.index]),
                suppressed=p.suppressed,
            )
            for p in planned
        ]
        for alert in alerts:
            await self._publish(alert)
            self.alerts_sent += 1
            self.recent_alerts.append(alert)
            log.info(
                "node %s alerts: window of %.3f scores %.4g, %.2fx its threshold (model v%d, %d suppressed)",
                self.node_id,
                alert.window_ts,
                alert.score,
                alert.ratio,
                version,
                alert.suppressed,
            )
        # Saved only after the broker took the alerts: a crash before re-scores these windows.
        crossed = np.unique(sequences[scores > threshold]).tolist()
        self.state = self.state.advanced(new[-1].sequence, len(live), crossed, gate, oldest_chunk=chunks[0].sequence)
        self._store.save_scoring(self.state)
        return alerts

    def _warm_up(self, baseline: list[Chunk], new: list[Chunk]) -> tuple[list[Chunk], list[Chunk]]:
        """A node that has never scored takes its oldest windows as its baseline, unscored."""
        minimum = self.config.min_calibration_windows
        size = self.buffer.size
        taken = warmup_chunks([size(c) for c in new], sum(size(c) for c in baseline), minimum)
        if not taken:
            return baseline, new
        self.state.scored_chunk = new[taken - 1].sequence
        self._store.save_scoring(self.state)
        log.info("node %s takes %d chunks of windows as its normal baseline", self.node_id, taken)
        return baseline + new[:taken], new[taken:]
