"""Start and stop local mosquitto brokers on free loopback ports: one cloud broker and one
regional broker per region, bridged to it; with a fleet's `FleetSecurity`, TLS listeners that
require client certificates, ACLs rendered from its registry and bridges with their own
certificates. Used by the simulator and the tests; production hosts run mosquitto under systemd
with the same rendered configuration.
"""

from __future__ import annotations

import atexit
import logging
import os
import pwd
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from broker.acl import PROBE_PREFIX, ToolIdentities, cloud_acl, regional_acl, render_acl
from broker.config import (
    DEFAULT_LIMITS,
    BridgeSettings,
    BridgeTls,
    BrokerLimits,
    BrokerSettings,
    ListenerSecurity,
    render_cloud_config,
    render_regional_config,
)
from nacelle.config import BrokerEndpoint
from nacelle.keys import CLOUD_BROKER, OBSERVER_ID, PROBE_ID, bridge_id, regional_broker, registry_path, tls_layout
from nacelle.pki import TlsLayout
from nacelle.processes import (
    ServiceError,
    find_executable,
    free_tcp_port,
    log_tail,
    start_process,
    stop_process,
    wait_for_tcp,
)
from nacelle.tls import client_context
from wire.registry import FleetRegistry
from wire.topics import RegionTopics, check_identifier

Role = Literal["cloud", "regional"]

_log = logging.getLogger(__name__)
# Brokers whose process may still run: stopped at interpreter exit if nobody else did.
_running: set[RunningBroker] = set()


@dataclass(frozen=True)
class FleetSecurity:
    """TLS and ACLs for a fleet's brokers, from a fleet directory made by `nacelle keys` (or
    completed by `nacelle pki`): server certificates, the bridges' client certificates, and ACLs
    rendered from the registry."""

    fleet_dir: Path
    registry: FleetRegistry
    tools: ToolIdentities = field(default_factory=lambda: ToolIdentities(probe=PROBE_ID, observers=(OBSERVER_ID,)))

    @classmethod
    def from_fleet(cls, fleet_dir: Path, *, operators: tuple[str, ...] = ()) -> FleetSecurity:
        """`operators` read and write every Nacelle topic (tests); their certificates must exist."""
        fleet_dir = fleet_dir.resolve()  # mosquitto resolves relative paths against its own cwd
        tools = ToolIdentities(probe=PROBE_ID, observers=(OBSERVER_ID,), operators=operators)
        return cls(fleet_dir, FleetRegistry.load(registry_path(fleet_dir)), tools)

    @property
    def layout(self) -> TlsLayout:
        return tls_layout(self.fleet_dir)

    def endpoint(self, host: str, port: int, identity: str) -> BrokerEndpoint:
        """How `identity` connects to a broker of this fleet: the CA, its certificate and key."""
        layout = self.layout
        return BrokerEndpoint(
            host=host, port=port, ca_file=layout.ca_cert, cert_file=layout.cert(identity), key_file=layout.key(identity)
        )


def _require_files(*paths: Path) -> None:
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise ServiceError(f"TLS files missing: {', '.join(missing)} (nacelle pki --fleet DIR issues them)")


@dataclass(eq=False)
class RunningBroker:
    """A mosquitto process started by this module (stopped or running)."""

    name: str
    role: Role
    region: str | None
    host: str
    port: int
    config_path: Path
    log_path: Path
    data_dir: Path
    start_timeout_s: float = 10.0
    # None: plain TCP with anonymous access (tests of a broker on its own).
    security: FleetSecurity | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def endpoint(self, identity: str | None = None) -> BrokerEndpoint:
        """Where `identity` (a certificate CN of the fleet) connects to this broker; a broker
        without security takes anyone and needs no identity."""
        if self.security is None:
            return BrokerEndpoint(host=self.host, port=self.port)
        if identity is None:
            raise ValueError(f"broker {self.name!r} requires a client certificate: name the identity to connect as")
        return self.security.endpoint(self.host, self.port, identity)

    @property
    def pid(self) -> int | None:
        """Pid of the latest process, also after it stopped."""
        return None if self._process is None else self._process.pid

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start mosquitto on this broker's port, config and data dir; no-op while running."""
        if self.is_running:
            return
        executable = find_executable("mosquitto", "mosquitto")
        # Otherwise wait_for_tcp could reach whoever holds the port before mosquitto gives up.
        _check_port_free(self.host, self.port, self.name)
        process = start_process([executable, "-c", str(self.config_path)], self.log_path)
        self._process = process
        _running.add(self)
        try:
            wait_for_tcp(
                self.host,
                self.port,
                timeout_s=self.start_timeout_s,
                process=process,
                log_path=self.log_path,
            )
        except ServiceError as exc:
            # wait_for_tcp quotes the log when the process exited, not when it timed out.
            timed_out = process.poll() is None
            self.stop()
            tail = f"\n{log_tail(self.log_path)}" if timed_out else ""
            raise ServiceError(f"broker {self.name!r}: {exc}{tail}") from None
        _log.info("broker %s (%s) listening on %s:%d", self.name, self.role, self.host, self.port)

    def stop(self) -> None:
        """SIGTERM mosquitto, which saves its database on the way out; safe to call twice."""
        if self._process is not None:
            stop_process(self._process)
        _running.discard(self)

    def restart(self) -> None:
        """Stop, then start again on the same port with the same config and persistence."""
        self.stop()
        self.start()


def start_broker(
    name: str,
    workdir: Path,
    *,
    role: Role,
    region: str | None = None,
    cloud: RunningBroker | None = None,
    limits: BrokerLimits = DEFAULT_LIMITS,
    host: str = "127.0.0.1",
    port: int | None = None,
    security: FleetSecurity | None = None,
) -> RunningBroker:
    """Write `{workdir}/{name}/mosquitto.conf` and start mosquitto with it.

    A regional broker needs its `region` and the `cloud` broker to bridge to. An existing data
    dir is reused: resuming from it is what persistence is for. With `security` the broker
    listens with TLS, requires client certificates of the fleet CA and enforces the fleet's ACL
    (`{workdir}/{name}/acl`), and a regional broker's bridge authenticates with its own
    certificate; without it, plain TCP and anonymous access, on loopback only.
    """
    check_identifier("broker name", name)
    if role == "regional" and (region is None or cloud is None):
        raise ValueError("a regional broker needs a region and the cloud broker to bridge to")
    if role == "cloud" and (region is not None or cloud is not None):
        raise ValueError("the cloud broker has no region and no bridge")
    root = (workdir / name).resolve()
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    listener = None if security is None else _listener_security(security, root / "acl", region)
    settings = BrokerSettings(
        port=free_tcp_port(host) if port is None else port,
        data_dir=data_dir,
        log_path=root / "mosquitto.log",
        host=host,
        limits=limits,
        user=pwd.getpwuid(os.geteuid()).pw_name,
        security=listener,
    )
    if cloud is not None and region is not None:
        bridge = BridgeSettings(
            region=region,
            cloud_host=cloud.host,
            cloud_port=cloud.port,
            tls=None if security is None else _bridge_tls(security, region),
        )
        text = render_regional_config(settings, bridge)
    else:
        text = render_cloud_config(settings)
    config_path = root / "mosquitto.conf"
    config_path.write_text(text)
    broker = RunningBroker(
        name=name,
        role=role,
        region=region,
        host=host,
        port=settings.port,
        config_path=config_path,
        log_path=settings.log_path,
        data_dir=data_dir,
        security=security,
    )
    broker.start()
    return broker


def _listener_security(security: FleetSecurity, acl_path: Path, region: str | None) -> ListenerSecurity:
    """Render the ACL of the cloud broker (region None) or of `region`'s broker into `acl_path`."""
    layout = security.layout
    # The certificate follows the broker's role, not its name: tests name brokers freely.
    server = CLOUD_BROKER if region is None else regional_broker(region)
    _require_files(layout.ca_cert, layout.broker_cert(server), layout.broker_key(server))
    if region is None:
        acl, title = cloud_acl(security.registry, security.tools), "cloud broker"
    else:
        acl, title = regional_acl(security.registry, region, security.tools), f"region {region} broker"
    acl_path.write_text(render_acl(acl, title))
    return ListenerSecurity(
        cafile=layout.ca_cert,
        certfile=layout.broker_cert(server),
        keyfile=layout.broker_key(server),
        acl_file=acl_path,
    )


def _bridge_tls(security: FleetSecurity, region: str) -> BridgeTls:
    layout = security.layout
    identity = bridge_id(region)
    _require_files(layout.cert(identity), layout.key(identity))
    return BridgeTls(cafile=layout.ca_cert, certfile=layout.cert(identity), keyfile=layout.key(identity))


@dataclass(eq=False)
class FleetBrokers:
    """One cloud broker and a regional broker per region, bridged to it."""

    cloud: RunningBroker
    regions: dict[str, RunningBroker]

    @property
    def brokers(self) -> list[RunningBroker]:
        """Regional brokers first, so that their bridges close before the cloud goes away."""
        return [*self.regions.values(), self.cloud]

    def stop(self) -> None:
        for broker in self.brokers:
            broker.stop()

    def __enter__(self) -> FleetBrokers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_for_bridges(self, timeout_s: float = 10.0) -> None:
        """Return once every regional broker receives what is published on the cloud broker.

        Probes are QoS 0 and not retained: a bridge that is down does not queue them, and no
        later subscriber sees them.
        """
        topic = f"{PROBE_PREFIX}/{secrets.token_hex(8)}"
        arrived: set[str] = set()
        clients: list[mqtt.Client] = []
        try:
            for region, broker in self.regions.items():
                clients.append(_probe_client(broker, topic, partial(arrived.add, region)))
            publisher = _probe_client(self.cloud)
            clients.append(publisher)
            deadline = time.monotonic() + timeout_s
            while missing := sorted(set(self.regions) - arrived):
                if time.monotonic() > deadline:
                    tails = "\n".join(f"--- {r}:\n{log_tail(self.regions[r].log_path, 5)}" for r in missing)
                    raise ServiceError(f"bridges of {missing} not up after {timeout_s:.0f}s\n{tails}")
                publisher.publish(topic, b"", qos=0)
                time.sleep(0.1)
        finally:
            for client in clients:
                client.disconnect()
                client.loop_stop()


def start_fleet_brokers(
    regions: Sequence[str],
    workdir: Path,
    *,
    limits: BrokerLimits = DEFAULT_LIMITS,
    host: str = "127.0.0.1",
    security: FleetSecurity | None = None,
) -> FleetBrokers:
    """Start the cloud broker and one bridged regional broker per region (see `start_broker`
    for `security`).

    The bridges connect in the background: call `wait_for_bridges` before relying on them. If a
    broker fails to start, those already started are stopped before the error propagates.
    """
    if not regions or len(set(regions)) != len(regions):
        raise ValueError(f"regions must be non-empty and unique, got {list(regions)}")
    for region in regions:
        RegionTopics(region)  # fail before starting anything
    cloud = start_broker(CLOUD_BROKER, workdir, role="cloud", limits=limits, host=host, security=security)
    fleet = FleetBrokers(cloud=cloud, regions={})
    try:
        for region in regions:
            fleet.regions[region] = start_broker(
                regional_broker(region),
                workdir,
                role="regional",
                region=region,
                cloud=cloud,
                limits=limits,
                host=host,
                security=security,
            )
    except BaseException:
        fleet.stop()
        raise
    return fleet


def _probe_client(
    broker: RunningBroker, topic: str | None = None, on_probe: Callable[[], None] | None = None
) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"nacelle-probe-{broker.name}-{secrets.token_hex(4)}",
        protocol=mqtt.MQTTv311,
    )
    context = client_context(broker.endpoint(PROBE_ID))
    if context is not None:
        client.tls_set_context(context)
    if topic is not None and on_probe is not None:
        # Subscribing on (re)connect survives a broker that drops the first connection.
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=0)
        client.on_message = lambda *_: on_probe()
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except OSError as exc:
        raise ServiceError(f"broker {broker.name!r} not reachable: {exc}") from None
    client.loop_start()
    return client


def _check_port_free(host: str, port: int, name: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like mosquitto's own listener, so that connections in TIME_WAIT after a restart pass.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServiceError(f"broker {name!r} cannot listen on {host}:{port}: {exc}") from None


@atexit.register
def _stop_leftovers() -> None:
    # A test or script that dies without stopping its brokers must not leave mosquitto behind.
    for broker in list(_running):
        broker.stop()
