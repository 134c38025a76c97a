"""Configuration of the cloud core (`nacelle cloud --config cloud.toml`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import SettingsConfigDict

from nacelle.config import BrokerEndpoint, DaemonSettings
from wire.codec import Codec


class ScheduleConfig(BaseModel):
    """When rounds open and how long each tier waits. Defaults are a nightly fleet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_s: float = Field(86_400.0, gt=0, description="time between the opening of rounds")
    # Edge nodes train in minutes; an hour lets slow gateways and bad links catch up.
    regional_deadline_s: float = Field(3_600.0, gt=0)
    # Past the regional deadline by enough for a partial to cross a flaky bridge.
    global_deadline_s: float = Field(5_400.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> ScheduleConfig:
        if self.global_deadline_s <= self.regional_deadline_s:
            raise ValueError("global_deadline_s must be later than regional_deadline_s")
        return self


class TrainingPlanConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # FedAvg progresses by one local run per round: a few epochs per night let a fleet converge
    # within a couple of weeks of nights without drifting apart on non-IID data.
    epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    codec: Codec = "int8-zstd"


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n_features: int = Field(64, ge=1)
    hidden: int = Field(32, ge=1)
    latent: int = Field(8, ge=1)
    init_seed: int = 0


class InfluxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(None, description="InfluxDB base URL; metrics are off when unset")
    database: str = "nacelle"


class CloudConfig(DaemonSettings):
    model_config = SettingsConfigDict(env_prefix="NACELLE_CLOUD_")

    broker: BrokerEndpoint = BrokerEndpoint()
    registry_path: Path
    private_key_path: Path = Field(description="the cloud's model-signing key (PEM)")
    state_dir: Path = Field(description="model versions and the round log live here")
    regions: list[str] = Field(default_factory=list, description="regions to wait for; empty: all in the registry")
    schedule: ScheduleConfig = ScheduleConfig()
    training: TrainingPlanConfig = TrainingPlanConfig()
    model: ModelConfig = ModelConfig()
    server_learning_rate: float = Field(1.0, gt=0)
    influx: InfluxConfig = InfluxConfig()
    # A fp32 partial of the default model is ~20 KB plus ~40 bytes per node summary.
    max_partial_bytes: int = Field(16 * 1024 * 1024, ge=1024)
