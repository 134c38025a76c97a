"""The node's rolling on-disk buffer of feature windows: numbered .npy chunks in one folder,
oldest dropped first once the buffer holds more than its capacity. Survives restarts; a chunk
is written to a temporary name and renamed, so a crash never leaves half a chunk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class FeatureBuffer:
    def __init__(self, directory: Path, capacity: int) -> None:
        self.directory = directory
        self.capacity = capacity
        directory.mkdir(parents=True, exist_ok=True)

    def _chunks(self) -> list[Path]:
        return sorted(self.directory.glob("chunk-*.npy"))

    def append(self, windows: np.ndarray) -> None:
        windows = np.asarray(windows, np.float32)
        if windows.ndim != 2 or len(windows) == 0:
            raise ValueError(f"expected (n>0, features) windows, got shape {windows.shape}")
        chunks = self._chunks()
        sequence = int(chunks[-1].stem.split("-")[1]) + 1 if chunks else 0
        target = self.directory / f"chunk-{sequence:010d}.npy"
        temporary = target.with_suffix(".tmp")
        with open(temporary, "wb") as handle:
            np.save(handle, windows)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(target)
        self._evict()

    def _evict(self) -> None:
        chunks = self._chunks()
        sizes = [int(np.load(chunk, mmap_mode="r").shape[0]) for chunk in chunks]
        total = sum(sizes)
        for chunk, size in zip(chunks, sizes, strict=True):
            if total - size < self.capacity:
                break
            chunk.unlink()
            total -= size

    def windows(self) -> np.ndarray:
        """All buffered windows, oldest first, at most `capacity` of them."""
        chunks = [np.load(chunk) for chunk in self._chunks()]
        if not chunks:
            return np.empty((0, 0), np.float32)
        return np.concatenate(chunks)[-self.capacity :]
