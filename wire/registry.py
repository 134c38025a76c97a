"""The fleet registry: who may sign what. Node id → region, public key and status; one
aggregator identity per region; the cloud's identity. Stored as one JSON file that the operator
distributes with the fleet's configuration (public keys only: private keys never leave their host).

Schema 1. A node entry is {"region", "public_key", "status"} plus, since suspension became an
operator command, the optional "reason" and "changed_at" (ISO 8601, UTC) of its last status
change. They are optional, not a schema 2, so that files written before load as they are and
daemons of the previous release still read files written now (they ignore fields they do not
know); a change that old readers would misread must raise REGISTRY_SCHEMA instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
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


class MemberRole(StrEnum):
    """What a member signs: global models and rounds, a region's partials, or a node's updates."""

    CLOUD = "cloud"
    AGGREGATOR = "aggregator"
    NODE = "node"


class Enrolment(StrEnum):
    """What `FleetRegistry.enrol` did with a member."""

    ADDED = "added"
    UNCHANGED = "unchanged"
    REPLACED = "replaced"


class RegistryError(ValueError):
    """A registry file that cannot be used; the message names the file and the entry."""


class EnrolmentError(RegistryError):
    """A member enrolled with another key or region than the registry holds for it, without
    `replace`: a host that made itself a new key (re-imaged, or a key rotation) must be replaced
    on purpose, or a stolen inventory name could take over a turbine's identity."""


class UnknownNodeError(RegistryError):
    """Node ids that are not nodes of the registry (strangers, or the cloud's and aggregators' ids)."""

    def __init__(self, node_ids: Iterable[str], consequence: str = "nothing changed") -> None:
        self.node_ids = sorted(set(node_ids))
        super().__init__(f"not nodes of the fleet registry: {', '.join(self.node_ids)}; {consequence}")


@dataclass(frozen=True)
class Member:
    member_id: str
    public_key: str
    region: str = ""
    status: NodeStatus = NodeStatus.ACTIVE
    reason: str = ""  # why the status was last changed, as the operator gave it
    changed_at: str = ""  # when, ISO 8601 UTC; "" for a status never changed since the fleet was made

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

    def with_status(
        self, node_ids: Iterable[str], status: NodeStatus, *, reason: str, changed_at: str
    ) -> FleetRegistry:
        """A copy with `node_ids` set to `status`; raises UnknownNodeError, naming every id that
        is not a node, before changing anything. Nodes already in `status` are left as they are,
        so repeating a command does not rewrite when and why it first happened."""
        wanted = list(dict.fromkeys(node_ids))
        unknown = [node_id for node_id in wanted if node_id not in self.nodes]
        if unknown:
            raise UnknownNodeError(unknown)
        nodes = dict(self.nodes)
        for node_id in wanted:
            if nodes[node_id].status is not status:
                nodes[node_id] = replace(nodes[node_id], status=status, reason=reason, changed_at=changed_at)
        return replace(self, nodes=nodes)

    def enrol(
        self, role: MemberRole, member_id: str, public_key: str, region: str = "", *, replace: bool = False
    ) -> tuple[FleetRegistry, Enrolment]:
        """A copy with `member_id` holding `public_key` as the cloud, `region`'s aggregator or a
        node of `region`. The same key again changes nothing (UNCHANGED, the same registry);
        another key or region raises EnrolmentError unless `replace` (REPLACED: a rotation; a
        node keeps its status). The cloud and each region's aggregator keep their ids."""
        try:
            parse_public_key(public_key)
        except KeyFileError as exc:
            raise RegistryError(f"{role.value} {member_id!r}: {exc}") from exc
        member = Member(member_id, public_key, region)
        if role is MemberRole.CLOUD:
            if region:
                raise RegistryError(f"the cloud has no region (got {region!r} for {member_id!r})")
            outcome = _enrolment(self.cloud, member, replace)
            changed = dataclasses.replace(self, cloud=member)
        elif role is MemberRole.AGGREGATOR:
            check_identifier("region", region)
            outcome = _enrolment(self.aggregators.get(region), member, replace)
            changed = dataclasses.replace(self, aggregators={**self.aggregators, region: member})
        else:
            if region not in self.aggregators:
                raise RegistryError(f"node {member_id!r}: region {region!r} has no aggregator; enrol it first")
            current = self.nodes.get(member_id)
            outcome = _enrolment(current, member, replace)
            if current is not None:
                # A rotated key neither reactivates a suspended node nor forgets why it was suspended.
                member = dataclasses.replace(
                    member, status=current.status, reason=current.reason, changed_at=current.changed_at
                )
            changed = dataclasses.replace(self, nodes={**self.nodes, member_id: member})
        return (self if outcome is Enrolment.UNCHANGED else changed), outcome

    def to_json(self) -> dict[str, Any]:
        def entry(member: Member) -> dict[str, str]:
            fields = {
                "region": member.region,
                "public_key": member.public_key,
                "status": member.status.value,
            }
            # Written only when set: a fleet nobody suspended keeps the file of the first release.
            if member.reason:
                fields["reason"] = member.reason
            if member.changed_at:
                fields["changed_at"] = member.changed_at
            return fields

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
        """Write atomically: daemons reload this file while it may be rewritten, so they must see
        the old registry or the new one, never half of one. The temporary file sits in the same
        directory (os.replace is atomic only within a file system) under a name of its own (two
        writers never share it), is synced before the rename and removed if anything fails."""
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), indent=1) + "\n"
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        # Mode 0o666 less the umask, like a plain write; an existing file keeps its mode, because
        # the daemons reading it may run as other users.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                with contextlib.suppress(FileNotFoundError):
                    os.fchmod(handle.fileno(), path.stat().st_mode & 0o7777)
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _sync_directory(path.parent)

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
                nodes={node_id: _node(node_id, entry) for node_id, entry in data["nodes"].items()},
            )
            registry._keys  # noqa: B018 - parse every key now so a bad one fails at start
        except RegistryError as exc:
            raise RegistryError(f"fleet registry {path}: {exc}") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RegistryError(f"fleet registry {path}: bad entry: {exc!r}") from exc
        return registry


def _enrolment(current: Member | None, member: Member, replace: bool) -> Enrolment:
    """Whether enrolling `member` where `current` is adds, keeps or replaces it; EnrolmentError
    for a change not asked for."""
    if current is None:
        return Enrolment.ADDED
    if current.member_id != member.member_id:
        raise EnrolmentError(
            f"{member.member_id!r}: this place in the registry belongs to {current.member_id!r}; "
            "the ids of the cloud and of aggregators do not change"
        )
    differs = [
        what
        for what, field_name in (("key", "public_key"), ("region", "region"))
        if getattr(current, field_name) != getattr(member, field_name)
    ]
    if not differs:
        return Enrolment.UNCHANGED
    if not replace:
        raise EnrolmentError(
            f"{member.member_id!r} is enrolled with another {' and '.join(differs)}; replacing it "
            "(a key rotation, a re-imaged host) must be asked for"
        )
    return Enrolment.REPLACED


def _node(node_id: str, entry: dict[str, Any]) -> Member:
    optional = {name: entry.get(name, "") for name in ("reason", "changed_at")}
    for name, value in optional.items():
        if not isinstance(value, str):
            raise RegistryError(f"node {node_id!r}: {name} must be a string, not {value!r}")
    return Member(node_id, entry["public_key"], entry["region"], NodeStatus(entry["status"]), **optional)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable: without it a power cut can bring back the old file."""
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened and synced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
