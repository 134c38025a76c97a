"""A region's aggregate under a poisoning-resistant policy, and how far each update sits from it.

Pure: updates in, a weighted sum and scores out. Each update is a flat float32 vector (the
concatenated tensors, `flatten`/`unflatten` convert). The source of updates is a callable that
returns a fresh iterator each time, so that plain FedAvg streams over it twice (memory O(model)
whatever the number of nodes) while the robust aggregates, which need every update at once,
stack them (memory O(nodes x model)).

Every policy returns a *weighted sum* and the total weight, like FedAvg, so the cloud's merge
across regions is the same whatever each region chose: a robust consensus c stands for
Σ wᵢ·c.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy import stats

from learning.aggregation import WeightedSum
from learning.model import Weights


class Aggregate(StrEnum):
    FEDAVG = "fedavg"  # weighted mean: exact, streaming, and moved anywhere by one bad update
    TRIMMED_MEAN = "trimmed_mean"  # per coordinate, the mean after dropping the extremes
    MEDIAN = "median"  # per coordinate, the median


@dataclass(frozen=True)
class RobustPolicy:
    aggregate: Aggregate = Aggregate.FEDAVG
    # Share of updates cut from EACH end per coordinate (trimmed_mean only): 0.2 tolerates up to
    # 20% of a region's nodes being hostile.
    trim_fraction: float = 0.2
    # Updates longer than this multiple of the round's median update norm are scaled down to it,
    # so one scaled-up update cannot dominate a sum; None turns clipping off.
    clip_multiplier: float | None = 3.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5), got {self.trim_fraction}")
        if self.clip_multiplier is not None and not self.clip_multiplier > 0:
            raise ValueError(f"clip_multiplier must be positive, got {self.clip_multiplier}")


@dataclass(frozen=True)
class WeightedUpdate:
    node_id: str
    weight: float
    delta: np.ndarray  # flat float32


@dataclass(frozen=True)
class RegionAggregate:
    weighted_sum: np.ndarray  # flat float64: Σ wᵢ · (the policy's consensus or each clipped Δᵢ)
    total_weight: float
    clip_norm: float | None  # the norm updates were clipped to this round, if any
    # Distance of each (clipped) update to the consensus, over the median such distance: about 1
    # for an ordinary node, large for one that pulls somewhere else.
    outlier_scores: dict[str, float]


UpdateSource = Callable[[], Iterable[WeightedUpdate]]


def flatten(weights: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(array, np.float32).ravel() for array in weights.values()])


def unflatten(vector: np.ndarray, like: Mapping[str, np.ndarray] | Mapping[str, tuple[int, ...]]) -> Weights:
    """Split a flat vector into tensors shaped like `like` (arrays or shapes), in its order."""
    shapes = {name: tuple(np.shape(v)) if isinstance(v, np.ndarray) else tuple(v) for name, v in like.items()}
    sizes = [int(np.prod(shape)) for shape in shapes.values()]
    if sum(sizes) != vector.size:
        raise ValueError(f"vector of {vector.size} values cannot fill tensors of {sum(sizes)}")
    parts = np.split(np.asarray(vector, np.float32), np.cumsum(sizes)[:-1])
    return {name: part.reshape(shape) for (name, shape), part in zip(shapes.items(), parts, strict=True)}


def clip_norm_for(norms: Iterable[float], policy: RobustPolicy) -> float | None:
    values = np.fromiter(norms, np.float64)
    if policy.clip_multiplier is None or values.size == 0:
        return None
    return float(policy.clip_multiplier * np.median(values))


def _clipped(delta: np.ndarray, clip_norm: float | None) -> np.ndarray:
    if clip_norm is None:
        return delta
    norm = float(np.linalg.norm(delta))
    return delta * (clip_norm / norm) if norm > clip_norm else delta


def aggregate_region(updates: UpdateSource, norms: Iterable[float], policy: RobustPolicy) -> RegionAggregate:
    """The region's weighted sum under `policy`; `norms` are the updates' L2 norms (known at
    ingest, so clipping needs no extra pass). Raises ValueError when there is no update."""
    clip_norm = clip_norm_for(norms, policy)
    if policy.aggregate is Aggregate.FEDAVG:
        accumulator: WeightedSum | None = None
        for update in updates():
            accumulator = accumulator or WeightedSum({"delta": update.delta.shape})
            accumulator.add({"delta": _clipped(update.delta, clip_norm)}, update.weight)
        if accumulator is None:
            raise ValueError("no update to aggregate")
        weighted_sum, total_weight = accumulator.weighted_sum("delta"), accumulator.total_weight
        consensus = weighted_sum / total_weight
        distances = {u.node_id: _distance(_clipped(u.delta, clip_norm), consensus) for u in updates()}
    else:
        listed = list(updates())
        if not listed:
            raise ValueError("no update to aggregate")
        matrix = np.stack([_clipped(u.delta, clip_norm) for u in listed]).astype(np.float64)
        if policy.aggregate is Aggregate.MEDIAN:
            consensus = np.median(matrix, axis=0)
        else:
            consensus = stats.trim_mean(matrix, policy.trim_fraction, axis=0)
        total_weight = sum(u.weight for u in listed)
        weighted_sum = consensus * total_weight
        distances = {u.node_id: _distance(row, consensus) for u, row in zip(listed, matrix, strict=True)}
    return RegionAggregate(weighted_sum, total_weight, clip_norm, outlier_scores(distances))


# (node ids, or None for every node) -> those nodes' updates, read again from where they are kept.
UpdateReader = Callable[[Collection[str] | None], Iterable[WeightedUpdate]]


def fedavg_from_sum(
    unclipped_sum: np.ndarray,
    weights: Mapping[str, float],
    norms: Mapping[str, float],
    read: UpdateReader,
    policy: RobustPolicy,
) -> RegionAggregate:
    """FedAvg's `RegionAggregate` from the sum Σ wᵢ·Δᵢ accumulated as updates arrived (float64):
    what `aggregate_region` computes with `Aggregate.FEDAVG`, without holding or re-reading every
    update for the sum. Only the updates clipping shortens are read again, to take off
    wᵢ·(1 − clip/‖Δᵢ‖)·Δᵢ each; the outlier scores need one pass over all of them.
    `weights` and `norms` are per node; raises ValueError when there is no update."""
    if not weights:
        raise ValueError("no update to aggregate")
    clip_norm = clip_norm_for(norms.values(), policy)
    weighted_sum = np.array(unclipped_sum, np.float64)
    if clip_norm is not None:
        clipped = {node for node, norm in norms.items() if norm > clip_norm}
        for update in read(clipped) if clipped else ():
            shrink = 1.0 - clip_norm / norms[update.node_id]
            weighted_sum -= (update.weight * shrink) * update.delta.astype(np.float64)
    total_weight = float(sum(weights.values()))
    consensus = weighted_sum / total_weight
    distances = {u.node_id: _distance(_clipped(u.delta, clip_norm), consensus) for u in read(None)}
    return RegionAggregate(weighted_sum, total_weight, clip_norm, outlier_scores(distances))


def _distance(delta: np.ndarray, consensus: np.ndarray) -> float:
    return float(np.linalg.norm(delta.astype(np.float64) - consensus))


def outlier_scores(distances: Mapping[str, float]) -> dict[str, float]:
    values = np.fromiter(distances.values(), np.float64)
    # A median consensus can coincide with most updates (median distance 0): fall back on the mean.
    typical = float(np.median(values)) if values.size else 0.0
    typical = typical if typical > 0.0 else float(values.mean()) if values.size else 0.0
    if typical <= 0.0:  # every update on the consensus (a single node, identical updates)
        return dict.fromkeys(distances, 0.0)
    return {node: d / typical for node, d in distances.items()}


def iterate(updates: Iterable[WeightedUpdate]) -> UpdateSource:
    """An `UpdateSource` over an in-memory collection (tests, benchmarks)."""
    listed = list(updates)

    def source() -> Iterator[WeightedUpdate]:
        return iter(listed)

    return source
