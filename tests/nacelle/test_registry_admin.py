"""Enrolling members' public keys into a registry file (nacelle.registry_admin.enrol_members and
`nacelle registry add`): the cloud creates the file, the order within a batch does not matter,
nothing is written when nothing changes, and a refusal leaves the file as it was."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from nacelle.cli import main
from nacelle.keys import ensure_signing_key, public_key_path
from nacelle.registry_admin import MemberKey, enrol_members, read_manifest, set_status
from wire.registry import Enrolment, EnrolmentError, FleetRegistry, MemberRole, NodeStatus, RegistryError
from wire.signing import generate_key, public_key_hex


def _member(member_id: str, role: MemberRole, region: str = "") -> MemberKey:
    return MemberKey(member_id, role, public_key_hex(generate_key()), region)


def _fleet() -> list[MemberKey]:
    return [
        _member("north-t1", MemberRole.NODE, "north"),
        _member("aggregator-north", MemberRole.AGGREGATOR, "north"),
        _member("cloud", MemberRole.CLOUD),
    ]


def test_the_first_enrolment_creates_the_registry_whatever_the_order_of_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"

    outcomes = enrol_members(path, _fleet())

    registry = FleetRegistry.load(path)
    assert [o for _, o in outcomes] == [Enrolment.ADDED] * 3
    assert (
        registry.cloud.member_id == "cloud" and registry.regions == ["north"] and list(registry.nodes) == ["north-t1"]
    )


def test_enrolling_the_same_keys_again_does_not_write_the_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    members = _fleet()
    enrol_members(path, members)
    written = path.stat().st_mtime_ns

    outcomes = enrol_members(path, members)

    assert [o for _, o in outcomes] == [Enrolment.UNCHANGED] * 3 and path.stat().st_mtime_ns == written


def test_a_node_before_any_cloud_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="enrol the cloud first"):
        enrol_members(tmp_path / "registry.json", [_member("north-t1", MemberRole.NODE, "north")])


def test_a_changed_key_is_refused_for_the_whole_batch_unless_replace(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    enrol_members(path, _fleet())
    before = path.read_text()
    batch = [_member("north-t2", MemberRole.NODE, "north"), _member("north-t1", MemberRole.NODE, "north")]

    with pytest.raises(EnrolmentError, match="'north-t1' is enrolled with another key"):
        enrol_members(path, batch)
    unchanged = path.read_text()
    outcomes = enrol_members(path, batch, replace=True)

    assert unchanged == before
    assert {m.member_id: o for m, o in outcomes} == {"north-t2": Enrolment.ADDED, "north-t1": Enrolment.REPLACED}


def test_concurrent_enrolments_and_suspensions_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    enrol_members(path, _fleet())
    nodes = [_member(f"north-t{i:03d}", MemberRole.NODE, "north") for i in range(20)]
    threads = [threading.Thread(target=enrol_members, args=(path, [node])) for node in nodes]
    threads.append(threading.Thread(target=set_status, args=(path, ["north-t1"], NodeStatus.SUSPENDED)))

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    registry = FleetRegistry.load(path)
    assert {node.member_id for node in nodes} <= set(registry.nodes)
    assert registry.nodes["north-t1"].status is NodeStatus.SUSPENDED


def test_a_manifest_names_key_files_relative_to_itself(tmp_path: Path) -> None:
    for name in ("cloud", "aggregator-north", "north-t1"):
        ensure_signing_key(tmp_path / "keys" / f"{name}.pem")
    manifest = tmp_path / "members.json"
    manifest.write_text(
        json.dumps(
            [
                {"id": "cloud", "role": "cloud", "public_key_file": "keys/cloud.pub"},
                {"id": "north-t1", "role": "node", "region": "north", "public_key_file": "keys/north-t1.pub"},
                {
                    "id": "aggregator-north",
                    "role": "aggregator",
                    "region": "north",
                    "public_key_file": "keys/aggregator-north.pub",
                },
            ]
        )
    )

    members = read_manifest(manifest)

    assert [(m.member_id, m.role) for m in members] == [
        ("cloud", MemberRole.CLOUD),
        ("north-t1", MemberRole.NODE),
        ("aggregator-north", MemberRole.AGGREGATOR),
    ]


@pytest.mark.parametrize(
    "entries",
    [{"id": "cloud"}, [{"id": "cloud", "role": "king", "public_key_file": "x"}], [{"role": "cloud"}], "nope"],
)
def test_a_bad_manifest_is_refused_by_name(tmp_path: Path, entries: object) -> None:
    manifest = tmp_path / "members.json"
    manifest.write_text(json.dumps(entries))

    with pytest.raises(RegistryError, match=r"members\.json"):
        read_manifest(manifest)


def test_registry_add_enrols_and_says_what_it_did(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    for name in ("cloud", "aggregator-north", "north-t1"):
        ensure_signing_key(keys / f"{name}.pem")
    registry = str(tmp_path / "registry.json")

    def add(*argv: str) -> tuple[int, str]:
        code = main(["registry", "add", *argv, "--registry", registry])
        captured = capsys.readouterr()
        return code, captured.out or captured.err

    cloud = add("cloud", "--role", "cloud", "--public-key", str(public_key_path(keys / "cloud.pem")))
    aggregator = add(
        "aggregator-north", "--role", "aggregator", "--region", "north",
        "--public-key", str(public_key_path(keys / "aggregator-north.pem")),
    )  # fmt: skip
    node = add("north-t1", "--region", "north", "--public-key", str(public_key_path(keys / "north-t1.pem")))
    again = add("north-t1", "--region", "north", "--public-key", str(public_key_path(keys / "north-t1.pem")))
    other = add("north-t1", "--region", "north", "--public-key", str(public_key_path(keys / "cloud.pem")))

    assert cloud == (0, "changed: added cloud cloud\n")
    assert aggregator == (0, "changed: added aggregator aggregator-north of north\n")
    assert node == (0, "changed: added node north-t1 of north\n")
    assert again == (0, "ok: node north-t1 of north enrolled with this key\n")
    assert other[0] == 2 and "'north-t1' is enrolled with another key" in other[1]


def test_registry_add_needs_a_member_or_a_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["registry", "add", "--registry", str(tmp_path / "registry.json")])

    assert code == 2 and "either MEMBER" in capsys.readouterr().err
