"""One region's round in progress: who was counted (with each update's norm), what was refused,
the running FedAvg sum Σ wᵢ·Δᵢ (float64, one model's worth of memory whatever the number of
updates), and, at close, the partial it ships. Pure state transitions; the daemon decides when to
call them. The deltas themselves live in the update log (see update_log), not here: at close the
sum is corrected for clipped updates and the outlier scores computed from it (learning.robust),
or, for the robust policies, the aggregate is computed from the log."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from learning.robust import RegionAggregate, flatten, unflatten
from wire.codec import Shapes
from wire.errors import RejectReason
from wire.messages import NodeSummary, NodeUpdate, RegionalPartial, RoundAnnouncement


@dataclass
class RegionalRound:
    region: str
    announcement: RoundAnnouncement
    expected: frozenset[str]
    shapes: Shapes
    nodes: dict[str, NodeSummary] = field(default_factory=dict)
    norms: dict[str, float] = field(default_factory=dict)  # L2 norm of each counted delta
    rejected: Counter[str] = field(default_factory=Counter)
    weighted_sum: np.ndarray | None = None  # Σ wᵢ·Δᵢ over the counted updates, flat float64
    expected_counted: int = 0  # how many of `expected` are counted (a set comparison per update is O(n²) a round)

    @classmethod
    def open(
        cls, region: str, announcement: RoundAnnouncement, expected: frozenset[str], shapes: Shapes
    ) -> RegionalRound:
        return cls(region, announcement, expected, shapes)

    @property
    def round_id(self) -> int:
        return self.announcement.round_id

    def accept(self, update: NodeUpdate, wire_bytes: int) -> None:
        if update.node_id in self.expected and update.node_id not in self.nodes:
            self.expected_counted += 1
        self.nodes[update.node_id] = NodeSummary(update.node_id, update.num_samples, update.train_loss, wire_bytes)
        delta = flatten(update.delta).astype(np.float64)
        self.norms[update.node_id] = math.sqrt(float(np.dot(delta, delta)))
        delta *= float(update.num_samples)
        if self.weighted_sum is None:
            self.weighted_sum = delta
        else:
            self.weighted_sum += delta

    @property
    def weights(self) -> dict[str, float]:
        """Each counted node's weight in the aggregate: its number of samples."""
        return {node: float(summary.num_samples) for node, summary in self.nodes.items()}

    def reject(self, reason: RejectReason) -> None:
        self.rejected[reason.value] += 1

    def complete(self) -> bool:
        """Every expected node has been counted: no reason to wait for the deadline."""
        return bool(self.expected) and self.expected_counted == len(self.expected)

    def due(self, now: float) -> bool:
        return self.complete() or now >= self.announcement.regional_deadline

    def to_partial(self, aggregate: RegionAggregate | None) -> RegionalPartial:
        """The partial for `aggregate` (None when nobody was counted: zero weight)."""
        if aggregate is None:
            weighted_sum = {name: np.zeros(shape, np.float32) for name, shape in self.shapes.items()}
            total_weight, scores = 0.0, {}
        else:
            weighted_sum = unflatten(aggregate.weighted_sum.astype(np.float32), self.shapes)
            total_weight, scores = aggregate.total_weight, aggregate.outlier_scores
        nodes = tuple(
            NodeSummary(n.node_id, n.num_samples, n.train_loss, n.update_bytes, scores.get(n.node_id, 0.0))
            for n in self.nodes.values()
        )
        return RegionalPartial(
            region=self.region,
            round_id=self.round_id,
            base_version=self.announcement.base_version,
            weighted_sum=weighted_sum,
            total_weight=total_weight,
            expected=len(self.expected),
            rejected=dict(self.rejected),
            nodes=nodes,
        )
