"""The ACL text rendered from a fleet registry; no processes."""

from __future__ import annotations

import pytest

from broker.acl import (
    PROBE_FILTER,
    Access,
    Grant,
    ToolIdentities,
    cloud_acl,
    regional_acl,
    render_acl,
)
from wire.registry import FleetRegistry, Member
from wire.signing import generate_key, public_key_hex
from wire.topics import GLOBAL_FILTER, MODEL_TOPIC, ROUND_TOPIC


def _member(member_id: str, region: str = "") -> Member:
    return Member(member_id, public_key_hex(generate_key()), region)


@pytest.fixture(scope="module")
def registry() -> FleetRegistry:
    return FleetRegistry(
        cloud=_member("cloud"),
        aggregators={"north": _member("aggregator-north", "north"), "south": _member("aggregator-south", "south")},
        nodes={
            node_id: _member(node_id, region)
            for node_id, region in [("north-t1", "north"), ("north-t2", "north"), ("south-t1", "south")]
        },
    )


def _blocks(text: str) -> dict[str, list[str]]:
    """user → its topic lines, in order."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("user "):
            current = blocks.setdefault(line.removeprefix("user "), [])
        elif line.startswith("topic "):
            assert current is not None, f"a topic line for anonymous clients: {line}"
            current.append(line)
    return blocks


def test_a_node_writes_only_its_own_topics_and_reads_round_and_model(registry: FleetRegistry) -> None:
    blocks = _blocks(render_acl(regional_acl(registry, "north"), "north"))
    assert blocks["north-t1"] == [
        "topic write nacelle/v1/region/north/update/north-t1",
        "topic write nacelle/v1/region/north/status/north-t1",
        "topic write nacelle/v1/region/north/alert/north-t1",
        f"topic read {ROUND_TOPIC}",
        f"topic read {MODEL_TOPIC}",
        "topic read nacelle/v1/region/north/status/north-t1",
    ]
    # No wildcard in anything a node may write, and no readwrite anywhere for it.
    for identity in ("north-t1", "north-t2"):
        assert not any(("+" in line or "#" in line) for line in blocks[identity] if line.startswith("topic write"))


def test_the_aggregator_reads_its_region_and_writes_its_partial_and_status(registry: FleetRegistry) -> None:
    blocks = _blocks(render_acl(regional_acl(registry, "north"), "north"))
    assert sorted(blocks["aggregator-north"]) == sorted(
        [
            "topic write nacelle/v1/region/north/partial",
            "topic write nacelle/v1/region/north/status/aggregator-north",
            "topic read nacelle/v1/region/north/update/+",
            "topic read nacelle/v1/region/north/status/+",
            f"topic read {ROUND_TOPIC}",
            f"topic read {MODEL_TOPIC}",
        ]
    )


def test_a_regional_acl_knows_only_its_own_region(registry: FleetRegistry) -> None:
    text = render_acl(regional_acl(registry, "north"), "north")
    assert set(_blocks(text)) == {"aggregator-north", "north-t1", "north-t2"}
    assert "south" not in text
    with pytest.raises(ValueError, match="not in the fleet registry"):
        regional_acl(registry, "east")


def test_the_cloud_broker_admits_the_cloud_core_and_one_bridge_per_region(registry: FleetRegistry) -> None:
    blocks = _blocks(render_acl(cloud_acl(registry), "cloud"))
    assert set(blocks) == {"cloud", "nacelle-bridge-north", "nacelle-bridge-south"}
    assert blocks["cloud"] == [
        f"topic write {ROUND_TOPIC}",
        f"topic write {MODEL_TOPIC}",
        "topic read nacelle/v1/region/+/partial",
        "topic read nacelle/v1/region/+/alert/#",
    ]
    assert blocks["nacelle-bridge-north"] == [
        f"topic read {GLOBAL_FILTER}",
        "topic write nacelle/v1/region/north/partial",
        "topic write nacelle/v1/region/north/alert/#",
        "topic write $SYS/broker/connection/nacelle-bridge-north/state",
    ]


def test_tools_are_on_every_broker_with_their_own_grants(registry: FleetRegistry) -> None:
    tools = ToolIdentities(probe="nacelle-probe", observers=("nacelle-observer",), operators=("ops",))
    for acl in (cloud_acl(registry, tools), regional_acl(registry, "south", tools)):
        blocks = _blocks(render_acl(acl, "x"))
        assert blocks["nacelle-probe"] == [f"topic readwrite {PROBE_FILTER}"]
        assert blocks["ops"] == ["topic readwrite nacelle/v1/#"]
        observer = blocks["nacelle-observer"]
        assert all(line.startswith("topic read ") for line in observer)
        assert not any("/update" in line for line in observer)  # nodes' deltas stay with the aggregator
    # None of them unless asked for.
    assert set(_blocks(render_acl(cloud_acl(registry), "cloud"))) == {
        "cloud",
        "nacelle-bridge-north",
        "nacelle-bridge-south",
    }


def test_probes_cross_the_bridge_but_are_no_topic_a_node_reads() -> None:
    assert PROBE_FILTER.startswith(GLOBAL_FILTER.removesuffix("#"))
    assert not PROBE_FILTER.startswith((ROUND_TOPIC, MODEL_TOPIC))


def test_rendered_acl_has_nothing_for_anonymous_clients(registry: FleetRegistry) -> None:
    lines = [line for line in render_acl(regional_acl(registry, "north"), "north").splitlines() if line]
    first_user = next(i for i, line in enumerate(lines) if line.startswith("user "))
    assert all(line.startswith("#") for line in lines[:first_user])


def test_values_that_would_break_the_acl_file_are_refused() -> None:
    with pytest.raises(ValueError, match="whitespace"):
        Grant(Access.READ, "a b")
    with pytest.raises(ValueError, match="whitespace"):
        Grant(Access.READ, "a\nuser admin")
    with pytest.raises(ValueError, match="identity"):
        render_acl({"bad user": [Grant(Access.READ, "x")]}, "x")
    with pytest.raises(ValueError, match="identity"):
        ToolIdentities(operators=("#",))
