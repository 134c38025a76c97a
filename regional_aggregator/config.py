"""Configuration of one regional aggregator (`nacelle region --config region.toml`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import SettingsConfigDict

from learning.robust import Aggregate, RobustPolicy
from nacelle.config import BrokerEndpoint, DaemonSettings
from wire.topics import check_identifier


class RobustSettings(BaseModel):
    """`[robust]`: how the region combines its updates (see learning.robust)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # fedavg is exact and streams; trimmed_mean and median resist a minority of poisoned
    # updates at the cost of holding the round's updates in memory at close.
    aggregate: Aggregate = Aggregate.FEDAVG
    trim_fraction: float = Field(0.2, ge=0.0, lt=0.5)
    # Clip each update to this multiple of the round's median update norm; 0 turns it off.
    clip_multiplier: float = Field(3.0, ge=0.0)
    # Nodes scoring above this (distance to consensus / typical distance) are logged as
    # suspected of poisoning, for the operator to look at and perhaps suspend.
    outlier_warning: float = Field(4.0, gt=0.0)

    def policy(self) -> RobustPolicy:
        return RobustPolicy(self.aggregate, self.trim_fraction, self.clip_multiplier or None)


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
    robust: RobustSettings = RobustSettings()
    # Each accepted update is fsynced to the update log before the broker gets its ack; off
    # only where losing the last updates to a power cut is acceptable (the simulator's tmpfs).
    fsync_updates: bool = True
    # With fsync_updates: one fsync covers every update that arrived while the previous one ran,
    # and the broker gets those acknowledgements after it (never before their update is on
    # disk: the same guarantee as an fsync each). Off: one fsync per update, before its ack.
    group_commit: bool = True

    @field_validator("region")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return check_identifier("region", value)
