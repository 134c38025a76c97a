"""`nacelle keys`: create a fleet's identities — one Ed25519 key per node, per regional
aggregator and for the cloud — and the registry of their public keys.

Layout of a fleet directory:
    registry.json              public keys, regions, node status (distribute to every host)
    keys/cloud.pem             private keys, 0600; in production each stays on its own host
    keys/aggregator-{region}.pem
    keys/{region}-t00001.pem
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from wire.registry import FleetRegistry, Member
from wire.signing import generate_key, public_key_hex, save_private_key

CLOUD_ID = "cloud"
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


def key_path(fleet_dir: Path, member_id: str) -> Path:
    return fleet_dir / "keys" / f"{member_id}.pem"


def registry_path(fleet_dir: Path) -> Path:
    return fleet_dir / "registry.json"


def create_fleet(fleet_dir: Path, nodes_per_region: Mapping[str, int]) -> FleetRegistry:
    """Generate every key and write the registry; an existing fleet directory is refused."""
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
    registry.save(registry_path(fleet_dir))
    return registry
