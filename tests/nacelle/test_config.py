"""nacelle.config and the three daemon configurations: TOML file, then environment overrides,
validated; every refusal is a ConfigError naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_core.config import CloudConfig
from edge_node.config import DEFAULT_MAX_MESSAGE_BYTES, EdgeConfig
from nacelle.config import BrokerEndpoint, ConfigError, build_config, load_config, write_config
from regional_aggregator.config import RegionConfig

CLOUD = {
    "registry_path": "/etc/nacelle/registry.json",
    "private_key_path": "/etc/nacelle/cloud.pem",
    "state_dir": "/var/lib/nacelle",
}
REGION = {
    "region": "north",
    "registry_path": "/etc/nacelle/registry.json",
    "private_key_path": "/etc/nacelle/aggregator-north.pem",
    "state_dir": "/var/lib/nacelle",
}
EDGE = {
    "node_id": "north-t00001",
    "region": "north",
    "registry_path": "/etc/nacelle/registry.json",
    "private_key_path": "/etc/nacelle/north-t00001.pem",
    "data_dir": "/var/lib/nacelle",
}


def _file(tmp_path: Path, values: dict[str, object]) -> Path:
    path = tmp_path / "daemon.toml"
    write_config(path, values)
    return path


def _error(settings_cls: type, path: Path) -> str:
    with pytest.raises(ConfigError) as refused:
        load_config(settings_cls, path)
    return str(refused.value)


# -- loading -------------------------------------------------------------------------------


def test_cloud_config_loads_from_a_toml_file(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        {
            **CLOUD,
            "regions": ["north", "south"],
            "broker": {"host": "10.0.0.5", "port": 18830},
            "schedule": {"interval_s": 600, "regional_deadline_s": 60, "global_deadline_s": 90},
            "training": {"epochs": 3, "codec": "fp32-zstd"},
            "influx": {"url": "http://127.0.0.1:8086"},
        },
    )

    config = load_config(CloudConfig, path)

    assert config.registry_path == Path("/etc/nacelle/registry.json")
    assert config.regions == ["north", "south"]
    assert config.broker == BrokerEndpoint(host="10.0.0.5", port=18830)
    assert (config.schedule.interval_s, config.schedule.regional_deadline_s, config.schedule.global_deadline_s) == (
        600,
        60,
        90,
    )
    assert (config.training.epochs, config.training.codec, config.training.batch_size) == (3, "fp32-zstd", 32)
    assert config.influx.url == "http://127.0.0.1:8086"


def test_unset_fields_take_their_documented_defaults(tmp_path: Path) -> None:
    cloud = load_config(CloudConfig, _file(tmp_path, CLOUD))
    edge = build_config(EdgeConfig, dict(EDGE))

    assert cloud.broker == BrokerEndpoint(host="127.0.0.1", port=1883, keepalive_s=30)
    assert (cloud.schedule.cron, cloud.schedule.timezone, cloud.schedule.interval_s) == ("0 2 * * *", "UTC", None)
    assert cloud.server_learning_rate == 1.0
    assert cloud.influx.url is None
    assert edge.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES
    assert edge.device == "auto"


def test_region_and_edge_configs_load_from_toml_files(tmp_path: Path) -> None:
    region = load_config(RegionConfig, _file(tmp_path, {**REGION, "max_clock_skew_s": 30.0}))
    edge = load_config(EdgeConfig, _file(tmp_path, {**EDGE, "min_windows": 8}))

    assert (region.region, region.max_clock_skew_s) == ("north", 30.0)
    assert (edge.node_id, edge.min_windows) == ("north-t00001", 8)


def test_an_environment_variable_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(
        tmp_path, {**CLOUD, "schedule": {"interval_s": 600, "regional_deadline_s": 60, "global_deadline_s": 90}}
    )
    monkeypatch.setenv("NACELLE_CLOUD_SCHEDULE__INTERVAL_S", "5")

    config = load_config(CloudConfig, path)

    assert config.schedule.interval_s == 5.0
    assert (config.schedule.regional_deadline_s, config.schedule.global_deadline_s) == (60, 90)


def test_an_environment_variable_sets_a_field_the_file_leaves_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NACELLE_EDGE_BROKER__PORT", "1884")

    config = load_config(EdgeConfig, _file(tmp_path, EDGE))

    assert config.broker.port == 1884
    assert config.broker.host == "127.0.0.1"


def test_environment_variables_of_another_daemon_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NACELLE_EDGE_BROKER__PORT", "1884")

    assert load_config(RegionConfig, _file(tmp_path, REGION)).broker.port == 1883


def test_written_config_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "region.toml"

    write_config(path, {**REGION, "broker": {"port": 18831}})

    assert load_config(RegionConfig, path).broker.port == 18831


# -- refusals ------------------------------------------------------------------------------


def test_an_invalid_nested_value_names_its_field_path_and_the_file(tmp_path: Path) -> None:
    path = _file(tmp_path, {**CLOUD, "broker": {"port": 70000}})

    message = _error(CloudConfig, path)

    assert "broker.port" in message
    assert str(path) in message


def test_an_invalid_environment_override_names_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NACELLE_CLOUD_SCHEDULE__GLOBAL_DEADLINE_S", "-1")

    assert "schedule.global_deadline_s" in _error(CloudConfig, _file(tmp_path, CLOUD))


def test_a_global_deadline_before_the_regional_one_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, {**CLOUD, "schedule": {"regional_deadline_s": 600, "global_deadline_s": 300}})

    message = _error(CloudConfig, path)

    assert "schedule" in message
    assert "global_deadline_s must be later than regional_deadline_s" in message


def test_a_global_deadline_equal_to_the_regional_one_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, {**CLOUD, "schedule": {"regional_deadline_s": 600, "global_deadline_s": 600}})

    assert "global_deadline_s" in _error(CloudConfig, path)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({**CLOUD, "bogus": 1}, "bogus"),
        ({**CLOUD, "broker": {"hots": "10.0.0.5"}}, "broker.hots"),
        ({**CLOUD, "schedule": {"interval": 5}}, "schedule.interval"),
    ],
    ids=["top-level", "broker", "schedule"],
)
def test_an_unknown_key_is_refused_by_name(tmp_path: Path, values: dict[str, object], field: str) -> None:
    assert field in _error(CloudConfig, _file(tmp_path, values))


def test_a_missing_required_field_is_named(tmp_path: Path) -> None:
    values = dict(CLOUD)
    del values["state_dir"]

    assert "state_dir" in _error(CloudConfig, _file(tmp_path, values))


@pytest.mark.parametrize(
    ("settings_cls", "values", "field"),
    [
        (CloudConfig, {**CLOUD, "training": {"codec": "int4"}}, "training.codec"),
        (CloudConfig, {**CLOUD, "training": {"epochs": 0}}, "training.epochs"),
        (CloudConfig, {**CLOUD, "server_learning_rate": 0}, "server_learning_rate"),
        (CloudConfig, {**CLOUD, "broker": {"keepalive_s": 1}}, "broker.keepalive_s"),
        (RegionConfig, {**REGION, "region": "north/1"}, "region"),
        (RegionConfig, {**REGION, "max_update_bytes": 100}, "max_update_bytes"),
        (RegionConfig, {**REGION, "max_clock_skew_s": 0}, "max_clock_skew_s"),
        (EdgeConfig, {**EDGE, "node_id": "north+"}, "node_id"),
        (EdgeConfig, {**EDGE, "max_windows": 0}, "max_windows"),
    ],
    ids=["codec", "epochs", "server-lr", "keepalive", "region-id", "update-bytes", "skew", "node-id", "windows"],
)
def test_an_out_of_range_value_names_its_field(
    tmp_path: Path, settings_cls: type, values: dict[str, object], field: str
) -> None:
    message = _error(settings_cls, _file(tmp_path, values))

    assert f"  {field}:" in message


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    assert str(path) in _error(CloudConfig, path)


def test_a_file_that_is_not_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "cloud.toml"
    path.write_text("registry_path = \n[broker\n")

    message = _error(CloudConfig, path)

    assert "not valid TOML" in message
    assert str(path) in message


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "cloud.toml"
    path.write_bytes(b'registry_path = "\xff"\n')

    _error(CloudConfig, path)


def test_an_unparsable_environment_list_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NACELLE_CLOUD_REGIONS", "north,south")

    assert "regions" in _error(CloudConfig, _file(tmp_path, CLOUD))


def test_configs_are_frozen(tmp_path: Path) -> None:
    config = load_config(CloudConfig, _file(tmp_path, CLOUD))

    with pytest.raises(ValueError, match="frozen"):
        config.server_learning_rate = 2.0  # type: ignore[misc]
