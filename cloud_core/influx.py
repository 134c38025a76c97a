"""The cloud core's metrics writer, as its `[influx]` configuration asks: v1 or v2 API, behind
the on-disk spool in `state_dir/metrics-spool` (telemetry.spooled)."""

from __future__ import annotations

from pathlib import Path

from cloud_core.config import InfluxConfig
from telemetry import InfluxV1Writer, InfluxV2Writer, LineProtocolWriter, SpooledWriter

SPOOL_DIR = "metrics-spool"


def influx_sender(config: InfluxConfig) -> LineProtocolWriter:
    """The writer for `config.url` through `config.api` (which must be set)."""
    if config.url is None:
        raise ValueError("influx.url is not set")
    if config.api == "v1":
        return InfluxV1Writer(
            config.url,
            config.database,
            timeout_s=config.timeout_s,
            batch_size=config.batch_size,
            auth=config.v1_credentials(),
        )
    assert config.org is not None and config.bucket is not None  # InfluxConfig checked them
    return InfluxV2Writer(
        config.url,
        org=config.org,
        bucket=config.bucket,
        token=config.api_token(),
        timeout_s=config.timeout_s,
        batch_size=config.batch_size,
    )


def metrics_writer(config: InfluxConfig, state_dir: Path) -> SpooledWriter | None:
    """None when metrics are off (no url)."""
    if config.url is None:
        return None
    return SpooledWriter(influx_sender(config), state_dir / SPOOL_DIR, max_spool_bytes=config.spool_max_bytes)
