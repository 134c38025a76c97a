"""Who may publish and subscribe to what on each broker: mosquitto `acl_file` text rendered from
the fleet registry. Pure, like broker.config. The table of grants is in docs/contract.md.

Clients authenticate with a certificate of the fleet CA and its CN is their username
(`use_identity_as_username`), so every grant is bound to an identity the PKI issued. An identity
without a `user` block may connect but neither publish nor receive anything. A regional broker
lists its own region's nodes and aggregator; the cloud broker the cloud core and the bridges.
Tools (the launcher's probe, observers, operators) are on every broker.

On a regional broker, what arrives over the bridge is not checked against the ACL (mosquitto
trusts its own bridge); on the cloud broker the bridge is a client like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from nacelle.keys import bridge_id
from wire.registry import FleetRegistry
from wire.topics import GLOBAL_FILTER, MODEL_TOPIC, PROTOCOL_PREFIX, ROUND_TOPIC, RegionTopics, check_identifier

# Probes of the broker launcher: under `global/#`, so the bridges carry them, but no node or
# aggregator reads them.
PROBE_PREFIX = GLOBAL_FILTER.removesuffix("#") + "probe"
PROBE_FILTER = f"{PROBE_PREFIX}/#"


class Access(StrEnum):
    READ = "read"
    WRITE = "write"
    READWRITE = "readwrite"


@dataclass(frozen=True)
class Grant:
    access: Access
    topic: str

    def __post_init__(self) -> None:
        # A space or newline would end the topic early or start another ACL line.
        if not self.topic or any(c.isspace() for c in self.topic):
            raise ValueError(f"ACL topic must be non-empty without whitespace, got {self.topic!r}")


Acl = dict[str, list[Grant]]


@dataclass(frozen=True)
class ToolIdentities:
    """Identities of tools rather than fleet members (see nacelle.keys)."""

    probe: str | None = None
    observers: Sequence[str] = ()
    # Read and write every Nacelle topic: for tests that inject forged traffic and for manual
    # recovery. None by default: such an identity can publish on any node's or the cloud's topic
    # (message signatures still bind each message to its signer).
    operators: Sequence[str] = ()

    def __post_init__(self) -> None:
        for identity in (*([self.probe] if self.probe else []), *self.observers, *self.operators):
            check_identifier("identity", identity)


def _region_wide(suffix: str) -> str:
    return f"{PROTOCOL_PREFIX}/region/+/{suffix}"


def node_grants(region: str, node_id: str) -> list[Grant]:
    topics = RegionTopics(region)
    return [
        Grant(Access.WRITE, topics.update(node_id)),
        Grant(Access.WRITE, topics.status(node_id)),
        Grant(Access.WRITE, topics.alert(node_id)),
        Grant(Access.READ, ROUND_TOPIC),
        Grant(Access.READ, MODEL_TOPIC),
        # Its own retained status, and nobody else's: `nacelle edge-health` on the node's host
        # checks with the node's certificate that the daemon is online and runs the current model.
        Grant(Access.READ, topics.status(node_id)),
    ]


def aggregator_grants(region: str, aggregator: str) -> list[Grant]:
    topics = RegionTopics(region)
    return [
        Grant(Access.WRITE, topics.partial),
        Grant(Access.WRITE, topics.status(aggregator)),
        Grant(Access.READ, topics.update_filter),
        Grant(Access.READ, f"{topics.base}/status/+"),
        Grant(Access.READ, ROUND_TOPIC),
        Grant(Access.READ, MODEL_TOPIC),
    ]


def cloud_grants() -> list[Grant]:
    return [
        Grant(Access.WRITE, ROUND_TOPIC),
        Grant(Access.WRITE, MODEL_TOPIC),
        Grant(Access.READ, _region_wide("partial")),
        Grant(Access.READ, _region_wide("alert/#")),
    ]


def bridge_grants(region: str) -> list[Grant]:
    topics = RegionTopics(region)
    return [
        Grant(Access.READ, GLOBAL_FILTER),
        Grant(Access.WRITE, topics.partial),
        Grant(Access.WRITE, topics.alert_filter),
        # mosquitto's bridge notification (retained online/offline, also its last will): lets
        # the cloud side see which regions are linked.
        Grant(Access.WRITE, f"$SYS/broker/connection/{bridge_id(region)}/state"),
    ]


def observer_grants() -> list[Grant]:
    return [
        Grant(Access.READ, ROUND_TOPIC),
        Grant(Access.READ, MODEL_TOPIC),
        Grant(Access.READ, _region_wide("status/+")),
        Grant(Access.READ, _region_wide("partial")),
        Grant(Access.READ, _region_wide("alert/#")),
    ]


def _with_tools(acl: Acl, tools: ToolIdentities) -> Acl:
    if tools.probe:
        acl[tools.probe] = [Grant(Access.READWRITE, PROBE_FILTER)]
    for observer in tools.observers:
        acl[observer] = observer_grants()
    for operator in tools.operators:
        acl[operator] = [Grant(Access.READWRITE, f"{PROTOCOL_PREFIX}/#")]
    return acl


def regional_acl(registry: FleetRegistry, region: str, tools: ToolIdentities = ToolIdentities()) -> Acl:
    """The ACL of `region`'s broker: its nodes and its aggregator, nobody from other regions."""
    if region not in registry.aggregators:
        raise ValueError(f"region {region!r} is not in the fleet registry (regions: {registry.regions})")
    aggregator = registry.aggregators[region].member_id
    acl: Acl = {aggregator: aggregator_grants(region, aggregator)}
    for node in sorted(registry.nodes_in(region), key=lambda member: member.member_id):
        acl[node.member_id] = node_grants(region, node.member_id)
    return _with_tools(acl, tools)


def cloud_acl(registry: FleetRegistry, tools: ToolIdentities = ToolIdentities()) -> Acl:
    """The ACL of the cloud broker: the cloud core and one bridge per region."""
    acl: Acl = {registry.cloud.member_id: cloud_grants()}
    for region in registry.regions:
        acl[bridge_id(region)] = bridge_grants(region)
    return _with_tools(acl, tools)


def render_acl(acl: Mapping[str, Sequence[Grant]], title: str) -> str:
    """mosquitto acl_file text: one `user` block per identity, nothing for anonymous clients."""
    lines = [
        f"# Nacelle {title} ACL, generated by broker.acl from the fleet registry: edits are overwritten.",
        "# Usernames are certificate CNs (use_identity_as_username); anything not granted is denied.",
    ]
    for identity, grants in acl.items():
        check_identifier("identity", identity)
        lines.extend(["", f"user {identity}", *(f"topic {grant.access} {grant.topic}" for grant in grants)])
    return "\n".join(lines) + "\n"
