"""Configuration of one edge node (`nacelle edge --config node.toml`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from nacelle.config import BrokerEndpoint, DaemonSettings
from wire.topics import check_identifier

# A global model of the default autoencoder is ~20 KB; 4 MiB leaves room for larger models
# while refusing anything absurd before it is parsed.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


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
    max_message_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES, ge=1024)

    @field_validator("node_id", "region")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return check_identifier("identifier", value)
