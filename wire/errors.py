"""Typed refusals of the wire contract.

    WireError                      base of everything this package raises
     ├── RejectedMessage           an inbound message refused; `.reason` is machine-readable
     └── EncodeError               our own data cannot be put on the wire (non-finite, bad shape)

`RejectReason` values are the tag the rejection counters in InfluxDB carry, so they are part of
the operator-facing contract: add new ones, never rename.
"""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    UNKNOWN_SCHEMA = "unknown_schema"
    WRONG_KIND = "wrong_kind"
    UNKNOWN_SENDER = "unknown_sender"
    SUSPENDED_SENDER = "suspended_sender"
    BAD_SIGNATURE = "bad_signature"
    TOPIC_MISMATCH = "topic_mismatch"
    WRONG_REGION = "wrong_region"
    NO_OPEN_ROUND = "no_open_round"
    STALE_ROUND = "stale_round"
    FUTURE_ROUND = "future_round"
    WRONG_BASE_VERSION = "wrong_base_version"
    STALE_TIMESTAMP = "stale_timestamp"
    DUPLICATE = "duplicate"
    SHAPE_MISMATCH = "shape_mismatch"
    NON_FINITE = "non_finite"
    BAD_VALUE = "bad_value"
    LATE = "late"  # for the round this region just closed: past its deadline


class WireError(Exception):
    """Base of the errors of the wire contract."""


class RejectedMessage(WireError):
    """An inbound message that must not be used; the daemon logs it, counts it and goes on."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class EncodeError(WireError):
    """Our own data cannot be encoded (a bug or a diverged model, never a remote's fault)."""
