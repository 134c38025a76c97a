"""Typed daemon configuration: one TOML file per daemon, then environment overrides, validated at
start. `NACELLE_EDGE_BROKER__PORT=1884` overrides `[broker] port` of an edge node's file (the
prefix is per daemon, `__` separates nesting levels). Errors name the file and the field."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the field."""


class BrokerEndpoint(BaseModel):
    """Where an MQTT client connects. TLS settings arrive with the fleet PKI."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    # Short enough that a dead link is noticed within a minute, long enough for cellular links.
    keepalive_s: int = Field(30, ge=5, le=3600)


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
