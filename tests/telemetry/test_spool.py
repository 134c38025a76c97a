"""The metrics spool on its own: file format, order, the byte bound, reopening, and files that
are not what the spool wrote. No server."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from telemetry import Batch, Point, Spool, SpoolBusy, SpoolCorrupt, WritePrecision, line_batches, spooled_points
from telemetry.spool import decode, encode


@pytest.fixture
def open_spool(tmp_path: Path) -> Iterator[Callable[..., Spool]]:
    """Spool(tmp_path, max_bytes), closed at the end of the test."""
    opened: list[Spool] = []

    def make(max_bytes: int = 1 << 20) -> Spool:
        opened.append(Spool(tmp_path, max_bytes))
        return opened[-1]

    yield make
    for spool in opened:
        spool.close()


def batch(n: int, points: int = 3, precision: str = "ms") -> Batch:
    body = "\n".join(f"m,batch={n} v={i}i {1_700_000_000_000 + i}" for i in range(points)).encode()
    return Batch(precision, body, points)


def drain(spool: Spool) -> list[Batch]:
    out = []
    while (taken := spool.take()) is not None:
        entry, got = taken
        spool.done(entry)
        out.append(got)
    return out


def test_file_is_a_header_line_then_the_line_protocol_as_sent(open_spool: Callable[..., Spool]) -> None:
    spool = open_spool(1 << 20)
    entry, dropped = spool.append(batch(1))
    assert entry is not None and dropped == []
    header, body = entry.path.read_bytes().split(b"\n", 1)
    assert header.startswith(b"#nacelle-spool 1 precision=ms points=3 ")
    assert body == batch(1).body
    assert decode(encode(batch(1))) == batch(1)


def test_batches_come_back_oldest_first_and_done_removes_them(open_spool: Callable[..., Spool], tmp_path: Path) -> None:
    spool = open_spool(1 << 20)
    for n in range(5):
        spool.append(batch(n))
    assert spool.pending_points == 15
    assert drain(spool) == [batch(n) for n in range(5)]
    assert spool.pending_points == 0
    assert list(tmp_path.glob("*.lp")) == []


def test_a_reopened_spool_replays_in_order_and_numbers_on(open_spool: Callable[..., Spool], tmp_path: Path) -> None:
    first = open_spool(1 << 20)
    for n in range(3):
        first.append(batch(n))
    taken = first.take()
    assert taken is not None
    first.release(taken[0])  # sending failed: it stays the oldest
    with pytest.raises(SpoolBusy, match="in use by another writer"):
        Spool(tmp_path, 1 << 20)
    first.close()

    reopened = open_spool(1 << 20)
    entry, _ = reopened.append(batch(3))
    assert entry is not None and entry.seq == 4
    assert drain(reopened) == [batch(n) for n in range(4)]
    assert spooled_points(tmp_path) == 0


def test_bound_drops_the_oldest_with_a_counter_and_an_error(
    open_spool: Callable[..., Spool], caplog: pytest.LogCaptureFixture
) -> None:
    size = len(encode(batch(0)))
    spool = open_spool(3 * size)
    for n in range(5):
        spool.append(batch(n))
    assert spool.pending_bytes <= 3 * size
    assert (spool.dropped_batches, spool.dropped_points) == (2, 6)
    assert "at its bound" in caplog.text and "dropped the oldest batch" in caplog.text
    assert caplog.records[-1].levelno == logging.ERROR
    assert drain(spool) == [batch(2), batch(3), batch(4)]


def test_bound_spares_the_batch_being_sent(open_spool: Callable[..., Spool]) -> None:
    size = len(encode(batch(0)))
    spool = open_spool(2 * size)
    spool.append(batch(0))
    spool.append(batch(1))
    taken = spool.take()
    assert taken is not None and taken[1] == batch(0)
    _, dropped = spool.append(batch(2))
    assert [e.seq for e in dropped] == [2]  # batch 1 went, not batch 0 that is in flight
    spool.done(taken[0])
    assert drain(spool) == [batch(2)]


def test_a_batch_larger_than_the_bound_is_dropped_alone(open_spool: Callable[..., Spool]) -> None:
    spool = open_spool(200)
    spool.append(batch(0, points=1))
    entry, dropped = spool.append(batch(1, points=50))
    assert entry is None and dropped == []
    assert spool.dropped_points == 50
    assert drain(spool) == [batch(0, points=1)]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) - 7], id="torn"),
        pytest.param(lambda data: data.replace(b"v=1i", b"v=9i"), id="flipped"),
        pytest.param(lambda data: data.split(b"\n", 1)[1], id="headerless"),
        pytest.param(lambda data: b"", id="empty"),
    ],
)
def test_a_damaged_file_is_deleted_counted_and_the_rest_goes_on(
    open_spool: Callable[..., Spool], tmp_path: Path, damage, caplog
) -> None:
    spool = open_spool(1 << 20)
    entries = [spool.append(batch(n))[0] for n in range(3)]
    path = entries[1].path  # type: ignore[union-attr]
    path.write_bytes(damage(path.read_bytes()))

    # Found when sending (the file changed under a running spool) ...
    assert drain(spool) == [batch(0), batch(2)]
    assert spool.corrupt_files == 1
    assert "deleted unreadable file" in caplog.text

    # ... and when a spool opens on a directory that holds one.
    for n in range(3):
        spool.append(batch(n))
    victim = sorted(tmp_path.glob("*.lp"))[0]
    victim.write_bytes(damage(victim.read_bytes()))
    spool.close()
    reopened = open_spool(1 << 20)
    assert drain(reopened) == [batch(1), batch(2)]
    assert reopened.corrupt_files == 1


def test_leftovers_of_an_interrupted_append_and_foreign_files(open_spool: Callable[..., Spool], tmp_path: Path) -> None:
    first = open_spool(1 << 20)
    first.append(batch(0))
    first.close()
    (tmp_path / ".000000000002.lp.tmp").write_bytes(b"#nacelle-spool 1 prec")
    (tmp_path / "notes.txt").write_text("an operator's")
    spool = open_spool(1 << 20)
    assert not (tmp_path / ".000000000002.lp.tmp").exists()
    assert drain(spool) == [batch(0)]
    assert (tmp_path / "notes.txt").exists()


def test_decode_names_what_is_wrong() -> None:
    data = encode(batch(0))
    with pytest.raises(SpoolCorrupt, match="header says"):
        decode(data + b"x")
    with pytest.raises(SpoolCorrupt, match="CRC"):
        decode(data[:-1] + b"9")


def test_line_batches_split_by_unit_and_size_and_stamp_missing_times() -> None:
    points = [Point("m").field("v", i).time(i, WritePrecision.S) for i in range(5)]
    points += [Point("m").field("v", 9).time(9, WritePrecision.MS), Point("m").field("v", 10)]
    batches = line_batches(points, 2, stamp_ns=123)
    assert [(b.precision, b.points) for b in batches] == [("s", 2), ("s", 2), ("s", 1), ("ms", 1), ("ns", 1)]
    assert batches[-1].body == b"m v=10i 123"
    assert points[-1].to_line_protocol() == "m v=10i"  # the caller's point is left alone
