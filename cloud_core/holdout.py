"""The cloud's holdout set for the publish guard: normal feature windows the fleet's models are
checked against before a new version goes out (synthetic from the simulator, or the operator's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from learning.model import AutoencoderShape


class HoldoutError(ValueError):
    """A holdout file that cannot be used; the message names the file."""


def load_holdout(path: Path, shape: AutoencoderShape) -> np.ndarray:
    try:
        windows = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise HoldoutError(f"cannot read holdout windows from {path}: {exc}") from exc
    if windows.ndim != 2 or windows.shape[1] != shape.n_features or len(windows) == 0:
        raise HoldoutError(f"{path} must hold (n > 0, {shape.n_features}) windows, got shape {windows.shape}")
    if not np.isfinite(windows).all():
        raise HoldoutError(f"{path} holds NaN or infinite values")
    return windows.astype(np.float32)
