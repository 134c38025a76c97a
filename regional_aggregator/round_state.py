"""One region's round in progress: who was counted (with each update's norm), what was refused,
and, at close, the partial it ships. Pure state transitions; the daemon decides when to call them.
The deltas themselves live in the update log (see update_log), not here: the aggregate is
computed from it at close under the region's policy (learning.robust)."""

from __future__ import annotations

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

    @classmethod
    def open(
        cls, region: str, announcement: RoundAnnouncement, expected: frozenset[str], shapes: Shapes
    ) -> RegionalRound:
        return cls(region, announcement, expected, shapes)

    @property
    def round_id(self) -> int:
        return self.announcement.round_id

    def accept(self, update: NodeUpdate, wire_bytes: int) -> None:
        self.nodes[update.node_id] = NodeSummary(update.node_id, update.num_samples, update.train_loss, wire_bytes)
        self.norms[update.node_id] = float(np.linalg.norm(flatten(update.delta).astype(np.float64)))

    def reject(self, reason: RejectReason) -> None:
        self.rejected[reason.value] += 1

    def complete(self) -> bool:
        """Every expected node has been counted: no reason to wait for the deadline."""
        return bool(self.expected) and self.expected.issubset(self.nodes)

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
