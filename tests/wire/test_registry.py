"""The fleet registry, fleet creation (`nacelle.keys`), key files (`wire.signing`) and topic names
(`wire.topics`): what is written loads back, and what cannot be used is refused by name."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nacelle.keys import (
    CLOUD_ID,
    aggregator_id,
    create_fleet,
    key_path,
    node_id,
    region_names,
    registry_path,
    split_turbines,
)
from wire.registry import (
    Enrolment,
    EnrolmentError,
    FleetRegistry,
    Member,
    MemberRole,
    NodeStatus,
    RegistryError,
    UnknownNodeError,
)
from wire.signing import (
    KeyFileError,
    generate_key,
    load_private_key,
    load_public_key_file,
    parse_public_key,
    public_key_hex,
    public_key_pem,
    save_private_key,
)
from wire.topics import (
    PARTIAL_FILTER,
    InvalidIdentifierError,
    RegionTopics,
    check_identifier,
    region_of_partial_topic,
)

FLEET = {"north": 2, "south": 3}


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[Path, FleetRegistry]:
    directory = tmp_path / "fleet"
    return directory, create_fleet(directory, FLEET)


def _registry_json(fleet_dir: Path) -> dict[str, Any]:
    return json.loads(registry_path(fleet_dir).read_text())


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "edited-registry.json"
    path.write_text(json.dumps(data))
    return path


# -- create_fleet --------------------------------------------------------------------------


def test_create_fleet_names_every_member(fleet: tuple[Path, FleetRegistry]) -> None:
    _, registry = fleet

    assert registry.cloud.member_id == CLOUD_ID
    assert registry.regions == ["north", "south"]
    assert {region: m.member_id for region, m in registry.aggregators.items()} == {
        "north": "aggregator-north",
        "south": "aggregator-south",
    }
    assert sorted(registry.nodes) == [
        "north-t00001",
        "north-t00002",
        "south-t00001",
        "south-t00002",
        "south-t00003",
    ]
    assert [n.member_id for n in registry.nodes_in("south")] == ["south-t00001", "south-t00002", "south-t00003"]
    assert all(n.status is NodeStatus.ACTIVE for n in registry.nodes.values())


def test_create_fleet_writes_private_keys_readable_by_the_owner_only(fleet: tuple[Path, FleetRegistry]) -> None:
    fleet_dir, registry = fleet
    members = [registry.cloud, *registry.aggregators.values(), *registry.nodes.values()]

    modes = {m.member_id: stat.S_IMODE(key_path(fleet_dir, m.member_id).stat().st_mode) for m in members}

    assert len(modes) == 1 + 2 + 5
    assert set(modes.values()) == {0o600}


def test_each_private_key_matches_its_public_key_in_the_registry(fleet: tuple[Path, FleetRegistry]) -> None:
    fleet_dir, registry = fleet
    members = [registry.cloud, *registry.aggregators.values(), *registry.nodes.values()]

    for member in members:
        assert public_key_hex(load_private_key(key_path(fleet_dir, member.member_id))) == member.public_key


def test_saved_registry_loads_back_with_the_same_members_and_keys(fleet: tuple[Path, FleetRegistry]) -> None:
    fleet_dir, created = fleet

    loaded = FleetRegistry.load(registry_path(fleet_dir))

    assert loaded == created
    for member_id in [CLOUD_ID, "aggregator-south", "north-t00002"]:
        assert public_key_hex(loaded.public_key(member_id)) == public_key_hex(created.public_key(member_id))


def test_registry_file_holds_no_private_key_material(fleet: tuple[Path, FleetRegistry]) -> None:
    fleet_dir, _ = fleet

    assert "PRIVATE" not in registry_path(fleet_dir).read_text()


def test_create_fleet_refuses_to_replace_an_existing_fleet(fleet: tuple[Path, FleetRegistry]) -> None:
    fleet_dir, _ = fleet
    before = registry_path(fleet_dir).read_bytes()
    cloud_key = key_path(fleet_dir, CLOUD_ID).read_bytes()

    with pytest.raises(FileExistsError, match=r"registry\.json"):
        create_fleet(fleet_dir, {"east": 1})

    assert registry_path(fleet_dir).read_bytes() == before
    assert key_path(fleet_dir, CLOUD_ID).read_bytes() == cloud_key


def test_public_key_of_a_stranger_is_none(fleet: tuple[Path, FleetRegistry]) -> None:
    _, registry = fleet

    assert registry.public_key("north-t00099") is None


def test_split_turbines_gives_the_remainder_to_the_first_regions() -> None:
    assert split_turbines(8, ["a", "b", "c"]) == {"a": 3, "b": 3, "c": 2}


def test_region_names_fall_back_to_numbered_names_after_the_readable_ones() -> None:
    names = region_names(8)

    assert names[:2] == ["offshore", "onshore"]
    assert names[6:] == ["region-7", "region-8"]
    assert len(set(names)) == 8


def test_member_ids_follow_the_documented_layout() -> None:
    assert node_id("offshore", 12) == "offshore-t00012"
    assert aggregator_id("ridge") == "aggregator-ridge"


# -- loading refusals ----------------------------------------------------------------------


def test_registry_with_a_bad_public_key_is_refused(fleet: tuple[Path, FleetRegistry], tmp_path: Path) -> None:
    data = _registry_json(fleet[0])
    data["nodes"]["south-t00002"]["public_key"] = "zz" * 32

    with pytest.raises(RegistryError, match="public key"):
        FleetRegistry.load(_write(tmp_path, data))


def test_registry_error_for_a_bad_public_key_names_the_member(
    fleet: tuple[Path, FleetRegistry], tmp_path: Path
) -> None:
    data = _registry_json(fleet[0])
    data["nodes"]["south-t00002"]["public_key"] = "zz" * 32

    with pytest.raises(RegistryError, match="south-t00002"):
        FleetRegistry.load(_write(tmp_path, data))


def test_registry_with_a_node_in_a_region_without_aggregator_is_refused(
    fleet: tuple[Path, FleetRegistry], tmp_path: Path
) -> None:
    data = _registry_json(fleet[0])
    data["nodes"]["south-t00001"]["region"] = "atlantis"

    with pytest.raises(RegistryError, match="atlantis"):
        FleetRegistry.load(_write(tmp_path, data))


@pytest.mark.parametrize("schema", [2, None, "1"])
def test_registry_of_another_schema_is_refused(
    fleet: tuple[Path, FleetRegistry], tmp_path: Path, schema: object
) -> None:
    data = _registry_json(fleet[0])
    data["schema"] = schema

    with pytest.raises(RegistryError, match="schema"):
        FleetRegistry.load(_write(tmp_path, data))


def test_registry_with_an_unknown_node_status_is_refused(fleet: tuple[Path, FleetRegistry], tmp_path: Path) -> None:
    data = _registry_json(fleet[0])
    data["nodes"]["north-t00001"]["status"] = "retired"

    with pytest.raises(RegistryError, match="retired"):
        FleetRegistry.load(_write(tmp_path, data))


def test_registry_with_a_node_id_that_cannot_be_a_topic_level_is_refused(
    fleet: tuple[Path, FleetRegistry], tmp_path: Path
) -> None:
    data = _registry_json(fleet[0])
    data["nodes"]["north/+"] = data["nodes"].pop("north-t00001")

    with pytest.raises(RegistryError, match="north/"):
        FleetRegistry.load(_write(tmp_path, data))


def test_registry_with_a_region_that_cannot_be_a_topic_level_is_refused(
    fleet: tuple[Path, FleetRegistry], tmp_path: Path
) -> None:
    data = _registry_json(fleet[0])
    data["aggregators"]["we#st"] = data["aggregators"].pop("south")

    with pytest.raises(RegistryError, match="we#st"):
        FleetRegistry.load(_write(tmp_path, data))


def test_registry_with_a_missing_field_is_refused(fleet: tuple[Path, FleetRegistry], tmp_path: Path) -> None:
    data = _registry_json(fleet[0])
    del data["cloud"]["public_key"]

    with pytest.raises(RegistryError, match="public_key"):
        FleetRegistry.load(_write(tmp_path, data))


def test_registry_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text("{not json")

    with pytest.raises(RegistryError, match="cannot read"):
        FleetRegistry.load(path)


def test_missing_registry_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot read"):
        FleetRegistry.load(tmp_path / "absent.json")


def test_registry_whose_top_level_is_not_an_object_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryError):
        FleetRegistry.load(_write(tmp_path, []))


def test_registry_whose_aggregators_are_not_an_object_is_refused(
    fleet: tuple[Path, FleetRegistry], tmp_path: Path
) -> None:
    data = _registry_json(fleet[0])
    data["aggregators"] = []

    with pytest.raises(RegistryError):
        FleetRegistry.load(_write(tmp_path, data))


def test_registry_with_a_node_reusing_the_cloud_id_is_refused(
    fleet: tuple[Path, FleetRegistry], tmp_path: Path
) -> None:
    data = _registry_json(fleet[0])
    data["nodes"][CLOUD_ID] = data["nodes"].pop("north-t00001")

    with pytest.raises(RegistryError, match=CLOUD_ID):
        FleetRegistry.load(_write(tmp_path, data))


# -- status changes and saving ---------------------------------------------------------------

SINCE = "2026-11-23T08:00:00+00:00"


def _leftovers(fleet_dir: Path) -> list[str]:
    """Files next to the registry other than what a fleet directory holds: temporary files."""
    return sorted(p.name for p in fleet_dir.iterdir() if p.is_file() and p.name != "registry.json")


def test_suspension_with_its_reason_survives_save_and_load(fleet: tuple[Path, FleetRegistry]) -> None:
    fleet_dir, created = fleet
    suspended = created.with_status(["south-t00002"], NodeStatus.SUSPENDED, reason="gearbox swap", changed_at=SINCE)

    suspended.save(registry_path(fleet_dir))
    loaded = FleetRegistry.load(registry_path(fleet_dir))

    assert loaded == suspended
    node = loaded.nodes["south-t00002"]
    assert (node.status, node.reason, node.changed_at) == (NodeStatus.SUSPENDED, "gearbox swap", SINCE)
    assert all(n.status is NodeStatus.ACTIVE for n_id, n in loaded.nodes.items() if n_id != "south-t00002")


def test_reactivation_clears_the_reason_and_records_when(fleet: tuple[Path, FleetRegistry]) -> None:
    _, created = fleet
    suspended = created.with_status(["north-t00001"], NodeStatus.SUSPENDED, reason="vandalism", changed_at=SINCE)

    active = suspended.with_status(
        ["north-t00001"], NodeStatus.ACTIVE, reason="", changed_at="2026-11-24T09:00:00+00:00"
    )

    node = active.nodes["north-t00001"]
    assert (node.status, node.reason, node.changed_at) == (NodeStatus.ACTIVE, "", "2026-11-24T09:00:00+00:00")


def test_a_node_already_in_the_status_keeps_when_and_why(fleet: tuple[Path, FleetRegistry]) -> None:
    _, created = fleet
    first = created.with_status(["north-t00001"], NodeStatus.SUSPENDED, reason="first", changed_at=SINCE)

    again = first.with_status(["north-t00001"], NodeStatus.SUSPENDED, reason="second", changed_at="later")

    assert again.nodes["north-t00001"] == first.nodes["north-t00001"]


def test_status_change_naming_unknown_ids_names_them_all_and_changes_nothing(
    fleet: tuple[Path, FleetRegistry],
) -> None:
    _, created = fleet

    with pytest.raises(UnknownNodeError, match=r"aggregator-north, north-t00099") as refused:
        created.with_status(
            ["north-t00001", "north-t00099", "aggregator-north"], NodeStatus.SUSPENDED, reason="", changed_at=SINCE
        )

    assert refused.value.node_ids == ["aggregator-north", "north-t00099"]
    assert isinstance(refused.value, RegistryError)
    assert all(n.status is NodeStatus.ACTIVE for n in created.nodes.values())


def test_registry_written_before_reasons_existed_loads_with_empty_ones(
    fleet: tuple[Path, FleetRegistry], tmp_path: Path
) -> None:
    data = _registry_json(fleet[0])
    data["nodes"]["north-t00002"]["status"] = "suspended"  # as an operator edited it by hand then
    assert all(set(entry) == {"region", "public_key", "status"} for entry in data["nodes"].values())

    loaded = FleetRegistry.load(_write(tmp_path, data))

    node = loaded.nodes["north-t00002"]
    assert (node.status, node.reason, node.changed_at) == (NodeStatus.SUSPENDED, "", "")


def test_a_registry_nobody_suspended_is_written_without_the_optional_fields(fleet: tuple[Path, FleetRegistry]) -> None:
    data = _registry_json(fleet[0])

    assert data["schema"] == 1
    assert all(set(entry) == {"region", "public_key", "status"} for entry in data["nodes"].values())


@pytest.mark.parametrize(("field", "value"), [("reason", 42), ("changed_at", None)])
def test_registry_with_a_mistyped_optional_field_is_refused(
    fleet: tuple[Path, FleetRegistry], tmp_path: Path, field: str, value: object
) -> None:
    data = _registry_json(fleet[0])
    data["nodes"]["north-t00001"][field] = value

    with pytest.raises(RegistryError, match=rf"north-t00001.*{field}"):
        FleetRegistry.load(_write(tmp_path, data))


def test_a_save_that_fails_leaves_the_old_file_and_no_temporary_file(
    fleet: tuple[Path, FleetRegistry], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet_dir, created = fleet
    before = registry_path(fleet_dir).read_bytes()
    suspended = created.with_status(["north-t00001"], NodeStatus.SUSPENDED, reason="x", changed_at=SINCE)

    def disk_full(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        suspended.save(registry_path(fleet_dir))

    assert registry_path(fleet_dir).read_bytes() == before
    assert _leftovers(fleet_dir) == []


def test_saving_over_a_registry_keeps_its_file_mode(fleet: tuple[Path, FleetRegistry]) -> None:
    fleet_dir, created = fleet
    os.chmod(registry_path(fleet_dir), 0o640)

    created.with_status(["north-t00001"], NodeStatus.SUSPENDED, reason="", changed_at=SINCE).save(
        registry_path(fleet_dir)
    )

    assert stat.S_IMODE(registry_path(fleet_dir).stat().st_mode) == 0o640
    assert _leftovers(fleet_dir) == []


def test_a_reader_never_sees_a_half_written_registry(fleet: tuple[Path, FleetRegistry]) -> None:
    # What the aggregators rely on when they reload the file at each round while an operator saves.
    fleet_dir, created = fleet
    path = registry_path(fleet_dir)
    versions = [
        created.with_status(["north-t00001"], status, reason="r" * 2000, changed_at=SINCE)
        for status in (NodeStatus.SUSPENDED, NodeStatus.ACTIVE)
    ]
    stop = threading.Event()
    failures: list[Exception] = []

    def read_until_stopped() -> None:
        while not stop.is_set():
            try:
                FleetRegistry.load(path)
            except RegistryError as exc:
                failures.append(exc)

    reader = threading.Thread(target=read_until_stopped)
    reader.start()
    try:
        for index in range(60):
            versions[index % 2].save(path)
    finally:
        stop.set()
        reader.join()

    assert failures == []


# -- signing -------------------------------------------------------------------------------


def test_private_key_round_trips_through_its_pem_file(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "keys" / "node.pem"

    save_private_key(key, path)

    assert public_key_hex(load_private_key(path)) == public_key_hex(key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_private_key_written_over_a_readable_file_becomes_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    path.write_text("old")
    os.chmod(path, 0o644)

    save_private_key(generate_key(), path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_public_key_is_64_hex_characters_that_parse_back() -> None:
    key = generate_key()

    text = public_key_hex(key)

    assert len(text) == 64
    assert int(text, 16) >= 0
    assert public_key_hex(parse_public_key(text)) == text


@pytest.mark.parametrize("text", ["", "zz" * 32, "ab" * 31, "ab" * 33])
def test_public_key_that_is_not_32_hex_bytes_is_refused(text: str) -> None:
    with pytest.raises(KeyFileError):
        parse_public_key(text)


def test_loading_a_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    path.write_text("-----BEGIN NOTHING-----\n")

    with pytest.raises(KeyFileError, match=r"node\.pem"):
        load_private_key(path)


def test_loading_a_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"absent\.pem"):
        load_private_key(tmp_path / "absent.pem")


# -- topics --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["north/1", "north+", "north#", "", "x" * 65, "-north", ".north", "north 1", "nörth"],
    ids=["slash", "plus", "hash", "empty", "65-chars", "leading-dash", "leading-dot", "space", "non-ascii"],
)
def test_identifier_that_cannot_be_a_topic_level_is_refused(value: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        check_identifier("node id", value)


@pytest.mark.parametrize("value", ["n", "x" * 64, "north-t00001", "Region_2.b"])
def test_identifier_of_letters_digits_and_separators_is_accepted(value: str) -> None:
    assert check_identifier("node id", value) == value


def test_identifier_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(InvalidIdentifierError):
        check_identifier("node id", "north\n")


def test_region_topics_follow_the_v1_layout() -> None:
    topics = RegionTopics("north")

    assert topics.update("north-t00001") == "nacelle/v1/region/north/update/north-t00001"
    assert topics.status("north-t00001") == "nacelle/v1/region/north/status/north-t00001"
    assert topics.alert("north-t00001") == "nacelle/v1/region/north/alert/north-t00001"
    assert topics.partial == "nacelle/v1/region/north/partial"
    assert topics.update_filter == "nacelle/v1/region/north/update/+"
    assert topics.alert_filter == "nacelle/v1/region/north/alert/#"


def test_region_topics_refuse_a_wildcard_region() -> None:
    with pytest.raises(InvalidIdentifierError):
        RegionTopics("+")


@pytest.mark.parametrize("node", ["#", "a/b", ""])
def test_region_topics_refuse_a_node_id_that_is_not_one_level(node: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        RegionTopics("north").update(node)


def test_region_of_a_partial_topic_is_its_third_level() -> None:
    assert region_of_partial_topic(RegionTopics("south").partial) == "south"


@pytest.mark.parametrize(
    "topic",
    [
        "nacelle/v1/region/north/update/north-t00001",
        "nacelle/v1/region/north/partial/extra",
        "nacelle/v2/region/north/partial",
        "nacelle/v1/global/round",
        PARTIAL_FILTER.replace("+", "north") + "/",
        "",
    ],
)
def test_topic_that_is_not_a_partial_topic_has_no_region(topic: str) -> None:
    assert region_of_partial_topic(topic) is None


# -- enrolment: public keys that hosts made for themselves ----------------------------------


def _hex() -> str:
    return public_key_hex(generate_key())


def test_enrolling_a_new_node_adds_it_active_in_its_region(fleet: tuple[Path, FleetRegistry]) -> None:
    _, registry = fleet
    key = _hex()

    updated, outcome = registry.enrol(MemberRole.NODE, "north-t00099", key, "north")

    assert outcome is Enrolment.ADDED
    assert updated.nodes["north-t00099"] == Member("north-t00099", key, "north", NodeStatus.ACTIVE)
    assert "north-t00099" not in registry.nodes  # the registry itself is not changed


def test_enrolling_the_same_key_again_changes_nothing(fleet: tuple[Path, FleetRegistry]) -> None:
    _, registry = fleet
    node = registry.nodes[node_id("north", 1)]

    updated, outcome = registry.enrol(MemberRole.NODE, node.member_id, node.public_key, "north")

    assert outcome is Enrolment.UNCHANGED and updated is registry


@pytest.mark.parametrize(
    ("role", "member_id", "region"),
    [
        (MemberRole.NODE, "north-t00001", "north"),
        (MemberRole.AGGREGATOR, "aggregator-north", "north"),
        (MemberRole.CLOUD, CLOUD_ID, ""),
    ],
)
def test_another_key_for_an_enrolled_member_needs_replace(
    fleet: tuple[Path, FleetRegistry], role: MemberRole, member_id: str, region: str
) -> None:
    _, registry = fleet
    key = _hex()

    with pytest.raises(EnrolmentError, match="another key"):
        registry.enrol(role, member_id, key, region)
    updated, outcome = registry.enrol(role, member_id, key, region, replace=True)

    assert outcome is Enrolment.REPLACED and updated.public_key(member_id) == parse_public_key(key)


def test_a_replaced_key_keeps_a_suspended_node_suspended(fleet: tuple[Path, FleetRegistry]) -> None:
    _, registry = fleet
    suspended = registry.with_status([node_id("north", 1)], NodeStatus.SUSPENDED, reason="gearbox", changed_at="t")

    updated, _ = suspended.enrol(MemberRole.NODE, node_id("north", 1), _hex(), "north", replace=True)

    assert updated.nodes[node_id("north", 1)].status is NodeStatus.SUSPENDED
    assert updated.nodes[node_id("north", 1)].reason == "gearbox"


def test_moving_a_node_to_another_region_needs_replace(fleet: tuple[Path, FleetRegistry]) -> None:
    _, registry = fleet
    node = registry.nodes[node_id("north", 1)]

    with pytest.raises(EnrolmentError, match="another region"):
        registry.enrol(MemberRole.NODE, node.member_id, node.public_key, "south")


@pytest.mark.parametrize(
    ("role", "member_id", "region", "message"),
    [
        (MemberRole.NODE, "west-t00001", "west", "region 'west' has no aggregator"),
        (MemberRole.AGGREGATOR, "aggregator-x", "north", "belongs to 'aggregator-north'"),
        (MemberRole.CLOUD, "cloud-2", "", "belongs to 'cloud'"),
        (MemberRole.CLOUD, CLOUD_ID, "north", "the cloud has no region"),
        (MemberRole.NODE, "aggregator-north", "north", "used twice"),
    ],
)
def test_enrolments_that_would_break_the_registry_are_refused(
    fleet: tuple[Path, FleetRegistry], role: MemberRole, member_id: str, region: str, message: str
) -> None:
    _, registry = fleet

    with pytest.raises(RegistryError, match=message):
        registry.enrol(role, member_id, _hex(), region, replace=True)


def test_a_public_key_that_is_not_one_is_refused_at_enrolment(fleet: tuple[Path, FleetRegistry]) -> None:
    _, registry = fleet

    with pytest.raises(RegistryError, match="node 'north-t00099'"):
        registry.enrol(MemberRole.NODE, "north-t00099", "00" * 31, "north")


def test_public_keys_load_from_pem_and_from_hex_files(tmp_path: Path) -> None:
    key = generate_key()
    pem, text = tmp_path / "key.pub", tmp_path / "key.hex"
    pem.write_bytes(public_key_pem(key))
    text.write_text(public_key_hex(key) + "\n")

    assert public_key_hex(load_public_key_file(pem)) == public_key_hex(key)
    assert public_key_hex(load_public_key_file(text)) == public_key_hex(key)


def test_a_public_key_file_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "ec.pub"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("hello")

    with pytest.raises(KeyFileError, match="not an Ed25519 public key"):
        load_public_key_file(other)
    with pytest.raises(KeyFileError, match="neither a PEM nor a hex"):
        load_public_key_file(garbage)
