"""InfluxDB points for a closed round. Schema (measurement: tags | fields):

- nacelle_round:     status | round, model_version, updates_accepted, updates_rejected,
                     bytes_per_update_mean, train_loss_mean, seconds, regions_reporting,
                     reason, nodes_suspended
                     (status: published, quorum_failed, guard_refused, superseded, empty)
- nacelle_region:    region | round, reported, expected, accepted, rejected, total_weight,
                     bytes_per_update_mean, quorum_met
- nacelle_rejection: region, reason | round, count
- nacelle_node:      region, node | round, num_samples, train_loss, update_bytes, outlier_score
- nacelle_model:     event | version, parent_version, round, holdout_loss (when a holdout is set)
                     (event: published, rollback)

Tags hold only bounded sets (status, region, reason) plus the node id on nacelle_node: one
series per node, 10,000 series for a 10,000-turbine fleet, well inside InfluxDB 1.x's comfort
zone; round numbers are fields, never tags, so series do not grow with time.
"""

from __future__ import annotations

from influxdb_client import Point, WritePrecision

from cloud_core.rounds import CloudRound, RoundRecord


def round_points(record: RoundRecord, cloud_round: CloudRound, parent_version: int) -> list[Point]:
    at = int(record.closed_at * 1000)

    def point(measurement: str) -> Point:
        return Point(measurement).time(at, WritePrecision.MS)

    points = [
        point("nacelle_round")
        .tag("status", record.status)
        .field("round", record.round)
        .field("model_version", record.model_version)
        .field("updates_accepted", record.updates_accepted)
        .field("updates_rejected", record.updates_rejected)
        .field("bytes_per_update_mean", float(record.bytes_per_update_mean))
        .field("train_loss_mean", float(record.train_loss_mean))
        .field("seconds", float(record.seconds))
        .field("regions_reporting", sum(1 for r in record.regions.values() if r["reported"]))
        .field("reason", record.reason)
        .field("nodes_suspended", record.nodes_suspended)
    ]
    for region, summary in record.regions.items():
        points.append(
            point("nacelle_region")
            .tag("region", region)
            .field("round", record.round)
            .field("reported", bool(summary["reported"]))
            .field("expected", int(summary["expected"]))
            .field("accepted", int(summary["accepted"]))
            .field("rejected", int(sum(summary["rejected"].values())))
            .field("total_weight", float(summary["total_weight"]))
            .field("bytes_per_update_mean", float(summary["bytes_per_update_mean"]))
            .field("quorum_met", bool(summary.get("quorum_met", summary["reported"])))
        )
        for reason, count in sorted(summary["rejected"].items()):
            points.append(
                point("nacelle_rejection")
                .tag("region", region)
                .tag("reason", reason)
                .field("round", record.round)
                .field("count", int(count))
            )
    for region, partial in sorted(cloud_round.partials.items()):
        for node in partial.nodes:
            points.append(
                point("nacelle_node")
                .tag("region", region)
                .tag("node", node.node_id)
                .field("round", record.round)
                .field("num_samples", node.num_samples)
                .field("train_loss", float(node.train_loss))
                .field("update_bytes", node.update_bytes)
                .field("outlier_score", float(node.outlier_score))
            )
    if record.status == "published":
        points.append(
            model_point(record.model_version, parent_version, record.round, "published", record.holdout_loss, at)
        )
    return points


def model_point(
    version: int, parent_version: int, round_id: int, event: str, holdout_loss: float | None, at_ms: int
) -> Point:
    """A model version that went out: published by a round, or a rollback republishing an older one."""
    point = (
        Point("nacelle_model")
        .tag("event", event)
        .field("version", version)
        .field("parent_version", parent_version)
        .field("round", round_id)
        .time(at_ms, WritePrecision.MS)
    )
    return point if holdout_loss is None else point.field("holdout_loss", float(holdout_loss))
