"""The fleet registry: who may sign what. Node id → region, public key and status; one
aggregator identity per region; the cloud's identity. Stored as one JSON file that the operator
distributes with the fleet's configuration (public keys only: private keys never leave their host).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from wire.envelope import KeyLookup
from wire.signing import KeyFileError, parse_public_key
from wire.topics import check_identifier

REGISTRY_SCHEMA = 1


class NodeStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class RegistryError(ValueError):
    """A registry file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Member:
    member_id: str
    public_key: str
    region: str = ""
    status: NodeStatus = NodeStatus.ACTIVE

    def __post_init__(self) -> None:
        check_identifier("member id", self.member_id)


@dataclass(frozen=True)
class FleetRegistry:
    cloud: Member
    aggregators: dict[str, Member]  # region → its aggregator
    nodes: dict[str, Member] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = [m.member_id for m in (self.cloud, *self.aggregators.values(), *self.nodes.values())]
        duplicates = sorted(member_id for member_id, count in Counter(ids).items() if count > 1)
        if duplicates:
            # A node named like the cloud would have its key trusted to sign global models.
            raise RegistryError(f"member ids used twice: {duplicates}")
        unknown = {m.region for m in self.nodes.values()} - set(self.aggregators)
        if unknown:
            raise RegistryError(f"nodes in regions without aggregator: {sorted(unknown)}")

    @cached_property
    def _keys(self) -> dict[str, Ed25519PublicKey]:
        keys = {}
        for member in (self.cloud, *self.aggregators.values(), *self.nodes.values()):
            try:
                keys[member.member_id] = parse_public_key(member.public_key)
            except KeyFileError as exc:
                raise RegistryError(f"member {member.member_id!r}: {exc}") from exc
        return keys

    @property
    def regions(self) -> list[str]:
        return sorted(self.aggregators)

    def public_key(self, member_id: str) -> Ed25519PublicKey | None:
        return self._keys.get(member_id)

    def keys_for(self, *member_ids: str) -> KeyLookup:
        """A key lookup that knows only `member_ids`: the senders a receiver accepts a kind of
        message from (the cloud for models and rounds, a region's aggregator for its partial)."""
        allowed = frozenset(member_ids)
        return lambda sender: self.public_key(sender) if sender in allowed else None

    def nodes_in(self, region: str) -> list[Member]:
        return [node for node in self.nodes.values() if node.region == region]

    def to_json(self) -> dict[str, Any]:
        def entry(member: Member) -> dict[str, str]:
            return {
                "region": member.region,
                "public_key": member.public_key,
                "status": member.status,
            }

        return {
            "schema": REGISTRY_SCHEMA,
            "cloud": {"id": self.cloud.member_id, "public_key": self.cloud.public_key},
            "aggregators": {
                region: {"id": m.member_id, "public_key": m.public_key}
                for region, m in sorted(self.aggregators.items())
            },
            "nodes": {node_id: entry(m) for node_id, m in sorted(self.nodes.items())},
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.to_json(), indent=1))
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> FleetRegistry:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read fleet registry {path}: {exc}") from exc
        try:
            if data.get("schema") != REGISTRY_SCHEMA:
                raise RegistryError(f"schema {data.get('schema')!r}, expected {REGISTRY_SCHEMA}")
            registry = cls(
                cloud=Member(data["cloud"]["id"], data["cloud"]["public_key"]),
                aggregators={
                    region: Member(entry["id"], entry["public_key"], region=check_identifier("region", region))
                    for region, entry in data["aggregators"].items()
                },
                nodes={
                    node_id: Member(node_id, entry["public_key"], entry["region"], NodeStatus(entry["status"]))
                    for node_id, entry in data["nodes"].items()
                },
            )
            registry._keys  # noqa: B018 - parse every key now so a bad one fails at start
        except RegistryError as exc:
            raise RegistryError(f"fleet registry {path}: {exc}") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RegistryError(f"fleet registry {path}: bad entry: {exc!r}") from exc
        return registry
