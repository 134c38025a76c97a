"""The metrics spool: batches of line protocol waiting for InfluxDB, one file per batch, oldest
first, bounded in bytes. No network here: telemetry.spooled sends what this keeps.

    <directory>/000000000042.lp
    #nacelle-spool 1 precision=ms points=3648 bytes=512345 crc32=89abcdef
    nacelle_round,status=published round=42i,... 1795456742967
    ...

Why one file per batch: a batch is what is sent and acknowledged, so delivering one is unlinking
one file, with no cursor to keep in step with the data. A file is written once under a temporary
name, fsynced, renamed and the directory fsynced, so a crash leaves whole files (and temporary
ones, removed at start). The header line makes each file checkable (length and CRC-32 of the
body) and readable: everything after it is the line protocol as it is sent. A file that fails
the check (a torn copy, a disk error, a hand edit) is logged, counted and deleted; the rest of
the spool goes on.

At the bound (`max_bytes`), appending drops the oldest batches first, with an error in the log
and `dropped_points` counting: the newest metrics matter most once InfluxDB is back.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from telemetry.writer import Batch

log = logging.getLogger(__name__)

SUFFIX = ".lp"
_NAME = re.compile(r"^(\d{12})\.lp$")
_HEADER = re.compile(rb"#nacelle-spool 1 precision=(ns|us|ms|s) points=(\d+) bytes=(\d+) crc32=([0-9a-f]{8})\n")
_MAX_HEADER = 128


class SpoolCorrupt(ValueError):
    """A spool file that is not what the spool wrote: torn, damaged or foreign."""


class SpoolBusy(RuntimeError):
    """Another Spool (another process, or one not closed) holds the directory."""


@dataclass(frozen=True)
class SpoolEntry:
    seq: int
    path: Path
    size: int  # bytes on disk, header included
    points: int


def encode(batch: Batch) -> bytes:
    header = (
        f"#nacelle-spool 1 precision={batch.precision} points={batch.points} "
        f"bytes={len(batch.body)} crc32={zlib.crc32(batch.body):08x}\n"
    )
    return header.encode() + batch.body


def _header(data: bytes) -> tuple[re.Match[bytes], int]:
    end = data.find(b"\n", 0, _MAX_HEADER)
    match = _HEADER.fullmatch(data[: end + 1]) if end >= 0 else None
    if match is None:
        raise SpoolCorrupt("no spool header")
    return match, end + 1


def decode(data: bytes) -> Batch:
    """The batch `encode` wrote, or SpoolCorrupt saying what is wrong."""
    match, start = _header(data)
    body = data[start:]
    if len(body) != int(match[3]):
        raise SpoolCorrupt(f"body of {len(body)} bytes, header says {int(match[3])}")
    if f"{zlib.crc32(body):08x}".encode() != match[4]:
        raise SpoolCorrupt("body does not match its CRC-32")
    return Batch(match[1].decode(), body, int(match[2]))


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Batches on disk in the order they were appended; thread-safe. One Spool per directory at
    a time (a lock file says so): two would number their files alike and delete each other's
    half-written ones. `close()` lets the next one in."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.dropped_points = 0  # lost to the bound
        self.dropped_batches = 0
        self.corrupt_files = 0
        self._lock = threading.Lock()
        self._entries: list[SpoolEntry] = []  # oldest first
        self._in_flight: int | None = None  # the seq being sent: the bound leaves it alone
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.directory / ".lock", "a")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SpoolBusy(f"metrics spool {self.directory} is in use by another writer") from None
        for stray in self.directory.glob(f".*{SUFFIX}.tmp"):
            stray.unlink()  # an append that never returned: its caller was not told it is kept
        for path in sorted(self.directory.iterdir()):
            name = _NAME.match(path.name)
            if name is not None:
                entry = self._scan(int(name[1]), path)
                if entry is not None:
                    self._entries.append(entry)
        self._next_seq = self._entries[-1].seq + 1 if self._entries else 1

    def _scan(self, seq: int, path: Path) -> SpoolEntry | None:
        """The entry of a file found at start, checked as far as is cheap (header and size)."""
        try:
            with open(path, "rb") as file:
                head = file.read(_MAX_HEADER)
                size = os.fstat(file.fileno()).st_size
            match, start = _header(head)
            if size != start + int(match[3]):
                raise SpoolCorrupt(f"{size} bytes, header says {start + int(match[3])}")
        except (OSError, SpoolCorrupt) as exc:
            self._discard(path, exc)
            return None
        return SpoolEntry(seq, path, size, int(match[2]))

    def close(self) -> None:
        """Release the directory (what is spooled stays on disk). Safe to call twice."""
        self._lock_file.close()

    @property
    def pending_points(self) -> int:
        with self._lock:
            return sum(entry.points for entry in self._entries)

    @property
    def pending_bytes(self) -> int:
        with self._lock:
            return sum(entry.size for entry in self._entries)

    def entries(self) -> list[SpoolEntry]:
        with self._lock:
            return list(self._entries)

    def append(self, batch: Batch) -> tuple[SpoolEntry | None, list[SpoolEntry]]:
        """Write `batch` durably as the newest entry. Returns it (None when it alone exceeds the
        bound and was dropped) and the older entries the bound dropped to make room."""
        data = encode(batch)
        with self._lock:
            if len(data) > self.max_bytes:
                self._count_drop(batch.points, f"a batch of {len(data)} bytes is larger than the whole spool")
                return None, []
            dropped = self._make_room(len(data))
            seq = self._next_seq
            self._next_seq += 1
            path = self.directory / f"{seq:012d}{SUFFIX}"
            temporary = self.directory / f".{path.name}.tmp"
            with open(temporary, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
            _fsync_directory(self.directory)
            entry = SpoolEntry(seq, path, len(data), batch.points)
            self._entries.append(entry)
            return entry, dropped

    def _make_room(self, size: int) -> list[SpoolEntry]:
        dropped = []
        used = sum(entry.size for entry in self._entries)
        for entry in list(self._entries):
            if used + size <= self.max_bytes:
                break
            if entry.seq == self._in_flight:
                continue  # being sent right now: the bound is exceeded by it until it is done
            self._entries.remove(entry)
            entry.path.unlink(missing_ok=True)
            used -= entry.size
            dropped.append(entry)
            self._count_drop(entry.points, f"dropped the oldest batch {entry.path.name}")
        return dropped

    def _count_drop(self, points: int, what: str) -> None:
        self.dropped_points += points
        self.dropped_batches += 1
        log.error(
            "metrics spool %s at its bound of %d bytes: %s (%d points); %d points dropped since start",
            self.directory,
            self.max_bytes,
            what,
            points,
            self.dropped_points,
        )

    def take(self) -> tuple[SpoolEntry, Batch] | None:
        """The oldest batch, to send; it stays on disk until `done`. Corrupt files met on the way
        are logged, counted and deleted. None when the spool is empty."""
        with self._lock:
            while self._entries:
                entry = self._entries[0]
                try:
                    batch = decode(entry.path.read_bytes())
                except (OSError, SpoolCorrupt) as exc:
                    self._entries.pop(0)
                    self._discard(entry.path, exc)
                    continue
                self._in_flight = entry.seq
                return entry, batch
            return None

    def done(self, entry: SpoolEntry) -> None:
        """`entry` was delivered (or refused for good): forget it."""
        with self._lock:
            if entry in self._entries:
                self._entries.remove(entry)
            entry.path.unlink(missing_ok=True)
            self._in_flight = None

    def release(self, entry: SpoolEntry) -> None:
        """Sending `entry` did not succeed: it stays the oldest, and the bound may drop it."""
        with self._lock:
            if self._in_flight == entry.seq:
                self._in_flight = None

    def _discard(self, path: Path, reason: BaseException) -> None:
        self.corrupt_files += 1
        log.error("metrics spool: deleted unreadable file %s (%s); its points are lost", path, reason)
        path.unlink(missing_ok=True)


def spooled_points(directory: Path) -> int:
    """Points waiting in the spool `directory` (0 when there is none), from the headers alone."""
    total = 0
    if not directory.is_dir():
        return 0
    for path in directory.iterdir():
        if _NAME.match(path.name):
            try:
                with open(path, "rb") as file:
                    total += int(_header(file.read(_MAX_HEADER))[0][2])
            except (OSError, SpoolCorrupt):
                continue
    return total
