"""InfluxV1Writer against a real influxd (round trips, refusals, restarts) and against an
httpx mock transport (retry policy, batching), where a real server cannot misbehave on cue."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from nacelle.processes import free_tcp_port
from simulate.influxdb_server import RunningInfluxDB, start_influxdb
from telemetry import InfluxV1Writer, MetricsWriteError, MetricsWriter, Point, WritePrecision

FAST: dict[str, Any] = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05}


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningInfluxDB]:
    with start_influxdb(tmp_path_factory.mktemp("influx")) as server:
        yield server


@pytest.fixture
def writer(influx: RunningInfluxDB) -> Iterator[InfluxV1Writer]:
    with InfluxV1Writer(influx.url, influx.database, max_attempts=3, **FAST) as w:
        yield w


def _mock_writer(
    handler: Callable[[httpx.Request], httpx.Response], **kwargs: int
) -> tuple[InfluxV1Writer, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    transport = httpx.MockTransport(record)
    w = InfluxV1Writer("http://influx.test", "nacelle", transport=transport, **FAST, **kwargs)
    return w, seen


def _node_point(measurement: str, i: int) -> Point:
    return (
        Point(measurement)
        .tag("region", "eu west" if i % 2 else "us,east")
        .tag("node", f"turbine={i}")
        .field("loss", i / 7)
        .field("samples", i * 10)
        .field("healthy", i % 3 == 0)
        .field("note", f'round "{i}", ok')
        .time(1_700_000_000_000 + i, WritePrecision.MS)
    )


@pytest.mark.influx
def test_round_trip_keeps_values_tags_and_count(influx: RunningInfluxDB, writer: InfluxV1Writer) -> None:
    n = 250
    assert writer.write([_node_point("node_round_trip", i) for i in range(n)]) == n
    assert writer.points_written == n
    rows = influx.query_rows('SELECT * FROM "node_round_trip" ORDER BY time')
    assert len(rows) == n
    for i, row in enumerate(rows):
        assert row == {
            "time": 1_700_000_000_000 + i,
            "region": "eu west" if i % 2 else "us,east",
            "node": f"turbine={i}",
            "loss": pytest.approx(i / 7, rel=1e-15),
            "samples": i * 10,
            "healthy": i % 3 == 0,
            "note": f'round "{i}", ok',
        }


@pytest.mark.influx
def test_large_write_is_batched_and_counted(influx: RunningInfluxDB) -> None:
    with InfluxV1Writer(influx.url, influx.database, batch_size=400) as w:
        points = [Point("batched").tag("n", str(i % 5)).field("v", i).time(i, "s") for i in range(1001)]
        assert w.write(points) == 1001
        assert w.points_written == 1001
    assert influx.query_rows('SELECT count("v") FROM "batched"')[0]["count"] == 1001


def test_batches_split_requests_and_keep_every_line() -> None:
    w, seen = _mock_writer(lambda _: httpx.Response(204), batch_size=3)
    with w:
        assert w.write([Point("m").field("v", i).time(i, "ms") for i in range(7)]) == 7
    assert [r.content.count(b"\n") + 1 for r in seen] == [3, 3, 1]
    assert all(r.url.params["precision"] == "ms" for r in seen)


@pytest.mark.influx
def test_each_point_keeps_its_declared_time_unit(influx: RunningInfluxDB, writer: InfluxV1Writer) -> None:
    t_ns = 1_700_000_000_123_456_789
    points = [
        Point("units").tag("u", "ns").field("v", 1).time(t_ns),  # influxdb_client default: ns
        Point("units").tag("u", "us").field("v", 1).time(t_ns // 1000, WritePrecision.US),
        Point("units").tag("u", "ms").field("v", 1).time(t_ns // 10**6, WritePrecision.MS),
        Point("units").tag("u", "s").field("v", 1).time(t_ns // 10**9, WritePrecision.S),
        Point("units").tag("u", "dt").field("v", 1).time(datetime(2024, 5, 1, tzinfo=UTC)),
    ]
    assert writer.write(points) == 5
    times = {r["u"]: r["time"] for r in influx.query_rows('SELECT * FROM "units"', epoch="ns")}
    assert times == {
        "ns": t_ns,
        "us": t_ns // 1000 * 1000,
        "ms": t_ns // 10**6 * 10**6,
        "s": t_ns // 10**9 * 10**9,
        "dt": int(datetime(2024, 5, 1, tzinfo=UTC).timestamp()) * 10**9,
    }


@pytest.mark.influx
@pytest.mark.parametrize(
    ("point", "reason"),
    [
        (Point("").field("v", 1.0), "unable to parse"),  # no measurement name
        (Point("m").field("v", 2**70), "out of range"),  # beyond int64
    ],
)
def test_malformed_point_is_refused_once_with_reason(influx: RunningInfluxDB, point: Point, reason: str) -> None:
    with InfluxV1Writer(influx.url, influx.database, max_attempts=3, **FAST) as w:
        with pytest.raises(MetricsWriteError, match=reason) as excinfo:
            w.write([point])
        assert w.points_written == 0
    assert (excinfo.value.status, excinfo.value.attempts) == (400, 1)
    assert reason in excinfo.value.reason


@pytest.mark.influx
def test_wrong_database_is_refused_with_reason(influx: RunningInfluxDB) -> None:
    w = InfluxV1Writer(influx.url, "no_such_db", max_attempts=3, **FAST)
    with w, pytest.raises(MetricsWriteError, match="database not found") as excinfo:
        w.write([Point("m").field("v", 1)])
    assert (excinfo.value.status, excinfo.value.attempts) == (404, 1)


@pytest.mark.influx
def test_field_type_conflict_is_refused(influx: RunningInfluxDB, writer: InfluxV1Writer) -> None:
    writer.write([Point("typed").field("loss", 1)])  # a Python int becomes an integer field
    with pytest.raises(MetricsWriteError, match="field type conflict") as excinfo:
        writer.write([Point("typed").field("loss", 0.5)])
    assert excinfo.value.status == 400
    assert writer.points_written == 1


def test_point_without_fields_is_refused_before_sending() -> None:
    w, seen = _mock_writer(lambda _: httpx.Response(204))
    with w, pytest.raises(MetricsWriteError, match="no fields"):
        w.write([Point("m").field("v", 1), Point("m").tag("t", "x")])
    assert seen == []


def test_unreachable_server_retries_then_raises() -> None:
    url = f"http://127.0.0.1:{free_tcp_port()}"  # nothing listens there
    started = time.monotonic()
    with InfluxV1Writer(url, "nacelle", max_attempts=3, **FAST) as w:
        with pytest.raises(MetricsWriteError, match="cannot reach") as excinfo:
            w.write([Point("m").field("v", 1)])
        assert w.points_written == 0
    assert excinfo.value.status is None
    assert excinfo.value.attempts == 3
    assert "ConnectError" in excinfo.value.reason
    assert time.monotonic() - started < 2


def test_transient_statuses_are_retried_until_accepted() -> None:
    answers = iter([503, 429, 500, 204])
    w, seen = _mock_writer(lambda _: httpx.Response(next(answers)), max_attempts=5)
    with w:
        assert w.write([Point("m").field("v", 1)]) == 1
        assert w.points_written == 1
    assert len(seen) == 4
    assert len({r.content for r in seen}) == 1  # the same body every time


def test_server_errors_exhaust_attempts_with_status_and_text() -> None:
    w, seen = _mock_writer(lambda _: httpx.Response(500, json={"error": "timeout"}), max_attempts=4)
    with w, pytest.raises(MetricsWriteError, match="timeout") as excinfo:
        w.write([Point("m").field("v", 1)])
    assert (excinfo.value.status, excinfo.value.attempts, len(seen)) == (500, 4, 4)
    assert excinfo.value.reason == "timeout"


def test_failure_after_earlier_batches_reports_what_was_accepted() -> None:
    answers = iter([204, 204, 400])
    w, _ = _mock_writer(lambda _: httpx.Response(next(answers), text="bad"), batch_size=2)
    with w, pytest.raises(MetricsWriteError) as excinfo:
        w.write([Point("m").field("v", i) for i in range(6)])
    assert excinfo.value.accepted == 4
    assert w.points_written == 4


@pytest.mark.influx
def test_writer_survives_influxdb_restart(influx: RunningInfluxDB, writer: InfluxV1Writer) -> None:
    writer.write([Point("restart").field("v", 1).time(1, "s")])
    influx.stop()
    with pytest.raises(MetricsWriteError, match="cannot reach"):
        writer.write([Point("restart").field("v", 2).time(2, "s")])
    influx.restart()
    # The pooled keep-alive connection died with the old process; the writer must reconnect.
    assert writer.write([Point("restart").field("v", 3).time(3, "s")]) == 1
    assert [r["v"] for r in influx.query_rows('SELECT v FROM "restart"')] == [1, 3]
    assert writer.points_written == 2


def test_influx_writer_is_a_metrics_writer() -> None:
    w, _ = _mock_writer(lambda _: httpx.Response(204))
    with w:
        assert isinstance(w, MetricsWriter)


@pytest.mark.influx
def test_a_server_with_authentication_takes_points_only_from_its_user(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    admin = ("nacelle", "it's s3cret")
    with start_influxdb(tmp_path_factory.mktemp("influx-auth"), admin=admin) as server:
        for auth in [None, ("nacelle", "wrong")]:
            w = InfluxV1Writer(server.url, server.database, auth=auth, max_attempts=3, **FAST)
            with w, pytest.raises(MetricsWriteError) as refused:
                w.write([Point("m").field("v", 1)])
            # Not "refused for good": a spool keeps the points until the credentials are mended.
            assert (refused.value.status, refused.value.refused) == (401, False)
        with InfluxV1Writer(server.url, server.database, auth=admin, **FAST) as w:
            assert w.write([Point("m").field("v", 1.5).time(1_700_000_000, WritePrecision.S)]) == 1
        assert server.query_rows('SELECT "v" FROM "m"', epoch="s") == [{"time": 1_700_000_000, "v": 1.5}]
