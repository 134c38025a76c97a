"""The node's rolling on-disk buffer of feature windows: numbered .npy chunks in one folder,
oldest dropped first once the buffer holds more than its capacity. Survives restarts; a chunk
is written to a temporary name and renamed, so a crash never leaves half a chunk.

A chunk's name carries its sequence number and when its windows were recorded (Unix ms):
`chunk-0000000042-1763900000250.npy`. The time is in the name, not in a side file, so the rename
that makes the windows appear makes their time appear with them. Chunks written before times
were kept (`chunk-0000000042.npy`) read their file's mtime instead.

A chunk never changes once renamed into place, so what was read is kept in memory (at most the
buffer's capacity): the node reads its whole buffer to score and again to train, every round,
and a simulated fleet does it ten thousand times a night.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Chunk:
    sequence: int  # grows by one per append, never reused
    recorded_at: float  # Unix seconds, ms precision: when its windows were recorded
    path: Path

    def size(self) -> int:
        """Windows in the chunk, from the .npy header alone (a memmap costs ten times more, and
        every append sizes every chunk)."""
        with open(self.path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape = np.lib.format.read_array_header_1_0(handle)[0]
            else:
                shape = np.lib.format.read_array_header_2_0(handle)[0]
        return int(shape[0])


def _chunk(path: Path) -> Chunk:
    parts = path.stem.split("-")
    recorded_ms = int(parts[2]) if len(parts) > 2 else int(path.stat().st_mtime * 1000)
    return Chunk(int(parts[1]), recorded_ms / 1000, path)


class FeatureBuffer:
    def __init__(self, directory: Path, capacity: int) -> None:
        self.directory = directory
        self.capacity = capacity
        self._loaded: dict[Path, np.ndarray] = {}
        self._sizes: dict[Path, int] = {}  # windows per chunk: chunks never change once in place
        self._named: dict[str, Chunk] = {}  # by file name, likewise
        directory.mkdir(parents=True, exist_ok=True)

    def chunks(self) -> list[Chunk]:
        """Every chunk on disk, oldest first. Listed with os.listdir, once per file name: the
        node lists its buffer a few times a round, and Path.glob took four times as long."""
        named = {}
        for name in os.listdir(self.directory):
            if name.startswith("chunk-") and name.endswith(".npy"):
                chunk = self._named.get(name)
                named[name] = chunk if chunk is not None else _chunk(self.directory / name)
        if len(named) < len(self._named) or len(self._loaded) > len(named) or len(self._sizes) > len(named):
            present = {chunk.path for chunk in named.values()}  # evicted, maybe elsewhere
            self._loaded = {path: array for path, array in self._loaded.items() if path in present}
            self._sizes = {path: size for path, size in self._sizes.items() if path in present}
        self._named = named
        return sorted(named.values(), key=lambda c: c.sequence)

    def size(self, chunk: Chunk) -> int:
        """Windows in `chunk` (`Chunk.size`, read once per chunk: every append and every round
        sizes every chunk)."""
        size = self._sizes.get(chunk.path)
        if size is None:
            loaded = self._loaded.get(chunk.path)
            size = self._sizes[chunk.path] = chunk.size() if loaded is None else len(loaded)
        return size

    def _load(self, chunk: Chunk) -> np.ndarray:
        array = self._loaded.get(chunk.path)
        if array is None:
            array = np.load(chunk.path)
            array.flags.writeable = False  # shared by every later read
            self._loaded[chunk.path] = array
        return array

    def append(self, windows: np.ndarray, *, recorded_at: float | None = None) -> None:
        """Add windows recorded at `recorded_at` (Unix seconds; default: now)."""
        windows = np.asarray(windows, np.float32)
        if windows.ndim != 2 or len(windows) == 0:
            raise ValueError(f"expected (n>0, features) windows, got shape {windows.shape}")
        recorded_ms = round((time.time() if recorded_at is None else recorded_at) * 1000)
        if recorded_ms < 0:
            raise ValueError(f"recorded_at must be a Unix time, got {recorded_at}")
        chunks = self.chunks()
        sequence = chunks[-1].sequence + 1 if chunks else 0
        target = self.directory / f"chunk-{sequence:010d}-{recorded_ms:013d}.npy"
        temporary = target.with_suffix(".tmp")
        with open(temporary, "wb") as handle:
            np.save(handle, windows)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(target)
        self._evict()

    def _evict(self) -> None:
        chunks = self.chunks()
        sizes = [self.size(chunk) for chunk in chunks]
        total = sum(sizes)
        for chunk, size in zip(chunks, sizes, strict=True):
            if total - size < self.capacity:
                break
            chunk.path.unlink()
            total -= size

    def read(self, chunks: Sequence[Chunk]) -> np.ndarray:
        """The windows of `chunks`, concatenated in the order given."""
        loaded = [self._load(chunk) for chunk in chunks]
        return np.concatenate(loaded) if loaded else np.empty((0, 0), np.float32)

    def read_recorded(self, chunks: Sequence[Chunk]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The windows of `chunks` with, per window, when it was recorded and its chunk's sequence."""
        loaded = [self._load(chunk) for chunk in chunks]
        if not loaded:
            return np.empty((0, 0), np.float32), np.empty(0), np.empty(0, np.int64)
        sizes = [len(windows) for windows in loaded]
        return (
            np.concatenate(loaded),
            np.repeat([chunk.recorded_at for chunk in chunks], sizes),
            np.repeat([chunk.sequence for chunk in chunks], sizes),
        )

    def windows(self, chunks: Sequence[Chunk] | None = None) -> np.ndarray:
        """All buffered windows (or those of `chunks`, a listing just made), oldest first, at
        most `capacity` of them."""
        return self.read(self.chunks() if chunks is None else chunks)[-self.capacity :]
