"""Vibration feature extraction shared by real edge nodes and the simulator: raw accelerometer
windows → log-scaled band energies. Pure numpy."""

from __future__ import annotations

import numpy as np


def spectral_features(windows: np.ndarray, n_bins: int = 64) -> np.ndarray:
    """(n, samples) raw windows → (n, n_bins) features.

    Hann-windowed FFT power, summed into `n_bins` equal-width bands from 0 Hz to Nyquist,
    log10-scaled, then centred per window: subtracting each window's mean log energy removes
    the sensor's gain, so turbines with differently calibrated accelerometers look alike.
    """
    windows = np.atleast_2d(np.asarray(windows, np.float64))
    samples = windows.shape[1]
    if samples < 2 * n_bins:
        raise ValueError(f"windows of {samples} samples cannot fill {n_bins} bins")
    spectrum = np.abs(np.fft.rfft(windows * np.hanning(samples), axis=1)) ** 2
    usable = (spectrum.shape[1] - 1) // n_bins * n_bins  # skip DC (the sensor offset) and split evenly
    bands = spectrum[:, 1 : usable + 1].reshape(len(windows), n_bins, -1).sum(axis=2)
    log_energy = np.log10(bands + 1e-12)
    features: np.ndarray = (log_energy - log_energy.mean(axis=1, keepdims=True)).astype(np.float32)
    return features


def band_of_frequency(frequency_hz: float, sample_rate_hz: float, samples: int, n_bins: int = 64) -> int:
    """The feature index a frequency lands in (for tests and for reading a feature vector)."""
    fft_bin = round(frequency_hz * samples / sample_rate_hz)
    per_band = ((samples // 2 + 1) - 1) // n_bins
    return min(max(fft_bin - 1, 0) // per_band, n_bins - 1)
