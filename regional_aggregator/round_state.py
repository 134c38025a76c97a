"""One region's round in progress: a streaming weighted sum, who was counted, what was refused.
Pure state transitions; the daemon decides when to call them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from learning.aggregation import WeightedSum
from wire.codec import Shapes
from wire.errors import RejectReason
from wire.messages import NodeSummary, NodeUpdate, RegionalPartial, RoundAnnouncement


@dataclass
class RegionalRound:
    region: str
    announcement: RoundAnnouncement
    expected: frozenset[str]
    accumulator: WeightedSum
    nodes: dict[str, NodeSummary] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)

    @classmethod
    def open(
        cls, region: str, announcement: RoundAnnouncement, expected: frozenset[str], shapes: Shapes
    ) -> RegionalRound:
        return cls(region, announcement, expected, WeightedSum(shapes))

    @property
    def round_id(self) -> int:
        return self.announcement.round_id

    def accept(self, update: NodeUpdate, wire_bytes: int) -> None:
        self.accumulator.add(update.delta, float(update.num_samples))
        self.nodes[update.node_id] = NodeSummary(update.node_id, update.num_samples, update.train_loss, wire_bytes)

    def reject(self, reason: RejectReason) -> None:
        self.rejected[reason.value] += 1

    def complete(self) -> bool:
        """Every expected node has been counted: no reason to wait for the deadline."""
        return bool(self.expected) and self.expected.issubset(self.nodes)

    def due(self, now: float) -> bool:
        return self.complete() or now >= self.announcement.regional_deadline

    def to_partial(self) -> RegionalPartial:
        return RegionalPartial(
            region=self.region,
            round_id=self.round_id,
            base_version=self.announcement.base_version,
            weighted_sum=self.accumulator.sums(),
            total_weight=self.accumulator.total_weight,
            expected=len(self.expected),
            rejected=dict(self.rejected),
            nodes=tuple(self.nodes.values()),
        )
