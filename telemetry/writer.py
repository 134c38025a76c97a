"""Write metrics to InfluxDB: points rendered to line protocol, cut into batches, POSTed, retried.

Points are `influxdb_client.Point`s and influxdb_client renders the line protocol. The pieces:

- `line_batches` (pure): points → `Batch`es of one time unit and at most `batch_size` lines, the
  unit that is sent, spooled and acknowledged;
- `LineProtocolWriter`: `write()` sends the batches with jittered retries and counts what the
  server took; a subclass sends one batch once (`send`): `InfluxV1Writer` here (1.x `/write`
  with a database), `InfluxV2Writer` in telemetry.v2 (`/api/v2/write` with org, bucket, token);
- `SpooledWriter` (telemetry.spooled) puts either behind an on-disk spool, so an outage of
  InfluxDB loses nothing and blocks nobody.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import httpx
from influxdb_client import Point, WritePrecision
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

# InfluxDB 1.x accepts 25 MB bodies by default; 5000 short metric lines stay far below that.
DEFAULT_BATCH_SIZE = 5000

# influxdb_client names units "ns"/"us"; InfluxDB 1.x /write wants "n"/"u" and silently treats
# any unit it does not know (including "us") as nanoseconds.
_V1_PRECISION = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}

# Statuses that mean "the server read these points and will never store them" (bad line
# protocol, a field type conflict, points outside the retention policy, a body too large):
# sending them again cannot help. Anything else (5xx, 429, 401/403, 404 database not found,
# no answer) may pass later, once the server is back or an operator fixed its configuration.
REFUSED_STATUSES = frozenset({400, 413, 422})


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

    @property
    def refused(self) -> bool:
        """The server will never take these points (see REFUSED_STATUSES)."""
        return self.status in REFUSED_STATUSES


@runtime_checkable
class MetricsWriter(Protocol):
    """What the daemons need from a metrics sink."""

    @property
    def points_written(self) -> int: ...

    def write(self, points: Sequence[Point]) -> int: ...

    def write_later(self, points: Sequence[Point]) -> None:
        """Durable when it returns, delivered later (a writer without a spool writes now)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Batch:
    """Line protocol of `points` points sharing one time unit, exactly as it goes on the wire."""

    precision: str  # influxdb_client's unit names: "ns", "us", "ms", "s"
    body: bytes
    points: int


def line_batches(points: Sequence[Point], batch_size: int, *, stamp_ns: int | None = None) -> list[Batch]:
    """Render `points` into batches of at most `batch_size` lines, grouped by declared unit.

    Each point keeps the unit it declared with `Point.time(t, precision)` (influxdb_client's
    default is ns), because influxdb_client copies integer times verbatim: rendering them in one
    fixed unit would shift them by powers of 1000. With `stamp_ns`, a point without a time gets
    that one (a copy does; the caller's point is left alone), so that sending it again later
    overwrites it instead of storing it twice at the server's clock.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    by_precision: dict[str, list[str]] = {}
    for point in points:
        # Point has no public getter for its time; `_time` has been its attribute since 1.0.
        if stamp_ns is not None and point._time is None:
            point = copy.copy(point).time(stamp_ns, WritePrecision.NS)
        line = point.to_line_protocol()
        if not line:
            # influxdb_client renders a point without fields as "", which InfluxDB would
            # answer with 204 and silently store nothing.
            raise MetricsWriteError(f"point {point!r} has no fields", reason="point without fields")
        by_precision.setdefault(str(point.write_precision), []).append(line)
    batches = []
    for precision, lines in by_precision.items():
        for start in range(0, len(lines), batch_size):
            chunk = lines[start : start + batch_size]
            batches.append(Batch(precision, "\n".join(chunk).encode(), len(chunk)))
    return batches


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, MetricsWriteError) and exc.retryable


def http_error(target: str, status: int, reason: str) -> MetricsWriteError:
    """The error for an HTTP answer other than 2xx: 5xx and 429 are worth retrying."""
    return MetricsWriteError(
        f"{target} answered {status}: {reason}",
        status=status,
        reason=reason,
        retryable=status >= 500 or status == 429,
    )


class LineProtocolWriter:
    """Batching, retries and counting shared by the v1 and v2 writers; thread-safe.

    A 5xx may come after InfluxDB stored the batch, so retries can resend it: that is harmless
    for points with an explicit time (same series and time overwrite), but points without one
    get the server's clock and would be stored twice, so the daemons should always set a time.
    """

    target = "InfluxDB"  # where batches go, for messages; subclasses name their endpoint

    def __init__(
        self,
        *,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if max_attempts < 1 or batch_size < 1:
            raise ValueError("max_attempts and batch_size must be at least 1")
        self.batch_size = batch_size
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
        """Points the server acknowledged over this writer's lifetime (through `write` or `send`)."""
        return self._points_written

    def write(self, points: Sequence[Point]) -> int:
        """Store `points`; returns how many were accepted (all of them, or it raises)."""
        accepted = 0
        for batch in line_batches(points, self.batch_size):
            attempts = 0

            def send_once(batch: Batch = batch) -> None:
                nonlocal attempts
                attempts += 1
                self.send(batch)

            try:
                self._retrying(send_once)
            except MetricsWriteError as exc:
                exc.attempts, exc.accepted = attempts, accepted
                raise
            accepted += batch.points
        return accepted

    def write_later(self, points: Sequence[Point]) -> None:
        """No spool here: written now (MetricsWriter)."""
        self.write(points)

    def send(self, batch: Batch) -> None:
        """POST one batch once; raises MetricsWriteError (with `retryable` and `refused` set)."""
        self._post(batch)
        with self._lock:
            self._points_written += batch.points

    def check(self) -> None:
        """Raise MetricsWriteError unless the server answers and would take writes."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _post(self, batch: Batch) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return response.text.strip()


class InfluxV1Writer(LineProtocolWriter):
    """InfluxDB 1.x `/write` into `database`; one instance holds one keep-alive connection pool.
    With `auth` (user, password), for a server with authentication on: HTTP basic auth, which
    1.x accepts like its `u` and `p` parameters but keeps out of URLs and logs."""

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
        auth: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(
            max_attempts=max_attempts,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            batch_size=batch_size,
        )
        self.url = url.rstrip("/")
        self.database = database
        self.target = f"{self.url}/write"
        self._client = httpx.Client(timeout=timeout_s, transport=transport, auth=auth)

    def check(self) -> None:
        # An empty write stores nothing but answers 404 for a missing database and 401 without
        # credentials, which /ping would not.
        self._post(Batch("ns", b"", 0))

    def close(self) -> None:
        self._client.close()

    def _post(self, batch: Batch) -> None:
        params = {"db": self.database, "precision": _V1_PRECISION[batch.precision]}
        try:
            response = self._client.post(self.target, params=params, content=batch.body)
        except httpx.TransportError as exc:
            raise MetricsWriteError(f"cannot reach {self.target}: {exc!r}", reason=repr(exc), retryable=True) from exc
        if response.status_code != 204:
            raise http_error(self.target, response.status_code, _error_text(response))
