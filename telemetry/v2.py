"""Write metrics through the InfluxDB v2 API (`/api/v2/write` with org, bucket and token).

influxdb_client's WriteApi in SYNCHRONOUS mode does the request (auth header, org and bucket
parameters, precision); batching, retries and the spool stay the shared ones of telemetry.writer,
so a v2 server gets exactly the batches a v1 server would. Any server that speaks the endpoint
works: InfluxDB 2.x and 3.x, or VictoriaMetrics (which keeps duplicates of a series and time
unless started with `-dedup.minScrapeInterval=1ms`; InfluxDB overwrites them).
"""

from __future__ import annotations

from typing import Any

import urllib3
from influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from telemetry.writer import DEFAULT_BATCH_SIZE, Batch, LineProtocolWriter, MetricsWriteError, http_error


class InfluxV2Writer(LineProtocolWriter):
    """`/api/v2/write` into `bucket` of `org`, authenticated with `token` (never logged)."""

    def __init__(
        self,
        url: str,
        *,
        org: str,
        bucket: str,
        token: str,
        timeout_s: float = 5.0,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        super().__init__(
            max_attempts=max_attempts,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            batch_size=batch_size,
        )
        self.url = url.rstrip("/")
        self.org, self.bucket = org, bucket
        self.target = f"{self.url}/api/v2/write (org {org!r}, bucket {bucket!r})"
        # retries=False: urllib3 must not retry on its own under our backoff and our counters.
        self._client = InfluxDBClient(url=self.url, token=token, org=org, timeout=int(timeout_s * 1000), retries=False)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def check(self) -> None:
        # The v2 API has no empty write to try without storing something; /ping at least shows
        # the server answers (a wrong bucket or token shows at the first write, in the log).
        if not self._client.ping():
            raise MetricsWriteError(f"{self.url}/ping did not answer", reason="no answer to /ping", retryable=True)

    def close(self) -> None:
        self._write_api.close()
        self._client.close()

    def _post(self, batch: Batch) -> None:
        try:
            # WritePrecision's members are the plain strings Batch.precision holds.
            precision: Any = batch.precision
            self._write_api.write(bucket=self.bucket, org=self.org, record=batch.body, write_precision=precision)
        except ApiException as exc:
            raise api_error(self.target, exc) from exc
        except urllib3.exceptions.HTTPError as exc:  # refused, reset, timed out: never answered
            raise MetricsWriteError(f"cannot reach {self.target}: {exc!r}", reason=repr(exc), retryable=True) from exc


def api_error(target: str, exc: ApiException) -> MetricsWriteError:
    """influxdb_client's error as ours; status 0 is its way of saying TLS failed (no answer)."""
    if not exc.status:
        reason = str(exc.reason or exc)
        return MetricsWriteError(f"cannot reach {target}: {reason}", reason=reason, retryable=True)
    return http_error(target, int(exc.status), str(getattr(exc, "message", None) or exc.reason or ""))
