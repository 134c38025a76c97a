"""The aggregator's durable inbox: every update it accepted (or holds for a round not yet
announced) as the signed bytes that arrived, appended and fsynced before the broker gets its
acknowledgement. A restart replays the log through the same validation, so an update is neither
lost (it was on disk before the ack) nor counted twice (replay rebuilds the set of counted
nodes, and a redelivered copy is then a duplicate). The robust aggregates read it back at close.

One msgpack stream per round, `round-{id}.log`, and `early.log` for updates ahead of their
round's announcement. A crash in the middle of an append leaves a torn last record, which is
dropped on read (its update was never acknowledged, so the broker delivers it again).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import msgpack

log = logging.getLogger(__name__)

LoggedUpdate = tuple[str, bytes]  # (node id from the topic, payload)


class UpdateLog:
    """`group_commit`: `append` writes without fsyncing, and `sync` fsyncs everything appended
    since the last one; the caller acknowledges nothing before a `sync` that followed it
    (`MqttSession`'s `ack_after`). The guarantee is the same as one fsync per update, with one
    fsync for every update that arrived during the previous fsync."""

    def __init__(self, directory: Path, *, fsync: bool = True, group_commit: bool = False) -> None:
        self.directory = directory
        self._fsync = fsync
        self._group_commit = group_commit
        self._dirty: set[Path] = set()
        # The file appended to last and its descriptor, kept open: an open and a close per update
        # cost as much as the write. Closed before that file is moved or deleted.
        self._appending: tuple[Path, int] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, round_id: int | None) -> Path:
        return self.directory / ("early.log" if round_id is None else f"round-{round_id}.log")

    @property
    def _replaying(self) -> Path:
        return self.directory / "early.replay"

    def append(self, round_id: int | None, node_id: str, payload: bytes) -> None:
        """Durably record one update of `round_id` (None: not yet announced)."""
        record = msgpack.packb([node_id, payload], use_bin_type=True)
        path = self._path(round_id)
        if self._appending is None or self._appending[0] != path:
            self.close()
            self._appending = (path, os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
        fd = self._appending[1]
        written = os.write(fd, record)  # unbuffered: in the kernel's hands when it returns
        while written < len(record):
            written += os.write(fd, record[written:])
        if self._fsync and not self._group_commit:
            os.fsync(fd)
        if self._fsync and self._group_commit:
            self._dirty.add(path)

    def close(self) -> None:
        """Close the file kept open for appending (the next append reopens it)."""
        if self._appending is not None:
            os.close(self._appending[1])
            self._appending = None

    def __del__(self) -> None:
        self.close()

    def pending_sync(self) -> list[Path]:
        """The files `sync_paths` must fsync for what was appended so far (taken off the list)."""
        dirty, self._dirty = sorted(self._dirty), set()
        return dirty

    @staticmethod
    def sync_paths(paths: list[Path]) -> None:
        """fsync `paths` (safe in a thread: a file discarded or moved meanwhile is skipped; one
        moved is fsynced where it went, see `start_early_replay`)."""
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def sync(self) -> None:
        self.sync_paths(self.pending_sync())

    def read(self, round_id: int | None) -> Iterator[LoggedUpdate]:
        return self._read(self._path(round_id))

    def _read(self, path: Path) -> Iterator[LoggedUpdate]:
        if not path.exists():
            return
        with open(path, "rb") as file:
            unpacker = msgpack.Unpacker(file, raw=False, max_buffer_size=64 * 1024 * 1024)
            try:
                for record in unpacker:
                    if (
                        isinstance(record, list)
                        and len(record) == 2
                        and isinstance(record[0], str)
                        and isinstance(record[1], bytes)
                    ):
                        yield record[0], record[1]
                    else:
                        log.warning("%s holds a record that is not [node, payload]; skipped", path)
            except (ValueError, msgpack.ExtraData) as exc:  # a torn or corrupt tail
                log.warning("%s ends in an unreadable record (%s); the rest was read", path, exc)

    def rounds(self) -> list[int]:
        return sorted(int(p.stem.removeprefix("round-")) for p in self.directory.glob("round-*.log"))

    def start_early_replay(self) -> list[LoggedUpdate]:
        """The held updates, moved aside so that those still early can be held again in a fresh
        `early.log` while they are processed; `finish_early_replay` forgets them. A crash in
        between replays them again at the next start (duplicates are refused, none is lost)."""
        self.sync()  # what is about to move is on disk first (group commit)
        self.close()
        early = self._path(None)
        if early.exists():
            if self._replaying.exists():  # left by a crash: keep both
                with open(self._replaying, "ab") as target:
                    target.write(early.read_bytes())
                    target.flush()
                    os.fsync(target.fileno())
                early.unlink()
            else:
                os.replace(early, self._replaying)
        return list(self._read(self._replaying))

    def finish_early_replay(self) -> None:
        self.sync()  # the held updates are in their round's log on disk before the copy goes
        self._replaying.unlink(missing_ok=True)

    def discard(self, round_id: int) -> None:
        self.close()
        self._path(round_id).unlink(missing_ok=True)
