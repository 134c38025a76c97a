"""Synthetic turbine vibration for the simulator: each turbine gets its own gain, noise and
rotor-speed regime (regions differ in wind), so fleet data is non-IID. Deterministic per seed.

Signal per window: high-speed-shaft 1x and 2x harmonics at the window's shaft frequency, a gear
mesh tone at `GEAR_TEETH`× that, and broadband noise, times a per-turbine sensor gain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from learning.features import spectral_features

SAMPLE_RATE_HZ = 2048.0
WINDOW_SAMPLES = 512
GEAR_TEETH = 23


@dataclass(frozen=True)
class WindRegime:
    """Shaft frequency distribution of a region (Hz of the high-speed shaft)."""

    mean_shaft_hz: float
    spread_hz: float


# Offshore sites see steadier, stronger wind than onshore ones: faster, narrower shaft speeds.
REGIMES: tuple[WindRegime, ...] = (
    WindRegime(mean_shaft_hz=24.0, spread_hz=2.0),
    WindRegime(mean_shaft_hz=16.0, spread_hz=3.0),
    WindRegime(mean_shaft_hz=20.0, spread_hz=4.0),
)


@dataclass(frozen=True)
class TurbineProfile:
    seed: int
    regime: WindRegime
    gain: float
    noise: float


def turbine_profile(seed: int, region_index: int) -> TurbineProfile:
    rng = np.random.default_rng(seed)
    return TurbineProfile(
        seed=seed,
        regime=REGIMES[region_index % len(REGIMES)],
        gain=float(rng.uniform(0.7, 1.4)),
        noise=float(rng.uniform(0.05, 0.15)),
    )


def raw_windows(profile: TurbineProfile, count: int, *, offset: int = 0) -> np.ndarray:
    """`count` raw accelerometer windows; `offset` picks later windows of the same turbine."""
    rng = np.random.default_rng([profile.seed, offset])
    t = np.arange(WINDOW_SAMPLES) / SAMPLE_RATE_HZ
    shaft = rng.normal(profile.regime.mean_shaft_hz, profile.regime.spread_hz, size=(count, 1)).clip(5, 40)
    phase = rng.uniform(0, 2 * np.pi, size=(count, 3))
    signal = (
        1.0 * np.sin(2 * np.pi * shaft * t + phase[:, :1])
        + 0.4 * np.sin(2 * np.pi * 2 * shaft * t + phase[:, 1:2])
        + 0.3 * np.sin(2 * np.pi * GEAR_TEETH * shaft * t + phase[:, 2:3])
        + profile.noise * rng.standard_normal((count, WINDOW_SAMPLES))
    )
    return profile.gain * signal


def turbine_features(profile: TurbineProfile, count: int, *, offset: int = 0, n_bins: int = 64) -> np.ndarray:
    return spectral_features(raw_windows(profile, count, offset=offset), n_bins)
