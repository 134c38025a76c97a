"""simulate.vibration: each fault moves the spectrum where its physics says, severity scales it,
wind regimes keep the gear mesh apart, unseen regimes are unseen, and windows are deterministic,
gain-free and alias-free."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.signal import hilbert

from learning.features import band_of_frequency, spectral_features
from simulate.vibration import (
    ANTI_ALIAS_PASSBAND_HZ,
    BPFO_ORDER,
    GEAR_TEETH,
    LINE_NAMES,
    MESH_HARMONIC_RATIO,
    N_FEATURES,
    NYQUIST_HZ,
    REGIMES,
    SAMPLE_RATE_HZ,
    SHAFT_MAX_HZ,
    SHAFT_MIN_HZ,
    SITE_OFFSET_HZ,
    UNSEEN_MARGIN_HZ,
    WINDOW_SAMPLES,
    Fault,
    TurbineProfile,
    WindRegime,
    raw_windows,
    shaft_frequencies,
    spectral_lines,
    turbine_features,
    turbine_profile,
    unseen_regime,
)

OFFSHORE, ONSHORE = 0, 1
# A turbine held at one speed, so every window's lines fall in the same bands.
STEADY_24_HZ = WindRegime("steady", mean_shaft_hz=24.0, spread_hz=0.0)
STEADY_12_HZ = WindRegime("steady", mean_shaft_hz=12.0, spread_hz=0.0)


def _band(frequency_hz: float) -> int:
    return band_of_frequency(frequency_hz, SAMPLE_RATE_HZ, WINDOW_SAMPLES)


def _near(bands: list[int]) -> set[int]:
    """The bands and their neighbours (a Hann-windowed line near a band edge leaks one band)."""
    return {band + step for band in bands for step in (-1, 0, 1)}


def _change(
    profile: TurbineProfile, fault: Fault, regime: WindRegime, severity: float = 1.0, count: int = 64
) -> np.ndarray:
    """Mean feature change fault − healthy over the same windows (same speeds, phases, noise),
    minus its median: features are centred per window, so a fault that adds energy somewhere
    lowers every other band by the same small amount; the median band takes that out."""
    healthy = turbine_features(profile, count, regime=regime).mean(axis=0)
    faulty = turbine_features(profile, count, regime=regime, fault=fault, severity=severity).mean(axis=0)
    change: np.ndarray = faulty - healthy
    return change - np.median(change)


def _far_from(bands: list[int]) -> list[int]:
    return sorted(set(range(N_FEATURES)) - _near(bands))


# -- layout -------------------------------------------------------------------------------------


def test_windows_are_rows_of_1024_samples_and_features_are_64_bands() -> None:
    profile = turbine_profile(1, OFFSHORE)

    windows = raw_windows(profile, 5)
    features = turbine_features(profile, 5)

    assert windows.shape == (5, WINDOW_SAMPLES) and windows.dtype == np.float64
    assert features.shape == (5, N_FEATURES) and features.dtype == np.float32


def test_features_of_many_windows_are_the_spectral_features_of_the_raw_windows() -> None:
    profile = turbine_profile(1, ONSHORE)  # 100 windows: several synthesis chunks and a partial one

    features = turbine_features(profile, 100, offset=4, fault=Fault.GEAR_WEAR, severity=0.5)

    np.testing.assert_array_equal(
        features, spectral_features(raw_windows(profile, 100, offset=4, fault=Fault.GEAR_WEAR, severity=0.5))
    )


def test_zero_windows_give_empty_arrays() -> None:
    profile = turbine_profile(1, ONSHORE)

    assert raw_windows(profile, 0).shape == (0, WINDOW_SAMPLES)
    assert turbine_features(profile, 0).shape == (0, N_FEATURES)


def test_each_feature_band_is_10_hz_wide() -> None:
    assert [_band(f) for f in (5.0, 15.0, 25.0, 405.0, 635.0)] == [0, 1, 2, 40, 63]


def test_the_strongest_low_line_of_each_healthy_window_is_its_shaft_frequency() -> None:
    profile = turbine_profile(2, ONSHORE)
    windows = raw_windows(profile, 32, offset=3)
    frequencies = np.fft.rfftfreq(WINDOW_SAMPLES, 1 / SAMPLE_RATE_HZ)
    low = frequencies < 60

    spectrum = np.abs(np.fft.rfft(windows * np.hanning(WINDOW_SAMPLES), axis=1))[:, low]
    peaks = frequencies[low][spectrum.argmax(axis=1)]

    np.testing.assert_allclose(peaks, shaft_frequencies(profile, 32, offset=3), atol=SAMPLE_RATE_HZ / WINDOW_SAMPLES)


# -- faults ---------------------------------------------------------------------------------------


def test_gear_wear_rises_most_in_the_bands_of_the_mesh_sidebands() -> None:
    profile = turbine_profile(3, OFFSHORE)
    sidebands = [_band((GEAR_TEETH + k) * 24.0) for k in (-2, -1, 1, 2)]

    change = _change(profile, Fault.GEAR_WEAR, STEADY_24_HZ)

    assert set(np.argsort(change)[-4:]) == set(sidebands)
    assert change[sidebands].min() > 1.0
    assert np.abs(change[_far_from(sidebands)]).max() < 0.05


def test_gear_wear_raises_the_second_mesh_harmonic_where_the_sensor_passes_it() -> None:
    profile = turbine_profile(3, ONSHORE)
    second_mesh = _band(2 * GEAR_TEETH * 12.0)  # 408 Hz, inside the passband

    change = _change(profile, Fault.GEAR_WEAR, STEADY_12_HZ)

    assert change[second_mesh] > 0.3


def test_a_bearing_fault_rises_most_at_harmonics_of_bpfo() -> None:
    profile = turbine_profile(4, OFFSHORE)
    bpfo = BPFO_ORDER * 24.0  # 86.4 Hz
    harmonics = [_band(k * bpfo) for k in range(1, int(NYQUIST_HZ // bpfo) + 1)]

    change = _change(profile, Fault.BEARING_OUTER_RACE, STEADY_24_HZ)

    assert set(np.argsort(change)[-len(harmonics) :]) == set(harmonics)
    assert change[harmonics].min() > 0.3
    assert np.abs(change[_far_from(harmonics)]).max() < 0.05


def test_bearing_impacts_ring_the_resonance_most_at_the_harmonic_nearest_it() -> None:
    bpfo = BPFO_ORDER * 24.0
    # Resonance at the 5th harmonic (432 Hz), which has no direct line: only the impacts reach it.
    profile = dataclasses.replace(turbine_profile(4, OFFSHORE), resonance_hz=5 * bpfo, resonance_q=10.0)
    harmonics = {k: _band(k * bpfo) for k in range(1, 8)}

    change = _change(profile, Fault.BEARING_OUTER_RACE, STEADY_24_HZ)

    assert max(harmonics, key=lambda k: change[harmonics[k]]) == 5


def test_the_envelope_of_the_resonance_band_repeats_at_bpfo_under_a_bearing_fault() -> None:
    profile = dataclasses.replace(turbine_profile(5, OFFSHORE), resonance_hz=200.0, resonance_q=8.0)
    bpfo = BPFO_ORDER * 24.0
    frequencies = np.fft.rfftfreq(WINDOW_SAMPLES, 1 / SAMPLE_RATE_HZ)
    # Demodulate a band that spans two BPFO harmonics around the resonance.
    passband = np.abs(frequencies - profile.resonance_hz) < 1.2 * bpfo

    def envelope_power_at_bpfo(windows: np.ndarray) -> float:
        narrow = np.fft.irfft(np.where(passband, np.fft.rfft(windows, axis=1), 0), n=WINDOW_SAMPLES, axis=1)
        envelope = np.abs(hilbert(narrow, axis=1))
        envelope -= envelope.mean(axis=1, keepdims=True)
        power = np.abs(np.fft.rfft(envelope * np.hanning(WINDOW_SAMPLES), axis=1)).mean(axis=0) ** 2
        return float(power[np.argmin(np.abs(frequencies - bpfo))])

    healthy = envelope_power_at_bpfo(raw_windows(profile, 32, regime=STEADY_24_HZ))
    faulty = envelope_power_at_bpfo(raw_windows(profile, 32, regime=STEADY_24_HZ, fault=Fault.BEARING_OUTER_RACE))

    assert faulty > 10 * healthy


def test_imbalance_rises_only_the_1x_band() -> None:
    profile = turbine_profile(6, OFFSHORE)
    one_x = _band(24.0)

    change = _change(profile, Fault.IMBALANCE, STEADY_24_HZ)

    assert int(change.argmax()) == one_x
    assert change[one_x] == pytest.approx(np.log10(5.0**2), abs=0.05)  # ×5 amplitude at severity 1
    assert np.abs(change[_far_from([one_x])]).max() < 0.05


@pytest.mark.parametrize("fault", list(Fault))
def test_no_fault_line_is_louder_than_the_healthy_1x(fault: Fault) -> None:
    profile = turbine_profile(7, OFFSHORE)
    shaft = np.linspace(SHAFT_MIN_HZ, SHAFT_MAX_HZ, 50)
    _, healthy = spectral_lines(profile, shaft)

    _, faulty = spectral_lines(profile, shaft, fault=fault)

    added = np.delete(faulty - healthy, LINE_NAMES.index("1x"), axis=1)
    assert added.max() < healthy[:, LINE_NAMES.index("1x")].min()


# -- severity -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", list(Fault))
def test_severity_zero_is_the_healthy_window(fault: Fault) -> None:
    profile = turbine_profile(8, ONSHORE)

    np.testing.assert_array_equal(raw_windows(profile, 16, fault=fault, severity=0.0), raw_windows(profile, 16))


@pytest.mark.parametrize(
    ("fault", "lines"),
    [
        (Fault.GEAR_WEAR, [(GEAR_TEETH + k) * 24.0 for k in (-2, -1, 1, 2)]),
        (Fault.BEARING_OUTER_RACE, [k * BPFO_ORDER * 24.0 for k in range(1, 5)]),
        (Fault.IMBALANCE, [24.0]),
    ],
)
def test_the_fault_bands_rise_with_severity(fault: Fault, lines: list[float]) -> None:
    profile = turbine_profile(9, OFFSHORE)
    bands = [_band(f) for f in lines]

    rises = [_change(profile, fault, STEADY_24_HZ, severity)[bands].mean() for severity in (0.25, 0.5, 1.0, 2.0)]

    assert np.all(np.diff(rises) > 0)


def test_a_negative_severity_is_refused() -> None:
    with pytest.raises(ValueError, match="severity"):
        raw_windows(turbine_profile(1, 0), 2, fault=Fault.IMBALANCE, severity=-0.5)


# -- regimes --------------------------------------------------------------------------------------


def _mesh_bands(profiles: list[TurbineProfile], count: int = 256, regime: WindRegime | None = None) -> set[int]:
    shaft = np.concatenate([shaft_frequencies(p, count, regime=regime) for p in profiles])
    return {_band(GEAR_TEETH * f) for f in shaft}


def test_offshore_and_onshore_turbines_never_share_a_mesh_band() -> None:
    offshore = [turbine_profile(seed, OFFSHORE) for seed in range(40)]
    onshore = [turbine_profile(seed, ONSHORE) for seed in range(40, 80)]

    assert _mesh_bands(offshore).isdisjoint(_mesh_bands(onshore))


def test_turbines_of_one_region_run_around_their_own_site_speed() -> None:
    profiles = [turbine_profile(seed, ONSHORE) for seed in range(20)]

    means = np.array([shaft_frequencies(p, 512).mean() for p in profiles])

    np.testing.assert_allclose(means, [p.mean_shaft_hz for p in profiles], atol=0.2)
    assert np.ptp(means) > SITE_OFFSET_HZ  # non-IID: the site offsets spread them
    assert np.all(np.abs(means - REGIMES[ONSHORE].mean_shaft_hz) < SITE_OFFSET_HZ + 0.2)


def test_an_onshore_turbine_in_its_unseen_regime_puts_the_mesh_in_bands_its_training_never_has() -> None:
    profile = turbine_profile(10, ONSHORE)

    unseen = unseen_regime(profile)

    assert unseen.name == "storm"
    assert _mesh_bands([profile], 1024).isdisjoint(_mesh_bands([profile], 1024, unseen))


def test_every_storm_window_has_more_energy_in_its_mesh_band_than_any_training_window_there() -> None:
    profile = turbine_profile(10, ONSHORE)
    storm = unseen_regime(profile)
    training = turbine_features(profile, 256)

    unseen = turbine_features(profile, 64, offset=1, regime=storm)

    mesh_bands = [_band(GEAR_TEETH * f) for f in shaft_frequencies(profile, 64, offset=1, regime=storm)]
    assert np.all(unseen[np.arange(64), mesh_bands] > training[:, mesh_bands].max(axis=0) + 0.5)


def test_the_storm_of_an_onshore_turbine_is_normal_offshore_wind() -> None:
    storm = unseen_regime(turbine_profile(11, ONSHORE))

    assert (storm.mean_shaft_hz, storm.spread_hz) == (REGIMES[OFFSHORE].mean_shaft_hz, REGIMES[OFFSHORE].spread_hz)


def test_an_offshore_turbine_meets_a_calm_spell_of_onshore_speeds() -> None:
    calm = unseen_regime(turbine_profile(12, OFFSHORE))

    assert calm.name == "calm"
    assert (calm.mean_shaft_hz, calm.spread_hz) == (REGIMES[ONSHORE].mean_shaft_hz, REGIMES[ONSHORE].spread_hz)


@pytest.mark.parametrize("region", range(len(REGIMES)))
def test_unseen_speeds_stay_a_margin_away_from_every_speed_the_turbine_trains_on(region: int) -> None:
    for seed in range(30):
        profile = turbine_profile(seed, region)
        own = shaft_frequencies(profile, 512)

        unseen = shaft_frequencies(profile, 512, offset=1, regime=unseen_regime(profile))

        gap = np.abs(unseen[:, None] - own[None, :]).min()
        assert gap >= UNSEEN_MARGIN_HZ - 1e-9


def test_a_regime_override_changes_only_the_speeds() -> None:
    profile = turbine_profile(13, ONSHORE)

    own = shaft_frequencies(profile, 64)
    stormy = shaft_frequencies(profile, 64, regime=REGIMES[OFFSHORE])

    # Same draws, other distribution: the speeds map one to one.
    np.testing.assert_allclose(
        (own - profile.mean_shaft_hz) / profile.regime.spread_hz,
        (stormy - REGIMES[OFFSHORE].mean_shaft_hz) / REGIMES[OFFSHORE].spread_hz,
    )


# -- determinism and gain -------------------------------------------------------------------------


def test_turbine_profiles_are_deterministic_in_the_seed() -> None:
    assert turbine_profile(14, OFFSHORE) == turbine_profile(14, OFFSHORE)
    assert turbine_profile(14, OFFSHORE) != turbine_profile(15, OFFSHORE)


def test_the_same_arguments_give_the_same_windows() -> None:
    profile = turbine_profile(16, ONSHORE)

    first = raw_windows(profile, 8, offset=2, fault=Fault.BEARING_OUTER_RACE, severity=0.7, regime=STEADY_12_HZ)
    again = raw_windows(profile, 8, offset=2, fault=Fault.BEARING_OUTER_RACE, severity=0.7, regime=STEADY_12_HZ)

    np.testing.assert_array_equal(first, again)


def test_other_offsets_give_independent_windows() -> None:
    profile = turbine_profile(17, OFFSHORE)

    training, evaluation = raw_windows(profile, 8, offset=0), raw_windows(profile, 8, offset=1)

    assert not np.any(np.all(np.isclose(training[:, None], evaluation[None, :]), axis=2))
    assert not np.any(np.isin(shaft_frequencies(profile, 8, offset=0), shaft_frequencies(profile, 8, offset=1)))


def test_features_do_not_depend_on_the_sensor_gain() -> None:
    profile = turbine_profile(18, ONSHORE)
    louder = dataclasses.replace(profile, gain=profile.gain * 3.7)

    np.testing.assert_allclose(
        turbine_features(louder, 16, fault=Fault.BEARING_OUTER_RACE),
        turbine_features(profile, 16, fault=Fault.BEARING_OUTER_RACE),
        atol=1e-4,
    )


# -- limits ---------------------------------------------------------------------------------------


def test_shaft_speeds_are_clipped_to_the_model_range() -> None:
    wild = WindRegime("hurricane and doldrums", mean_shaft_hz=20.0, spread_hz=40.0)

    shaft = shaft_frequencies(turbine_profile(19, OFFSHORE), 2000, regime=wild)

    assert shaft.min() == SHAFT_MIN_HZ and shaft.max() == SHAFT_MAX_HZ


@pytest.mark.parametrize("fault", [None, *Fault])
def test_no_line_reaches_nyquist_at_any_speed(fault: Fault | None) -> None:
    shaft = np.linspace(SHAFT_MIN_HZ, SHAFT_MAX_HZ, 500)

    frequencies, amplitudes = spectral_lines(turbine_profile(20, ONSHORE), shaft, fault=fault, severity=2.0)

    assert np.all(amplitudes[frequencies >= NYQUIST_HZ] == 0)


def test_every_line_of_interest_is_inside_the_anti_alias_passband_at_any_speed() -> None:
    shaft = np.linspace(SHAFT_MIN_HZ, SHAFT_MAX_HZ, 500)
    of_interest = [i for i, name in enumerate(LINE_NAMES) if name != "2 mesh"]  # the healthy 2·mesh may leave

    frequencies, _ = spectral_lines(turbine_profile(20, ONSHORE), shaft)

    assert frequencies[:, of_interest].max() < ANTI_ALIAS_PASSBAND_HZ


def test_a_line_above_the_passband_is_attenuated_not_aliased() -> None:
    profile = turbine_profile(21, OFFSHORE)
    second, mesh = LINE_NAMES.index("2 mesh"), LINE_NAMES.index("mesh")

    frequencies, amplitudes = spectral_lines(profile, np.array([12.0, 17.5, 24.0]))

    assert (
        frequencies[0, second] < ANTI_ALIAS_PASSBAND_HZ < frequencies[1, second] < NYQUIST_HZ < frequencies[2, second]
    )
    unfiltered = MESH_HARMONIC_RATIO * amplitudes[:, mesh]
    assert amplitudes[0, second] == pytest.approx(unfiltered[0])
    assert 0 < amplitudes[1, second] < unfiltered[1]
    assert amplitudes[2, second] == 0
