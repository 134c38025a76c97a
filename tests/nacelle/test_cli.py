"""nacelle.cli without brokers: help texts, `nacelle keys`, and daemons refusing a bad
configuration with exit code 2 and the field named on stderr."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nacelle import __version__
from nacelle.cli import main
from nacelle.config import write_config
from nacelle.keys import key_path, registry_path
from wire.registry import FleetRegistry, NodeStatus

SUBCOMMANDS = ["edge", "region", "cloud", "keys", "pki", "registry", "broker", "edge-health", "simulate"]


@pytest.fixture(autouse=True)
def _no_nacelle_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("NACELLE_"):
            monkeypatch.delenv(name)


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    code = _exit_code(["--help"])

    out = capsys.readouterr().out
    assert code == 0
    assert "Federated anomaly detection" in out
    assert all(command in out for command in SUBCOMMANDS)
    assert "NACELLE_" in out


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("edge", ["--config", "edge node"]),
        ("region", ["--config", "regional aggregator"]),
        ("cloud", ["--config", "--once", "--rounds", "--resume-schedule"]),
        ("keys", ["--out", "--turbines", "--regions", "--region-names"]),
        ("registry", ["list", "suspend", "activate", "add", "--registry", "--reason"]),
        ("pki", ["--fleet", "ca", "request", "sign"]),
        ("broker", ["render"]),
        ("edge-health", ["--config", "--timeout", "online"]),
        (
            "simulate",
            ["--turbines", "--regions", "--nights", "--workdir", "--node-dir", "--summary-json", "--keep-running"],
        ),
    ],
)
def test_each_subcommand_help_describes_its_options(
    capsys: pytest.CaptureFixture[str], command: str, expected: list[str]
) -> None:
    code = _exit_code([command, "--help"])

    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"usage: nacelle {command}")
    for text in expected:
        assert text in out


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    code = _exit_code(["--version"])

    assert code == 0
    assert capsys.readouterr().out.strip() == f"nacelle {__version__}"


def test_no_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = _exit_code([])

    assert code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_a_daemon_without_config_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = _exit_code(["edge"])

    assert code == 2
    assert "--config" in capsys.readouterr().err


def test_simulate_live_interval_without_keep_running_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = _exit_code(["simulate", "--live-interval", "5", "--workdir", str(tmp_path / "sim")])

    assert code == 2
    assert "--keep-running" in capsys.readouterr().err
    assert not (tmp_path / "sim").exists()


@pytest.mark.parametrize("interval", ["0", "-3", "nan"])
def test_simulate_live_interval_must_be_positive(capsys: pytest.CaptureFixture[str], interval: str) -> None:
    code = _exit_code(["simulate", "--keep-running", "--live-interval", interval])

    assert code == 2
    assert "must be positive" in capsys.readouterr().err


def test_cloud_once_and_rounds_are_mutually_exclusive(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = _exit_code(["cloud", "--config", str(tmp_path / "c.toml"), "--once", "--rounds", "3"])

    assert code == 2
    assert "not allowed with" in capsys.readouterr().err


# -- keys ----------------------------------------------------------------------------------


def test_keys_creates_a_fleet_of_the_requested_size(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fleet_dir = tmp_path / "fleet"

    code = main(["keys", "--out", str(fleet_dir), "--turbines", "6", "--regions", "2"])

    assert code == 0
    registry = FleetRegistry.load(registry_path(fleet_dir))
    assert registry.regions == ["offshore", "onshore"]
    assert [len(registry.nodes_in(region)) for region in registry.regions] == [3, 3]
    assert stat.S_IMODE(key_path(fleet_dir, "offshore-t00003").stat().st_mode) == 0o600
    out = capsys.readouterr().out
    assert "6 nodes in 2 regions" in out
    assert str(registry_path(fleet_dir)) in out


def test_keys_uses_the_given_region_names(tmp_path: Path) -> None:
    fleet_dir = tmp_path / "fleet"

    code = main(["keys", "--out", str(fleet_dir), "--turbines", "5", "--region-names", "alpha,beta,gamma"])

    registry = FleetRegistry.load(registry_path(fleet_dir))
    assert code == 0
    assert registry.regions == ["alpha", "beta", "gamma"]
    assert [len(registry.nodes_in(r)) for r in ["alpha", "beta", "gamma"]] == [2, 2, 1]


def test_keys_with_zero_regions_is_a_usage_error(tmp_path: Path) -> None:
    assert _exit_code(["keys", "--out", str(tmp_path / "fleet"), "--turbines", "4", "--regions", "0"]) == 2


# -- registry ------------------------------------------------------------------------------


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    fleet_dir = tmp_path / "fleet"
    assert main(["keys", "--out", str(fleet_dir), "--turbines", "4", "--regions", "2"]) == 0
    return registry_path(fleet_dir)


def _registry(path: Path, *args: str) -> int:
    return _exit_code(["registry", *args, "--registry", str(path)])


def test_registry_suspend_records_status_and_reason(capsys: pytest.CaptureFixture[str], registry_file: Path) -> None:
    capsys.readouterr()

    code = _registry(registry_file, "suspend", "offshore-t00001", "onshore-t00002", "--reason", "gearbox swap")

    assert code == 0
    nodes = FleetRegistry.load(registry_file).nodes
    for node_id in ["offshore-t00001", "onshore-t00002"]:
        assert (nodes[node_id].status, nodes[node_id].reason) == (NodeStatus.SUSPENDED, "gearbox swap")
        assert nodes[node_id].changed_at.endswith("+00:00")
    assert nodes["offshore-t00002"].status is NodeStatus.ACTIVE
    out = capsys.readouterr().out
    assert "offshore-t00001: suspended" in out
    assert str(registry_file) in out


def test_registry_activate_brings_a_suspended_node_back(
    capsys: pytest.CaptureFixture[str], registry_file: Path
) -> None:
    _registry(registry_file, "suspend", "offshore-t00001", "--reason", "gearbox swap")

    code = _registry(registry_file, "activate", "offshore-t00001")

    node = FleetRegistry.load(registry_file).nodes["offshore-t00001"]
    assert code == 0
    assert (node.status, node.reason) == (NodeStatus.ACTIVE, "")
    assert "offshore-t00001: active" in capsys.readouterr().out


def test_registry_command_repeated_says_so_and_leaves_the_file_alone(
    capsys: pytest.CaptureFixture[str], registry_file: Path
) -> None:
    _registry(registry_file, "suspend", "onshore-t00001", "--reason", "first")
    before = registry_file.read_bytes()
    capsys.readouterr()

    code = _registry(registry_file, "suspend", "onshore-t00001", "--reason", "second")

    assert code == 0
    assert registry_file.read_bytes() == before
    assert "onshore-t00001: already suspended since" in capsys.readouterr().out


@pytest.mark.parametrize("action", ["suspend", "activate"])
def test_registry_unknown_node_ids_exit_2_naming_them_and_change_nothing(
    capsys: pytest.CaptureFixture[str], registry_file: Path, action: str
) -> None:
    _registry(registry_file, "suspend", "offshore-t00002")
    before = registry_file.read_bytes()
    capsys.readouterr()

    code = _registry(registry_file, action, "offshore-t00002", "offshore-t00099", "aggregator-onshore")

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("nacelle registry: ")
    assert "offshore-t00099" in err and "aggregator-onshore" in err
    assert "offshore-t00002" not in err
    assert "left unchanged" in err
    assert registry_file.read_bytes() == before


def test_registry_list_prints_every_node_with_region_status_and_reason(
    capsys: pytest.CaptureFixture[str], registry_file: Path
) -> None:
    _registry(registry_file, "suspend", "onshore-t00002", "--reason", "blade inspection")
    capsys.readouterr()

    code = _registry(registry_file, "list")

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].split() == ["node", "region", "status", "since", "reason"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert sorted(rows) == ["offshore-t00001", "offshore-t00002", "onshore-t00001", "onshore-t00002"]
    assert rows["offshore-t00001"] == ["offshore-t00001", "offshore", "active", "-", "-"]
    assert rows["onshore-t00002"][:3] == ["onshore-t00002", "onshore", "suspended"]
    assert lines[-1].endswith("blade inspection")


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--status", "suspended"], ["offshore-t00001", "onshore-t00002"]),
        (["--status", "active"], ["offshore-t00002", "onshore-t00001"]),
        (["--region", "onshore"], ["onshore-t00001", "onshore-t00002"]),
        (["--region", "onshore", "--status", "active"], ["onshore-t00001"]),
    ],
)
def test_registry_list_filters_by_status_and_region(
    capsys: pytest.CaptureFixture[str], registry_file: Path, filters: list[str], expected: list[str]
) -> None:
    _registry(registry_file, "suspend", "offshore-t00001", "onshore-t00002")
    capsys.readouterr()

    code = _registry(registry_file, "list", *filters)

    assert code == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == expected


def test_registry_list_of_an_unknown_region_names_the_known_ones(
    capsys: pytest.CaptureFixture[str], registry_file: Path
) -> None:
    code = _registry(registry_file, "list", "--region", "offshroe")

    err = capsys.readouterr().err
    assert code == 2
    assert "offshroe" in err and "offshore, onshore" in err


def test_registry_reason_of_several_lines_is_refused(capsys: pytest.CaptureFixture[str], registry_file: Path) -> None:
    before = registry_file.read_bytes()

    code = _registry(registry_file, "suspend", "offshore-t00001", "--reason", "two\nlines")

    assert code == 2
    assert "one line" in capsys.readouterr().err
    assert registry_file.read_bytes() == before


def test_registry_missing_file_exits_2_naming_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "absent.json"

    code = _registry(path, "suspend", "offshore-t00001")

    assert code == 2
    assert str(path) in capsys.readouterr().err
    assert not path.exists()


def test_registry_without_registry_path_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = _exit_code(["registry", "list"])

    assert code == 2
    assert "--registry" in capsys.readouterr().err


# -- daemons with a bad configuration --------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "values"),
    [
        (
            "edge",
            {
                "node_id": "n1",
                "region": "north",
                "registry_path": "r.json",
                "private_key_path": "k.pem",
                "data_dir": "d",
            },
        ),
        ("region", {"region": "north", "registry_path": "r.json", "private_key_path": "k.pem", "state_dir": "s"}),
        ("cloud", {"registry_path": "r.json", "private_key_path": "k.pem", "state_dir": "s"}),
    ],
)
def test_a_daemon_with_an_invalid_config_exits_2_naming_the_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, values: dict[str, object]
) -> None:
    path = tmp_path / f"{command}.toml"
    write_config(path, {**values, "broker": {"port": 0}})

    code = main([command, "--config", str(path)])

    err = capsys.readouterr().err
    assert code == 2
    assert "broker.port" in err
    assert err.startswith(f"nacelle {command}: ")


def test_a_daemon_with_a_missing_config_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    code = main(["cloud", "--config", str(path)])

    assert code == 2
    assert str(path) in capsys.readouterr().err


def test_keys_refuses_to_replace_an_existing_fleet(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fleet_dir = tmp_path / "fleet"
    main(["keys", "--out", str(fleet_dir), "--turbines", "2"])
    before = registry_path(fleet_dir).read_bytes()
    capsys.readouterr()

    code = main(["keys", "--out", str(fleet_dir), "--turbines", "4"])

    assert code == 1
    assert "refusing to replace" in capsys.readouterr().err
    assert registry_path(fleet_dir).read_bytes() == before


@pytest.mark.parametrize(
    ("command", "values"),
    [
        ("edge", {"node_id": "n1", "region": "north", "private_key_path": "k.pem", "data_dir": "d"}),
        ("region", {"region": "north", "private_key_path": "k.pem", "state_dir": "s"}),
        ("cloud", {"private_key_path": "k.pem", "state_dir": "s"}),
    ],
)
def test_a_daemon_whose_registry_is_missing_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, values: dict[str, object]
) -> None:
    registry = tmp_path / "absent-registry.json"
    path = tmp_path / f"{command}.toml"
    write_config(path, {**values, "registry_path": str(registry)})

    code = main([command, "--config", str(path)])

    assert code == 2
    assert str(registry) in capsys.readouterr().err
