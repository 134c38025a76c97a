"""`nacelle registry`: the operator's view of the fleet registry — list nodes, suspend and
reactivate them. A suspended node's updates are refused (`suspended_sender`) and it is no longer
expected in its region's rounds; its key stays in the registry, so reactivating needs no new key.

The registry file is the only state: each command reads it, changes it in memory and writes it
back atomically (`FleetRegistry.save`), or leaves it untouched when nothing changes or when any
node id is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from wire.registry import FleetRegistry, Member, NodeStatus, RegistryError, UnknownNodeError


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
