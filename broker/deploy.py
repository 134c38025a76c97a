"""The files of a production broker host: its mosquitto.conf and ACL, rendered from the fleet
registry by the same functions the launcher uses (broker.config, broker.acl), and written only
when their text changed (`nacelle broker render`, run by deploy/ansible's mosquitto_broker role).

One source of truth: a host's configuration differs from a simulated broker's only in its paths,
its listen address and its tool identities (observers, never the launcher's probe). Rendering is
pure (`render_broker_files`); `write_changed` is the only I/O, so Ansible can tell a broker that
must restart (mosquitto.conf changed) from one that only re-reads its ACL (SIGHUP).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from broker.acl import ToolIdentities, cloud_acl, regional_acl, render_acl
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
from nacelle.files import write_atomically
from nacelle.keys import CLOUD_BROKER, OBSERVER_ID, regional_broker
from wire.registry import FleetRegistry

CONFIG_NAME = "mosquitto.conf"
ACL_NAME = "acl"


@dataclass(frozen=True)
class BridgeUplink:
    """A regional broker's bridge to the cloud broker: where it dials and its own certificate."""

    cloud_host: str
    cloud_port: int
    certfile: Path
    keyfile: Path


@dataclass(frozen=True)
class BrokerHost:
    """One broker on a host: the cloud broker (`region` None) or a region's, bridged to the cloud."""

    config_dir: Path  # mosquitto.conf and acl are written here
    port: int
    data_dir: Path
    log_path: Path
    cafile: Path  # the fleet CA
    certfile: Path  # this broker's server certificate
    keyfile: Path
    region: str | None = None
    uplink: BridgeUplink | None = None
    # Every interface by default: turbines and the bridges reach the broker over the network.
    listen: str = "0.0.0.0"
    # Started as root, mosquitto drops to this user (mosquitto's default, "mosquitto", if None).
    user: str | None = None
    observers: Sequence[str] = (OBSERVER_ID,)
    limits: BrokerLimits = field(default=DEFAULT_LIMITS)

    def __post_init__(self) -> None:
        if (self.region is None) != (self.uplink is None):
            raise ValueError("a regional broker needs its bridge uplink, and the cloud broker has none")

    @property
    def name(self) -> str:
        return CLOUD_BROKER if self.region is None else regional_broker(self.region)


def render_broker_files(host: BrokerHost, registry: FleetRegistry) -> dict[Path, str]:
    """mosquitto.conf and acl of `host` (path → text); paths are written into the config as
    they are given, so give absolute ones (mosquitto resolves relative paths against its cwd)."""
    acl_path = host.config_dir / ACL_NAME
    tools = ToolIdentities(observers=tuple(host.observers))
    settings = BrokerSettings(
        port=host.port,
        data_dir=host.data_dir,
        log_path=host.log_path,
        host=host.listen,
        limits=host.limits,
        user=host.user,
        security=ListenerSecurity(cafile=host.cafile, certfile=host.certfile, keyfile=host.keyfile, acl_file=acl_path),
    )
    if host.region is None or host.uplink is None:
        config = render_cloud_config(settings)
        acl = render_acl(cloud_acl(registry, tools), "cloud broker")
    else:
        uplink = host.uplink
        bridge = BridgeSettings(
            region=host.region,
            cloud_host=uplink.cloud_host,
            cloud_port=uplink.cloud_port,
            tls=BridgeTls(cafile=host.cafile, certfile=uplink.certfile, keyfile=uplink.keyfile),
        )
        config = render_regional_config(settings, bridge)
        acl = render_acl(regional_acl(registry, host.region, tools), f"region {host.region} broker")
    return {host.config_dir / CONFIG_NAME: config, acl_path: acl}


def write_changed(files: Mapping[Path, str], mode: int = 0o644) -> list[Path]:
    """Write each file whose text differs from what is on disk (through a temporary file and a
    rename, so mosquitto never reads half of one); returns the paths written."""
    written = []
    for path, text in files.items():
        if path.exists() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, text.encode(), mode)
        written.append(path)
    return written
