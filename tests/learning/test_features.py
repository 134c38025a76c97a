"""learning.features and the simulator's vibration: a tone's energy lands in the band that
`band_of_frequency` names, features ignore the sensor's gain, and regions differ in shaft speed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learning.features import band_of_frequency, spectral_features
from simulate.vibration import (
    REGIMES,
    SAMPLE_RATE_HZ,
    WINDOW_SAMPLES,
    raw_windows,
    turbine_features,
    turbine_profile,
)

# (sample rate Hz, samples per window, bins)
LAYOUTS = [(SAMPLE_RATE_HZ, WINDOW_SAMPLES, 64), (1000.0, 1024, 32), (4096.0, 600, 64)]


def _tone(frequency_hz: float, sample_rate_hz: float, samples: int, phase: float = 0.3) -> np.ndarray:
    t = np.arange(samples) / sample_rate_hz
    return np.sin(2 * np.pi * frequency_hz * t + phase)


@settings(max_examples=100)
@given(
    layout=st.sampled_from(LAYOUTS),
    position=st.floats(0.0, 1.0),
    phase=st.floats(0.0, 2 * np.pi),
)
def test_a_pure_tone_puts_its_largest_feature_in_its_band(
    layout: tuple[float, int, int], position: float, phase: float
) -> None:
    sample_rate, samples, n_bins = layout
    per_band = (samples // 2) // n_bins
    # Frequencies from the second FFT bin to the top of the last complete band.
    lowest, highest = 2 * sample_rate / samples, (n_bins * per_band - 1) * sample_rate / samples
    frequency = lowest + position * (highest - lowest)

    features = spectral_features(_tone(frequency, sample_rate, samples, phase), n_bins)

    assert int(features.argmax()) == band_of_frequency(frequency, sample_rate, samples, n_bins)


def test_band_of_frequency_of_the_default_layout() -> None:
    # 1024 samples at 1280 Hz: 1.25 Hz FFT bins, 8 bins (10 Hz) per band, DC left out.
    assert band_of_frequency(1.25, SAMPLE_RATE_HZ, WINDOW_SAMPLES) == 0
    assert band_of_frequency(10.0, SAMPLE_RATE_HZ, WINDOW_SAMPLES) == 0
    assert band_of_frequency(11.25, SAMPLE_RATE_HZ, WINDOW_SAMPLES) == 1
    assert band_of_frequency(640.0, SAMPLE_RATE_HZ, WINDOW_SAMPLES) == 63


def test_features_are_unchanged_when_the_signal_is_scaled_by_a_gain() -> None:
    windows = raw_windows(turbine_profile(seed=9, region_index=1), 8)

    features = spectral_features(windows)
    louder = spectral_features(3.0 * windows)

    assert np.abs(louder - features).max() <= 1e-4


def test_features_are_centred_per_window() -> None:
    features = spectral_features(raw_windows(turbine_profile(seed=2, region_index=0), 5))

    np.testing.assert_allclose(features.mean(axis=1), 0.0, atol=1e-5)


def test_features_have_one_row_per_window_and_one_column_per_band() -> None:
    windows = np.random.default_rng(0).standard_normal((5, 512))

    assert spectral_features(windows).shape == (5, 64)
    assert spectral_features(windows, n_bins=16).shape == (5, 16)
    assert spectral_features(windows).dtype == np.float32


def test_a_single_window_is_treated_as_a_batch_of_one() -> None:
    window = np.random.default_rng(0).standard_normal(512)

    features = spectral_features(window)

    assert features.shape == (1, 64)
    np.testing.assert_array_equal(features[0], spectral_features(window[None, :])[0])


def test_windows_too_short_for_the_bins_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot fill"):
        spectral_features(np.zeros((2, 127)), n_bins=64)


# -- simulated vibration -------------------------------------------------------------------


def _shaft_peak_hz(region_index: int) -> float:
    """Frequency of the strongest low-frequency line of a region's average spectrum."""
    spectra = [
        np.abs(np.fft.rfft(raw_windows(turbine_profile(seed, region_index), 32), axis=1)) ** 2 for seed in range(4)
    ]
    mean_spectrum = np.concatenate(spectra).mean(axis=0)
    frequencies = np.fft.rfftfreq(WINDOW_SAMPLES, 1 / SAMPLE_RATE_HZ)
    low = (frequencies > 0) & (frequencies < 60)
    return float(frequencies[low][mean_spectrum[low].argmax()])


def test_each_region_peaks_at_its_own_shaft_frequency() -> None:
    bin_width = SAMPLE_RATE_HZ / WINDOW_SAMPLES

    peaks = [_shaft_peak_hz(index) for index in range(len(REGIMES))]

    for peak, regime in zip(peaks, REGIMES, strict=True):
        assert abs(peak - regime.mean_shaft_hz) <= bin_width
    assert len(set(peaks)) == len(REGIMES)


def test_turbine_profiles_are_deterministic_per_seed() -> None:
    assert turbine_profile(11, 0) == turbine_profile(11, 0)
    assert turbine_profile(11, 0) != turbine_profile(12, 0)


def test_regions_cycle_through_the_wind_regimes() -> None:
    assert turbine_profile(1, len(REGIMES) + 1).regime == REGIMES[1]


def test_raw_windows_repeat_for_an_offset_and_differ_across_offsets() -> None:
    profile = turbine_profile(4, 0)

    first, again, later = raw_windows(profile, 3), raw_windows(profile, 3), raw_windows(profile, 3, offset=1)

    assert first.shape == (3, WINDOW_SAMPLES)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, later)


def test_turbine_features_are_spectral_features_of_the_raw_windows() -> None:
    profile = turbine_profile(6, 2)

    features = turbine_features(profile, 4, offset=2, n_bins=32)

    np.testing.assert_array_equal(features, spectral_features(raw_windows(profile, 4, offset=2), 32))
