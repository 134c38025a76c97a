"""A metrics writer that never loses a point to an InfluxDB outage and never waits it out.

Every `write()` first puts its batches in the on-disk spool (telemetry.spool: fsynced), then a
background thread sends the spool oldest first through a v1 or v2 writer, one batch per request,
deleting a batch's file once the server acknowledged it. While InfluxDB is down the thread
retries with jittered exponential backoff (and at once when a new write comes) while the spool
grows (bounded); when it answers again the backlog goes out in order. At start, whatever an
earlier process left in the spool goes first. A batch the server refuses for good (400, 413,
422: bad data that no retry can fix) is logged, counted in `points_refused` and dropped, so it
cannot hold up the batches behind it.

Nothing is stored twice: a batch is deleted only after its 2xx, and a batch sent again (after a
timeout or a 5xx that came after the server stored it, or a crash before the file was deleted)
carries the same points with the same explicit times, which InfluxDB overwrites in place (same
measurement, tag set and time). Points without a time are stamped when `write()` takes them, so
that holds for them too.

`write()` waits for its own batches only until they are delivered, until a delivery attempt
fails (InfluxDB is down: no point waiting out the backoff), or `wait_s`; it returns how many of
its points are stored by then. The rest are in the spool, and the log says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from influxdb_client import Point
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_when_event_set, wait_random_exponential

from telemetry.spool import Spool, SpoolEntry
from telemetry.writer import Batch, LineProtocolWriter, MetricsWriteError, line_batches

log = logging.getLogger(__name__)

# A 10,000-turbine round is ~10,000 points (~1.5 MB of line protocol): 64 MiB is weeks of nights.
DEFAULT_SPOOL_BYTES = 64 * 1024 * 1024


def _not_refused(exc: BaseException) -> bool:
    return isinstance(exc, MetricsWriteError) and not exc.refused


class SpooledWriter:
    """`MetricsWriter` in front of `sender` (InfluxV1Writer or InfluxV2Writer), spooling in
    `directory`. Thread-safe. `close()` stops the sender thread; what is left stays on disk."""

    def __init__(
        self,
        sender: LineProtocolWriter,
        directory: Path,
        *,
        max_spool_bytes: int = DEFAULT_SPOOL_BYTES,
        batch_size: int | None = None,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        wait_s: float = 10.0,
        close_timeout_s: float = 5.0,
    ) -> None:
        self.sender = sender
        self.spool = Spool(directory, max_spool_bytes)
        self.batch_size = batch_size or sender.batch_size
        self.wait_s = wait_s
        self.close_timeout_s = close_timeout_s
        self.points_refused = 0  # refused for good by the server (REFUSED_STATUSES)
        self._points_written = 0
        self._failed_attempts = 0
        self._outage_since: float | None = None  # monotonic time of the first failure, while failing
        # For batches a write() waits on: seq -> None while spooled, then whether it was stored.
        self._outcomes: dict[int, bool | None] = {}
        self._state = threading.Condition()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._retrying = Retrying(
            retry=retry_if_exception(_not_refused),
            stop=stop_when_event_set(self._closing),
            wait=wait_random_exponential(multiplier=backoff_initial_s, max=backoff_max_s),
            sleep=self._backoff,
            before_sleep=self._on_failure,
            reraise=True,
        )
        if self.spool.pending_points:
            log.info(
                "metrics spool %s holds %d points from before; sending them to %s first",
                directory,
                self.spool.pending_points,
                sender.target,
            )
        self._thread = threading.Thread(target=self._run, name="metrics-spool", daemon=True)
        self._thread.start()

    @property
    def points_written(self) -> int:
        """Points the server acknowledged over this writer's lifetime, spooled ones included."""
        return self._points_written

    @property
    def pending_points(self) -> int:
        """Points in the spool, not yet acknowledged."""
        return self.spool.pending_points

    def write(self, points: Sequence[Point]) -> int:
        """Spool `points` durably, then wait a little for them to be stored (see module doc).
        Returns how many are stored now; raises MetricsWriteError only for a point without
        fields or a spool that cannot be written (disk full, permissions)."""
        batches = line_batches(points, self.batch_size, stamp_ns=time.time_ns())
        with self._state:
            failures_before = self._failed_attempts
            entries = [self._append(batch) for batch in batches]
            waiting = {entry.seq: entry.points for entry in entries if entry is not None}
            self._outcomes.update(dict.fromkeys(waiting))
            self._wake.set()
            self._state.wait_for(
                lambda: (
                    all(self._outcomes[seq] is not None for seq in waiting)
                    or self._failed_attempts > failures_before
                    or self._closing.is_set()
                ),
                timeout=self.wait_s,
            )
            delivered = sum(points for seq, points in waiting.items() if self._outcomes.pop(seq))
        total = sum(batch.points for batch in batches)
        if delivered < total:
            log.warning(
                "metrics: %d of %d points spooled in %s (%d in all) until %s takes them",
                total - delivered,
                total,
                self.spool.directory,
                self.spool.pending_points,
                self.sender.target,
            )
        return delivered

    def write_later(self, points: Sequence[Point]) -> None:
        """Spool `points` durably and return without waiting for InfluxDB: the sender thread
        delivers them. Raises like `write`."""
        batches = line_batches(points, self.batch_size, stamp_ns=time.time_ns())
        with self._state:
            for batch in batches:
                self._append(batch)
        self._wake.set()

    def _append(self, batch: Batch) -> SpoolEntry | None:
        try:
            entry, dropped = self.spool.append(batch)
        except OSError as exc:
            raise MetricsWriteError(f"cannot spool metrics in {self.spool.directory}: {exc}", reason=str(exc)) from exc
        for old in dropped:
            self._resolve(old.seq, delivered=False)
        return entry

    def _resolve(self, seq: int, *, delivered: bool) -> None:
        """Record what became of a batch, for the write() that may be waiting on it."""
        with self._state:
            if seq in self._outcomes:
                self._outcomes[seq] = delivered
            self._state.notify_all()

    def drain(self, timeout_s: float) -> bool:
        """Wait until the spool is empty; False if it is not within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        while self.spool.pending_points:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        self._thread.join(self.close_timeout_s)
        if self._thread.is_alive():
            log.warning("metrics: %s still busy at close; its batch stays spooled", self.sender.target)
        else:
            self.sender.close()
            self.spool.close()
        if self.spool.pending_points:
            log.warning(
                "metrics: %d points left in spool %s; they are sent when a writer starts on it again",
                self.spool.pending_points,
                self.spool.directory,
            )

    # -- the sender thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.clear()
            taken = self.spool.take()
            if taken is None:
                if self._closing.is_set():
                    return
                self._wake.wait()
                continue
            entry, batch = taken
            try:
                self._deliver(entry, batch)
            except MetricsWriteError:
                self.spool.release(entry)  # closing while InfluxDB is down: it stays for next time
                return
            except Exception:  # a bug or a disk error must not end delivery for good
                self.spool.release(entry)
                log.exception("metrics: unexpected error sending spooled batch %s", entry.path.name)
                if self._closing.wait(5.0):
                    return

    def _deliver(self, entry: SpoolEntry, batch: Batch) -> None:
        try:
            self._retrying(self.sender.send, batch)
        except MetricsWriteError as exc:
            if not exc.refused:
                raise
            self.points_refused += batch.points
            log.error(
                "metrics: %s refused batch %s (%d points) for good, dropped it: %s",
                self.sender.target,
                entry.path.name,
                batch.points,
                exc.reason,
            )
            self.spool.done(entry)
            self._resolve(entry.seq, delivered=False)
            return
        self.spool.done(entry)
        with self._state:
            self._points_written += batch.points
            if self._outage_since is not None:
                log.warning(
                    "metrics: %s takes writes again after %.0fs; sending %d spooled points",
                    self.sender.target,
                    time.monotonic() - self._outage_since,
                    self.spool.pending_points,
                )
                self._outage_since = None
        self._resolve(entry.seq, delivered=True)

    def _backoff(self, seconds: float) -> None:
        # A new write(), drain() or close() cuts the wait short: try again now, oldest first.
        if self._wake.wait(seconds):
            self._wake.clear()

    def _on_failure(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        with self._state:
            self._failed_attempts += 1
            first = self._outage_since is None
            if first:
                self._outage_since = time.monotonic()
            self._state.notify_all()
        # Once per outage at warning level: a day of retries must not flood the log.
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "metrics: cannot write to %s (%s); %d points spooled, retrying with backoff",
            self.sender.target,
            getattr(exc, "reason", None) or exc,
            self.spool.pending_points,
        )
