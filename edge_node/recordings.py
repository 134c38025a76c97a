"""Real recordings into the node's buffer: raw vibration files in one folder (`.npy` 1-D arrays,
`.wav` PCM or float) are cut into windows, turned into features by
`learning.features.spectral_features` (the one extraction the simulator uses too) and appended to
the node's FeatureBuffer.

What was ingested is kept in a small JSON next to the buffer (`data_dir/recordings.json`): per
file name its size, mtime, the windows taken and a digest of the samples they span. A restart
therefore ingests nothing twice, and a file whose size or mtime changed is read again:

- if the samples already ingested are unchanged (a recording still being appended to, a file
  touched or copied), only the windows after them are ingested;
- otherwise (rewritten, truncated) it is refused: its old windows are in the buffer already,
  and ingesting it again would count them twice. New recordings belong under new names.

A refused file is logged once and tried again only when it changes (so a file caught halfway
through a copy is ingested once complete). Files are taken in name order; a deleted file keeps
its entry. The buffer is appended before the JSON is saved: a crash between the two ingests that
one file again after a restart (windows counted twice, never lost).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.io import wavfile

from edge_node.buffer import FeatureBuffer
from edge_node.config import RECORDING_FEATURES, RecordingsConfig
from learning.features import spectral_features
from nacelle.files import write_atomically

log = logging.getLogger(__name__)

SUFFIXES = (".npy", ".wav")
# Windows per spectral_features call: bounds the FFT's memory (4096 × 1024 float64 ≈ 32 MiB).
FEATURE_BATCH = 4096

Problem = Literal[
    "unsupported",
    "unreadable",
    "dtype",
    "shape",
    "channel",
    "empty",
    "not_finite",
    "no_rate",
    "rate_mismatch",
    "too_short",
    "changed",
]


class RecordingError(ValueError):
    """A recording that cannot be used; `problem` says why, the message names the file."""

    def __init__(self, path: Path, problem: Problem, detail: str) -> None:
        super().__init__(f"recording {path}: {detail}")
        self.path = path
        self.problem: Problem = problem
        self.detail = detail


# -- reading one file -----------------------------------------------------------------------


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:  # hostile or half-written bytes: numpy raises several types
        raise RecordingError(path, "unreadable", f"not a readable .npy file ({exc})") from exc
    if not isinstance(array, np.ndarray):  # np.load opens a zip archive whatever its name
        array.close()
        raise RecordingError(path, "unreadable", "is an .npz archive, not a .npy array")
    if array.dtype.kind not in "fiu":
        raise RecordingError(path, "dtype", f"holds {array.dtype} values, expected float or integer samples")
    if array.ndim != 1:
        raise RecordingError(path, "shape", f"holds an array of shape {array.shape}, expected 1-D samples")
    return array


def _read_wav(path: Path) -> tuple[float, np.ndarray]:
    # scipy warns (WavFileWarning) about chunks it skips and files shorter than their header:
    # both leave usable samples, so they are logged, not raised. Other warnings pass through.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", wavfile.WavFileWarning)
        try:
            rate, data = wavfile.read(path)
        except Exception as exc:  # hostile or half-written bytes: scipy raises several types
            raise RecordingError(path, "unreadable", f"not a readable WAV file ({exc})") from exc
    for warning in caught:
        if issubclass(warning.category, wavfile.WavFileWarning):
            log.info("recording %s: %s", path, warning.message)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if not rate > 0:
        raise RecordingError(path, "unreadable", f"WAV header gives a sample rate of {rate} Hz")
    if data.dtype.kind not in "fiu":
        raise RecordingError(path, "dtype", f"WAV samples of type {data.dtype} are not supported")
    return float(rate), data


def _to_float(samples: np.ndarray, *, pcm: bool) -> np.ndarray:
    """float64 samples; integer PCM scaled to [-1, 1) (8-bit WAV is unsigned, centred on 128)."""
    kind, bits = samples.dtype.kind, 8 * samples.dtype.itemsize
    if pcm and kind == "u":
        return (samples.astype(np.float64) - 2.0 ** (bits - 1)) / 2.0 ** (bits - 1)
    if pcm and kind == "i":  # scipy puts 24-bit samples in the high bytes of int32
        return samples.astype(np.float64) / 2.0 ** (bits - 1)
    return samples.astype(np.float64)  # float, or .npy integers (the features ignore gain)


def load_recording(path: Path, sample_rate_hz: float | None, *, channel: int = 0) -> tuple[np.ndarray, float]:
    """One recording → (float64 1-D samples, sample rate in Hz).

    `.npy`: a 1-D float or integer array; its rate is `sample_rate_hz`, which must be given.
    `.wav`: PCM (8/16/24/32/64-bit, scaled to [-1, 1)) or float; the file's own rate, which must
    equal `sample_rate_hz` when that is given. `channel` picks a channel of a multi-channel WAV.
    Raises RecordingError (naming the file and the problem) for anything unusable.
    """
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if sample_rate_hz is None:
            raise RecordingError(path, "no_rate", ".npy files carry no sample rate: set recordings.sample_rate_hz")
        rate, samples = float(sample_rate_hz), _read_npy(path)
    elif suffix == ".wav":
        rate, samples = _read_wav(path)
        if sample_rate_hz is not None and not math.isclose(rate, sample_rate_hz):
            raise RecordingError(
                path, "rate_mismatch", f"recorded at {rate:g} Hz, but recordings.sample_rate_hz is {sample_rate_hz:g}"
            )
    else:
        raise RecordingError(path, "unsupported", f"unsupported file type {suffix!r}, expected .npy or .wav")
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    if not 0 <= channel < channels:
        raise RecordingError(path, "channel", f"has {channels} channel(s), but recordings.channel is {channel}")
    signal = _to_float(samples if samples.ndim == 1 else samples[:, channel], pcm=suffix == ".wav")
    if signal.size == 0:
        raise RecordingError(path, "empty", "holds no samples")
    finite = np.isfinite(signal)
    if not finite.all():
        bad = int(signal.size - np.count_nonzero(finite))
        raise RecordingError(path, "not_finite", f"{bad} of {signal.size} samples are NaN or infinite")
    return signal, rate


def recording_windows(signal: np.ndarray, window_samples: int, hop_samples: int | None = None) -> np.ndarray:
    """(n, window_samples) read-only view of a 1-D signal: a window starts every `hop_samples`
    (default `window_samples`: non-overlapping); a tail shorter than a window is dropped."""
    signal = np.asarray(signal)
    hop = window_samples if hop_samples is None else hop_samples
    if signal.ndim != 1:
        raise ValueError(f"expected a 1-D signal, got shape {signal.shape}")
    if window_samples < 1 or hop < 1:
        raise ValueError(f"window_samples ({window_samples}) and hop_samples ({hop}) must be positive")
    if len(signal) < window_samples:
        return np.empty((0, window_samples), signal.dtype)
    return np.lib.stride_tricks.sliding_window_view(signal, window_samples)[::hop]


# -- the folder -----------------------------------------------------------------------------


@dataclass
class _Seen:
    """What the ingestion record holds per file name."""

    size: int
    mtime_ns: int
    status: Literal["ingested", "refused"]
    windows: int = 0  # windows ingested from this file so far
    next_start: int = 0  # sample where the next window starts
    covered: int = 0  # samples spanned by the ingested windows ...
    digest: str = ""  # ... and their digest: appended-to and rewritten files look different
    error: str = ""


@dataclass
class _Record:
    sample_rate_hz: float | None = None  # of the recordings ingested, when the config names none
    files: dict[str, _Seen] = field(default_factory=dict)


@dataclass
class IngestReport:
    """One scan: windows taken per ingested file name, and the files refused."""

    ingested: dict[str, int] = field(default_factory=dict)
    refused: dict[str, RecordingError] = field(default_factory=dict)

    @property
    def windows(self) -> int:
        return sum(self.ingested.values())


def _digest(samples: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(samples, np.float64).tobytes(), digest_size=16).hexdigest()


class RecordingIngestor:
    """Scans `config.directory` for new or grown recordings and appends their features to
    `buffer`; `state_path` is the ingestion record. Thread-safe; meant to run off the event loop."""

    def __init__(
        self, config: RecordingsConfig, buffer: FeatureBuffer, state_path: Path, *, n_bins: int = RECORDING_FEATURES
    ) -> None:
        if config.window_samples < 2 * n_bins:
            raise ValueError(f"recordings.window_samples ({config.window_samples}) cannot fill {n_bins} feature bands")
        self.config = config
        self.buffer = buffer
        self.state_path = state_path
        self.n_bins = n_bins
        self.hop_samples = config.window_samples if config.hop_samples is None else config.hop_samples
        self._lock = threading.Lock()

    def ingest(self) -> IngestReport:
        """Scan once and ingest every new or grown file. A bad file is logged and skipped."""
        report = IngestReport()
        with self._lock:
            try:
                record = self._load()
            except RecordingError as exc:
                log.error("%s; no recordings are ingested until it is fixed or removed", exc)
                return report
            for path, size, mtime_ns in self._scan():
                previous = record.files.get(path.name)
                if previous is not None and (previous.size, previous.mtime_ns) == (size, mtime_ns):
                    continue
                try:
                    seen, features, rate = self._read(path, size, mtime_ns, previous, record.sample_rate_hz)
                except RecordingError as exc:
                    log.warning("skipping %s", exc)
                    report.refused[path.name] = exc
                    seen = _Seen(**{**asdict(previous), "status": "refused"}) if previous else _Seen(0, 0, "refused")
                    seen.size, seen.mtime_ns, seen.error = size, mtime_ns, str(exc)
                else:
                    if len(features):
                        # The file's mtime is when its newest samples, these windows, were written.
                        self.buffer.append(features, recorded_at=mtime_ns / 1e9)
                    added = seen.windows - (previous.windows if previous else 0)
                    if added:
                        report.ingested[path.name] = added
                        log.info("ingested %d windows from recording %s", added, path)
                    record.sample_rate_hz = rate
                record.files[path.name] = seen
                self._save(record)
        return report

    def _scan(self) -> list[tuple[Path, int, int]]:
        directory = self.config.directory
        try:
            paths = sorted(directory.iterdir())
        except OSError as exc:
            log.warning("cannot list the recordings directory %s: %s", directory, exc.strerror or exc)
            return []
        found = []
        for path in paths:
            if path.name.startswith(".") or path.suffix.lower() not in SUFFIXES:
                continue
            try:
                stat = path.stat()
            except OSError:  # vanished since the listing
                continue
            if path.is_file():
                found.append((path, stat.st_size, stat.st_mtime_ns))
        return found

    def _read(
        self, path: Path, size: int, mtime_ns: int, previous: _Seen | None, ingested_rate: float | None
    ) -> tuple[_Seen, np.ndarray, float]:
        signal, rate = load_recording(path, self.config.sample_rate_hz, channel=self.config.channel)
        if self.config.sample_rate_hz is None and ingested_rate is not None and not math.isclose(rate, ingested_rate):
            raise RecordingError(
                path,
                "rate_mismatch",
                f"recorded at {rate:g} Hz, but the recordings ingested so far are at {ingested_rate:g} Hz "
                "(set recordings.sample_rate_hz to choose)",
            )
        done = previous if previous is not None and previous.windows > 0 else None
        start = 0
        if done is not None:
            if len(signal) < done.covered or _digest(signal[: done.covered]) != done.digest:
                raise RecordingError(
                    path,
                    "changed",
                    f"changed after {done.windows} windows of it were ingested; not ingested again "
                    "(write new recordings under new names)",
                )
            start = done.next_start
        window, hop = self.config.window_samples, self.hop_samples
        windows = recording_windows(signal[start:], window, hop)
        if done is None and len(windows) == 0:
            raise RecordingError(path, "too_short", f"{len(signal)} samples, shorter than one window of {window}")
        seen = _Seen(size, mtime_ns, "ingested")
        if len(windows):
            seen.windows = (done.windows if done else 0) + len(windows)
            seen.next_start = start + len(windows) * hop
            seen.covered = start + (len(windows) - 1) * hop + window
            seen.digest = _digest(signal[: seen.covered])
        elif done is not None:  # touched, or grew by less than a window
            seen.windows, seen.next_start, seen.covered, seen.digest = (
                done.windows,
                done.next_start,
                done.covered,
                done.digest,
            )
        return seen, self._features(windows), rate

    def _features(self, windows: np.ndarray) -> np.ndarray:
        kept = windows[-self.buffer.capacity :]  # older ones would be evicted at once
        batches = [
            spectral_features(kept[i : i + FEATURE_BATCH], self.n_bins) for i in range(0, len(kept), FEATURE_BATCH)
        ]
        return np.concatenate(batches) if batches else np.empty((0, self.n_bins), np.float32)

    def _load(self) -> _Record:
        if not self.state_path.exists():
            return _Record()
        try:
            raw = json.loads(self.state_path.read_text())
            files = {str(name): _Seen(**entry) for name, entry in raw["files"].items()}
            rate = raw.get("sample_rate_hz")
            return _Record(None if rate is None else float(rate), files)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RecordingError(
                self.state_path,
                "unreadable",
                f"ingestion record is unreadable ({exc}); delete it to ingest every recording again",
            ) from exc

    def _save(self, record: _Record) -> None:
        write_atomically(self.state_path, json.dumps(asdict(record), indent=1, sort_keys=True).encode(), durable=False)
