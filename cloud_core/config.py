"""Configuration of the cloud core (`nacelle cloud --config cloud.toml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from cloud_core.schedule import check_cron, zone
from nacelle.config import BrokerEndpoint, DaemonSettings
from telemetry import DEFAULT_BATCH_SIZE, DEFAULT_SPOOL_BYTES
from wire.codec import DEFAULT_TOPK_FRACTION, Codec

DEFAULT_CRON = "0 2 * * *"


class ScheduleConfig(BaseModel):
    """When rounds open and how long each tier waits. Defaults: nightly at 02:00 UTC."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A cron expression in `timezone` (croniter syntax, five fields); unset when interval_s is.
    cron: str | None = Field(None, description="when rounds open, e.g. '0 2 * * *'")
    timezone: str = Field("UTC", description="IANA time zone of the cron expression, e.g. 'Europe/Berlin'")
    # For simulations and tests: a round every interval_s instead of on a cron schedule.
    interval_s: float | None = Field(None, gt=0, description="time between the opening of rounds")
    # Edge nodes train in minutes; an hour lets slow gateways and bad links catch up.
    regional_deadline_s: float = Field(3_600.0, gt=0)
    # Past the regional deadline by enough for a partial to cross a flaky bridge.
    global_deadline_s: float = Field(5_400.0, gt=0)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        zone(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _nightly_by_default(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("cron") is None and values.get("interval_s") is None:
            return {**values, "cron": DEFAULT_CRON}
        return values

    @model_validator(mode="after")
    def _consistent(self) -> ScheduleConfig:
        if self.global_deadline_s <= self.regional_deadline_s:
            raise ValueError("global_deadline_s must be later than regional_deadline_s")
        if self.cron is not None and self.interval_s is not None:
            raise ValueError("set either cron or interval_s, not both")
        return self


class QuorumConfig(BaseModel):
    """Below quorum a round closes without changing the global model, and says why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A region counts when at least this share of its expected (active) nodes was accepted.
    min_node_share: float = Field(0.5, ge=0.0, le=1.0)
    # The round counts when at least this share of the fleet's regions counts.
    min_region_share: float = Field(0.5, ge=0.0, le=1.0)


class GuardConfig(BaseModel):
    """Refuse to publish a model that got worse on a holdout set the cloud keeps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # (n, n_features) float32 .npy of normal windows (synthetic or from the operator); unset: no guard.
    holdout_path: Path | None = None
    # Refused when the candidate's mean reconstruction error exceeds the current model's by more
    # than this share: a poisoned or diverged round must not reach the fleet.
    max_loss_increase: float = Field(0.10, ge=0.0)


class TrainingPlanConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # FedAvg progresses by one local run per round: a few epochs per night let a fleet converge
    # within a couple of weeks of nights without drifting apart on non-IID data.
    epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    # How nodes encode their updates (wire.codec): int8-zstd (default), fp16-zstd (half the
    # bytes of fp32, nearly exact), topk-int8-zstd (the largest `topk_fraction` of each update's
    # values, the rest carried to the node's next update), fp32-zstd (exact, four times int8).
    codec: Codec = "int8-zstd"
    topk_fraction: float = Field(DEFAULT_TOPK_FRACTION, gt=0, le=1)


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n_features: int = Field(64, ge=1)
    hidden: int = Field(32, ge=1)
    latent: int = Field(8, ge=1)
    init_seed: int = 0


class InfluxConfig(BaseModel):
    """Where round metrics go (telemetry): `api = "v1"` writes InfluxDB 1.x `/write` into
    `database` (as `username` when the server has authentication on); `api = "v2"` writes
    `/api/v2/write` into `bucket` of `org` with a token. Either way through a spool under
    state_dir, so an outage loses nothing (up to spool_max_bytes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(None, description="InfluxDB base URL; metrics are off when unset")
    api: Literal["v1", "v2"] = "v1"
    database: str = Field("nacelle", min_length=1, description="v1: the database (it must exist)")
    username: str | None = Field(None, min_length=1, description="v1: user, when authentication is on")
    password: SecretStr | None = Field(None, description="v1: the user's password (prefer password_file)")
    password_file: FilePath | None = Field(None, description="v1: file holding the user's password")
    org: str | None = Field(None, min_length=1, description="v2: the organization")
    bucket: str | None = Field(None, min_length=1, description="v2: the bucket")
    # token_file keeps the secret out of a config file that is copied around and of `ps`.
    token: SecretStr | None = Field(None, description="v2: API token (prefer token_file)")
    token_file: FilePath | None = Field(None, description="v2: file holding the API token")
    timeout_s: float = Field(5.0, gt=0, le=300, description="per request")
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=100_000, description="points per request")
    # A 10,000-turbine round is ~1.5 MB of line protocol: the default holds weeks of nights.
    spool_max_bytes: int = Field(DEFAULT_SPOOL_BYTES, ge=1 << 20, description="bound of the on-disk spool")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value

    @model_validator(mode="after")
    def _fields_of_api(self) -> InfluxConfig:
        v1_fields = {"username": self.username, "password": self.password, "password_file": self.password_file}
        v2_fields = {"org": self.org, "bucket": self.bucket, "token": self.token, "token_file": self.token_file}
        if self.api == "v1":
            given = [name for name, value in v2_fields.items() if value is not None]
            if given:
                raise ValueError(f"{', '.join(given)} apply only to api = 'v2' (api is 'v1')")
            if self.password is not None and self.password_file is not None:
                raise ValueError("give password or password_file, not both")
            has_password = self.password is not None or self.password_file is not None
            if has_password != (self.username is not None):
                raise ValueError("username needs password (or password_file), and a password needs username")
            return self
        given = [name for name, value in v1_fields.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} apply only to api = 'v1' (api is 'v2')")
        if self.token is not None and self.token_file is not None:
            raise ValueError("give token or token_file, not both")
        missing = [name for name in ("org", "bucket") if v2_fields[name] is None]
        if self.token is None and self.token_file is None:
            missing.append("token (or token_file)")
        if missing and self.url is not None:
            raise ValueError(f"api = 'v2' needs {', '.join(missing)}")
        return self

    def api_token(self) -> str:
        """The v2 token, read from token_file when that is how it is given."""
        return _secret(self.token, self.token_file, "influx.token_file")

    def v1_credentials(self) -> tuple[str, str] | None:
        """(username, password), the password read from password_file when that is how it is
        given; None when the server has no authentication."""
        if self.username is None:
            return None
        return self.username, _secret(self.password, self.password_file, "influx.password_file")


def _secret(value: SecretStr | None, path: Path | None, field: str) -> str:
    if path is None:
        return value.get_secret_value() if value is not None else ""
    secret = path.read_text().strip()
    if not secret:
        raise ValueError(f"{field} {path} is empty")
    return secret


class AlertsConfig(BaseModel):
    """`[alerts]`: the nodes' anomaly alerts, verified and written to InfluxDB (cloud_core.alerts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A real alert is ~250 bytes; anything near this is not one.
    max_bytes: int = Field(4096, ge=512)
    # A node whose clock runs ahead by more than this sends windows "from the future": refused,
    # as a dashboard would show them where nothing happened yet.
    max_clock_skew_s: float = Field(300.0, gt=0)
    # Alerts verified but not yet written, while InfluxDB is slow or away; beyond this the newest
    # are dropped and counted (a fleet's worth of failing turbines at one alert an hour is far less).
    max_pending: int = Field(10_000, ge=1)


class CloudConfig(DaemonSettings):
    model_config = SettingsConfigDict(env_prefix="NACELLE_CLOUD_")

    broker: BrokerEndpoint = BrokerEndpoint()
    registry_path: Path
    private_key_path: Path = Field(description="the cloud's model-signing key (PEM)")
    state_dir: Path = Field(description="model versions and the round log live here")
    regions: list[str] = Field(default_factory=list, description="regions to wait for; empty: all in the registry")
    schedule: ScheduleConfig = ScheduleConfig()
    quorum: QuorumConfig = QuorumConfig()
    guard: GuardConfig = GuardConfig()
    training: TrainingPlanConfig = TrainingPlanConfig()
    model: ModelConfig = ModelConfig()
    server_learning_rate: float = Field(1.0, gt=0)
    influx: InfluxConfig = InfluxConfig()
    # A fp32 partial of the default model is ~20 KB plus ~40 bytes per node summary.
    max_partial_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    alerts: AlertsConfig = AlertsConfig()
