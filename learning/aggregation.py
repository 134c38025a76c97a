"""Federated averaging, streamed and split across tiers.

A region keeps a `WeightedSum` (memory O(model), whatever the number of nodes) and ships the sum
and the total weight, never the average: the cloud then adds the regions' sums and divides once,
which is exactly flat FedAvg over every node (`fedavg`, the reference the tests compare with).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from learning.model import Weights


class AggregationError(ValueError):
    """Inputs that cannot be aggregated (mismatched tensors, no weight at all)."""


class WeightedSum:
    """Streaming Σ wᵢ·Δᵢ and Σ wᵢ, accumulated in float64 so the order of arrival does not matter."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        self._sums = {name: np.zeros(shape, np.float64) for name, shape in shapes.items()}
        self.total_weight = 0.0
        self.count = 0

    def add(self, delta: Mapping[str, np.ndarray], weight: float) -> None:
        if not weight > 0 or not np.isfinite(weight):
            raise AggregationError(f"weight must be positive and finite, got {weight}")
        if list(delta) != list(self._sums):
            raise AggregationError(f"tensors {list(delta)} do not match {list(self._sums)}")
        # Every shape is checked before anything is added: broadcasting would otherwise accept
        # a wrong shape, and a failure halfway would leave the sums and the weight out of step.
        for name, total in self._sums.items():
            if np.shape(delta[name]) != total.shape:
                raise AggregationError(f"tensor {name!r} has shape {np.shape(delta[name])}, expected {total.shape}")
        for name, total in self._sums.items():
            total += weight * np.asarray(delta[name], np.float64)
        self.total_weight += float(weight)
        self.count += 1

    def sums(self) -> Weights:
        return {name: total.astype(np.float32) for name, total in self._sums.items()}

    def weighted_sum(self, name: str) -> np.ndarray:
        """One tensor's sum in full (float64) precision."""
        return self._sums[name].copy()


@dataclass(frozen=True)
class Partial:
    weighted_sum: Weights
    total_weight: float


def merge_partials(partials: Iterable[Partial]) -> Weights:
    """The weighted-average delta of all nodes behind `partials`."""
    partials = [p for p in partials if p.total_weight > 0]
    if not partials:
        raise AggregationError("no partial carries any weight")
    names = list(partials[0].weighted_sum)
    total_weight = sum(p.total_weight for p in partials)
    return {
        name: (np.sum([np.asarray(p.weighted_sum[name], np.float64) for p in partials], axis=0) / total_weight).astype(
            np.float32
        )
        for name in names
    }


def apply_delta(weights: Weights, delta: Weights, server_learning_rate: float = 1.0) -> Weights:
    return {name: (weights[name] + server_learning_rate * delta[name]).astype(np.float32) for name in weights}


def fedavg(deltas: Iterable[Mapping[str, np.ndarray]], weights: Iterable[float]) -> Weights:
    """Flat FedAvg over every node at once: the reference the hierarchy must reproduce."""
    deltas, weights = list(deltas), list(weights)
    total = sum(weights)
    if not deltas or total <= 0:
        raise AggregationError("fedavg needs at least one delta with positive weight")
    return {
        name: np.average(np.stack([np.asarray(d[name], np.float64) for d in deltas]), axis=0, weights=weights).astype(
            np.float32
        )
        for name in deltas[0]
    }
