"""`fleet.json`: where a simulated fleet left running (`nacelle simulate --keep-running`) can be
reached — brokers, InfluxDB, keys and certificates, node ids, process ids — for an operator or
a tool to connect to it. No processes and no network here: a description in, JSON and a how-to
text out (looking only at which certificate files exist); `write_fleet_file` writes the file.

    {"schema": 1, "workdir": ..., "fleet_dir": ..., "registry": ..., "keys_dir": ...,
     "tls": null | "<fleet_dir>/tls",
     "brokers": {"cloud": {"host", "port", "pid"}, "regions": {region: {"host", "port", "pid"}}},
     "nodes": {node_id: region}, "influxdb": {"url", "database", "pid"},
     "cloud_core": {"config", "round_interval_s", "log"}, "topics": {...},
     "processes": {name: pid}, "simulator_pid": pid}

`tls` is null while the brokers take plain TCP; once the fleet directory holds `tls/` (the CA,
server and client certificates) it names that directory, and clients connect with TLS.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacelle.files import write_atomically
from nacelle.keys import OBSERVER_ID
from wire.topics import GLOBAL_FILTER, MODEL_TOPIC, PARTIAL_FILTER, PROTOCOL_PREFIX, ROUND_TOPIC

FLEET_FILE_SCHEMA = 1
FLEET_FILE_NAME = "fleet.json"


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    pid: int | None


@dataclass(frozen=True)
class LiveFleet:
    """What is running, as the simulator knows it."""

    workdir: Path
    fleet_dir: Path
    cloud_broker: BrokerAddress
    regional_brokers: Mapping[str, BrokerAddress]
    nodes: Mapping[str, str]  # node id → region
    influx_url: str
    influx_database: str
    influx_pid: int | None  # None: an InfluxDB the simulator did not start (--influx-url)
    cloud_config: Path
    round_interval_s: float
    processes: Mapping[str, int]  # every process the simulator started, by name
    simulator_pid: int


def tls_dir(fleet_dir: Path) -> Path | None:
    """The fleet's certificate directory, or None while it has none (plain TCP brokers)."""
    directory = fleet_dir / "tls"
    return directory if directory.is_dir() else None


def fleet_json(fleet: LiveFleet) -> dict[str, Any]:
    def broker(address: BrokerAddress) -> dict[str, Any]:
        return {"host": address.host, "port": address.port, "pid": address.pid}

    tls = tls_dir(fleet.fleet_dir)
    return {
        "schema": FLEET_FILE_SCHEMA,
        "workdir": str(fleet.workdir),
        "fleet_dir": str(fleet.fleet_dir),
        "registry": str(fleet.fleet_dir / "registry.json"),
        "keys_dir": str(fleet.fleet_dir / "keys"),
        "tls": None if tls is None else str(tls),
        "brokers": {
            "cloud": broker(fleet.cloud_broker),
            "regions": {region: broker(address) for region, address in sorted(fleet.regional_brokers.items())},
        },
        "nodes": dict(sorted(fleet.nodes.items())),
        "influxdb": {"url": fleet.influx_url, "database": fleet.influx_database, "pid": fleet.influx_pid},
        "cloud_core": {
            "config": str(fleet.cloud_config),
            "round_interval_s": fleet.round_interval_s,
            "log": str(fleet.workdir / "logs" / "cloud-live.log"),
        },
        "topics": {
            "round": ROUND_TOPIC,
            "model": MODEL_TOPIC,
            "partials": PARTIAL_FILTER,
            "updates": f"{PROTOCOL_PREFIX}/region/{{region}}/update/{{node_id}}",
            "status": f"{PROTOCOL_PREFIX}/region/{{region}}/status/{{id}}",
        },
        "processes": dict(fleet.processes),
        "simulator_pid": fleet.simulator_pid,
    }


def write_fleet_file(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically: a tool polling for the file must never read half of it."""
    write_atomically(path, (json.dumps(data, indent=1) + "\n").encode())


def mosquitto_sub_command(data: Mapping[str, Any], region: str, topic: str = GLOBAL_FILTER) -> list[str]:
    """A mosquitto_sub command line that shows what arrives on `region`'s broker (topic, size,
    retained flag; payloads are binary msgpack), with the TLS options the fleet needs."""
    address = data["brokers"]["regions"][region]
    command = ["mosquitto_sub", "-h", address["host"], "-p", str(address["port"])]
    command += ["-t", topic, "-F", "%t %l bytes retained=%r"]
    if data["tls"] is not None:
        tls = Path(data["tls"])
        command += ["--cafile", str(tls / "ca.crt")]
        if (tls / f"{OBSERVER_ID}.crt").exists():
            command += ["--cert", str(tls / f"{OBSERVER_ID}.crt"), "--key", str(tls / f"{OBSERVER_ID}.key")]
    return command


def usage(data: Mapping[str, Any], fleet_file: Path) -> str:
    """What to print once the fleet is left running: where it is and how to use it."""
    region = next(iter(data["brokers"]["regions"]))
    node = next((n for n, r in data["nodes"].items() if r == region), "NODE")
    influx = data["influxdb"]
    query = f"{influx['url']}/query?db={influx['database']}&q=SELECT+*+FROM+nacelle_round"
    interval = data["cloud_core"]["round_interval_s"]
    lines = [
        f"\nthe fleet keeps running; everything about it: {fleet_file}",
        f"  cloud core: opens a round every {interval:g}s, counted from the last night's; "
        f"log {data['cloud_core']['log']}",
        f"  watch region {region}:  {shlex.join(mosquitto_sub_command(data, region))}",
        f"  suspend a turbine:  nacelle registry suspend {node} --reason test --registry {data['registry']}",
        f"  metrics:  curl -s '{query}'",
        f"Ctrl-C (or kill -TERM {data['simulator_pid']}) stops every process of the fleet.",
    ]
    if data["tls"] is None:
        lines.insert(2, "  brokers: plain TCP on loopback, anonymous access (no TLS material in the fleet directory)")
    return "\n".join(lines)
