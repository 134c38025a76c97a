"""`nacelle simulate --keep-running` as an operator runs it: the fleet stays up after the last
night, fleet.json says how to reach it, a regional broker named there serves the signed global
model, live rounds go on, and Ctrl-C stops every process it started."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from learning.model import AutoencoderShape, weight_shapes
from simulate.fleet_file import OBSERVER_ID
from tests.simulate.test_simulation import nacelle, processes_mentioning
from wire.envelope import Kind, open_envelope
from wire.messages import ModelRelease, parse_model
from wire.registry import FleetRegistry
from wire.topics import MODEL_TOPIC

pytestmark = [pytest.mark.broker, pytest.mark.influx, pytest.mark.slow]


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str, output: list[str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout_s:.0f}s; output:\n{''.join(output)[-3000:]}")
        time.sleep(0.2)


def _tls_context(fleet: dict[str, Any]) -> ssl.SSLContext | None:
    """What an operator's client needs for the fleet's brokers: nothing while they take plain
    TCP, else the fleet CA and the read-only observer's certificate."""
    if fleet["tls"] is None:
        return None
    tls = Path(fleet["tls"])
    context = ssl.create_default_context(cafile=str(tls / "ca.crt"))
    context.load_cert_chain(tls / f"{OBSERVER_ID}.crt", tls / f"{OBSERVER_ID}.key")
    return context


async def _retained_model(fleet: dict[str, Any], region: str) -> ModelRelease:
    broker = fleet["brokers"]["regions"][region]
    registry = FleetRegistry.load(Path(fleet["registry"]))
    client = aiomqtt.Client(broker["host"], broker["port"], tls_context=_tls_context(fleet))
    async with asyncio.timeout(30), client:
        await client.subscribe(MODEL_TOPIC, qos=1)
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            envelope = open_envelope(
                message.payload,
                max_bytes=1 << 20,
                keys=registry.keys_for(registry.cloud.member_id),
                expected_kind=Kind.MODEL,
            )
            return parse_model(envelope, weight_shapes(AutoencoderShape()))
    raise AssertionError("the subscription ended without a message")


def _rounds(workdir: Path) -> list[dict[str, Any]]:
    log = workdir / "state" / "cloud" / "rounds.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_keep_running_serves_the_fleet_until_ctrl_c_then_stops_every_process(tmp_path: Path) -> None:
    workdir = tmp_path / "live"
    fleet_file = workdir / "fleet.json"
    command = nacelle(
        *["simulate", "--turbines", "6", "--regions", "2", "--nights", "1", "--windows", "96"],
        *["--no-evaluation", "--keep-running", "--live-interval", "3", "--workdir", str(workdir)],
    )
    output: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        assert process.stdout is not None
        stdout = process.stdout
        reader = threading.Thread(target=lambda: output.extend(iter(stdout.readline, "")), daemon=True)
        reader.start()
        try:
            _wait_for(lambda: fleet_file.exists() or process.poll() is not None, 240, "fleet.json", output)
            assert process.poll() is None, "".join(output)[-3000:]
            fleet = json.loads(fleet_file.read_text())

            assert sorted(fleet["brokers"]["regions"]) == ["offshore", "onshore"]
            assert sorted(fleet["nodes"].values()) == ["offshore"] * 3 + ["onshore"] * 3
            assert fleet["tls"] in (None, str(workdir / "fleet" / "tls"))
            assert {"broker-cloud", "influxd", "region-offshore", "region-onshore", "cloud-live"} <= set(
                fleet["processes"]
            )
            for pid in [*fleet["processes"].values(), fleet["simulator_pid"]]:
                os.kill(pid, 0)  # alive
            assert httpx.get(f"{fleet['influxdb']['url']}/ping", timeout=5).status_code == 204
            model = asyncio.run(_retained_model(fleet, "onshore"))
            assert model.version >= 1  # the night's model, or a live round's already
            # Turbines stay connected and the cloud core keeps opening rounds.
            _wait_for(lambda: len(_rounds(workdir)) >= 2, 90, "live round", output)
            assert _rounds(workdir)[1]["updates_accepted"] == 6

            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
        finally:
            process.kill()
        reader.join(timeout=10)

    text = "".join(output)
    assert process.returncode == 0, text[-3000:]
    assert "mosquitto_sub -h" in text and str(fleet_file) in text
    assert "stopping the fleet" in text
    assert not fleet_file.exists()
    assert processes_mentioning(str(workdir)) == []
    assert subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True).returncode == 1  # none left


async def _node_versions(fleet: dict[str, Any], wanted: int, timeout_s: float) -> dict[str, int]:
    """The model version each node's retained status reports, once all report `wanted`."""
    registry = FleetRegistry.load(Path(fleet["registry"]))
    versions: dict[str, int] = {}

    async def watch(region: str) -> None:
        broker = fleet["brokers"]["regions"][region]
        async with aiomqtt.Client(broker["host"], broker["port"], tls_context=_tls_context(fleet)) as client:
            await client.subscribe(f"nacelle/v1/region/{region}/status/+", qos=1)
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                envelope = open_envelope(
                    message.payload, max_bytes=4096, keys=registry.public_key, expected_kind=Kind.STATUS
                )
                if envelope.sender in fleet["nodes"]:
                    versions[envelope.sender] = envelope.base_version
                if all(versions.get(node) == wanted for node, at in fleet["nodes"].items() if at == region):
                    return

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await asyncio.wait(
                [asyncio.create_task(watch(r)) for r in fleet["brokers"]["regions"]],
                return_when=asyncio.ALL_COMPLETED,
            )
    return versions


def test_rollback_makes_every_node_of_a_running_fleet_load_the_rolled_back_version(tmp_path: Path) -> None:
    workdir = tmp_path / "live"
    fleet_file = workdir / "fleet.json"
    command = nacelle(
        *["simulate", "--turbines", "6", "--regions", "2", "--nights", "2", "--windows", "96"],
        *["--no-evaluation", "--keep-running", "--workdir", str(workdir)],
    )
    output: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        assert process.stdout is not None
        stdout = process.stdout
        reader = threading.Thread(target=lambda: output.extend(iter(stdout.readline, "")), daemon=True)
        reader.start()
        try:
            _wait_for(lambda: fleet_file.exists() or process.poll() is not None, 240, "fleet.json", output)
            fleet = json.loads(fleet_file.read_text())
            assert asyncio.run(_node_versions(fleet, 2, 30)) == dict.fromkeys(fleet["nodes"], 2)

            rollback = subprocess.run(
                nacelle("model", "rollback", "1", "--config", fleet["cloud_core"]["config"]),
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert rollback.returncode == 0, rollback.stderr
            assert "stored v3: the weights of v1" in rollback.stdout
            influx = fleet["influxdb"]
            answer = httpx.get(
                f"{influx['url']}/query",
                params={"db": influx["database"], "q": "SELECT version FROM nacelle_model WHERE event = 'rollback'"},
                timeout=10,
            ).json()
            assert answer["results"][0]["series"][0]["values"][0][1] == 3

            assert asyncio.run(_node_versions(fleet, 3, 60)) == dict.fromkeys(fleet["nodes"], 3)
            model = asyncio.run(_retained_model(fleet, "offshore"))
            listing = subprocess.run(
                nacelle("model", "list", "--config", fleet["cloud_core"]["config"]), capture_output=True, text=True
            ).stdout
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
        finally:
            process.kill()
        reader.join(timeout=10)

    assert (model.version, model.parent_version) == (3, 2)
    assert "rollback to v1" in listing.splitlines()[-1]
    assert process.returncode == 0, "".join(output)[-3000:]
