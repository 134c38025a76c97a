"""Metrics out of the Nacelle daemons: round, region and node measurements for InfluxDB.

Build points with `Point` (re-exported from influxdb_client so callers never hand-write line
protocol) and hand them to a `MetricsWriter`. Dashboards and queries are not part of this package.
"""

from influxdb_client import Point, WritePrecision

from telemetry.writer import DEFAULT_BATCH_SIZE, InfluxV1Writer, MetricsWriteError, MetricsWriter

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "InfluxV1Writer",
    "MetricsWriteError",
    "MetricsWriter",
    "Point",
    "WritePrecision",
]
