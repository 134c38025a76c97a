"""A broker host's files (broker.deploy, `nacelle broker render`): the same text the launcher's
brokers run, written only when it changed, and the command says which file changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.acl import ToolIdentities, regional_acl, render_acl
from broker.config import BridgeSettings, BridgeTls, BrokerSettings, ListenerSecurity, render_regional_config
from broker.deploy import BridgeUplink, BrokerHost, render_broker_files, write_changed
from nacelle.cli import main
from nacelle.keys import create_fleet, registry_path
from wire.registry import FleetRegistry

ETC = Path("/etc/nacelle/mosquitto/region-north")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("deploy") / "fleet"
    create_fleet(directory, {"north": 2, "south": 1})
    return directory


def _regional(config_dir: Path = ETC) -> BrokerHost:
    return BrokerHost(
        config_dir=config_dir,
        port=8883,
        data_dir=Path("/var/lib/nacelle/mosquitto/region-north"),
        log_path=Path("/var/log/nacelle/mosquitto-region-north.log"),
        cafile=ETC / "tls/ca.crt",
        certfile=ETC / "tls/region-north.crt",
        keyfile=ETC / "tls/region-north.key",
        region="north",
        uplink=BridgeUplink("mqtt.example.net", 8883, ETC / "tls/b.crt", ETC / "tls/b.key"),
    )


def test_a_regional_host_renders_what_the_launcher_renders(fleet: Path) -> None:
    registry = FleetRegistry.load(registry_path(fleet))
    host = _regional()

    files = render_broker_files(host, registry)

    settings = BrokerSettings(
        port=8883,
        data_dir=host.data_dir,
        log_path=host.log_path,
        host="0.0.0.0",
        security=ListenerSecurity(host.cafile, host.certfile, host.keyfile, ETC / "acl"),
    )
    bridge = BridgeSettings(
        "north", "mqtt.example.net", 8883, tls=BridgeTls(host.cafile, ETC / "tls/b.crt", ETC / "tls/b.key")
    )
    assert files[ETC / "mosquitto.conf"] == render_regional_config(settings, bridge)
    tools = ToolIdentities(observers=("nacelle-observer",))
    assert files[ETC / "acl"] == render_acl(regional_acl(registry, "north", tools), "region north broker")
    assert "user south-t00001" not in files[ETC / "acl"]


def test_a_regional_broker_needs_its_uplink_and_the_cloud_broker_has_none() -> None:
    host = _regional()

    with pytest.raises(ValueError, match="uplink"):
        BrokerHost(**{**host.__dict__, "uplink": None})
    with pytest.raises(ValueError, match="uplink"):
        BrokerHost(**{**host.__dict__, "region": None})


def test_files_are_written_only_when_their_text_changes(tmp_path: Path) -> None:
    files = {tmp_path / "a" / "mosquitto.conf": "listener 1\n", tmp_path / "a" / "acl": "user x\n"}

    first = write_changed(files)
    second = write_changed(files)
    third = write_changed({**files, tmp_path / "a" / "acl": "user y\n"})

    assert first == list(files) and second == [] and third == [tmp_path / "a" / "acl"]
    assert (tmp_path / "a" / "acl").read_text() == "user y\n"
    assert not list((tmp_path / "a").glob(".*.tmp"))


def test_broker_render_says_which_file_changed(fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "region-north"
    argv = [
        "broker", "render", "--registry", str(registry_path(fleet)), "--out", str(out), "--region", "north",
        "--port", "8883", "--data-dir", str(tmp_path / "data"), "--log-file", str(tmp_path / "log"),
        "--cafile", "ca.crt", "--certfile", "b.crt", "--keyfile", "b.key", "--cloud-host", "mqtt.example.net",
        "--cloud-port", "8883", "--bridge-certfile", "bridge.crt", "--bridge-keyfile", "bridge.key",
    ]  # fmt: skip

    outputs = []
    for args in (argv, argv, [*argv, "--observer", "ops-dashboard"], [*argv, "--port", "8884"]):
        assert main(args) == 0
        outputs.append(capsys.readouterr().out)

    assert outputs[0] == f"changed: {out / 'mosquitto.conf'}\nchanged: {out / 'acl'}\n"
    assert outputs[1].startswith("ok: ")
    assert outputs[2] == f"changed: {out / 'acl'}\n"  # a SIGHUP is enough
    assert outputs[3].startswith(f"changed: {out / 'mosquitto.conf'}")  # a restart is needed
    # Relative paths become absolute: mosquitto resolves them against its own working directory.
    assert f"cafile {Path('ca.crt').absolute()}" in (out / "mosquitto.conf").read_text()


def test_broker_render_refuses_half_a_bridge(fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "broker", "render", "--registry", str(registry_path(fleet)), "--out", str(tmp_path), "--port", "8883",
        "--data-dir", "d", "--log-file", "l", "--cafile", "c", "--certfile", "c", "--keyfile", "k",
    ]  # fmt: skip

    regional = main([*argv, "--region", "north"])
    cloud_with_bridge = main([*argv, "--cloud-host", "x"])

    assert regional == 2 and cloud_with_bridge == 2
    assert "needs --cloud-host" in capsys.readouterr().err
