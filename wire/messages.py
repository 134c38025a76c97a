"""Typed bodies of the v1 messages and their checks. Each `*_envelope` builds the envelope a
sender seals; each `parse_*` turns a verified envelope back into a dataclass or raises
RejectedMessage. Tensor payloads go through `wire.codec`; this module does no I/O.

| kind    | envelope round / base          | body fields                                                |
|---------|--------------------------------|------------------------------------------------------------|
| round   | round id / model to train from | opened_at, regional_deadline, global_deadline, epochs,     |
|         |                                | batch_size, learning_rate, codec, [topk_fraction]          |
| model   | round that made it / parent    | version, weights (fp32-zstd tensors)                       |
| update  | round / base version           | delta (tensors, codec of the round), num_samples,          |
|         |                                | train_loss                                                 |
| partial | round / base version           | weighted_sum (fp32-zstd), total_weight, expected,          |
|         |                                | rejected {reason: count},                                  |
|         |                                | nodes [[id, samples, loss, bytes, outlier score]]          |
| status  | 0 / model version the sender has | state ("online" / "offline")                             |
| alert   | 0 / model that scored the window | score, threshold (score > threshold > 0), window_ts      |
|         |                                | (Unix s), suppressed (crossings held back since the last) |
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wire.codec import CODECS, DEFAULT_TOPK_FRACTION, Arrays, Codec, Shapes, decode_arrays, encode_arrays
from wire.envelope import Envelope, Kind
from wire.errors import RejectedMessage, RejectReason


def _get(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RejectedMessage(RejectReason.MALFORMED, f"body field {name!r} missing or mistyped")
    return value


def _finite(body: Mapping[str, Any], name: str, *, minimum: float = -math.inf) -> float:
    value = float(_get(body, name, (int, float)))
    if not math.isfinite(value):
        raise RejectedMessage(RejectReason.NON_FINITE, f"body field {name!r} is {value}")
    if value < minimum:
        raise RejectedMessage(RejectReason.BAD_VALUE, f"body field {name!r} = {value} < {minimum}")
    return value


def _positive(body: Mapping[str, Any], name: str) -> float:
    value = _finite(body, name)
    if not value > 0:
        raise RejectedMessage(RejectReason.BAD_VALUE, f"body field {name!r} = {value} must be positive")
    return value


@dataclass(frozen=True)
class RoundAnnouncement:
    round_id: int
    base_version: int
    opened_at: float
    regional_deadline: float
    global_deadline: float
    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 1e-3
    codec: Codec = "int8-zstd"
    # Share of an update's values a `topk-int8-zstd` update keeps; announced with that codec only.
    topk_fraction: float = DEFAULT_TOPK_FRACTION


def round_envelope(ann: RoundAnnouncement, sender: str) -> Envelope:
    body: dict[str, Any] = {
        "opened_at": ann.opened_at,
        "regional_deadline": ann.regional_deadline,
        "global_deadline": ann.global_deadline,
        "epochs": ann.epochs,
        "batch_size": ann.batch_size,
        "learning_rate": ann.learning_rate,
        "codec": ann.codec,
    }
    if ann.codec == "topk-int8-zstd":
        body["topk_fraction"] = ann.topk_fraction
    return Envelope(Kind.ROUND, sender, "", ann.round_id, ann.base_version, ann.opened_at, body)


def parse_round(env: Envelope) -> RoundAnnouncement:
    body = env.body
    codec = _get(body, "codec", str)
    if codec not in CODECS:
        raise RejectedMessage(RejectReason.BAD_VALUE, f"round announces unknown codec {codec!r}")
    topk_fraction = _positive(body, "topk_fraction") if "topk_fraction" in body else DEFAULT_TOPK_FRACTION
    if topk_fraction > 1:
        raise RejectedMessage(RejectReason.BAD_VALUE, f"top-k fraction {topk_fraction} is above 1")
    return RoundAnnouncement(
        round_id=env.round_id,
        base_version=env.base_version,
        opened_at=_finite(body, "opened_at"),
        regional_deadline=_finite(body, "regional_deadline"),
        global_deadline=_finite(body, "global_deadline"),
        epochs=int(_finite(body, "epochs", minimum=1)),
        batch_size=int(_finite(body, "batch_size", minimum=1)),
        learning_rate=_positive(body, "learning_rate"),
        codec=codec,
        topk_fraction=topk_fraction,
    )


@dataclass(frozen=True)
class ModelRelease:
    version: int
    round_id: int
    parent_version: int
    weights: Arrays


def model_envelope(release: ModelRelease, sender: str, created_at: float) -> Envelope:
    body = {"version": release.version, "weights": encode_arrays(release.weights, "fp32-zstd")}
    return Envelope(Kind.MODEL, sender, "", release.round_id, release.parent_version, created_at, body)


def model_version(env: Envelope) -> int:
    """The version a model message carries, without decoding its weights (`nacelle edge-health`)."""
    version: int = _get(env.body, "version", int)
    return version


def parse_model(env: Envelope, shapes: Shapes) -> ModelRelease:
    version = model_version(env)
    weights = decode_arrays(env.body.get("weights"), shapes, "fp32-zstd")
    return ModelRelease(version, env.round_id, env.base_version, weights)


@dataclass(frozen=True)
class NodeUpdate:
    node_id: str
    region: str
    round_id: int
    base_version: int
    delta: Arrays
    num_samples: int
    train_loss: float


def update_envelope(
    update: NodeUpdate, codec: Codec, created_at: float, *, topk_fraction: float = DEFAULT_TOPK_FRACTION
) -> Envelope:
    body = {
        "delta": encode_arrays(update.delta, codec, topk_fraction=topk_fraction),
        "num_samples": update.num_samples,
        "train_loss": update.train_loss,
    }
    return Envelope(
        Kind.UPDATE,
        update.node_id,
        update.region,
        update.round_id,
        update.base_version,
        created_at,
        body,
    )


def parse_update(env: Envelope, shapes: Shapes, *, max_samples: int, codec: Codec | None = None) -> NodeUpdate:
    """`codec`: the one the round announced; an update in another codec is refused."""
    num_samples = _get(env.body, "num_samples", int)
    if not 0 < num_samples <= max_samples:
        raise RejectedMessage(RejectReason.BAD_VALUE, f"num_samples {num_samples} outside 1..{max_samples}")
    train_loss = _finite(env.body, "train_loss", minimum=0.0)
    delta = decode_arrays(env.body.get("delta"), shapes, codec)
    return NodeUpdate(env.sender, env.region, env.round_id, env.base_version, delta, num_samples, train_loss)


@dataclass(frozen=True)
class NodeSummary:
    """What the cloud learns about each node that contributed (for per-node metrics)."""

    node_id: str
    num_samples: int
    train_loss: float
    update_bytes: int
    # Distance to the region's consensus over the typical distance (learning.robust); 0 from
    # aggregators that predate it.
    outlier_score: float = 0.0


@dataclass(frozen=True)
class RegionalPartial:
    region: str
    round_id: int
    base_version: int
    weighted_sum: Arrays
    total_weight: float
    expected: int
    rejected: dict[str, int] = field(default_factory=dict)
    nodes: tuple[NodeSummary, ...] = ()

    @property
    def accepted(self) -> int:
        return len(self.nodes)


def partial_envelope(partial: RegionalPartial, sender: str, created_at: float) -> Envelope:
    body = {
        "weighted_sum": encode_arrays(partial.weighted_sum, "fp32-zstd"),
        "total_weight": partial.total_weight,
        "expected": partial.expected,
        "rejected": dict(partial.rejected),
        "nodes": [[n.node_id, n.num_samples, n.train_loss, n.update_bytes, n.outlier_score] for n in partial.nodes],
    }
    return Envelope(
        Kind.PARTIAL,
        sender,
        partial.region,
        partial.round_id,
        partial.base_version,
        created_at,
        body,
    )


def _node_summary(entry: object) -> NodeSummary:
    if not isinstance(entry, list) or len(entry) not in (4, 5):
        raise RejectedMessage(RejectReason.MALFORMED, "node summary must be [id, samples, loss, bytes, score]")
    node_id, samples, loss, size, score = entry if len(entry) == 5 else [*entry, 0.0]
    if not (
        isinstance(node_id, str)
        and all(type(v) is int for v in (samples, size))
        and all(type(v) in (int, float) for v in (loss, score))
    ):
        raise RejectedMessage(RejectReason.MALFORMED, f"node summary {entry!r} is mistyped")
    if not (math.isfinite(loss) and math.isfinite(score)):
        raise RejectedMessage(RejectReason.NON_FINITE, f"node {node_id!r} reports loss {loss}, score {score}")
    if samples <= 0 or size <= 0 or loss < 0 or score < 0:
        raise RejectedMessage(RejectReason.BAD_VALUE, f"node summary {entry!r} holds impossible values")
    return NodeSummary(node_id, samples, float(loss), size, float(score))


def parse_partial(env: Envelope, shapes: Shapes) -> RegionalPartial:
    body = env.body
    rejected = _get(body, "rejected", dict)
    if not all(isinstance(k, str) and isinstance(v, int) for k, v in rejected.items()):
        raise RejectedMessage(RejectReason.MALFORMED, "body field 'rejected' must map reason → count")
    nodes = tuple(_node_summary(entry) for entry in _get(body, "nodes", list))
    return RegionalPartial(
        region=env.region,
        round_id=env.round_id,
        base_version=env.base_version,
        weighted_sum=decode_arrays(body.get("weighted_sum"), shapes, "fp32-zstd"),
        total_weight=_finite(body, "total_weight", minimum=0.0),
        expected=_get(body, "expected", int),
        rejected=rejected,
        nodes=nodes,
    )


def status_envelope(sender: str, region: str, state: str, model_version: int, created_at: float) -> Envelope:
    return Envelope(Kind.STATUS, sender, region, 0, model_version, created_at, {"state": state})


# Alert numbers become InfluxDB integer fields (int64): anything larger would fail the write of
# every point in its batch.
_MAX_INT64 = 2**63 - 1


@dataclass(frozen=True)
class NodeAlert:
    """A live window of `node_id` whose anomaly score crossed the node's alert threshold."""

    node_id: str
    region: str
    model_version: int  # the global model that scored the window (the envelope's `base`)
    score: float  # the window's reconstruction error
    threshold: float  # the node's threshold under that model
    window_ts: float  # when the window was recorded, Unix seconds
    suppressed: int = 0  # crossings the node's rate limit held back since its previous alert

    @property
    def ratio(self) -> float:
        return self.score / self.threshold


def alert_envelope(alert: NodeAlert, created_at: float) -> Envelope:
    body = {
        "score": float(alert.score),
        "threshold": float(alert.threshold),
        "window_ts": float(alert.window_ts),
        "suppressed": int(alert.suppressed),
    }
    return Envelope(Kind.ALERT, alert.node_id, alert.region, 0, alert.model_version, created_at, body)


def parse_alert(env: Envelope) -> NodeAlert:
    """Values only; whether the sender may speak for the topic's node is the receiver's check."""
    body = env.body
    if not 0 <= env.base_version <= _MAX_INT64:
        raise RejectedMessage(RejectReason.BAD_VALUE, f"alert scored by model v{env.base_version}")
    score = _finite(body, "score", minimum=0.0)
    threshold = _positive(body, "threshold")
    if not score > threshold:
        raise RejectedMessage(RejectReason.BAD_VALUE, f"score {score} does not cross threshold {threshold}")
    if not math.isfinite(score / threshold):  # the ratio is stored too
        raise RejectedMessage(RejectReason.NON_FINITE, f"score {score} over threshold {threshold} overflows")
    suppressed = _get(body, "suppressed", int)
    if not 0 <= suppressed <= _MAX_INT64:
        raise RejectedMessage(RejectReason.BAD_VALUE, f"suppressed = {suppressed}")
    return NodeAlert(
        node_id=env.sender,
        region=env.region,
        model_version=env.base_version,
        score=score,
        threshold=threshold,
        window_ts=_positive(body, "window_ts"),
        suppressed=suppressed,
    )
