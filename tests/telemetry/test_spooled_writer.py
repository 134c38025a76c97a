"""SpooledWriter: nothing lost and nothing stored twice across outages, never a long wait.

A fake InfluxDB behind httpx.MockTransport goes down, stores a batch and then fails, or refuses
on cue; a real influxd is stopped and restarted on the same port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simulate.influxdb_server import RunningInfluxDB, start_influxdb
from telemetry import InfluxV1Writer, MetricsWriter, Point, SpooledWriter, WritePrecision

FAST = {"backoff_initial_s": 0.02, "backoff_max_s": 0.1}


class FakeInflux:
    """Stores lines like InfluxDB: one value per series and time, a second write overwrites."""

    def __init__(self) -> None:
        self.mode = "up"  # "down": connection refused; "store-then-500"; "refuse": 400
        self.stored: dict[str, str] = {}  # "measurement,tags time" -> fields
        self.requests = 0
        self.bodies: list[bytes] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if self.mode == "refuse":
            return httpx.Response(400, json={"error": "unable to parse"})
        self.bodies.append(request.content)
        for line in request.content.decode().splitlines():
            series, fields, stamp = line.rsplit(" ", 2)
            self.stored[f"{series} {stamp}"] = fields
        if self.mode == "store-then-500":
            self.mode = "up"
            return httpx.Response(500, json={"error": "timeout"})
        return httpx.Response(204)


def points(measurement: str, n: int, t0: int = 1_700_000_000_000) -> list[Point]:
    return [Point(measurement).tag("node", f"n{i}").field("v", i).time(t0 + i, WritePrecision.MS) for i in range(n)]


@pytest.fixture
def fake() -> FakeInflux:
    return FakeInflux()


def spooled(fake: FakeInflux, directory: Path, **kwargs: float) -> SpooledWriter:
    sender = InfluxV1Writer("http://influx.test", "nacelle", transport=httpx.MockTransport(fake.handle))
    return SpooledWriter(sender, directory, **{**FAST, **kwargs})


def test_up_writes_at_once_and_leaves_nothing_spooled(fake: FakeInflux, tmp_path: Path) -> None:
    writer = spooled(fake, tmp_path)
    try:
        assert isinstance(writer, MetricsWriter)
        assert writer.write(points("m", 10)) == 10
        assert writer.points_written == 10 and writer.pending_points == 0
        assert len(fake.stored) == 10
        assert list(tmp_path.glob("*.lp")) == []
    finally:
        writer.close()


def test_down_returns_at_once_then_delivers_in_order_when_back(fake: FakeInflux, tmp_path: Path) -> None:
    writer = spooled(fake, tmp_path, batch_size=4)
    try:
        fake.mode = "down"
        started = time.monotonic()
        assert writer.write(points("first", 6)) == 0  # two batches, both spooled
        assert writer.write(points("second", 3)) == 0
        assert time.monotonic() - started < 2.0  # no waiting out the backoff
        assert writer.pending_points == 9 and len(list(tmp_path.glob("*.lp"))) == 3

        fake.mode = "up"
        assert writer.drain(10)
        assert [body.split(b",")[0] for body in fake.bodies] == [b"first", b"first", b"second"]
        assert len(fake.stored) == 9 and writer.points_written == 9
    finally:
        writer.close()


def test_a_batch_stored_before_a_500_is_sent_again_and_stored_once(fake: FakeInflux, tmp_path: Path) -> None:
    writer = spooled(fake, tmp_path)
    try:
        fake.mode = "store-then-500"
        writer.write(points("m", 5))
        assert writer.drain(10)
        assert len(fake.bodies) == 2 and fake.bodies[0] == fake.bodies[1]  # the same body, replayed
        assert len(fake.stored) == 5
    finally:
        writer.close()


def test_points_without_time_are_stamped_so_a_replay_overwrites(fake: FakeInflux, tmp_path: Path) -> None:
    writer = spooled(fake, tmp_path)
    try:
        fake.mode = "store-then-500"
        before = time.time_ns()
        writer.write([Point("m").field("v", 1)])
        assert writer.drain(10)
        [(key, _)] = fake.stored.items()
        assert int(key.rsplit(" ", 1)[1]) >= before
    finally:
        writer.close()


def test_a_refused_batch_is_dropped_and_counted_not_retried(fake: FakeInflux, tmp_path: Path, caplog) -> None:
    writer = spooled(fake, tmp_path)
    try:
        fake.mode = "refuse"
        assert writer.write(points("m", 4)) == 0
        assert writer.drain(5)
        assert (fake.requests, writer.points_refused) == (1, 4)
        assert "refused batch" in caplog.text
        fake.mode = "up"
        assert writer.write(points("n", 2)) == 2
    finally:
        writer.close()


def test_what_is_left_at_close_goes_first_at_the_next_start(fake: FakeInflux, tmp_path: Path) -> None:
    writer = spooled(fake, tmp_path)
    fake.mode = "down"
    writer.write(points("old", 3))
    writer.close()
    assert len(list(tmp_path.glob("*.lp"))) == 1
    (tmp_path / "000000000099.lp").write_bytes(b"garbage, not a spool file")  # a torn leftover

    fake.mode = "up"
    restarted = spooled(fake, tmp_path)
    try:
        assert restarted.drain(10)
        assert restarted.write(points("new", 2)) == 2
        assert [body.split(b",")[0] for body in fake.bodies] == [b"old", b"new"]
        assert restarted.spool.corrupt_files == 1
    finally:
        restarted.close()


def test_a_hung_server_delays_write_by_wait_s_at_most(tmp_path: Path) -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        time.sleep(1.0)
        return httpx.Response(204)

    sender = InfluxV1Writer("http://influx.test", "nacelle", transport=httpx.MockTransport(hang))
    writer = SpooledWriter(sender, tmp_path, wait_s=0.2, **FAST)
    try:
        started = time.monotonic()
        assert writer.write(points("m", 2)) == 0
        assert time.monotonic() - started < 0.8
        assert writer.drain(5) and writer.points_written == 2
    finally:
        writer.close()


def test_write_later_returns_with_the_points_on_disk_before_the_server_answers(tmp_path: Path) -> None:
    answer = threading.Event()

    def held(request: httpx.Request) -> httpx.Response:
        answer.wait(10)
        return httpx.Response(204)

    sender = InfluxV1Writer("http://influx.test", "nacelle", transport=httpx.MockTransport(held))
    writer = SpooledWriter(sender, tmp_path, **FAST)
    try:
        writer.write_later(points("m", 2))
        assert writer.pending_points == 2 and writer.points_written == 0  # on disk, not yet sent
        answer.set()
        assert writer.drain(5) and writer.points_written == 2
    finally:
        answer.set()
        writer.close()


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[RunningInfluxDB]:
    with start_influxdb(tmp_path / "influx") as server:
        yield server


@pytest.mark.influx
def test_real_influxdb_stopped_and_restarted_on_its_port_gets_every_point_once(
    influx: RunningInfluxDB, tmp_path: Path
) -> None:
    writer = SpooledWriter(InfluxV1Writer(influx.url, influx.database), tmp_path / "spool", **FAST)
    try:
        assert writer.write(points("before", 20)) == 20
        influx.stop()
        assert writer.write(points("during", 30)) == 0
        influx.restart()
        assert writer.drain(30)
        assert writer.write(points("after", 10)) == 10
    finally:
        writer.close()
    counts = {m: influx.query_rows(f'SELECT count("v") FROM "{m}"')[0]["count"] for m in ("before", "during", "after")}
    assert counts == {"before": 20, "during": 30, "after": 10}
