"""Metrics out of the Nacelle daemons: round, region and node measurements for InfluxDB.

Build points with `Point` (re-exported from influxdb_client so callers never hand-write line
protocol) and hand them to a `MetricsWriter`: an `InfluxV1Writer` (1.x `/write`) or
`InfluxV2Writer` (`/api/v2/write`) directly, or either behind a `SpooledWriter`, which keeps
what InfluxDB cannot take yet on disk and sends it when it can. Dashboards and queries are not
part of this package.
"""

from influxdb_client import Point, WritePrecision

from telemetry.spool import Spool, SpoolBusy, SpoolCorrupt, spooled_points
from telemetry.spooled import DEFAULT_SPOOL_BYTES, SpooledWriter
from telemetry.v2 import InfluxV2Writer
from telemetry.writer import (
    DEFAULT_BATCH_SIZE,
    Batch,
    InfluxV1Writer,
    LineProtocolWriter,
    MetricsWriteError,
    MetricsWriter,
    line_batches,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SPOOL_BYTES",
    "Batch",
    "InfluxV1Writer",
    "InfluxV2Writer",
    "LineProtocolWriter",
    "MetricsWriteError",
    "MetricsWriter",
    "Point",
    "Spool",
    "SpoolBusy",
    "SpoolCorrupt",
    "SpooledWriter",
    "WritePrecision",
    "line_batches",
    "spooled_points",
]
