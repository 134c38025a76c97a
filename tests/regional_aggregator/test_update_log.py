"""regional_aggregator.update_log: what was appended is read back in order, per round; a torn
tail (a crash mid-append) loses only that record; held updates survive a crash mid-replay."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from regional_aggregator.update_log import UpdateLog


def test_appended_updates_are_read_back_per_round_in_order(tmp_path: Path) -> None:
    log = UpdateLog(tmp_path)
    log.append(3, "a", b"one")
    log.append(4, "b", b"two")
    log.append(3, "c", b"three")

    assert list(log.read(3)) == [("a", b"one"), ("c", b"three")]
    assert list(log.read(4)) == [("b", b"two")]
    assert list(log.read(5)) == []
    assert log.rounds() == [3, 4]


def test_a_new_log_object_reads_what_an_earlier_one_wrote(tmp_path: Path) -> None:
    UpdateLog(tmp_path).append(1, "a", b"x" * 10_000)

    assert list(UpdateLog(tmp_path).read(1)) == [("a", b"x" * 10_000)]


def test_a_torn_last_record_is_dropped_and_the_rest_is_read(tmp_path: Path) -> None:
    log = UpdateLog(tmp_path)
    log.append(1, "a", b"kept")
    log.append(1, "b", b"torn by a crash")
    path = tmp_path / "round-1.log"
    path.write_bytes(path.read_bytes()[:-5])

    assert list(log.read(1)) == [("a", b"kept")]


def test_a_record_of_the_wrong_shape_is_skipped(tmp_path: Path) -> None:
    import msgpack

    log = UpdateLog(tmp_path)
    log.append(1, "a", b"one")
    with open(tmp_path / "round-1.log", "ab") as file:
        file.write(msgpack.packb({"not": "a record"}))
    log.append(1, "b", b"two")

    assert list(log.read(1)) == [("a", b"one"), ("b", b"two")]


def test_discard_forgets_a_round(tmp_path: Path) -> None:
    log = UpdateLog(tmp_path)
    log.append(1, "a", b"one")

    log.discard(1)
    log.discard(1)  # twice is fine

    assert list(log.read(1)) == [] and log.rounds() == []


def test_a_round_appended_to_again_after_its_discard_starts_a_new_file(tmp_path: Path) -> None:
    log = UpdateLog(tmp_path)  # keeps the file it appends to open: the discard must not write into the old one
    log.append(1, "a", b"before")
    log.discard(1)
    log.append(1, "b", b"after")

    assert list(log.read(1)) == [("b", b"after")]
    assert list(UpdateLog(tmp_path).read(1)) == [("b", b"after")]


def test_each_append_is_in_the_file_before_append_returns(tmp_path: Path) -> None:
    log = UpdateLog(tmp_path, fsync=False)
    log.append(2, "a", b"one")

    assert list(UpdateLog(tmp_path).read(2)) == [("a", b"one")]  # read by another reader, the writer still open
    log.append(2, "b", b"two")
    assert [node for node, _ in UpdateLog(tmp_path).read(2)] == ["a", "b"]


def test_held_updates_are_replayed_and_those_held_again_survive(tmp_path: Path) -> None:
    log = UpdateLog(tmp_path)
    log.append(None, "a", b"early")
    log.append(None, "b", b"too early")

    held = log.start_early_replay()
    log.append(None, "b", b"too early")  # still ahead of the round: held again
    log.finish_early_replay()

    assert held == [("a", b"early"), ("b", b"too early")]
    assert list(log.read(None)) == [("b", b"too early")]


def test_a_crash_in_the_middle_of_a_replay_replays_again(tmp_path: Path) -> None:
    log = UpdateLog(tmp_path)
    log.append(None, "a", b"early")
    log.start_early_replay()  # ... and the process dies here
    log.append(None, "c", b"arrived after the restart")

    again = UpdateLog(tmp_path).start_early_replay()

    assert again == [("a", b"early"), ("c", b"arrived after the restart")]


def test_group_commit_fsyncs_once_for_every_update_appended_since_the_last_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    log = UpdateLog(tmp_path, group_commit=True)

    for index in range(5):
        log.append(1, f"n{index}", b"payload")
    assert synced == []  # nothing acknowledged yet: the caller syncs before it acks
    log.sync()
    log.sync()  # nothing new: no fsync

    assert len(synced) == 1
    assert [node for node, _ in log.read(1)] == [f"n{i}" for i in range(5)]


def test_group_commit_survives_the_round_log_being_discarded_before_its_sync(tmp_path: Path) -> None:
    log = UpdateLog(tmp_path, group_commit=True)
    log.append(1, "n1", b"payload")

    log.discard(1)
    log.sync()  # a closed round's log is gone: nothing to fsync, no error

    assert log.rounds() == []
