"""Start, watch and stop the local service processes (mosquitto, influxd, Nacelle daemons) that
the simulator and the tests run on free loopback ports. Not for production supervision: systemd
does that on real hosts."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

# Debian installs mosquitto into /usr/sbin, which is not on a normal user's PATH.
_SYSTEM_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_PR_SET_PDEATHSIG = 1


class ServiceError(RuntimeError):
    """A local service could not be found, started or reached."""


def find_executable(name: str, debian_package: str) -> str:
    """Absolute path of `name`, or a ServiceError that says which package provides it."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SYSTEM_DIRS))
    if found is None:
        raise ServiceError(
            f"{name} not found: install the Debian package {debian_package!r} "
            f"(`make test` and `make demo` do this for you)"
        )
    return found


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the kernel picks it; races are unlikely on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for_tcp(
    host: str,
    port: int,
    *,
    timeout_s: float,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Block until `host:port` accepts connections; fail fast if `process` exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log_tail(log_path) if log_path else ""
            raise ServiceError(
                f"process {process.args!r} exited with {process.returncode} before listening on {host}:{port}\n{tail}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ServiceError(f"nothing listening on {host}:{port} after {timeout_s:.0f}s")


def _terminate_with_parent() -> None:
    """In the child: ask Linux for SIGTERM when the parent dies, even by SIGKILL, so that a
    killed simulation or test run never leaves brokers and databases behind."""
    with contextlib.suppress(OSError):  # not glibc Linux: the normal stop paths still apply
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_process(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `args` in its own process group (a Ctrl-C in the terminal reaches only us, and we
    stop it in order) with stdout and stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_terminate_with_parent,
        )


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after `timeout_s`; safe to call twice."""
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
