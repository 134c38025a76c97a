"""Anomaly alerts on the edge, the decisions without the I/O: the node's alert threshold, which
scored windows raise an alert, the rate limit, and what the node remembers between passes.

Between rounds the node scores the windows that arrived in its buffer since its last pass (the
live windows) with the newest verified global model: a window's score is its reconstruction
error. Scores mean something only relative to the turbine and the model, so each time the node
loads a model it calibrates a threshold on its own normal windows: the `quantile` of the
model's scores over its most recent already-scored windows, leaving out chunks that crossed
(a failing turbine must not learn its fault as normal).

A window *crosses* when its score is above the threshold. One crossing is not an alert: a
healthy turbine's windows cross at about (1 - quantile) each, which over thousands of windows
a day would alert every turbine all day. An alert fires on a crossing that makes at least
`min_crossings` of the last `crossing_window` scored windows cross — faults persist, noise does
not. Then the rate limit: at most one alert per `min_interval_s`; crossings that would have
fired meanwhile are counted, and the count travels in the next alert (`suppressed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


class CalibrationError(ValueError):
    """No usable threshold from these scores."""


def alert_threshold(normal_scores: np.ndarray, quantile: float) -> float:
    """The `quantile` of a model's scores on the node's normal windows; positive, or it raises."""
    # Imported here: learning.detection loads scikit-learn (a second at start) for its metrics,
    # which the daemon never uses.
    from learning.detection import calibrate_threshold

    threshold = calibrate_threshold(normal_scores, quantile)
    # A model that reproduced every window exactly would give 0, and every window would cross.
    if not threshold > 0:
        raise CalibrationError(f"the {quantile} quantile of {len(normal_scores)} scores is {threshold}")
    return threshold


@dataclass(frozen=True)
class AlertRule:
    min_crossings: int
    crossing_window: int
    min_interval_s: float

    def __post_init__(self) -> None:
        if not 1 <= self.min_crossings <= self.crossing_window:
            raise ValueError(f"need 1 <= min_crossings ({self.min_crossings}) <= window ({self.crossing_window})")
        if not self.min_interval_s >= 0:
            raise ValueError(f"min_interval_s must be >= 0, got {self.min_interval_s}")


@dataclass(frozen=True)
class Gate:
    """What the alert decision carries from one pass to the next."""

    recent: tuple[bool, ...] = ()  # crossed or not, for the last `crossing_window` scored windows
    last_alert_at: float | None = None  # node clock, Unix seconds
    suppressed: int = 0  # crossings that would have fired since the last alert


@dataclass(frozen=True)
class PlannedAlert:
    index: int  # of the window among the scores passed
    suppressed: int  # to report with it


def gate_windows(
    scores: np.ndarray, threshold: float, rule: AlertRule, gate: Gate, now: float
) -> tuple[list[PlannedAlert], Gate]:
    """The alerts to send for `scores` (windows in recording order, scored at `now`), and the
    gate after them. Within one pass `now` does not move, so the rate limit lets at most one
    alert through unless `min_interval_s` is 0; the first crossing that fires is the one sent,
    because it marks when the trouble started."""
    planned: list[PlannedAlert] = []
    recent, last, suppressed = list(gate.recent), gate.last_alert_at, gate.suppressed
    for index, score in enumerate(np.asarray(scores, np.float64)):
        crossed = bool(score > threshold)
        recent = [*recent, crossed][-rule.crossing_window :]
        if not crossed or sum(recent) < rule.min_crossings:
            continue
        # A clock set back (last in the future) must not silence the node until it catches up.
        if last is None or not 0 <= now - last < rule.min_interval_s:
            planned.append(PlannedAlert(index, suppressed))
            last, suppressed = now, 0
        else:
            suppressed += 1
    return planned, Gate(tuple(recent), last, suppressed)


def warmup_chunks(new_sizes: Sequence[int], baseline_windows: int, minimum: int) -> int:
    """How many of the oldest unscored chunks a node that has never scored takes as its normal
    baseline, unscored: until the baseline holds `minimum` windows. A node must learn what
    normal is before it judges, and its first windows are all it has to learn from."""
    taken, total = 0, baseline_windows
    for size in new_sizes:
        if total >= minimum:
            break
        taken, total = taken + 1, total + size
    return taken


@dataclass
class ScoringState:
    """What the node remembers about scoring across restarts (`state/scoring.json`)."""

    scored_chunk: int = -1  # buffer chunks up to this sequence are scored or baseline
    windows_scored: int = 0
    anomalous_chunks: list[int] = field(default_factory=list)  # held a crossing: not calibrated on
    gate: Gate = Gate()

    def to_json(self) -> dict[str, Any]:
        gate = self.gate
        return {
            "scored_chunk": self.scored_chunk,
            "windows_scored": self.windows_scored,
            "anomalous_chunks": self.anomalous_chunks,
            "recent_crossings": list(gate.recent),
            "last_alert_at": gate.last_alert_at,
            "suppressed": gate.suppressed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoringState:
        gate = Gate(tuple(bool(c) for c in data["recent_crossings"]), data["last_alert_at"], int(data["suppressed"]))
        return cls(int(data["scored_chunk"]), int(data["windows_scored"]), list(data["anomalous_chunks"]), gate)

    def advanced(
        self, through_chunk: int, windows: int, anomalous: Sequence[int], gate: Gate, *, oldest_chunk: int
    ) -> ScoringState:
        """After a pass that scored `windows` up to `through_chunk`; chunks older than
        `oldest_chunk` have left the buffer and are forgotten."""
        return replace(
            self,
            scored_chunk=through_chunk,
            windows_scored=self.windows_scored + windows,
            anomalous_chunks=sorted(c for c in {*self.anomalous_chunks, *anomalous} if c >= oldest_chunk),
            gate=gate,
        )
