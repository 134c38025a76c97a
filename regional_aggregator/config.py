"""Configuration of one regional aggregator (`nacelle region --config region.toml`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from nacelle.config import BrokerEndpoint, DaemonSettings
from wire.topics import check_identifier


class RegionConfig(DaemonSettings):
    model_config = SettingsConfigDict(env_prefix="NACELLE_REGION_")

    region: str
    broker: BrokerEndpoint = BrokerEndpoint()
    registry_path: Path
    private_key_path: Path = Field(description="the region's aggregator key (PEM)")
    state_dir: Path
    # An int8 update of the default model is ~5 KB and fp32 ~20 KB; 256 KiB refuses garbage
    # before it is parsed while leaving room for bigger models.
    max_update_bytes: int = Field(256 * 1024, ge=1024)
    # More samples than a node can hold would let one node outweigh its region.
    max_samples_per_update: int = Field(100_000, ge=1)
    # Updates signed further than this from the aggregator's clock are refused as stale.
    max_clock_skew_s: float = Field(300.0, gt=0)
    # Updates that arrive before their round's announcement are held, up to this many.
    max_early_updates: int = Field(50_000, ge=0)

    @field_validator("region")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return check_identifier("region", value)
