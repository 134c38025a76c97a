"""Checks every update must pass before it counts. Pure: bytes and state in, a typed update
or a RejectedMessage with its reason out."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from wire.codec import Shapes
from wire.envelope import KeyLookup, Kind, open_envelope, reopen_verified
from wire.errors import RejectedMessage, RejectReason
from wire.messages import NodeUpdate, RoundAnnouncement, parse_update
from wire.registry import FleetRegistry, NodeStatus


@dataclass(frozen=True)
class UpdateLimits:
    max_bytes: int
    max_samples: int
    max_clock_skew_s: float


def _node_keys(registry: FleetRegistry) -> KeyLookup:
    def node_key(sender: str) -> Ed25519PublicKey | None:  # only nodes send updates, not aggregators
        return registry.public_key(sender) if sender in registry.nodes else None

    return node_key


def decode_logged(
    payload: bytes, registry: FleetRegistry, shapes: Shapes, limits: UpdateLimits, codec: str
) -> NodeUpdate:
    """An update read back from the update log: it passed `validate_update` when it arrived,
    so only what it carries is checked again (the signature too: the log is a file on disk)."""
    envelope = open_envelope(payload, max_bytes=limits.max_bytes, keys=_node_keys(registry), expected_kind=Kind.UPDATE)
    return parse_update(envelope, shapes, max_samples=limits.max_samples, codec=codec)


def reread_logged(payload: bytes, shapes: Shapes, codec: str) -> NodeUpdate:
    """An update this process verified and logged itself, read back without checking its
    signature again: for what does not change the aggregate (outlier scores)."""
    return parse_update(reopen_verified(payload), shapes, max_samples=2**63 - 1, codec=codec)


def validate_update(
    payload: bytes,
    topic_node_id: str,
    *,
    region: str,
    registry: FleetRegistry,
    open_round: RoundAnnouncement | None,
    counted: Container[str],
    shapes: Shapes,
    limits: UpdateLimits,
    now: float,
    last_closed_round: int = 0,
) -> NodeUpdate:
    envelope = open_envelope(payload, max_bytes=limits.max_bytes, keys=_node_keys(registry), expected_kind=Kind.UPDATE)
    sender = envelope.sender
    if sender != topic_node_id:
        raise RejectedMessage(RejectReason.TOPIC_MISMATCH, f"{sender!r} published on {topic_node_id!r}'s topic")
    member = registry.nodes[sender]
    if member.region != region or envelope.region != region:
        raise RejectedMessage(RejectReason.WRONG_REGION, f"{sender!r} belongs to region {member.region!r}")
    if member.status is not NodeStatus.ACTIVE:
        raise RejectedMessage(RejectReason.SUSPENDED_SENDER, f"{sender!r} is {member.status.value}")
    if envelope.round_id <= last_closed_round and (open_round is None or envelope.round_id < open_round.round_id):
        if 0 < envelope.round_id == last_closed_round:
            raise RejectedMessage(RejectReason.LATE, f"round {envelope.round_id} closed at its deadline")
        raise RejectedMessage(RejectReason.STALE_ROUND, f"round {envelope.round_id} is long closed")
    if open_round is None:
        raise RejectedMessage(RejectReason.NO_OPEN_ROUND, f"round {envelope.round_id} is not open here")
    if envelope.round_id < open_round.round_id:
        raise RejectedMessage(
            RejectReason.STALE_ROUND,
            f"round {envelope.round_id}, open round is {open_round.round_id}",
        )
    if envelope.round_id > open_round.round_id:
        raise RejectedMessage(
            RejectReason.FUTURE_ROUND,
            f"round {envelope.round_id}, open round is {open_round.round_id}",
        )
    if envelope.base_version != open_round.base_version:
        raise RejectedMessage(
            RejectReason.WRONG_BASE_VERSION,
            f"trained from v{envelope.base_version}, round {open_round.round_id} uses v{open_round.base_version}",
        )
    if not open_round.opened_at - limits.max_clock_skew_s <= envelope.created_at <= now + limits.max_clock_skew_s:
        raise RejectedMessage(
            RejectReason.STALE_TIMESTAMP,
            f"signed at {envelope.created_at:.0f}, outside the round's window",
        )
    if sender in counted:
        raise RejectedMessage(RejectReason.DUPLICATE, f"{sender!r} already counted in round {open_round.round_id}")
    return parse_update(envelope, shapes, max_samples=limits.max_samples, codec=open_round.codec)
