"""Run a throwaway local InfluxDB 1.x (Debian's `influxd`) for the simulator and the tests.

Everything it stores lives under one work directory and it listens on loopback only, so several
can run side by side and none touches /var/lib/influxdb or port 8086/8088. Not a way to run
InfluxDB in production: there is no TLS and no retention tuning here, and authentication only
when asked for (`admin`: the tests of writing with a user and password).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from nacelle.processes import (
    ServiceError,
    find_executable,
    free_tcp_port,
    log_tail,
    start_process,
    stop_process,
)

_CONFIG_TEMPLATE = """\
# Written by simulate.influxdb_server; every path and port is local to this run.
# Debian's 1.6.7 build reads `reporting-enabled`, upstream reads `reporting-disabled`: set both.
reporting-enabled = false
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = {meta}
  logging-enabled = false

[data]
  dir = {data}
  wal-dir = {wal}
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = {auth_enabled}
  log-enabled = false
  pprof-enabled = false
  unix-socket-enabled = false

[logging]
  level = "warn"
  suppress-logo = true

[continuous_queries]
  log-enabled = false
"""


def _quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class RunningInfluxDB:
    """A started influxd; `stop()` it (or use it as a context manager) when done."""

    url: str
    database: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    config_path: Path
    port: int
    timeout_s: float = 30.0
    start_s: float = field(default=0.0, compare=False)  # seconds the last (re)start took
    admin: tuple[str, str] | None = field(default=None, repr=False)  # user and password, with auth on

    def query(self, influxql: str, *, epoch: str | None = "ms") -> list[dict[str, Any]]:
        """Raw series (name, tags, columns, values) of the first statement; [] when no rows.

        Times come back as integers in `epoch` units (RFC 3339 strings when epoch is None).
        """
        params = {"db": self.database, "q": influxql}
        if epoch:
            params["epoch"] = epoch
        # POST, because 1.x refuses statements that change state (CREATE, DROP, INTO) over GET.
        response = httpx.post(f"{self.url}/query", params=params, auth=self.admin, timeout=10.0)
        body = response.json()
        if response.status_code != 200 or "error" in body:
            raise ServiceError(f"InfluxQL {influxql!r}: HTTP {response.status_code} {body}")
        result = body["results"][0]
        if "error" in result:
            raise ServiceError(f"InfluxQL {influxql!r}: {result['error']}")
        return list(result.get("series", []))

    def query_rows(self, influxql: str, *, epoch: str | None = "ms") -> list[dict[str, Any]]:
        """Rows of all series of the first statement, each a dict of tags plus column→value."""
        return [
            {**series.get("tags", {}), **dict(zip(series["columns"], values, strict=True))}
            for series in self.query(influxql, epoch=epoch)
            for values in series.get("values", [])
        ]

    def stop(self) -> None:
        """Stop influxd; the data stays in `workdir`. Safe to call twice."""
        stop_process(self.process)

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.process, self.start_s = _launch(self.config_path, self.log_path, self.url, self.timeout_s)

    def __enter__(self) -> RunningInfluxDB:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _launch(config_path: Path, log_path: Path, url: str, timeout_s: float) -> tuple[subprocess.Popen[bytes], float]:
    """Start influxd and wait until /ping answers 204; returns the process and seconds taken."""
    binary = find_executable("influxd", "influxdb")
    # INFLUXDB_* variables override the config file, so one left in the environment could move
    # the data back to /var/lib/influxdb or onto a shared port.
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}
    started = time.monotonic()
    process = start_process([binary, "-config", str(config_path)], log_path, env=env)
    deadline = started + timeout_s
    with httpx.Client(timeout=1.0) as client:
        while True:
            if process.poll() is not None:
                raise ServiceError(
                    f"influxd exited with {process.returncode} before answering {url}/ping\n{log_tail(log_path)}"
                )
            try:
                if client.get(f"{url}/ping").status_code == 204:
                    return process, time.monotonic() - started
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                stop_process(process)
                raise ServiceError(f"influxd did not answer {url}/ping within {timeout_s:.0f}s\n{log_tail(log_path)}")
            time.sleep(0.05)


def start_influxdb(
    workdir: Path,
    *,
    database: str = "nacelle",
    port: int | None = None,
    timeout_s: float = 30,
    admin: tuple[str, str] | None = None,
) -> RunningInfluxDB:
    """Start influxd with all state under `workdir`, wait until it answers, create `database`.
    With `admin` (user, password), authentication is on and that user, with all privileges,
    is the only one."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    http_port = port or free_tcp_port()
    rpc_port = free_tcp_port()
    while rpc_port == http_port:
        rpc_port = free_tcp_port()
    config_path = workdir / "influxdb.conf"
    config_path.write_text(
        _CONFIG_TEMPLATE.format(
            # JSON strings are valid TOML basic strings, so odd paths stay quoted correctly.
            **{name: json.dumps(str(workdir / name)) for name in ("meta", "data", "wal")},
            rpc_port=rpc_port,
            http_port=http_port,
            auth_enabled=json.dumps(admin is not None),
        )
    )
    log_path = workdir / "influxd.log"
    url = f"http://127.0.0.1:{http_port}"
    process, start_s = _launch(config_path, log_path, url, timeout_s)
    server = RunningInfluxDB(
        url=url,
        database=database,
        process=process,
        workdir=workdir,
        log_path=log_path,
        config_path=config_path,
        port=http_port,
        timeout_s=timeout_s,
        start_s=start_s,
    )
    try:
        if admin is not None:  # 1.x lets anyone create the first admin user, and nothing else
            user, password = admin
            grant = "WITH ALL PRIVILEGES"
            server.query(f"CREATE USER {_quote_ident(user)} WITH PASSWORD {_quote_string(password)} {grant}")
            server.admin = admin
        server.query(f"CREATE DATABASE {_quote_ident(database)}")
    except BaseException:
        server.stop()
        raise
    return server
