"""InfluxV2Writer (influxdb_client, /api/v2/write) against a real VictoriaMetrics, which keeps
every sample it is sent (no deduplication): counts show points lost or sent twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from influxdb_client.rest import ApiException

from nacelle.processes import free_tcp_port
from telemetry import InfluxV2Writer, MetricsWriteError, Point, SpooledWriter, WritePrecision
from telemetry.v2 import api_error
from tests.telemetry.victoria_metrics import RunningVictoriaMetrics, start_victoria_metrics

TOKEN = "s3cret-token-never-logged"
FAST = {"backoff_initial_s": 0.02, "backoff_max_s": 0.1}


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[RunningVictoriaMetrics]:
    with start_victoria_metrics(tmp_path / "vm") as server:
        yield server


def v2_writer(url: str, **kwargs: object) -> InfluxV2Writer:
    return InfluxV2Writer(url, org="fleet-ops", bucket="nacelle", token=TOKEN, **kwargs)  # type: ignore[arg-type]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.mark.influx
def test_round_trip_keeps_tags_values_and_times(vm: RunningVictoriaMetrics) -> None:
    t0 = now_ms()
    points = [
        Point("nacelle_node")
        .tag("region", "offshore")
        .tag("node", f"offshore-t{i:05d}")
        .field("round", 3)
        .field("train_loss", i / 7)
        .time(t0 + i, WritePrecision.MS)
        for i in range(120)
    ]
    points.append(Point("nacelle_model").field("version", 4).time(t0 // 1000, WritePrecision.S))
    with v2_writer(vm.url, batch_size=50) as writer:
        writer.check()
        assert writer.write(points) == 121
        assert writer.points_written == 121

    losses = vm.samples("nacelle_node_train_loss", expected=120)
    assert len(losses) == 120  # one series per node
    for i in range(120):
        labels = (("node", f"offshore-t{i:05d}"), ("region", "offshore"))
        assert losses[labels] == [(t0 + i, pytest.approx(i / 7))]
    assert vm.samples("nacelle_model_version", expected=1) == {(): [(t0 // 1000 * 1000, 4)]}


@pytest.mark.influx
def test_spooled_v2_writer_loses_nothing_and_sends_nothing_twice_across_a_restart(
    vm: RunningVictoriaMetrics, tmp_path: Path
) -> None:
    t0 = now_ms()

    def batch(round_no: int, n: int) -> list[Point]:
        return [
            Point("nacelle_node").tag("node", f"n{i}").field("round", round_no).time(t0 + 1000 * round_no + i, "ms")
            for i in range(n)
        ]

    writer = SpooledWriter(v2_writer(vm.url), tmp_path / "spool", batch_size=7, **FAST)
    try:
        assert writer.write(batch(1, 20)) == 20
        vm.stop()
        assert writer.write(batch(2, 30)) == 0
        assert writer.write(batch(3, 5)) == 0
        assert writer.pending_points == 35
        vm.restart()
        assert writer.drain(30)
        assert writer.write(batch(4, 10)) == 10
    finally:
        writer.close()

    samples = vm.samples("nacelle_node_round", expected=65)
    rounds = sorted(value for series in samples.values() for _, value in series)
    assert rounds == [1] * 20 + [2] * 30 + [3] * 5 + [4] * 10
    assert TOKEN not in (vm.log_path.read_text())


def test_unreachable_v2_server_is_a_retryable_error() -> None:
    with v2_writer(f"http://127.0.0.1:{free_tcp_port()}", max_attempts=2, **FAST) as writer:
        with pytest.raises(MetricsWriteError, match="cannot reach") as excinfo:
            writer.write([Point("m").field("v", 1).time(1, "s")])
        with pytest.raises(MetricsWriteError, match="ping"):
            writer.check()
    assert excinfo.value.retryable and excinfo.value.attempts == 2
    assert TOKEN not in str(excinfo.value)


@pytest.mark.parametrize(
    ("status", "retryable", "refused"),
    [(503, True, False), (429, True, False), (401, False, False), (404, False, False), (422, False, True)],
)
def test_v2_answers_map_to_retryable_or_refused(status: int, retryable: bool, refused: bool) -> None:
    error = api_error("target", ApiException(status=status, reason="why"))
    assert (error.status, error.retryable, error.refused) == (status, retryable, refused)
    tls = api_error("target", ApiException(status=0, reason="SSLError: bad certificate"))
    assert tls.status is None and tls.retryable and "bad certificate" in tls.reason
