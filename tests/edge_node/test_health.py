"""edge_node.health.judge: healthy only when the node's status says online at the version of the
fleet's model; otherwise the operator reads why."""

from __future__ import annotations

import pytest

from edge_node.health import judge
from wire.envelope import Envelope
from wire.messages import status_envelope

NODE = "north-t00001"


def _status(state: str, version: int) -> Envelope:
    return status_envelope(NODE, "north", state, version, 1_790_000_000.0)


def test_online_at_the_models_version_is_healthy() -> None:
    health = judge(NODE, _status("online", 7), 7)

    assert health.healthy
    assert health.message == f"{NODE}: online since 2026-09-21 14:13:20 UTC with model v7, the fleet's current one"


@pytest.mark.parametrize(
    ("status", "model", "reason"),
    [
        (None, 7, "no status on the broker yet: the node has not connected"),
        (_status("offline", 7), 7, "offline since 2026-09-21 14:13:20 UTC"),
        (_status("online", 6), 7, "with model v6; the fleet's model is v7"),
        (_status("online", 7), None, "no global model on the broker"),
    ],
)
def test_anything_else_is_unhealthy_and_says_why(status: Envelope | None, model: int | None, reason: str) -> None:
    health = judge(NODE, status, model)

    assert not health.healthy and reason in health.message and health.message.startswith(NODE)


def test_a_refused_message_is_named_in_the_verdict() -> None:
    health = judge(NODE, None, 7, refused="refused a message on .../status/north-t00001: bad_signature")

    assert not health.healthy and "bad_signature" in health.message
