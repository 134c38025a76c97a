"""deploy/ansible: every playbook passes `--syntax-check` and `ansible-lint --offline` (production
profile), and the real site.yml, run twice by ansible-core against local hosts in a throw-away
root, deploys a working fleet the second run leaves unchanged.

The fleet: a cloud host (cloud broker, cloud core, InfluxDB, Grafana), a server per region
(regional broker and aggregator) and two turbines per region, seven inventory hosts, each with
`ansible_connection=local` and its own `nacelle_root`; all share one venv (the roles really
create it and pip-install into it). Packages, users and systemd are switched off by the
variables the roles document; InfluxDB runs for real (started here), so the influxdb role
creates its database. Then the rendered mosquitto configurations start real brokers that take a
node's rendered certificate, the bridges carry the cloud's model, the deployed venv runs an edge
node, and `nacelle edge-health` from that venv says it is online with the fleet's model.
"""

from __future__ import annotations

import asyncio
import filecmp
import grp
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cloud_core.config import CloudConfig
from edge_node.config import EdgeConfig
from learning.model import AutoencoderShape, initial_weights
from nacelle.config import BrokerEndpoint, load_config
from nacelle.processes import free_tcp_port, start_process, stop_process, wait_for_tcp
from nacelle.tls import client_context
from regional_aggregator.config import RegionConfig
from simulate.influxdb_server import RunningInfluxDB, start_influxdb
from wire.envelope import seal
from wire.messages import ModelRelease, model_envelope
from wire.registry import FleetRegistry, NodeStatus
from wire.signing import load_private_key, public_key_hex
from wire.topics import MODEL_TOPIC, RegionTopics

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "deploy" / "ansible"
PLAYBOOKS = sorted(path.name for path in ANSIBLE_DIR.glob("*.yml"))
BIN = Path(sys.executable).parent
REGIONS = ("offshore", "onshore")
NODES = {f"{region}-t0000{i}": region for region in REGIONS for i in (1, 2)}
HOSTS = ["cloud-1", *(f"region-{region}" for region in REGIONS), *NODES]
# The whole deployment runs in one fixture: two site.yml runs and the venv's pip installs.
DEPLOYMENT_TIMEOUT_S = 900
RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def _ansible_env(home: Path) -> dict[str, str]:
    """ansible's environment: this repository's ansible.cfg, and a home of its own (nothing
    under ~/.ansible or ~/.cache)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("NACELLE_", "ANSIBLE_"))}
    home.mkdir(parents=True, exist_ok=True)
    return env | {
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / "cache"),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_REMOTE_TEMP": str(home / "remote-tmp"),
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    }


def _recap(output: str) -> dict[str, dict[str, int]]:
    tail = output[output.rindex("PLAY RECAP") :]
    return {
        m["host"]: {key: int(m[key]) for key in ("ok", "changed", "unreachable", "failed")}
        for m in RECAP.finditer(tail)
    }


# -- the playbooks as files ------------------------------------------------------------------


def test_every_playbook_passes_the_syntax_check(tmp_path: Path) -> None:
    result = subprocess.run(
        [BIN / "ansible-playbook", "--syntax-check", "-i", "inventories/example/hosts.yml", *PLAYBOOKS],
        cwd=ANSIBLE_DIR,
        env=_ansible_env(tmp_path / "ansible"),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert {"site.yml", "edge.yml", "rotate-certs.yml"} <= set(PLAYBOOKS)


@pytest.mark.slow
def test_ansible_lint_passes_every_playbook_and_role_with_the_production_profile(tmp_path: Path) -> None:
    result = subprocess.run(
        [BIN / "ansible-lint", "--offline", "--nocolor"],
        cwd=ANSIBLE_DIR,
        env=_ansible_env(tmp_path / "ansible"),
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr


# -- site.yml against local hosts -------------------------------------------------------------


@dataclass
class Deployment:
    root: Path
    playbooks: Path
    inventory: Path
    env: dict[str, str]
    fleet: Path
    venv: Path
    ports: dict[str, int]  # broker name → port
    influx: RunningInfluxDB
    first: str  # output of the first site.yml run
    second: str

    def host(self, name: str) -> Path:
        return self.root / "hosts" / name

    def etc(self, name: str) -> Path:
        return self.host(name) / "etc" / "nacelle"


def _inventory(root: Path, venv: Path, ports: dict[str, int], influx_port: int) -> dict[str, object]:
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name

    def host(name: str, **extra: object) -> dict[str, object]:
        return {"nacelle_root": str(root / "hosts" / name), **extra}

    region_servers = {f"region-{r}": host(f"region-{r}", nacelle_region=r) for r in REGIONS}
    return {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                # What a throw-away root cannot do: packages, system users, systemd.
                "nacelle_manage_services": False,
                "nacelle_install_packages": False,
                "nacelle_create_users": False,
                "nacelle_user": user,
                "nacelle_group": group,
                "nacelle_broker_user": user,
                "nacelle_broker_group": group,
                # One venv for every host (one machine): the first host of each play installs it.
                "nacelle_python": sys.executable,
                "nacelle_venv": str(venv),
                "nacelle_venv_shared": True,
                "nacelle_pip_extra_args": "--no-compile",
                "nacelle_regions": {
                    r: {"broker_host": "127.0.0.1", "broker_port": ports[f"region-{r}"]} for r in REGIONS
                },
                "nacelle_cloud_broker_host": "127.0.0.1",
                "nacelle_cloud_broker_port": ports["cloud"],
                "nacelle_broker_listen": "127.0.0.1",
                "nacelle_influx_url": f"http://127.0.0.1:{influx_port}",
                "nacelle_influxdb_port": influx_port,
                # Ignored by the test's InfluxDB (no authentication): rendered all the same.
                "nacelle_influx_user": "nacelle-cloud",
                "nacelle_influx_password": "s3cret",
                "nacelle_schedule_timezone": "Europe/Berlin",
                "nacelle_robust": {"aggregate": "trimmed_mean", "trim_fraction": 0.25},
                "nacelle_edge_alerts": {"quantile": 0.99},
            },
            "children": {
                "cloud": {"hosts": {"cloud-1": host("cloud-1")}},
                "influxdb": {"hosts": {"cloud-1": None}},
                "grafana": {"hosts": {"cloud-1": None}},
                "regional_brokers": {"hosts": region_servers},
                "regional_aggregators": {"hosts": dict.fromkeys(region_servers)},
                "edge_nodes": {
                    "children": {
                        f"edge_{r}": {
                            "hosts": {node: host(node) for node, region in NODES.items() if region == r},
                            "vars": {"nacelle_region": r},
                        }
                        for r in REGIONS
                    }
                },
            },
        }
    }


def _snapshot_sources(target: Path) -> Path:
    """The code and playbooks to deploy, frozen: edits in the working tree during the two runs
    would otherwise make the second one redeploy."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "fleet")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, target / name)
    for path in REPO.iterdir():
        if path.name in ("scripts", "deploy") or (
            path.is_dir() and (path / "__init__.py").exists() and path.name != "tests"
        ):
            shutil.copytree(path, target / path.name, ignore=ignore)
    return target / "deploy" / "ansible"


def _playbook(playbooks: Path, inventory: Path, env: dict[str, str], playbook: str, *extra: str) -> str:
    result = subprocess.run(
        [BIN / "ansible-playbook", "-i", inventory, playbook, "-e", "nacelle_edge_serial=2", *extra],
        cwd=playbooks,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=DEPLOYMENT_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    return result.stdout


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("ansible-site")
    (root / "src").mkdir()
    playbooks = _snapshot_sources(root / "src")
    ports = {"cloud": free_tcp_port(), **{f"region-{r}": free_tcp_port() for r in REGIONS}}
    venv = root / "venv"
    with start_influxdb(root / "influxdb", database="test_setup") as influx:
        inventory = root / "inventory" / "hosts.yml"
        inventory.parent.mkdir()
        inventory.write_text(yaml.safe_dump(_inventory(root, venv, ports, influx.port), sort_keys=False))
        env = _ansible_env(root / "ansible")
        first = _playbook(playbooks, inventory, env, "site.yml")
        second = _playbook(playbooks, inventory, env, "site.yml")
        fleet = inventory.parent / "fleet"  # the default: next to the inventory
        yield Deployment(root, playbooks, inventory, env, fleet, venv, ports, influx, first, second)
    shutil.rmtree(venv, ignore_errors=True)  # 1.4 GB with torch: pytest keeps its last three tmp dirs


@pytest.mark.slow
@pytest.mark.influx
@pytest.mark.timeout(DEPLOYMENT_TIMEOUT_S * 2)
@pytest.mark.parametrize("run", ["first", "second"])
def test_site_runs_on_every_host_without_a_failure(deployment: Deployment, run: str) -> None:
    recap = _recap(getattr(deployment, run))

    assert set(recap) == {*HOSTS, "localhost"}
    assert all(counts["failed"] == 0 and counts["unreachable"] == 0 for counts in recap.values()), recap


@pytest.mark.slow
@pytest.mark.influx
@pytest.mark.timeout(DEPLOYMENT_TIMEOUT_S * 2)
def test_a_second_run_changes_nothing(deployment: Deployment) -> None:
    first, second = _recap(deployment.first), _recap(deployment.second)

    assert all(first[host]["changed"] > 0 for host in HOSTS), first
    assert {host: counts["changed"] for host, counts in second.items()} == dict.fromkeys(second, 0)


@pytest.mark.slow
@pytest.mark.influx
@pytest.mark.timeout(DEPLOYMENT_TIMEOUT_S * 2)
def test_rendered_daemon_configurations_load_with_the_project_loaders(deployment: Deployment) -> None:
    cloud = load_config(CloudConfig, deployment.etc("cloud-1") / "cloud.toml")
    regions = {r: load_config(RegionConfig, deployment.etc(f"region-{r}") / f"region-{r}.toml") for r in REGIONS}
    edges = {node: load_config(EdgeConfig, deployment.etc(node) / "edge.toml") for node in NODES}

    assert cloud.broker.port == deployment.ports["cloud"] and cloud.broker.tls
    assert cloud.schedule.cron == "0 2 * * *" and cloud.schedule.timezone == "Europe/Berlin"
    assert cloud.influx.url == deployment.influx.url and cloud.influx.database == "nacelle"
    assert cloud.influx.v1_credentials() == ("nacelle-cloud", "s3cret")
    assert cloud.influx.password_file is not None and cloud.influx.password_file.stat().st_mode & 0o777 == 0o600
    for region, config in regions.items():
        assert config.region == region and config.broker.port == deployment.ports[f"region-{region}"]
        assert config.robust.aggregate.value == "trimmed_mean" and config.robust.trim_fraction == 0.25
        assert config.private_key_path.is_file() and config.broker.cert_file is not None
    for node, config in edges.items():
        assert (config.node_id, config.region) == (node, NODES[node])
        assert config.broker.port == deployment.ports[f"region-{NODES[node]}"]
        assert config.broker.cert_file == deployment.etc(node) / "tls" / f"{node}.crt"
        assert config.private_key_path.is_file() and config.alerts.quantile == 0.99


@pytest.mark.slow
@pytest.mark.influx
@pytest.mark.timeout(DEPLOYMENT_TIMEOUT_S * 2)
def test_private_keys_stay_on_their_hosts_and_the_registry_holds_their_public_keys(deployment: Deployment) -> None:
    registry = FleetRegistry.load(deployment.fleet / "registry.json")
    node_keys = {
        node: public_key_hex(load_private_key(deployment.etc(node) / "keys" / f"{node}.pem")) for node in NODES
    }

    assert {node: member.public_key for node, member in registry.nodes.items()} == node_keys
    assert all(member.status is NodeStatus.ACTIVE for member in registry.nodes.values())
    assert registry.cloud.public_key == public_key_hex(
        load_private_key(deployment.etc("cloud-1") / "keys" / "cloud.pem")
    )
    assert sorted(registry.aggregators) == sorted(REGIONS)
    # On the controller: the CA's key, and no other private key.
    assert sorted(p.relative_to(deployment.fleet) for p in deployment.fleet.rglob("*.key")) == [Path("tls/ca.key")]
    assert not list(deployment.fleet.rglob("*.pem"))
    for node in NODES:
        key = deployment.etc(node) / "tls" / f"{node}.key"
        cert = x509.load_pem_x509_certificate((deployment.etc(node) / "tls" / f"{node}.crt").read_bytes())
        assert key.stat().st_mode & 0o777 == 0o600
        assert cert.subject.rfc4514_string() == f"CN={node}"
        assert (deployment.etc(node) / "registry.json").read_text() == (deployment.fleet / "registry.json").read_text()


@pytest.mark.slow
@pytest.mark.influx
@pytest.mark.timeout(DEPLOYMENT_TIMEOUT_S * 2)
def test_rendered_units_pass_systemd_analyze_verify(deployment: Deployment, tmp_path: Path) -> None:
    units = {
        "nacelle-edge.service": deployment.host("offshore-t00001") / "etc/systemd/system/nacelle-edge.service",
        "nacelle-cloud.service": deployment.host("cloud-1") / "etc/systemd/system/nacelle-cloud.service",
        # Template units are verified as one of their instances.
        "nacelle-region@offshore.service": deployment.host("region-offshore")
        / "etc/systemd/system/nacelle-region@.service",
        "nacelle-mosquitto@region-offshore.service": (
            deployment.host("region-offshore") / "etc/systemd/system/nacelle-mosquitto@.service"
        ),
    }
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (package systemd) checks the rendered units"
    for name, source in units.items():
        shutil.copy(source, tmp_path / name)

    result = subprocess.run([analyze, "verify", *(tmp_path / name for name in units)], capture_output=True, text=True)

    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    edge = units["nacelle-edge.service"].read_text()
    assert (
        f"ExecStart={deployment.venv}/bin/nacelle edge --config {deployment.etc('offshore-t00001')}/edge.toml" in edge
    )
    assert "Restart=always" in edge and "StartLimitIntervalSec=0" in edge


@pytest.mark.slow
@pytest.mark.influx
@pytest.mark.timeout(DEPLOYMENT_TIMEOUT_S * 2)
def test_the_influxdb_role_created_the_database(deployment: Deployment) -> None:
    names = [row["name"] for row in deployment.influx.query_rows("SHOW DATABASES")]

    assert "nacelle" in names


@pytest.mark.slow
@pytest.mark.influx
@pytest.mark.timeout(DEPLOYMENT_TIMEOUT_S * 2)
def test_grafana_gets_the_projects_provisioning_and_dashboards(deployment: Deployment) -> None:
    grafana = deployment.host("cloud-1") / "etc" / "grafana"
    dashboards = deployment.host("cloud-1") / "var/lib/grafana/dashboards/nacelle"
    source = REPO / "deploy" / "grafana"
    environment = grafana / "nacelle.env"

    for name in ("datasources/nacelle.yaml", "dashboards/nacelle.yaml", "alerting/nacelle-rules.yaml"):
        assert filecmp.cmp(source / "provisioning" / name, grafana / "provisioning" / name, shallow=False), name
    assert sorted(p.name for p in dashboards.glob("*.json")) == sorted(
        p.name for p in (source / "dashboards").glob("*.json")
    )
    assert f"NACELLE_INFLUXDB_URL={deployment.influx.url}\n" in environment.read_text()
    assert environment.stat().st_mode & 0o777 == 0o600


# -- the deployed fleet, running --------------------------------------------------------------


def _start_brokers(deployment: Deployment, logs: Path) -> list[subprocess.Popen[bytes]]:
    processes = []
    brokers = {"cloud": "cloud-1", **{f"region-{r}": f"region-{r}" for r in REGIONS}}
    try:
        for broker, host in brokers.items():
            config = deployment.etc(host) / "mosquitto" / broker / "mosquitto.conf"
            process = start_process(
                [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(config)], logs / f"{broker}.log"
            )
            processes.append(process)
            wait_for_tcp(
                "127.0.0.1", deployment.ports[broker], timeout_s=10, process=process, log_path=logs / f"{broker}.log"
            )
    except BaseException:
        for process in processes:
            stop_process(process)
        raise
    return processes


def _client(endpoint: BrokerEndpoint, client_id: str) -> aiomqtt.Client:
    return aiomqtt.Client(endpoint.host, endpoint.port, identifier=client_id, tls_context=client_context(endpoint))


def _model_payload(deployment: Deployment, version: int) -> bytes:
    """A global model signed with the cloud's key as the cloud host made it."""
    key = load_private_key(deployment.etc("cloud-1") / "keys" / "cloud.pem")
    release = ModelRelease(version, version, version - 1, initial_weights(AutoencoderShape(), 0))
    return seal(model_envelope(release, "cloud", time.time()), key)


def _nacelle(deployment: Deployment, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """The nacelle command of the deployed venv."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("NACELLE_")}
    return subprocess.run(
        [deployment.venv / "bin" / "nacelle", *args], capture_output=True, text=True, env=env, timeout=timeout_s
    )


@pytest.mark.slow
@pytest.mark.influx
@pytest.mark.broker
@pytest.mark.timeout(DEPLOYMENT_TIMEOUT_S * 2)
async def test_the_deployed_fleet_connects_over_tls_and_its_edge_node_becomes_healthy(
    deployment: Deployment, tmp_path: Path
) -> None:
    node = "offshore-t00001"
    edge = load_config(EdgeConfig, deployment.etc(node) / "edge.toml")
    aggregator = load_config(RegionConfig, deployment.etc("region-offshore") / "region-offshore.toml")
    cloud = load_config(CloudConfig, deployment.etc("cloud-1") / "cloud.toml")
    topics = RegionTopics("offshore")
    brokers = _start_brokers(deployment, tmp_path)
    daemon = None
    try:
        # The node's rendered certificate is accepted, and what it publishes on its own update
        # topic reaches the aggregator (connected with the aggregator's rendered certificate).
        async with asyncio.timeout(30), _client(aggregator.broker, "test-aggregator") as watcher:
            await watcher.subscribe(topics.update_filter, qos=1)
            async with _client(edge.broker, "test-node") as sender:
                await sender.publish(topics.update(node), b"update", qos=1)
            received = await anext(aiter(watcher.messages))
        # Nothing on the broker yet: the node is not healthy, and says why.
        before = _nacelle(
            deployment, "edge-health", "--config", str(deployment.etc(node) / "edge.toml"), "--timeout", "3"
        )
        # The cloud (its rendered certificate, on the cloud broker) publishes a model; the bridge
        # carries it to the region, where the node, run from the deployed venv, loads it.
        async with asyncio.timeout(30), _client(cloud.broker, "test-cloud") as publisher:
            await publisher.publish(MODEL_TOPIC, _model_payload(deployment, 1), qos=1, retain=True)
        env = {name: value for name, value in os.environ.items() if not name.startswith("NACELLE_")}
        daemon = start_process(
            [str(deployment.venv / "bin" / "nacelle"), "edge", "--config", str(deployment.etc(node) / "edge.toml")],
            tmp_path / "edge.log",
            env=env,
        )
        after = await asyncio.to_thread(
            _nacelle, deployment, "edge-health", "--config", str(deployment.etc(node) / "edge.toml"), "--timeout", "90"
        )
    finally:
        if daemon is not None:
            stop_process(daemon)
        for process in reversed(brokers):
            stop_process(process)

    assert str(received.topic) == topics.update(node) and received.payload == b"update"
    assert before.returncode == 1 and "offshore-t00001: no status on the broker yet" in before.stdout, before
    edge_log = (tmp_path / "edge.log").read_text()[-3000:]
    assert after.returncode == 0, after.stdout + after.stderr + edge_log
    assert after.stdout.startswith("healthy: offshore-t00001: online since") and "with model v1" in after.stdout


# Last: it changes one node's keys.
@pytest.mark.slow
@pytest.mark.influx
@pytest.mark.timeout(DEPLOYMENT_TIMEOUT_S * 2)
def test_rotate_certs_changes_nothing_until_asked_then_gives_the_node_new_keys(deployment: Deployment) -> None:
    node, other = "offshore-t00001", "onshore-t00001"
    tls = deployment.etc(node) / "tls"
    before = {path: path.read_bytes() for path in (tls / f"{node}.key", tls / f"{node}.crt")}
    other_cert = (deployment.etc(other) / "tls" / f"{other}.crt").read_bytes()
    only_node = ("-l", f"{node},localhost")

    unasked = _playbook(deployment.playbooks, deployment.inventory, deployment.env, "rotate-certs.yml", *only_node)
    asked = _playbook(
        deployment.playbooks,
        deployment.inventory,
        deployment.env,
        "rotate-certs.yml",
        *only_node,
        "-e",
        "nacelle_rotate=true",
        "-e",
        "nacelle_rotate_signing_keys=true",
    )

    assert {host: counts["changed"] for host, counts in _recap(unasked).items()} == {node: 0, "localhost": 0}
    assert _recap(asked)[node]["changed"] > 0 and _recap(asked)[node]["failed"] == 0
    assert all(path.read_bytes() != content for path, content in before.items())
    cert = x509.load_pem_x509_certificate((tls / f"{node}.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((deployment.fleet / "tls" / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    key = serialization.load_pem_private_key((tls / f"{node}.key").read_bytes(), password=None)
    assert cert.public_key() == key.public_key()
    registry = FleetRegistry.load(deployment.etc(node) / "registry.json")
    assert registry.nodes[node].public_key == public_key_hex(
        load_private_key(deployment.etc(node) / "keys" / f"{node}.pem")
    )
    assert (deployment.etc(other) / "tls" / f"{other}.crt").read_bytes() == other_cert
    assert load_config(EdgeConfig, deployment.etc(node) / "edge.toml").broker.cert_file == tls / f"{node}.crt"
