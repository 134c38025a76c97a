"""The throwaway influxd: starts isolated under its work dir, answers queries, restarts with its
data, and leaves no process behind."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from nacelle.processes import ServiceError
from simulate.influxdb_server import RunningInfluxDB, start_influxdb

pytestmark = pytest.mark.influx


def _influxd_pids_using(config_path: Path) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # the process ended while we looked
        if str(config_path).encode() in args:
            pids.append(int(cmdline.parent.name))
    return pids


def _write(server: RunningInfluxDB, body: str) -> None:
    response = httpx.post(
        f"{server.url}/write",
        params={"db": server.database, "precision": "ms"},
        content=body.encode(),
    )
    assert response.status_code == 204, response.text


def test_start_isolated_query_and_stop(tmp_path: Path) -> None:
    server = start_influxdb(tmp_path, database="fleet")
    try:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert {"name": "fleet"} in server.query_rows("SHOW DATABASES")
        _write(server, "m v=1i 1000")  # influxd creates the WAL directory on the first write
        assert {"meta", "data", "wal"} <= {p.name for p in tmp_path.iterdir()}
        assert _influxd_pids_using(server.config_path) == [server.process.pid]
    finally:
        server.stop()
    server.stop()  # second stop is a no-op
    assert server.process.poll() is not None
    assert _influxd_pids_using(server.config_path) == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/ping", timeout=1.0)


def test_query_rows_flattens_series_with_tags(tmp_path: Path) -> None:
    with start_influxdb(tmp_path) as server:
        _write(server, "m,node=a v=1 1000\nm,node=b v=2 2000\nm,node=b v=3 3000")
        rows = server.query_rows("SELECT v FROM m GROUP BY node")
        assert rows == [
            {"node": "a", "time": 1000, "v": 1.0},
            {"node": "b", "time": 2000, "v": 2.0},
            {"node": "b", "time": 3000, "v": 3.0},
        ]
        assert server.query("SELECT * FROM nothing_here") == []
        with pytest.raises(ServiceError, match="error parsing query"):
            server.query("SELEC v FROM m")
    assert server.process.poll() is not None


def test_restart_keeps_port_and_data(tmp_path: Path) -> None:
    with start_influxdb(tmp_path) as server:
        _write(server, "m v=42i 1700000000000")
        url, old_pid = server.url, server.process.pid
        server.restart()
        assert server.url == url
        assert server.process.pid != old_pid
        assert server.query_rows("SELECT v FROM m") == [{"time": 1700000000000, "v": 42}]
    assert _influxd_pids_using(server.config_path) == []


def test_fails_fast_with_log_when_port_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServiceError, match="exited") as excinfo:
            start_influxdb(tmp_path, port=port, timeout_s=20)
    assert "address already in use" in str(excinfo.value)
    assert _influxd_pids_using(tmp_path / "influxdb.conf") == []
