"""Configuration of one edge node (`nacelle edge --config node.toml`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from nacelle.config import BrokerEndpoint, DaemonSettings
from wire.topics import check_identifier

# A global model of the default autoencoder is ~20 KB; 4 MiB leaves room for larger models
# while refusing anything absurd before it is parsed.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Feature bands per window: the input size of the default autoencoder
# (learning.model.AutoencoderShape.n_features; not imported here, that would pull in torch).
# Not configurable: every node of a fleet trains the same model.
RECORDING_FEATURES = 64


class RecordingsConfig(BaseModel):
    """`[recordings]`: raw vibration files (.npy or .wav) in `directory` become feature windows
    in the node's buffer, through the same `spectral_features` as the simulator's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: Path = Field(description="folder scanned for new .npy / .wav recordings (not recursive)")
    # .npy files carry no rate, so they need this; a .wav carries its own, which must match it
    # when both are given. Bands are fractions of Nyquist: a fleet should record at one rate.
    sample_rate_hz: float | None = Field(None, gt=0)
    # 2·RECORDING_FEATURES at least, or the FFT cannot fill every band.
    window_samples: int = Field(1024, description="samples per feature window")
    hop_samples: int | None = Field(None, ge=1, description="window start to window start; unset: window_samples")
    channel: int = Field(0, ge=0, description="channel of a multi-channel .wav (0: the first)")

    @field_validator("window_samples")
    @classmethod
    def _fills_every_band(cls, value: int) -> int:
        if value < 2 * RECORDING_FEATURES:
            raise ValueError(
                f"window_samples must be at least {2 * RECORDING_FEATURES} "
                f"(2 x {RECORDING_FEATURES} feature bands), got {value}"
            )
        return value


class AlertsConfig(BaseModel):
    """`[alerts]`: scoring live windows between rounds and alerting the cloud (edge_node.alerts).
    Defaults measured offline on 60 simulated turbines' FedAvg models with 8 live windows a
    night: with quantile 0.995 and 2 crossings of 8, 0.45% of healthy turbine-nights alert,
    against 6.5% with a single crossing; gear wear and bearing faults are caught on 70-80% of
    their nights (the 300-turbine demo: 0.5% and precision 0.78, see README)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # Calibrated on windows the model was trained on (they score lower than new ones) and on a
    # day of them at most: 0.995 of 8640 windows is the 43rd highest, a stable estimate, where
    # 0.999 would be nearly the maximum, whatever noise made it.
    quantile: float = Field(0.995, gt=0.5, lt=1.0, description="threshold: this quantile of normal scores")
    # The most recent scored windows calibrate the threshold; a day of 10-second windows.
    calibration_windows: int = Field(8640, ge=1)
    # Below this a quantile means little; a new node takes its first windows as its baseline.
    min_calibration_windows: int = Field(64, ge=1)
    # Faults persist and noise does not: an alert needs this many crossings in the last
    # `crossing_window` scored windows (1: any crossing alerts).
    min_crossings: int = Field(2, ge=1)
    crossing_window: int = Field(8, ge=1)
    # At most one alert an hour per turbine: a failing turbine must not flood the link; the
    # crossings held back are counted in its next alert.
    min_interval_s: float = Field(3600.0, ge=0)
    # How often the daemon looks for new windows (and recordings) between rounds.
    scoring_interval_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _window_holds_crossings(self) -> AlertsConfig:
        if self.min_crossings > self.crossing_window:
            raise ValueError(f"min_crossings ({self.min_crossings}) exceeds crossing_window ({self.crossing_window})")
        return self


class EdgeConfig(DaemonSettings):
    model_config = SettingsConfigDict(env_prefix="NACELLE_EDGE_")

    node_id: str
    region: str
    broker: BrokerEndpoint = BrokerEndpoint()
    registry_path: Path = Field(description="fleet registry JSON (public keys)")
    private_key_path: Path = Field(description="this node's Ed25519 private key (PEM)")
    data_dir: Path = Field(description="feature buffer and node state live here")
    device: str = Field("auto", description="torch device for training: auto, cpu, cuda, cuda:N")
    # A day of 10-second windows; older windows are dropped first.
    max_windows: int = Field(8640, ge=1)
    # Fewer windows than a few batches make an update that is mostly noise.
    min_windows: int = Field(64, ge=1)
    # Windows recorded since the last training that a new round needs: a node with nothing new
    # would only repeat last night's work (0: train every round regardless).
    min_new_windows: int = Field(1, ge=0)
    max_message_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES, ge=1024)
    recordings: RecordingsConfig | None = Field(None, description="ingest raw recordings from a folder")
    alerts: AlertsConfig = AlertsConfig()

    @field_validator("node_id", "region")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return check_identifier("identifier", value)
