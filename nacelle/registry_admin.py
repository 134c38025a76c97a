"""`nacelle registry`: the operator's view of the fleet registry — list nodes, suspend and
reactivate them, enrol the public keys that hosts made for themselves. A suspended node's updates
are refused (`suspended_sender`) and it is no longer expected in its region's rounds; its key
stays in the registry, so reactivating needs no new key.

The registry file is the only state: each command reads it, changes it in memory and writes it
back atomically (`FleetRegistry.save`), or leaves it untouched when nothing changes or when any
node id is unknown. Commands that change it hold an exclusive lock (`registry.json.lock` beside
it) from read to write, so that two of them at once (an Ansible run enrolling hosts in parallel,
an operator suspending a node meanwhile) cannot lose each other's change.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from wire.registry import Enrolment, FleetRegistry, Member, MemberRole, NodeStatus, RegistryError, UnknownNodeError
from wire.signing import KeyFileError, load_public_key_file, public_key_hex


@dataclass(frozen=True)
class StatusChange:
    status: NodeStatus
    changed: list[str]  # node ids whose status this command changed
    unchanged: list[Member]  # nodes that already had the status, as they were


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_reason(reason: str) -> str:
    """One printable line: the reason is shown in `list`'s table and in logs."""
    if not reason.isprintable():
        raise RegistryError("the reason must be one line of printable text")
    return reason.strip()


def set_status(
    path: Path, node_ids: Sequence[str], status: NodeStatus, *, reason: str = "", changed_at: str | None = None
) -> StatusChange:
    """Give `node_ids` `status` in the registry file at `path`. Unknown ids raise
    UnknownNodeError (naming all of them) and the file is not written."""
    with _locked(path):
        return _set_status(path, node_ids, status, reason=reason, changed_at=changed_at)


def _set_status(
    path: Path, node_ids: Sequence[str], status: NodeStatus, *, reason: str, changed_at: str | None
) -> StatusChange:
    registry = FleetRegistry.load(path)
    try:
        updated = registry.with_status(
            node_ids, status, reason=check_reason(reason), changed_at=changed_at or now_utc()
        )
    except UnknownNodeError as exc:
        # Naming the file: ids unknown to the wrong registry file are the likelier mistake.
        raise UnknownNodeError(exc.node_ids, f"{path} left unchanged") from None
    wanted = list(dict.fromkeys(node_ids))
    changed = [node_id for node_id in wanted if registry.nodes[node_id].status is not status]
    if changed:
        try:
            updated.save(path)
        except OSError as exc:
            raise RegistryError(f"cannot write fleet registry {path}: {exc}") from exc
    unchanged = [registry.nodes[node_id] for node_id in wanted if node_id not in changed]
    return StatusChange(status, changed, unchanged)


def select_nodes(
    registry: FleetRegistry, *, status: NodeStatus | None = None, region: str | None = None
) -> list[Member]:
    """Nodes in id order, filtered; a region the registry does not have is an error (a typo
    would otherwise list nothing and look like an empty region)."""
    if region is not None and region not in registry.aggregators:
        raise RegistryError(f"no region {region!r} in the registry; regions: {', '.join(registry.regions)}")
    return [
        node
        for _, node in sorted(registry.nodes.items())
        if (status is None or node.status is status) and (region is None or node.region == region)
    ]


def format_nodes(nodes: Sequence[Member]) -> str:
    """A table of node, region, status, since and reason; '-' where there is none."""
    header = ("node", "region", "status", "since", "reason")
    rows = [header] + [
        (node.member_id, node.region, node.status.value, node.changed_at or "-", node.reason or "-") for node in nodes
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]) for row in rows
    )


@contextlib.contextmanager
def _locked(registry_path: Path) -> Iterator[None]:
    """Hold the registry's lock file exclusively (blocking) until the block ends."""
    lock_path = registry_path.with_name(f"{registry_path.name}.lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a")  # noqa: SIM115 - closed below, after the unlock
    except OSError as exc:
        raise RegistryError(f"cannot lock fleet registry {registry_path}: {exc}") from exc
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True)
class MemberKey:
    """A member to enrol: who, as what, where, and the public key its host made."""

    member_id: str
    role: MemberRole
    public_key: str  # 64 hex characters
    region: str = ""


# The cloud before the aggregators before the nodes: a node needs its region's aggregator.
_ROLE_ORDER = {MemberRole.CLOUD: 0, MemberRole.AGGREGATOR: 1, MemberRole.NODE: 2}


def read_public_key(path: Path) -> str:
    """The hex public key of a `.pub` file (PEM, as `nacelle pki request` writes it, or hex)."""
    try:
        return public_key_hex(load_public_key_file(path))
    except KeyFileError as exc:
        raise RegistryError(str(exc)) from exc


def read_manifest(path: Path) -> list[MemberKey]:
    """Members from a JSON list of {"id", "role", "region", "public_key_file"}; a relative key
    file is relative to the manifest (the Ansible roles write one next to the fetched keys)."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read member manifest {path}: {exc}") from exc
    if not isinstance(entries, list):
        raise RegistryError(f"member manifest {path}: expected a JSON list of members")
    members = []
    for index, entry in enumerate(entries):
        try:
            key_file = path.parent / entry["public_key_file"]
            members.append(
                MemberKey(entry["id"], MemberRole(entry["role"]), read_public_key(key_file), entry.get("region", ""))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"member manifest {path}, entry {index}: {exc!r}") from exc
    return members


def enrol_members(
    path: Path, members: Sequence[MemberKey], *, replace: bool = False
) -> list[tuple[MemberKey, Enrolment]]:
    """Enrol `members` into the registry file at `path` (created with the cloud if it does not
    exist yet), the cloud first, then aggregators, then nodes. All or nothing: any refusal
    (EnrolmentError for a changed key without `replace`, an unknown region) leaves the file as
    it was. Written only when something changed."""
    ordered = sorted(members, key=lambda member: _ROLE_ORDER[member.role])
    with _locked(path):
        registry = FleetRegistry.load(path) if path.exists() else None
        outcomes = []
        for member in ordered:
            if registry is None:
                if member.role is not MemberRole.CLOUD:
                    raise RegistryError(f"{path} does not exist: enrol the cloud first (it creates the registry)")
                registry = FleetRegistry(cloud=Member(member.member_id, member.public_key), aggregators={})
                outcome = Enrolment.ADDED
            else:
                registry, outcome = registry.enrol(
                    member.role, member.member_id, member.public_key, member.region, replace=replace
                )
            outcomes.append((member, outcome))
        if registry is not None and any(outcome is not Enrolment.UNCHANGED for _, outcome in outcomes):
            try:
                registry.save(path)
            except OSError as exc:
                raise RegistryError(f"cannot write fleet registry {path}: {exc}") from exc
    return outcomes
