"""Render mosquitto.conf text for the cloud broker and the regional brokers bridged to it.

Pure functions of frozen dataclasses: no files and no processes (see broker.launcher for those),
so the rendered text can be tested and diffed on its own. Written for mosquitto 2.0.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from nacelle.keys import bridge_id
from wire.topics import GLOBAL_FILTER, RegionTopics

# MQTT caps the remaining length of a packet at 256 MiB - 1.
_MQTT_MAX_PACKET = 268_435_455
_EXPIRATION = re.compile(r"^[1-9][0-9]*[hdwmy]$")
# TLS 1.0 and 1.1 are deprecated (RFC 8996). mosquitto 2.0 reads a listener's tls_version as the
# minimum, so "tlsv1.2" also offers 1.3; a bridge's as the version to use (1.2 or later).
TLS_VERSIONS = ("tlsv1.2", "tlsv1.3")


@dataclass(frozen=True)
class BrokerLimits:
    """Resource limits shared by every Nacelle broker."""

    # mosquitto's default of 1000 silently drops QoS 1 messages for a persistent client that is
    # offline for a while; a regional broker queues updates for thousands of nodes.
    max_queued_messages: int = 100_000
    # mosquitto's default of 20 unacknowledged messages per client throttles the bridge links,
    # which carry the traffic of a whole region.
    max_inflight_messages: int = 100
    # mosquitto accepts any size by default; a model or update is far below 4 MiB, so anything
    # bigger is a bug or an attack and is refused at the broker (which disconnects the sender).
    max_packet_size: int = 4 * 1024 * 1024
    # Bounded so that sessions of decommissioned or renamed nodes do not pile up forever, yet
    # long enough that a turbine offline for a week of maintenance keeps its queued messages.
    persistent_client_expiration: str = "14d"
    # A clean shutdown always saves the database; this bounds what a crash loses (0: never
    # autosave, only on shutdown).
    autosave_interval_s: int = 60

    def __post_init__(self) -> None:
        for name in ("max_queued_messages", "max_inflight_messages"):
            # 0 means "unlimited" to mosquitto, which is exactly what these limits are for.
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 20 <= self.max_packet_size <= _MQTT_MAX_PACKET:
            raise ValueError(
                f"max_packet_size must be between 20 (mosquitto's minimum) and "
                f"{_MQTT_MAX_PACKET} bytes, got {self.max_packet_size}"
            )
        if not _EXPIRATION.match(self.persistent_client_expiration):
            raise ValueError(
                "persistent_client_expiration must be a positive count followed by one of "
                f"h, d, w, m, y (e.g. '14d'), got {self.persistent_client_expiration!r}"
            )
        if self.autosave_interval_s < 0:
            raise ValueError(f"autosave_interval_s must be >= 0, got {self.autosave_interval_s}")


DEFAULT_LIMITS = BrokerLimits()


@dataclass(frozen=True)
class ListenerSecurity:
    """TLS with client certificates and an ACL on a broker's listener.

    Every client must present a certificate of the fleet CA (`cafile`); the certificate's CN
    becomes its username, and `acl_file` (broker.acl) says what that username may publish and
    read. Nobody connects anonymously.
    """

    cafile: Path
    certfile: Path
    keyfile: Path
    acl_file: Path
    tls_version: str = "tlsv1.2"

    def __post_init__(self) -> None:
        for name in ("cafile", "certfile", "keyfile", "acl_file"):
            _check_token(name, getattr(self, name))
        _check_tls_version("tls_version", self.tls_version)


@dataclass(frozen=True)
class BridgeTls:
    """The bridge's TLS client side: it checks the cloud broker's certificate against `cafile`
    and the host it dials, and authenticates with its own certificate (CN: its connection name)."""

    cafile: Path
    certfile: Path
    keyfile: Path
    tls_version: str = "tlsv1.2"

    def __post_init__(self) -> None:
        for name in ("cafile", "certfile", "keyfile"):
            _check_token(name, getattr(self, name))
        _check_tls_version("tls_version", self.tls_version)


@dataclass(frozen=True)
class BrokerSettings:
    """Where one broker listens and keeps its files."""

    port: int
    data_dir: Path
    log_path: Path
    host: str = "127.0.0.1"
    limits: BrokerLimits = field(default=DEFAULT_LIMITS)
    # Started as root, mosquitto drops privileges to user "mosquitto", which cannot write to a
    # workdir that root created; naming the starting user keeps it. Ignored when not root.
    user: str | None = None
    # None: plain TCP with anonymous access, for tests of a broker on its own; refused on
    # anything but a loopback address, where nobody else could reach it.
    security: ListenerSecurity | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65_535:
            raise ValueError(f"port must be between 1 and 65535, got {self.port}")
        for name in ("host", "data_dir", "log_path", "user"):
            _check_token(name, getattr(self, name))
        if self.security is None and not _is_loopback(self.host):
            raise ValueError(
                f"security is required on host {self.host!r}: plain TCP with anonymous access is "
                "allowed on a loopback address only"
            )


@dataclass(frozen=True)
class BridgeSettings:
    """The bridge from a regional broker to the cloud broker."""

    region: str
    cloud_host: str
    cloud_port: int
    # None: plain TCP to a cloud broker without security (tests of brokers on their own).
    tls: BridgeTls | None = None
    # Loopback and data-centre links: notice a dead cloud broker within seconds, not minutes.
    keepalive_interval_s: int = 10
    # Reconnect quickly after a restart (tests and the simulator restart brokers mid-round);
    # mosquitto backs off with jitter from the base towards the cap.
    restart_base_s: int = 1
    restart_cap_s: int = 10

    def __post_init__(self) -> None:
        RegionTopics(self.region)  # validates the region id
        _check_token("cloud_host", self.cloud_host)
        if not 1 <= self.cloud_port <= 65_535:
            raise ValueError(f"cloud_port must be between 1 and 65535, got {self.cloud_port}")
        if self.keepalive_interval_s < 5:
            raise ValueError(f"keepalive_interval_s must be >= 5, got {self.keepalive_interval_s}")
        if not 1 <= self.restart_base_s <= self.restart_cap_s:
            raise ValueError(
                f"restart_base_s must be >= 1 and <= restart_cap_s, got {self.restart_base_s} and {self.restart_cap_s}"
            )

    @property
    def connection_name(self) -> str:
        """Its client id on the cloud broker, and the CN of its certificate."""
        return bridge_id(self.region)


def _check_token(name: str, value: object) -> None:
    # mosquitto splits option values on whitespace; a space or newline would cut a path short
    # or smuggle in another option.
    if value is not None and (not str(value) or re.search(r"\s", str(value))):
        raise ValueError(f"{name} must be non-empty and contain no whitespace, got {value!r}")


def _check_tls_version(name: str, value: str) -> None:
    if value not in TLS_VERSIONS:
        raise ValueError(f"{name} must be one of {', '.join(TLS_VERSIONS)}, got {value!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def render_cloud_config(settings: BrokerSettings) -> str:
    """mosquitto.conf of the cloud broker."""
    return _render_common(settings, "cloud")


def render_regional_config(settings: BrokerSettings, bridge: BridgeSettings) -> str:
    """mosquitto.conf of a regional broker, bridged to the cloud broker."""
    topics = RegionTopics(bridge.region)
    name = bridge.connection_name
    lines = [
        "",
        "# Bridge to the cloud broker: the global round and model come in, this region's",
        "# partial aggregates and alerts go out; updates and status never leave the region.",
        f"connection {name}",
        f"address {bridge.cloud_host}:{bridge.cloud_port}",
        # With try_private the cloud broker knows this client is a bridge: it keeps the retain
        # flag on messages it forwards live, so the newest model stays retained here too.
        "bridge_protocol_version mqttv311",
        "try_private true",
        # A reconnect resumes the session: no replay of every retained message, and QoS 1
        # messages queued while the link was down are delivered.
        "cleansession false",
        f"clientid {name}",
        f"keepalive_interval {bridge.keepalive_interval_s}",
        f"restart_timeout {bridge.restart_base_s} {bridge.restart_cap_s}",
        *_bridge_tls_lines(bridge.tls),
        f"topic {GLOBAL_FILTER} in 1",
        f"topic {topics.partial} out 1",
        f"topic {topics.alert_filter} out 1",
    ]
    return _render_common(settings, f"region {bridge.region}") + "\n".join(lines) + "\n"


def _bridge_tls_lines(tls: BridgeTls | None) -> list[str]:
    if tls is None:
        return []
    # bridge_insecure stays false (the default): the cloud broker's certificate must name the
    # host in `address`.
    return [
        f"bridge_cafile {tls.cafile}",
        f"bridge_certfile {tls.certfile}",
        f"bridge_keyfile {tls.keyfile}",
        f"bridge_tls_version {tls.tls_version}",
    ]


def _listener_security_lines(security: ListenerSecurity | None) -> list[str]:
    if security is None:
        return [
            "# Plain TCP and anonymous: a broker tested on its own, on loopback (BrokerSettings.security).",
            "allow_anonymous true",
        ]
    return [
        "# Every client presents a certificate of the fleet CA; its CN is its username in the ACL.",
        f"cafile {security.cafile}",
        f"certfile {security.certfile}",
        f"keyfile {security.keyfile}",
        f"tls_version {security.tls_version}",
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
        f"acl_file {security.acl_file}",
    ]


def _render_common(settings: BrokerSettings, role: str) -> str:
    limits = settings.limits
    lines = [
        f"# Nacelle {role} broker, generated by broker.config: edits are overwritten.",
        *([f"user {settings.user}"] if settings.user else []),
        f"listener {settings.port} {settings.host}",
        *_listener_security_lines(settings.security),
        "",
        "persistence true",
        # mosquitto 1.x appends the file name without a separator (2.0 adds one itself).
        f"persistence_location {str(settings.data_dir).rstrip('/')}/",
        f"autosave_interval {limits.autosave_interval_s}",
        "",
        f"max_queued_messages {limits.max_queued_messages}",
        f"max_inflight_messages {limits.max_inflight_messages}",
        f"max_packet_size {limits.max_packet_size}",
        f"persistent_client_expiration {limits.persistent_client_expiration}",
        # Without it a packet the broker writes while an earlier one is unacknowledged waits up to
        # 40 ms for the client's delayed ACK (a model of two TLS records, each PUBACK after a
        # delivery); the clients set it on their side too (nacelle.mqtt). Bridges' own outgoing
        # sockets are not covered by it in mosquitto 2.0: a partial still takes ~40 ms to the cloud.
        "set_tcp_nodelay true",
        "",
        f"log_dest file {settings.log_path}",
        # mosquitto reads one type per log_type line and ignores the rest of the line.
        *(f"log_type {kind}" for kind in ("error", "warning", "notice", "information")),
        "connection_messages true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    return "\n".join(lines) + "\n"
