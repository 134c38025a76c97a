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
from wire.registry import FleetRegistry

SUBCOMMANDS = ["edge", "region", "cloud", "keys", "simulate"]


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
        ("cloud", ["--config", "--once", "--rounds"]),
        ("keys", ["--out", "--turbines", "--regions", "--region-names"]),
        ("simulate", ["--turbines", "--regions", "--nights", "--workdir", "--summary-json"]),
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
