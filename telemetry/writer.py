"""Write round/region/node metrics to InfluxDB 1.x over its HTTP /write endpoint.

Points are `influxdb_client.Point`s and influxdb_client renders the line protocol; this module
only batches, POSTs, retries transient failures and counts what the server accepted. It does not
buffer across failures (a spool comes later), speak the v2 API, or query.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, runtime_checkable

import httpx
from influxdb_client import Point
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

# InfluxDB 1.x accepts 25 MB bodies by default; 5000 short metric lines stay far below that.
DEFAULT_BATCH_SIZE = 5000

# influxdb_client names units "ns"/"us"; InfluxDB 1.x /write wants "n"/"u" and silently treats
# any unit it does not know (including "us") as nanoseconds.
_V1_PRECISION = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}


class MetricsWriteError(RuntimeError):
    """Metrics were not stored: attempts ran out, or the server refused them for good.

    `status` is the HTTP status (None when the server was never reached), `reason` the server's
    error text or the transport error, `accepted` how many points of the failed `write()` call
    the server did take in earlier batches. A 400 "partial write" may also have stored part of
    the failing batch (InfluxDB keeps the points it could parse); those are not counted.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        retryable: bool = False,
        attempts: int = 0,
        accepted: int = 0,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retryable = retryable
        self.attempts = attempts
        self.accepted = accepted


@runtime_checkable
class MetricsWriter(Protocol):
    """What the daemons need from a metrics sink."""

    @property
    def points_written(self) -> int: ...

    def write(self, points: Sequence[Point]) -> int: ...

    def close(self) -> None: ...


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, MetricsWriteError) and exc.retryable


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return response.text.strip()


class InfluxV1Writer:
    """Synchronous InfluxDB 1.x writer; one instance holds one keep-alive connection pool.

    Thread-safe. Each point goes out in the unit it declared with `Point.time(t, precision)`
    (influxdb_client's default is ns), because influxdb_client copies integer times verbatim:
    rendering them in one fixed unit would shift them by powers of 1000. Daemons that want ms on
    the wire declare `WritePrecision.MS`; a request carries points of one unit only.

    A 5xx may come after InfluxDB stored the batch, so retries can resend it: that is harmless
    for points with an explicit time (same series and time overwrite), but points without one
    get the server's clock and would be stored twice, so the daemons should always set a time.
    """

    def __init__(
        self,
        url: str,
        database: str,
        *,
        timeout_s: float = 5.0,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_attempts < 1 or batch_size < 1:
            raise ValueError("max_attempts and batch_size must be at least 1")
        self.url = url.rstrip("/")
        self.database = database
        self.batch_size = batch_size
        self._client = httpx.Client(timeout=timeout_s, transport=transport)
        self._retrying = Retrying(
            stop=stop_after_attempt(max_attempts),
            # Full jitter: uniform(0, min(max, initial * 2**n)), so a fleet that lost InfluxDB
            # together does not retry in lockstep.
            wait=wait_random_exponential(multiplier=backoff_initial_s, max=backoff_max_s),
            retry=retry_if_exception(_is_retryable),
            reraise=True,
        )
        self._lock = threading.Lock()
        self._points_written = 0

    @property
    def points_written(self) -> int:
        """Points the server acknowledged with 204 over this writer's lifetime."""
        return self._points_written

    def write(self, points: Sequence[Point]) -> int:
        """Store `points`; returns how many were accepted (all of them, or it raises)."""
        by_precision: dict[str, list[str]] = {}
        for point in points:
            line = point.to_line_protocol()
            if not line:
                # influxdb_client renders a point without fields as "", which InfluxDB would
                # answer with 204 and silently store nothing.
                raise MetricsWriteError(f"point {point!r} has no fields", reason="point without fields")
            by_precision.setdefault(_V1_PRECISION[point.write_precision], []).append(line)
        accepted = 0
        for precision, batch in by_precision.items():
            for start in range(0, len(batch), self.batch_size):
                chunk = batch[start : start + self.batch_size]
                try:
                    self._send("\n".join(chunk).encode(), precision)
                except MetricsWriteError as exc:
                    exc.accepted = accepted
                    raise
                accepted += len(chunk)
                with self._lock:
                    self._points_written += len(chunk)
        return accepted

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> InfluxV1Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, body: bytes, precision: str) -> None:
        attempts = 0

        def post_once() -> None:
            nonlocal attempts
            attempts += 1
            self._post(body, precision)

        try:
            self._retrying(post_once)
        except MetricsWriteError as exc:
            exc.attempts = attempts
            raise

    def _post(self, body: bytes, precision: str) -> None:
        target = f"{self.url}/write"
        try:
            response = self._client.post(target, params={"db": self.database, "precision": precision}, content=body)
        except httpx.TransportError as exc:
            raise MetricsWriteError(f"cannot reach {target}: {exc!r}", reason=repr(exc), retryable=True) from exc
        if response.status_code == 204:
            return
        reason = _error_text(response)
        retryable = response.status_code >= 500 or response.status_code == 429
        raise MetricsWriteError(
            f"{target} answered {response.status_code}: {reason}",
            status=response.status_code,
            reason=reason,
            retryable=retryable,
        )
