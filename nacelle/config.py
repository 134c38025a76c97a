"""Typed daemon configuration: one TOML file per daemon, then environment overrides, validated at
start. `NACELLE_EDGE_BROKER__PORT=1884` overrides `[broker] port` of an edge node's file (the
prefix is per daemon, `__` separates nesting levels). Errors name the file and the field."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, FilePath, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the field."""


class BrokerEndpoint(BaseModel):
    """Where an MQTT client connects, and with which certificate (nacelle.pki)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    # Short enough that a dead link is noticed within a minute, long enough for cellular links.
    keepalive_s: int = Field(30, ge=5, le=3600)
    # TLS is on when ca_file is set: the broker's certificate must be signed by it and name
    # `host`. Nacelle's brokers also require a client certificate, whose CN is the identity
    # their ACL knows (fleet directory: tls/ca.crt, tls/{id}.crt, tls/{id}.key).
    ca_file: FilePath | None = Field(None, description="CA certificate (PEM) that signed the broker's certificate")
    cert_file: FilePath | None = Field(None, description="this client's certificate (PEM)")
    key_file: FilePath | None = Field(None, description="this client's private key (PEM, unencrypted)")

    @model_validator(mode="after")
    def _tls_files_complete(self) -> BrokerEndpoint:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: give both or neither")
        if self.cert_file is not None and self.ca_file is None:
            # A client certificate over plain TCP would be sent nowhere: the setting is a mistake.
            raise ValueError("cert_file needs ca_file: a client certificate is only used over TLS")
        return self

    @property
    def tls(self) -> bool:
        return self.ca_file is not None


class DaemonSettings(BaseSettings):
    """Base of every daemon's configuration: environment variables win over the file."""

    model_config = SettingsConfigDict(extra="forbid", env_nested_delimiter="__", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


SettingsT = TypeVar("SettingsT", bound=DaemonSettings)


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {field}: {item['msg']}")
    return "\n".join(lines)


def build_config(settings_cls: type[SettingsT], values: dict[str, Any], source: str = "arguments") -> SettingsT:
    try:
        return settings_cls(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from exc
    except SettingsError as exc:  # an environment override that cannot be parsed
        raise ConfigError(f"invalid environment override for {source}: {exc}") from exc


def load_config(settings_cls: type[SettingsT], path: Path) -> SettingsT:
    """Read `path` (TOML), apply environment overrides, validate."""
    try:
        values = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"configuration {path} is not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration {path} is not valid TOML: {exc}") from exc
    return build_config(settings_cls, values, str(path))


def write_config(path: Path, values: dict[str, Any]) -> None:
    """Write a TOML configuration file (used by `nacelle keys` and the simulator)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(values))
