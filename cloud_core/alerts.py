"""The nodes' anomaly alerts at the cloud: each one verified, then written as one InfluxDB point.

Alerts arrive on `nacelle/v1/region/{region}/alert/{node_id}` (the regional bridges carry them
to the cloud broker), whether or not a round is open. `validate_alert` checks, in order: size,
msgpack and schema, the signature of a node of the fleet registry, sender = the topic's node,
the sender's registered region = the topic's region = the envelope's, the values
(`wire.messages.parse_alert`: finite, score above a positive threshold), and that neither the
window nor the message comes from further ahead of our clock than `max_clock_skew_s`. A
refusal is logged (who, what, why), counted by reason, and written too (`nacelle_alert_refusal`):
a forged or misrouted alert shows on the dashboards, not only in the cloud core's log. Alerts of a
suspended node are accepted: suspension is about its model updates, and its bearings can fail
all the same.

Schema, which dashboards are built on (add fields, never rename):

    nacelle_alert   tags region, node
                    fields score (float, the window's raw reconstruction error), threshold (float),
                    ratio (float, score / threshold), model_version (int), suppressed (int)
                    time: when the window was recorded, ms
    nacelle_alert_refusal
                    tags region (the topic's), reason (wire.errors.RejectReason)
                    fields node (string, the topic's node: who it claims to be), count (int, 1)
                    time: when it arrived, µs

Writing never holds up the MQTT handler (and with it the partials behind an alert): accepted
alerts wait in a bounded list, which `persist` puts in the metrics spool (on disk; a thread of
the spool sends it to InfluxDB). The cloud core's session acknowledges messages to the broker
only once `persist` has returned after them (SessionSpec.ack_after: one fsync for all the
alerts that came meanwhile), so a crash before then gets them delivered again instead of
losing them; a copy delivered twice lands on the same point (same tags, same time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cloud_core.config import AlertsConfig
from telemetry import MetricsWriter, Point, WritePrecision
from wire.envelope import Kind, open_envelope
from wire.errors import RejectedMessage, RejectReason
from wire.messages import NodeAlert, parse_alert
from wire.registry import FleetRegistry
from wire.topics import alert_topic_ids

log = logging.getLogger(__name__)

MEASUREMENT = "nacelle_alert"
REFUSAL_MEASUREMENT = "nacelle_alert_refusal"


def validate_alert(
    payload: bytes, topic: str, *, registry: FleetRegistry, config: AlertsConfig, now: float
) -> NodeAlert:
    """The alert `payload` carries on `topic`, or RejectedMessage with the reason."""
    ids = alert_topic_ids(topic)
    if ids is None:
        raise RejectedMessage(RejectReason.MALFORMED, f"{topic!r} is not an alert topic")
    topic_region, topic_node = ids

    def node_key(sender: str) -> Ed25519PublicKey | None:  # only nodes alert, not aggregators or the cloud
        return registry.public_key(sender) if sender in registry.nodes else None

    envelope = open_envelope(payload, max_bytes=config.max_bytes, keys=node_key, expected_kind=Kind.ALERT)
    sender = envelope.sender
    if sender != topic_node:
        raise RejectedMessage(RejectReason.TOPIC_MISMATCH, f"{sender!r} published on {topic_node!r}'s alert topic")
    member_region = registry.nodes[sender].region
    if member_region != topic_region or envelope.region != topic_region:
        raise RejectedMessage(
            RejectReason.WRONG_REGION,
            f"{sender!r} of region {member_region!r} claims {envelope.region!r} on region {topic_region!r}'s topic",
        )
    alert = parse_alert(envelope)
    latest = now + config.max_clock_skew_s
    if alert.window_ts > latest or envelope.created_at > latest:
        raise RejectedMessage(
            RejectReason.STALE_TIMESTAMP,
            f"window at {alert.window_ts:.3f}, sent at {envelope.created_at:.3f}: ahead of our clock ({now:.3f})",
        )
    return alert


def alert_point(alert: NodeAlert) -> Point:
    return (
        Point(MEASUREMENT)
        .tag("region", alert.region)
        .tag("node", alert.node_id)
        .field("score", float(alert.score))
        .field("threshold", float(alert.threshold))
        .field("ratio", float(alert.ratio))
        .field("model_version", int(alert.model_version))
        .field("suppressed", int(alert.suppressed))
        # round, not int: a time kept in ms comes back from float seconds as ...249.99999
        .time(round(alert.window_ts * 1000), WritePrecision.MS)
    )


def refusal_point(topic: str, reason: RejectReason, at: float) -> Point:
    region, node = alert_topic_ids(topic) or ("?", "?")
    return (
        Point(REFUSAL_MEASUREMENT)
        .tag("region", region)
        .tag("reason", reason.value)
        .field("node", node)
        .field("count", 1)
        .time(round(at * 1_000_000), WritePrecision.US)  # two refusals in one ms stay two points
    )


class AlertIngest:
    """Verifies the alerts the cloud core's session hands it and writes them (when `metrics`)."""

    def __init__(
        self,
        registry: FleetRegistry,
        config: AlertsConfig,
        metrics: MetricsWriter | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.config = config
        self._metrics = metrics
        self._clock = clock
        self._pending: list[Point] = []
        self.accepted = 0
        self.refused: Counter[str] = Counter()
        self.written = 0  # points (alerts and refusals) the writer took: spooled, or written
        self.dropped = 0  # points never written: the list was full or the spool failed

    async def handle(self, payload: bytes, topic: str) -> NodeAlert | None:
        """Verify one alert and queue its point; None when refused (logged and counted)."""
        now = self._clock()
        try:
            alert = validate_alert(payload, topic, registry=self.registry, config=self.config, now=now)
        except RejectedMessage as exc:
            self.refused[exc.reason.value] += 1
            log.warning("cloud refused alert on %s: %s", topic, exc)
            if self._metrics is not None:
                self._queue(refusal_point(topic, exc.reason, now))
            return None
        self.accepted += 1
        log.info(
            "cloud got alert of %s (%s): score %.4g = %.2fx threshold, model v%d, %d suppressed",
            alert.node_id,
            alert.region,
            alert.score,
            alert.ratio,
            alert.model_version,
            alert.suppressed,
        )
        if self._metrics is not None:
            self._queue(alert_point(alert))
        return alert

    def _queue(self, point: Point) -> None:
        if len(self._pending) >= self.config.max_pending:
            self.dropped += 1
            log.error("cloud drops an alert's point: %d are already waiting for InfluxDB", len(self._pending))
            return
        self._pending.append(point)

    async def persist(self) -> None:
        """The points of the alerts handled so far, in the metrics spool on disk (off the event
        loop). A spool that cannot be written loses them, logged and counted, rather than
        holding back every message behind them unacknowledged."""
        if self._metrics is None or not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            await asyncio.to_thread(self._metrics.write_later, batch)
            self.written += len(batch)
        except Exception as exc:  # MetricsWriteError (disk full, permissions), or a bug: logged either way
            self.dropped += len(batch)
            log.error("cloud could not spool %d alerts for InfluxDB: %s", len(batch), exc, exc_info=exc)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Spool, within `timeout_s`, what is still waiting (handled after the last `persist`)."""
        waiting = len(self._pending)
        try:
            await asyncio.wait_for(self.persist(), timeout_s)
        except TimeoutError:
            log.error("cloud stops with %d alerts not yet spooled for InfluxDB", waiting)
