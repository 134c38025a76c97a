"""A global round at the cloud: which regions reported, the merged update, the round's record.
Pure: the daemon feeds it verified partials and asks for the outcome."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from learning.aggregation import Partial, apply_delta, merge_partials
from learning.model import Weights
from wire.errors import RejectedMessage, RejectReason
from wire.messages import RegionalPartial, RoundAnnouncement


@dataclass
class CloudRound:
    announcement: RoundAnnouncement
    regions: frozenset[str]
    partials: dict[str, RegionalPartial] = field(default_factory=dict)

    @property
    def round_id(self) -> int:
        return self.announcement.round_id

    def add(self, partial: RegionalPartial) -> None:
        if partial.region not in self.regions:
            raise RejectedMessage(RejectReason.WRONG_REGION, f"region {partial.region!r} is not in this fleet")
        if partial.round_id != self.round_id:
            reason = RejectReason.STALE_ROUND if partial.round_id < self.round_id else RejectReason.FUTURE_ROUND
            raise RejectedMessage(reason, f"partial for round {partial.round_id}, open round is {self.round_id}")
        if partial.base_version != self.announcement.base_version:
            raise RejectedMessage(RejectReason.WRONG_BASE_VERSION, f"partial built on v{partial.base_version}")
        if partial.region in self.partials:
            raise RejectedMessage(RejectReason.DUPLICATE, f"region {partial.region!r} already reported")
        self.partials[partial.region] = partial

    def complete(self) -> bool:
        return self.regions.issubset(self.partials)

    def merged_weights(self, base: Weights, server_learning_rate: float) -> Weights | None:
        """The next global model, or None when no node contributed anything."""
        if not any(p.total_weight > 0 for p in self.partials.values()):
            return None
        delta = merge_partials(Partial(p.weighted_sum, p.total_weight) for p in self.partials.values())
        return apply_delta(base, delta, server_learning_rate)


@dataclass(frozen=True)
class QuorumVerdict:
    met: bool
    regions: dict[str, bool]  # region → whether it met its node quorum
    reason: str  # why not, for the round log and InfluxDB; "" when met


def quorum_verdict(cloud_round: CloudRound, min_node_share: float, min_region_share: float) -> QuorumVerdict:
    """Whether enough of each region's expected nodes, and enough regions, took part."""
    regions: dict[str, bool] = {}
    short: list[str] = []
    for region in sorted(cloud_round.regions):
        partial = cloud_round.partials.get(region)
        if partial is None:
            regions[region] = False
            short.append(f"{region} did not report")
            continue
        share = partial.accepted / partial.expected if partial.expected else 1.0
        regions[region] = share >= min_node_share and partial.accepted > 0
        if not regions[region]:
            short.append(f"{region} {partial.accepted}/{partial.expected} nodes")
    counted = sum(regions.values())
    met = bool(regions) and counted / len(regions) >= min_region_share and counted > 0
    reason = (
        ""
        if met
        else f"quorum not met: {counted}/{len(regions)} regions with at least {min_node_share:.0%} of their nodes "
        f"(need {min_region_share:.0%} of regions); {'; '.join(short)}"
    )
    return QuorumVerdict(met, regions, reason)


def guard_verdict(candidate_loss: float, current_loss: float, max_increase: float) -> str:
    """Why the candidate model must not be published ("" when it may): its holdout loss got
    worse than the current model's by more than `max_increase` (a share), or is not finite."""
    if not math.isfinite(candidate_loss):
        return f"holdout loss of the candidate is {candidate_loss}"
    if candidate_loss > current_loss * (1.0 + max_increase):
        return (
            f"holdout loss would rise from {current_loss:.5f} to {candidate_loss:.5f} "
            f"(more than the {max_increase:.0%} allowed)"
        )
    return ""


@dataclass(frozen=True)
class RoundRecord:
    """What the operator gets to see of a round (round log, InfluxDB, simulator summary)."""

    round: int
    model_version: int
    status: str  # "published" | "quorum_failed" | "guard_refused" | "superseded" | "empty"
    opened_at: float
    closed_at: float
    updates_accepted: int
    updates_rejected: int
    bytes_per_update_mean: float
    train_loss_mean: float
    regions: dict[str, dict[str, Any]]
    partials_refused: int = 0
    points_written: int = 0
    reason: str = ""  # why the model did not change ("" when published)
    holdout_loss: float | None = None  # of the model the round leaves in place
    nodes_suspended: int = 0

    @property
    def seconds(self) -> float:
        return self.closed_at - self.opened_at

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "seconds": round(self.seconds, 3)}


def round_record(
    cloud_round: CloudRound,
    model_version: int,
    status: str,
    closed_at: float,
    partials_refused: int,
    *,
    reason: str = "",
    quorum: QuorumVerdict | None = None,
    holdout_loss: float | None = None,
    nodes_suspended: int = 0,
) -> RoundRecord:
    nodes = [n for p in cloud_round.partials.values() for n in p.nodes]
    samples = sum(n.num_samples for n in nodes)
    regions = {
        region: {
            "reported": region in cloud_round.partials,
            "expected": p.expected if p else 0,
            "accepted": p.accepted if p else 0,
            "rejected": dict(p.rejected) if p else {},
            "total_weight": p.total_weight if p else 0.0,
            "bytes_per_update_mean": (sum(n.update_bytes for n in p.nodes) / len(p.nodes)) if p and p.nodes else 0.0,
            "quorum_met": bool(quorum.regions.get(region)) if quorum else p is not None,
        }
        for region in sorted(cloud_round.regions)
        for p in [cloud_round.partials.get(region)]
    }
    return RoundRecord(
        round=cloud_round.round_id,
        model_version=model_version,
        status=status,
        opened_at=cloud_round.announcement.opened_at,
        closed_at=closed_at,
        updates_accepted=len(nodes),
        updates_rejected=sum(sum(p.rejected.values()) for p in cloud_round.partials.values()),
        bytes_per_update_mean=sum(n.update_bytes for n in nodes) / len(nodes) if nodes else 0.0,
        train_loss_mean=sum(n.train_loss * n.num_samples for n in nodes) / samples if samples else 0.0,
        regions=regions,
        partials_refused=partials_refused,
        reason=reason,
        holdout_loss=holdout_loss,
        nodes_suspended=nodes_suspended,
    )
