"""A throwaway VictoriaMetrics (Debian's `victoria-metrics`) for the tests of the v2 write path:
it accepts influxdb_client's `/api/v2/write` and gives every sample back through
`/api/v1/export`. Loopback only, free port, all data under one directory; stopped and restarted
like simulate.influxdb_server's influxd, with the same process helpers.

It is started without deduplication on purpose: unlike InfluxDB it keeps a second sample of the
same series and time, so a count of exported samples shows any point sent twice.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from nacelle.processes import ServiceError, find_executable, free_tcp_port, log_tail, start_process, stop_process

Labels = tuple[tuple[str, str], ...]


@dataclass
class RunningVictoriaMetrics:
    url: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def export(self, match: str = '{__name__=~".+"}') -> list[dict[str, Any]]:
        """Every stored series matching `match`: {"metric": labels, "values": [...], "timestamps": [...]}."""
        httpx.get(f"{self.url}/internal/force_flush", timeout=10.0).raise_for_status()
        response = httpx.post(f"{self.url}/api/v1/export", data={"match[]": match}, timeout=10.0)
        response.raise_for_status()
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]

    def samples(self, metric: str, *, expected: int, timeout_s: float = 10.0) -> dict[Labels, list[tuple[int, float]]]:
        """Samples of `metric` by label set (name left out), once `expected` are visible (freshly
        written samples show up in exports after a moment) or `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        while True:
            series = self.export(f'{{__name__="{metric}"}}')
            found = {
                tuple(sorted((k, v) for k, v in s["metric"].items() if k != "__name__")): list(
                    zip(s["timestamps"], s["values"], strict=True)
                )
                for s in series
            }
            if sum(map(len, found.values())) >= expected or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.process)

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.process = _launch(self.workdir, self.port, self.log_path)

    def __enter__(self) -> RunningVictoriaMetrics:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _launch(workdir: Path, port: int, log_path: Path, timeout_s: float = 30.0) -> subprocess.Popen[bytes]:
    binary = find_executable("victoria-metrics", "victoria-metrics")
    args = [
        binary,
        f"-httpListenAddr=127.0.0.1:{port}",
        f"-storageDataPath={workdir / 'data'}",
        "-retentionPeriod=100y",  # tests may write fixed, old timestamps
        "-loggerLevel=WARN",
    ]
    process = start_process(args, log_path)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=1.0) as client:
        while True:
            if process.poll() is not None:
                raise ServiceError(f"victoria-metrics exited with {process.returncode}\n{log_tail(log_path)}")
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return process
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                stop_process(process)
                raise ServiceError(f"victoria-metrics did not answer {url}/health\n{log_tail(log_path)}")
            time.sleep(0.05)


def start_victoria_metrics(workdir: Path) -> RunningVictoriaMetrics:
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_tcp_port()
    log_path = workdir / "victoria-metrics.log"
    process = _launch(workdir, port, log_path)
    return RunningVictoriaMetrics(f"http://127.0.0.1:{port}", port, workdir, process, log_path)
