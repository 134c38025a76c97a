"""`[influx]` of the cloud configuration: v1 or v2, validated with errors naming the field, and
the writer it builds (behind the spool in state_dir). No server."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_core.config import CloudConfig
from cloud_core.influx import SPOOL_DIR, metrics_writer
from nacelle.config import ConfigError, load_config, write_config
from telemetry import InfluxV1Writer, InfluxV2Writer

CLOUD = {
    "registry_path": "/etc/nacelle/registry.json",
    "private_key_path": "/etc/nacelle/cloud.pem",
}


def load(tmp_path: Path, influx: dict[str, object]) -> CloudConfig:
    path = tmp_path / "cloud.toml"
    write_config(path, {**CLOUD, "state_dir": str(tmp_path / "state"), "influx": influx})
    return load_config(CloudConfig, path)


def refusal(tmp_path: Path, influx: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, influx)
    return str(refused.value)


def test_v1_is_the_default_and_writes_through_a_spool_in_state_dir(tmp_path: Path) -> None:
    config = load(tmp_path, {"url": "http://127.0.0.1:8086", "database": "fleet"})
    writer = metrics_writer(config.influx, config.state_dir)
    assert writer is not None
    try:
        assert isinstance(writer.sender, InfluxV1Writer)
        assert (writer.sender.target, writer.spool.directory) == (
            "http://127.0.0.1:8086/write",
            tmp_path / "state" / SPOOL_DIR,
        )
    finally:
        writer.close()
    assert metrics_writer(load(tmp_path, {}).influx, tmp_path) is None  # no url: metrics off


def test_v2_reads_its_token_from_a_file_and_never_shows_it(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-123\n")
    influx = {"url": "https://influx.example:8086", "api": "v2", "org": "ops", "bucket": "nacelle"}
    config = load(tmp_path, {**influx, "token_file": str(token_file)})
    assert config.influx.api_token() == "tok-123"
    writer = metrics_writer(config.influx, config.state_dir)
    assert writer is not None
    try:
        assert isinstance(writer.sender, InfluxV2Writer)
        assert writer.sender.bucket == "nacelle" and "tok-123" not in writer.sender.target
    finally:
        writer.close()
    inline = load(tmp_path, {**influx, "token": "tok-456"})
    assert inline.influx.api_token() == "tok-456"
    assert "tok-456" not in repr(inline) and "tok-456" not in str(inline.influx)


@pytest.mark.parametrize(
    ("influx", "message"),
    [
        ({"url": "localhost:8086"}, "influx.url: Value error, must start with http:// or https://"),
        ({"url": "http://h", "api": "v3"}, "influx.api: Input should be 'v1' or 'v2'"),
        ({"url": "http://h", "api": "v2"}, "api = 'v2' needs org, bucket, token (or token_file)"),
        ({"url": "http://h", "api": "v2", "org": "o", "token": "t"}, "api = 'v2' needs bucket"),
        (
            {"url": "http://h", "api": "v2", "org": "o", "bucket": "b", "token": "t", "token_file": "/etc/hostname"},
            "give token or token_file, not both",
        ),
        ({"url": "http://h", "bucket": "b"}, "bucket apply only to api = 'v2' (api is 'v1')"),
        ({"url": "http://h", "spool_max_bytes": 1000}, "influx.spool_max_bytes: Input should be greater than"),
        ({"url": "http://h", "token_file": "/no/such/token"}, "influx.token_file: Path does not point to a file"),
        ({"url": "http://h", "databse": "x"}, "influx.databse: Extra inputs are not permitted"),
        ({"url": "http://h", "username": "nacelle"}, "username needs password (or password_file)"),
        ({"url": "http://h", "password": "secret"}, "a password needs username"),
        (
            {"url": "http://h", "username": "u", "password": "p", "password_file": "/etc/hostname"},
            "give password or password_file, not both",
        ),
        (
            {"url": "http://h", "api": "v2", "org": "o", "bucket": "b", "token": "t", "username": "u"},
            "username apply only to api = 'v1' (api is 'v2')",
        ),
    ],
)
def test_mistakes_are_refused_naming_the_field(tmp_path: Path, influx: dict[str, object], message: str) -> None:
    assert message in refusal(tmp_path, influx)


def test_empty_token_file_is_an_error_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")
    config = load(tmp_path, {"url": "http://h", "api": "v2", "org": "o", "bucket": "b", "token_file": str(empty)})
    with pytest.raises(ValueError, match=r"influx\.token_file .* is empty"):
        metrics_writer(config.influx, config.state_dir)


def test_v1_with_authentication_reads_the_password_from_a_file_and_never_shows_it(tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("pw-123\n")
    config = load(tmp_path, {"url": "http://h", "username": "nacelle", "password_file": str(password_file)})
    assert config.influx.v1_credentials() == ("nacelle", "pw-123")
    inline = load(tmp_path, {"url": "http://h", "username": "nacelle", "password": "pw-456"})
    assert inline.influx.v1_credentials() == ("nacelle", "pw-456")
    assert "pw-456" not in repr(inline) and "pw-456" not in str(inline.influx)
    assert load(tmp_path, {"url": "http://h"}).influx.v1_credentials() is None
