#!/usr/bin/env bash
# Idempotent set-up shared by `make demo` and `make test`: the Debian packages the project
# starts for real (mosquitto, InfluxDB 1.x, and VictoriaMetrics, which the tests use as a server
# of the InfluxDB v2 write API) when their binaries are missing, a virtualenv in .venv, and the
# pip packages of pyproject.toml (reinstalled only when pyproject.toml changes).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

missing=()
have mosquitto || missing+=(mosquitto)
have mosquitto_pub || missing+=(mosquitto-clients)
have influxd || missing+=(influxdb)
have victoria-metrics || missing+=(victoria-metrics)
have systemd-analyze || missing+=(systemd)  # tests/deploy verifies the rendered unit files
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} with apt-get"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    # Nacelle starts its own brokers and databases on free ports; the distribution's services
    # (started by the package on systemd hosts) would only hold 1883/8086/8428 and use memory.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now mosquitto influxdb victoria-metrics >/dev/null 2>&1 || true
    fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)"
    if ! $PYTHON -m venv .venv; then
        rm -rf .venv
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
        $PYTHON -m venv .venv
    fi
fi

stamp=.venv/.nacelle-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing Python packages into .venv (first run takes about a minute)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    echo "$want" >"$stamp"
fi
