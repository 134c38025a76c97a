"""Every global model version on disk, with its lineage: `models/v000042.npz` holds the weights,
`models/v000042.json` the metadata (round, parent, hash, participation, metrics). Writes are
atomic (temporary file + rename), so a crash leaves the previous version intact."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from learning.model import Weights


def weights_digest(weights: Weights) -> str:
    digest = hashlib.sha256()
    for name, array in weights.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array, "<f4").tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelVersion:
    version: int
    round_id: int
    parent_version: int
    created_at: float
    sha256: str
    details: dict[str, Any] = field(default_factory=dict)


class ModelStoreError(ValueError):
    """A version that cannot be stored or found; the message names it."""


class ModelStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory / "models"
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, version: int, suffix: str) -> Path:
        return self.directory / f"v{version:06d}{suffix}"

    def versions(self) -> list[int]:
        return sorted(int(p.stem[1:]) for p in self.directory.glob("v*.json"))

    def save(self, meta: ModelVersion, weights: Weights) -> None:
        """Store a new version; never replaces one (the cloud core and `nacelle model rollback`
        may both add a version: the second to arrive fails loudly instead of overwriting)."""
        if self._path(meta.version, ".json").exists():
            raise ModelStoreError(f"model v{meta.version} already exists in {self.directory}")
        weights_tmp = self.directory / f"v{meta.version:06d}.tmp.npz"
        np.savez(weights_tmp, **weights)
        weights_tmp.replace(self._path(meta.version, ".npz"))
        meta_tmp = self._path(meta.version, ".json.tmp")
        meta_tmp.write_text(json.dumps(asdict(meta), indent=1))
        # The metadata file is what marks a version as present, so it is renamed last.
        meta_tmp.replace(self._path(meta.version, ".json"))

    def load(self, version: int, names: list[str]) -> tuple[ModelVersion, Weights]:
        if not self._path(version, ".json").exists():
            known = ", ".join(f"v{v}" for v in self.versions()) or "none"
            raise ModelStoreError(f"no model v{version} in {self.directory} (stored: {known})")
        meta = ModelVersion(**json.loads(self._path(version, ".json").read_text()))
        with np.load(self._path(version, ".npz")) as archive:
            weights = {name: archive[name].astype(np.float32) for name in names}
        return meta, weights

    def latest(self, names: list[str]) -> tuple[ModelVersion, Weights] | None:
        versions = self.versions()
        return self.load(versions[-1], names) if versions else None
