"""`nacelle keys`: create a fleet's identities — one Ed25519 key per node, per regional
aggregator and for the cloud — the registry of their public keys, and the TLS certificates its
MQTT clients and brokers authenticate with (`nacelle.pki`).

Layout of a fleet directory:
    registry.json              public keys, regions, node status (distribute to every host)
    keys/cloud.pem             signing keys, 0600; in production each stays on its own host
    keys/aggregator-{region}.pem
    keys/{region}-t00001.pem
    tls/ca.crt, tls/ca.key     the fleet CA (keep ca.key offline once the fleet is issued)
    tls/{identity}.crt, .key   MQTT client certificates: every member above, one per bridge,
                               and the tools' identities (PROBE_ID, OBSERVER_ID)
    tls/brokers/{broker}.crt, .key   the brokers' server certificates
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from nacelle.pki import PkiReport, TlsLayout, ensure_pki
from wire.registry import FleetRegistry, Member
from wire.signing import generate_key, load_private_key, public_key_hex, public_key_pem, save_private_key

CLOUD_ID = "cloud"
# TLS identities of tools, not fleet members: they sign nothing, so they are not in the registry.
# The broker launcher's bridge probes (publish and read `global/probe/...` only).
PROBE_ID = "nacelle-probe"
# Monitoring (and the simulator): reads rounds, models, statuses, partials and alerts, writes
# nothing and never reads a node's update.
OBSERVER_ID = "nacelle-observer"
CLOUD_BROKER = "cloud"
_REGION_NAMES = ("offshore", "onshore", "ridge", "valley", "coast", "plains")


def region_names(count: int) -> list[str]:
    """Readable default names for `count` regions."""
    return [_REGION_NAMES[i] if i < len(_REGION_NAMES) else f"region-{i + 1}" for i in range(count)]


def split_turbines(turbines: int, regions: Sequence[str]) -> dict[str, int]:
    base, extra = divmod(turbines, len(regions))
    return {region: base + (1 if i < extra else 0) for i, region in enumerate(regions)}


def node_id(region: str, index: int) -> str:
    return f"{region}-t{index:05d}"


def aggregator_id(region: str) -> str:
    return f"aggregator-{region}"


def bridge_id(region: str) -> str:
    """The regional broker's bridge to the cloud broker: its MQTT client id and certificate CN."""
    return f"nacelle-bridge-{region}"


def regional_broker(region: str) -> str:
    """Name of a region's broker (its directory under the launcher's workdir, its server cert)."""
    return f"region-{region}"


def key_path(fleet_dir: Path, member_id: str) -> Path:
    return fleet_dir / "keys" / f"{member_id}.pem"


def registry_path(fleet_dir: Path) -> Path:
    return fleet_dir / "registry.json"


def tls_layout(fleet_dir: Path) -> TlsLayout:
    return TlsLayout.of_fleet(fleet_dir)


def broker_names(registry: FleetRegistry) -> list[str]:
    """The fleet's brokers, as their server certificates name them."""
    return [CLOUD_BROKER, *(regional_broker(region) for region in registry.regions)]


def public_key_path(private_key: Path) -> Path:
    """Where `ensure_signing_key` writes the public half: `keys/ID.pem` → `keys/ID.pub`."""
    return private_key.with_suffix(".pub")


def ensure_signing_key(path: Path, *, rotate: bool = False) -> list[str]:
    """Make the Ed25519 signing key at `path` (0600) unless it exists, or a new one when
    `rotate`; keep its public half (PEM) beside it for the operator to enrol. Returns what was
    done (empty: nothing changed)."""
    changes = []
    existed = path.exists()
    if rotate or not existed:
        key = generate_key()
        save_private_key(key, path)
        changes.append(f"{'rotated' if existed else 'created'} signing key {path}")
    else:
        key = load_private_key(path)
    public = public_key_path(path)
    pem = public_key_pem(key)
    if not public.exists() or public.read_bytes() != pem:
        public.write_bytes(pem)
        changes.append(f"wrote public key {public}")
    return changes


def tls_identities(registry: FleetRegistry) -> list[str]:
    """Every TLS client identity of a fleet: its members, one bridge per region, the tools."""
    return [
        registry.cloud.member_id,
        *(registry.aggregators[region].member_id for region in registry.regions),
        *(bridge_id(region) for region in registry.regions),
        PROBE_ID,
        OBSERVER_ID,
        *sorted(registry.nodes),
    ]


def ensure_fleet_pki(
    fleet_dir: Path,
    registry: FleetRegistry,
    broker_hosts: Mapping[str, Sequence[str]] | None = None,
    extra_identities: Sequence[str] = (),
) -> PkiReport:
    """Issue what the fleet's PKI lacks (`nacelle.pki.ensure_pki`): the CA if there is none, a
    certificate for every identity and broker without one. `broker_hosts` maps a broker name
    (`cloud`, `region-{region}`) to the names clients dial it by, besides 127.0.0.1 and localhost."""
    hosts = dict(broker_hosts or {})
    brokers = [CLOUD_BROKER, *(regional_broker(region) for region in registry.regions)]
    unknown = sorted(set(hosts) - set(brokers))
    if unknown:
        raise ValueError(f"broker host names given for unknown brokers {unknown}; the brokers are {brokers}")
    return ensure_pki(
        tls_layout(fleet_dir),
        [*tls_identities(registry), *extra_identities],
        {broker: hosts.get(broker, ()) for broker in brokers},
    )


def create_fleet(
    fleet_dir: Path,
    nodes_per_region: Mapping[str, int],
    broker_hosts: Mapping[str, Sequence[str]] | None = None,
) -> FleetRegistry:
    """Generate every key and certificate and write the registry; an existing fleet directory is
    refused. An existing CA under `tls/` is reused (see `nacelle.pki`), never replaced."""
    if registry_path(fleet_dir).exists():
        raise FileExistsError(f"{registry_path(fleet_dir)} exists; refusing to replace a fleet's keys")

    def member(member_id: str, region: str = "") -> Member:
        key = generate_key()
        save_private_key(key, key_path(fleet_dir, member_id))
        return Member(member_id, public_key_hex(key), region)

    registry = FleetRegistry(
        cloud=member(CLOUD_ID),
        aggregators={region: member(aggregator_id(region), region) for region in nodes_per_region},
        nodes={
            node.member_id: node
            for region, count in nodes_per_region.items()
            for node in (member(node_id(region, i), region) for i in range(1, count + 1))
        },
    )
    # The registry last: if issuing certificates fails, the fleet is not half made.
    ensure_fleet_pki(fleet_dir, registry, broker_hosts)
    registry.save(registry_path(fleet_dir))
    return registry
