"""Synthetic gearbox vibration of wind turbines: physically meaningful lines at the right
frequencies, fast enough for a 10,000-turbine fleet, deterministic per turbine and window block.

Sensor chain
------------
One accelerometer on the gearbox at the high-speed (generator) shaft, sampled at
`SAMPLE_RATE_HZ` = 1280 Hz in windows of `WINDOW_SAMPLES` = 1024 samples (0.8 s, 1.25 Hz FFT
bins). `learning.features.spectral_features` — what the edge node runs on real signals — sums
the FFT power into `N_FEATURES` = 64 bands of `BAND_WIDTH_HZ` = 10 Hz from DC to the 640 Hz
Nyquist frequency, so a line at F Hz lands in band (round(F/1.25) − 1) // 8. The acquisition's
anti-alias filter passes up to `ANTI_ALIAS_PASSBAND_HZ` = 0.45·fs = 576 Hz; a tonal line above
it is tapered out (raised cosine, zero at Nyquist) rather than folded back as an alias. Every
line of interest stays below 576 Hz at every speed the model produces (the constants below are
chosen for it); only the healthy second mesh harmonic leaves the passband, at high speed,
exactly as it would on a real sensor.

Operation
---------
f is the high-speed-shaft frequency in Hz, constant within a window and drawn per window from
the turbine's operating distribution: f = mean + spread·(2B − 1), B ~ Beta(2, 2) — a smooth bump
with hard limits, because the controller holds the generator between its minimum and rated
speed; without tails the wind regimes below stay separable. A turbine's mean is its region's
`WindRegime.mean_shaft_hz` plus its own site offset (uniform ±`SITE_OFFSET_HZ` = 1.5 Hz):
turbines of one region are alike but not identical (non-IID). f is clipped to
[`SHAFT_MIN_HZ`, `SHAFT_MAX_HZ`] = [8, 30] Hz; the built-in regimes only reach [10, 28] Hz.
Below rated, aerodynamic torque grows with wind² and speed with wind, so
load = (f / `RATED_SHAFT_HZ`)², with rated f = 25 Hz.

Healthy window (amplitudes in g before the sensor gain; every line gets a random phase):

    1x        (1 + residual_imbalance) · sin(2π f t)          residual_imbalance ∈ [0, 0.2]
    2x        misalignment · sin(2π 2f t)                     misalignment ∈ [0.3, 0.5]
    mesh      M · load · sin(2π Z f t)                        M = 1.0 · mesh_strength ∈ [0.8, 1.25]
    2·mesh    0.25 · M · load · sin(2π 2Z f t)                only below the anti-alias limit
    floor     Gaussian noise, rms noise · (0.3 + 0.7·load)    noise ∈ [0.03, 0.06]; PSD shaped
              by the structural resonance: ∝ 1 + level·|H(f)|²
    × gain    sensor sensitivity ∈ [0.5, 2]                   the features are blind to it

Z = `GEAR_TEETH` = 17 teeth on the high-speed pinion: prime (a hunting-tooth count), so no
bearing harmonic coincides with the mesh, and the highest gear line of interest, the upper
second sideband (Z + 2)·f, is 570 Hz at the 30 Hz limit — inside the passband. The resonance is
a second-order band-pass H(f) = 1 / (1 + jQ(f/f_r − f_r/f)) (peak 1 at f_r), with fixed
f_r ∈ [150, 350] Hz, Q ∈ [6, 12] and peak-to-floor power `level` ∈ [6, 20] per turbine: a hump
of broadband energy f_r/Q = 12–60 Hz wide, which every impact in the machine rings.

Wind regimes (`REGIMES`; region i gets `REGIMES[i % 3]`)
--------------------------------------------------------
    0 offshore   mean 24 Hz, spread 2.5  → f ∈ [20, 28] Hz with site offsets, mesh 340–476 Hz
    1 onshore    mean 14 Hz, spread 2.5  → f ∈ [10, 18] Hz,                   mesh 170–306 Hz
    2 coastal    mean 19 Hz, spread 2.0  → f ∈ [15.5, 22.5] Hz

Offshore and onshore turbines never share a speed, and their mesh ranges are 34 Hz (3 bands)
apart. `unseen_regime` gives a turbine speeds that are normal for the fleet but that it never
meets at its site: a storm (the offshore speeds, 21.5–26.5 Hz) for a turbine whose mean is below
the fleet's middle (19 Hz), a calm spell (the onshore speeds, 11.5–16.5 Hz) above it — for
coastal turbines trimmed to at least `UNSEEN_MARGIN_HZ` = 1 Hz beyond their own range, so the
mesh lands at least 17 Hz (more than a band) away from anything the turbine trained on.

Faults (`Fault`; amplitudes linear in severity s ≥ 0; s = 0 is bit for bit the healthy window)
----------------------------------------------------------------------------------------------
GEAR_WEAR           Worn pinion teeth change the mesh stiffness once per pinion revolution,
                    amplitude-modulating the mesh: sidebands at Z·f ± k·f, k = 1, 2, amplitudes
                    s·(0.25, 0.12)·M·load, one and two shaft orders (1–3 bands) either side of
                    the mesh. Worn flanks also make the transmission error less sinusoidal: the
                    second mesh harmonic grows ×(1 + s) where the sensor sees it (f < 17 Hz,
                    i.e. onshore).
BEARING_OUTER_RACE  Each rolling element strikes a spall on the fixed outer race:
                    BPFO = (n/2)·f·(1 − (d/D)·cos θ) = 4.5·f·0.8 = 3.6·f for n = 9 balls,
                    d/D = 0.2, θ = 0. Two paths to the sensor: (1) the impact force below the
                    resonance, lines at k·BPFO, k = 1..4, of s·0.04/k g (the 4th is 432 Hz at
                    30 Hz); (2) each impact rings the structural resonance — an impulse train
                    of period 1/BPFO and height s·2.0 through H, ringing at
                    ≈ 2π·f_r/(Q·fs)·2 ≈ 0.12–0.6 g — so the bands under the resonance hump
                    fill with BPFO harmonics, and the envelope of a band spanning a few of them
                    repeats at BPFO: the classic envelope-analysis signature. Slip (1–2 %) is
                    ignored: it moves the lines by less than a band.
IMBALANCE           Mass imbalance force m·e·ω² is synchronous with the shaft: the 1x line
                    grows ×(1 + 4s), ×5 at s = 1, and nothing else changes.

At s = 1 each fault raises a few bands by 0.5–1.4 decades of band energy, against a window-to-
window scatter of about 0.2 decade in noise-only bands; no fault line is louder than the 1x
line of a healthy machine (the imbalanced 1x excepted: that line is the fault). Imbalance gets
×5 rather than ×3 because it moves one band only: an autoencoder scoring the mean squared error
over 64 bands needs about 1.4 decades in one band to stand above the scatter of the other 63.

Synthesis (why it is fast)
--------------------------
No Python loop over windows. The floor and the impacts are built as spectra and inverted with
one `irfft`: a complex Gaussian per bin (Box–Muller, float32) times the turbine's noise shape,
plus, for a bearing fault, the closed-form DFT of the periodic impulse train (a Dirichlet
kernel) times H. Both are circular over the window, which at worst misplaces the ringing of one
impact at the window start. Tones are exact sinusoids from a batched matrix product: with
n = 32a + b, sin(ωn + φ) = sin(32ωa)·cos(ωb + φ) + cos(32ωa)·sin(ωb + φ), so a line costs 64 sines
per window instead of 1024. Angles are reduced to one turn in float64, then the trigonometry is
float32 (several times faster here). Windows are made `_CHUNK` = 32 at a time, so no array is
larger than 256 KiB and all stay in a core's L2 cache: one pass over a turbine's 256 windows
(2 MiB arrays) measured twice as slow on the 2-core development machine. Windows come out
float64, which `spectral_features` works in (a float32 input costs it a converted copy).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from learning.features import spectral_features

# -- sensor chain -----------------------------------------------------------------------------

SAMPLE_RATE_HZ = 1280.0
WINDOW_SAMPLES = 1024
N_FEATURES = 64
NYQUIST_HZ = SAMPLE_RATE_HZ / 2
BAND_WIDTH_HZ = NYQUIST_HZ / N_FEATURES  # 10 Hz: what one feature covers
# Sigma-delta converters pass up to about 0.45·fs flat; lines above are tapered out, not aliased.
ANTI_ALIAS_PASSBAND_HZ = 0.45 * SAMPLE_RATE_HZ

# -- machine ----------------------------------------------------------------------------------

SHAFT_MIN_HZ = 8.0
SHAFT_MAX_HZ = 30.0  # (GEAR_TEETH + 2) · 30 Hz = 570 Hz < ANTI_ALIAS_PASSBAND_HZ
RATED_SHAFT_HZ = 25.0  # load = (f / rated)²: mesh and floor grow with it
GEAR_TEETH = 17  # prime: a hunting-tooth pinion; mesh = 17·f ≤ 510 Hz
SIDEBAND_ORDERS = (1, 2)
BEARING_BALLS = 9
BEARING_BALL_TO_PITCH = 0.2  # d/D
BEARING_CONTACT_ANGLE_RAD = 0.0
BPFO_ORDER = BEARING_BALLS / 2 * (1 - BEARING_BALL_TO_PITCH * math.cos(BEARING_CONTACT_ANGLE_RAD))  # 3.6
BPFO_HARMONICS = 4

# Amplitudes in g before the sensor gain. Fault amplitudes are at severity 1 and scale linearly.
MESH_AMPLITUDE = 1.0  # gear mesh at rated load, × the turbine's mesh_strength
MESH_HARMONIC_RATIO = 0.25  # healthy 2·mesh relative to mesh
FLOOR_IDLE_SHARE = 0.3  # broadband floor rms × (0.3 + 0.7·load): turbulence and friction grow with load
SIDEBAND_RATIOS = (0.25, 0.12)  # gear wear: sidebands mesh ± k·f, k = 1, 2, relative to mesh
MESH_HARMONIC_WEAR_GAIN = 1.0  # gear wear: 2·mesh × (1 + severity)
BPFO_LINE_AMPLITUDE = 0.04  # bearing, direct path: k·BPFO lines of 0.04/k g
IMPACT_AMPLITUDE = 2.0  # bearing, resonance path: impulse height per impact (rings at ≈ 0.12–0.6 g)
IMBALANCE_GAIN = 4.0  # imbalance: 1x × (1 + 4·severity), ×5 at severity 1

SITE_OFFSET_HZ = 1.5
UNSEEN_MARGIN_HZ = 1.0  # × GEAR_TEETH = 17 Hz of mesh: more than one feature band

# The tones of a window, in the column order of `spectral_lines`.
LINE_NAMES: tuple[str, ...] = (
    "1x",
    "2x",
    "mesh",
    "2 mesh",
    *(f"mesh-{k}x" for k in SIDEBAND_ORDERS[::-1]),
    *(f"mesh+{k}x" for k in SIDEBAND_ORDERS),
    *(f"{k} bpfo" for k in range(1, BPFO_HARMONICS + 1)),
)
# Multiples of f of each line, same order.
LINE_ORDERS = np.array(
    [
        1.0,
        2.0,
        GEAR_TEETH,
        2.0 * GEAR_TEETH,
        *(GEAR_TEETH - k for k in SIDEBAND_ORDERS[::-1]),
        *(GEAR_TEETH + k for k in SIDEBAND_ORDERS),
        *(k * BPFO_ORDER for k in range(1, BPFO_HARMONICS + 1)),
    ]
)
_SIDEBANDS = slice(4, 4 + 2 * len(SIDEBAND_ORDERS))
_BPFO_LINES = slice(_SIDEBANDS.stop, _SIDEBANDS.stop + BPFO_HARMONICS)
# Sideband amplitude ratios in column order: mesh−2x, mesh−1x, mesh+1x, mesh+2x.
_SIDEBAND_RATIO_COLUMNS = np.array([*SIDEBAND_RATIOS[::-1], *SIDEBAND_RATIOS])

_BLOCK = 32  # n = 32a + b: tones as a (32 × lines) @ (lines × 32) product per window
_CHUNK = 32  # windows synthesised at a time: (32, 1024) float64 is 256 KiB, inside a core's L2
_FREQUENCIES = np.fft.rfftfreq(WINDOW_SAMPLES, 1 / SAMPLE_RATE_HZ)


class Fault(StrEnum):
    GEAR_WEAR = "gear_wear"
    BEARING_OUTER_RACE = "bearing_outer_race"
    IMBALANCE = "imbalance"


@dataclass(frozen=True)
class WindRegime:
    """Shaft speeds of a wind climate: f = mean + spread·(2B − 1), B ~ Beta(2, 2), so
    `spread_hz` is the half-width of a bounded distribution (standard deviation spread/√5)."""

    name: str
    mean_shaft_hz: float
    spread_hz: float

    def __post_init__(self) -> None:
        if not self.spread_hz >= 0:
            raise ValueError(f"WindRegime {self.name!r}: spread_hz must be ≥ 0, got {self.spread_hz}")

    @property
    def low_hz(self) -> float:
        return self.mean_shaft_hz - self.spread_hz

    @property
    def high_hz(self) -> float:
        return self.mean_shaft_hz + self.spread_hz


# Offshore wind is strong and steady, onshore weaker; coastal sites sit in between. Offshore
# and onshore are 10 Hz apart so that, with spreads and site offsets, their speed ranges stay
# 2 Hz apart (34 Hz of gear mesh).
REGIMES: tuple[WindRegime, ...] = (
    WindRegime("offshore", mean_shaft_hz=24.0, spread_hz=2.5),
    WindRegime("onshore", mean_shaft_hz=14.0, spread_hz=2.5),
    WindRegime("coastal", mean_shaft_hz=19.0, spread_hz=2.0),
)
_HIGH_WIND, _LOW_WIND = REGIMES[0], REGIMES[1]


@dataclass(frozen=True)
class TurbineProfile:
    """Everything fixed about one turbine and its site; windows are drawn from it."""

    seed: int
    regime: WindRegime  # its region's wind
    site_offset_hz: float  # its own site's shift of the regime's mean speed
    gain: float  # accelerometer sensitivity (features ignore it)
    noise: float  # broadband floor, rms g before the gain
    residual_imbalance: float  # 1x amplitude is 1 + this
    misalignment: float  # 2x amplitude
    mesh_strength: float  # scales the gear mesh (manufacturing, lubrication)
    resonance_hz: float
    resonance_q: float
    resonance_level: float  # peak power of the resonance hump over the white floor

    @property
    def mean_shaft_hz(self) -> float:
        return self.regime.mean_shaft_hz + self.site_offset_hz

    @property
    def own_regime(self) -> WindRegime:
        """The speeds this turbine actually runs at: its region's, shifted by its site."""
        return WindRegime(f"{self.regime.name} site", self.mean_shaft_hz, self.regime.spread_hz)


def turbine_profile(seed: int, region_index: int) -> TurbineProfile:
    """A turbine of region `region_index` (regimes cycle), deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    return TurbineProfile(
        seed=seed,
        regime=REGIMES[region_index % len(REGIMES)],
        site_offset_hz=float(rng.uniform(-SITE_OFFSET_HZ, SITE_OFFSET_HZ)),
        gain=float(rng.uniform(0.5, 2.0)),
        noise=float(rng.uniform(0.03, 0.06)),
        residual_imbalance=float(rng.uniform(0.0, 0.2)),
        misalignment=float(rng.uniform(0.3, 0.5)),
        mesh_strength=float(rng.uniform(0.8, 1.25)),
        resonance_hz=float(rng.uniform(150.0, 350.0)),
        resonance_q=float(rng.uniform(6.0, 12.0)),
        resonance_level=float(10 ** rng.uniform(np.log10(6.0), np.log10(20.0))),
    )


def unseen_regime(profile: TurbineProfile) -> WindRegime:
    """Normal fleet speeds this turbine never meets at its site: a storm (offshore speeds) for a
    turbine below the fleet's middle speed, a calm spell (onshore speeds) above it; kept at
    least `UNSEEN_MARGIN_HZ` clear of the turbine's own speed range."""
    own = profile.own_regime
    if profile.mean_shaft_hz < (_HIGH_WIND.mean_shaft_hz + _LOW_WIND.mean_shaft_hz) / 2:
        name, low, high = "storm", max(_HIGH_WIND.low_hz, own.high_hz + UNSEEN_MARGIN_HZ), _HIGH_WIND.high_hz
    else:
        name, low, high = "calm", _LOW_WIND.low_hz, min(_LOW_WIND.high_hz, own.low_hz - UNSEEN_MARGIN_HZ)
    if high < low:  # not for the built-in regimes: only a custom regime could overlap this much
        raise ValueError(f"{profile.regime.name} turbine at {profile.mean_shaft_hz:.1f} Hz has no unseen regime")
    return WindRegime(name, (low + high) / 2, (high - low) / 2)


def _window_rng(profile: TurbineProfile, offset: int) -> np.random.Generator:
    if offset < 0:
        raise ValueError(f"offset must be ≥ 0, got {offset}")
    return np.random.default_rng([profile.seed, offset])


def _shaft_hz(regime: WindRegime, bump: np.ndarray) -> np.ndarray:
    return np.clip(regime.mean_shaft_hz + regime.spread_hz * (2 * bump - 1), SHAFT_MIN_HZ, SHAFT_MAX_HZ)


def shaft_frequencies(
    profile: TurbineProfile, count: int, *, offset: int = 0, regime: WindRegime | None = None
) -> np.ndarray:
    """The shaft frequency (Hz) of each window `raw_windows` gives for the same arguments."""
    # The speed draw comes first from the window stream, so it alone is enough here.
    return _shaft_hz(regime or profile.own_regime, _window_rng(profile, offset).beta(2.0, 2.0, count))


def anti_alias_gain(frequency_hz: np.ndarray) -> np.ndarray:
    """Amplitude gain of the acquisition chain: 1 up to the passband, raised-cosine to 0 at Nyquist."""
    x = np.clip((np.asarray(frequency_hz) - ANTI_ALIAS_PASSBAND_HZ) / (NYQUIST_HZ - ANTI_ALIAS_PASSBAND_HZ), 0, 1)
    gain: np.ndarray = 0.5 * (1 + np.cos(np.pi * x))
    return gain


def _check_fault(fault: Fault | None, severity: float) -> Fault | None:
    if not severity >= 0:
        raise ValueError(f"severity must be ≥ 0, got {severity}")
    return None if fault is None else Fault(fault)


def spectral_lines(
    profile: TurbineProfile, shaft_hz: np.ndarray, *, fault: Fault | None = None, severity: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (Hz) and amplitudes (g, before the sensor gain and after the anti-alias
    filter) of every tone, `(len(shaft_hz), len(LINE_NAMES))` each, columns as `LINE_NAMES`.
    Lines a window does not have (fault lines of a healthy turbine) have amplitude 0."""
    fault = _check_fault(fault, severity)
    f = np.atleast_1d(np.asarray(shaft_hz, np.float64))
    frequencies = f[:, None] * LINE_ORDERS
    load = (f / RATED_SHAFT_HZ) ** 2
    mesh = MESH_AMPLITUDE * profile.mesh_strength * load
    amplitudes = np.zeros_like(frequencies)
    amplitudes[:, 0] = 1.0 + profile.residual_imbalance
    amplitudes[:, 1] = profile.misalignment
    amplitudes[:, 2] = mesh
    amplitudes[:, 3] = MESH_HARMONIC_RATIO * mesh
    if fault is Fault.IMBALANCE:
        amplitudes[:, 0] *= 1 + IMBALANCE_GAIN * severity
    elif fault is Fault.GEAR_WEAR:
        amplitudes[:, 3] *= 1 + MESH_HARMONIC_WEAR_GAIN * severity
        amplitudes[:, _SIDEBANDS] = severity * mesh[:, None] * _SIDEBAND_RATIO_COLUMNS
    elif fault is Fault.BEARING_OUTER_RACE:
        harmonics = np.arange(1, BPFO_HARMONICS + 1)
        amplitudes[:, _BPFO_LINES] = severity * BPFO_LINE_AMPLITUDE / harmonics
    amplitudes *= anti_alias_gain(frequencies)
    return frequencies, amplitudes


def _resonance(profile: TurbineProfile) -> np.ndarray:
    """H(f) of the turbine's structural resonance at the FFT bins (a band-pass, peak 1)."""
    response = np.zeros(len(_FREQUENCIES), np.complex128)  # DC: 1/(1 − j∞) = 0
    f = _FREQUENCIES[1:] / profile.resonance_hz
    response[1:] = 1.0 / (1.0 + 1j * profile.resonance_q * (f - 1 / f))
    return response


def _power(profile: TurbineProfile) -> np.ndarray:
    """|H(f)|² at the FFT bins."""
    power: np.ndarray = np.abs(_resonance(profile)) ** 2
    return power


def _turns(turns: np.ndarray) -> np.ndarray:
    """2π·x as a float32 angle in [0, 2π): the reduction is exact in float64, so the float32
    trigonometry after it (several times faster) is accurate to ~1e-7 rad. (x − floor(x), not
    np.mod, which is an order of magnitude slower.)"""
    angle: np.ndarray = (2 * np.pi * (turns - np.floor(turns))).astype(np.float32)
    return angle


def _turns_of_pi(half_turns: np.ndarray) -> np.ndarray:
    """π·x as a float32 angle in [0, 2π)."""
    return _turns(half_turns / 2)


def _tone_factors(frequencies: np.ndarray, amplitudes: np.ndarray, phases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Σ amplitude·sin(2π·frequency·n/fs + phase) per row, factored for a batched matrix product:
    `(left @ right).reshape(count, WINDOW_SAMPLES)` is the tones, float32.

    n = 32a + b: sin(ω·32a + ωb + φ) = sin(ω·32a)·cos(ωb + φ) + cos(ω·32a)·sin(ωb + φ), so left is
    (count, 32 a, 2K) and right (count, 2K, 32 b) for K lines.
    """
    cycles = frequencies / SAMPLE_RATE_HZ  # per sample, (count, K)
    steps = np.arange(_BLOCK)
    outer = _turns(cycles[:, None, :] * (_BLOCK * steps)[None, :, None])  # (count, 32 a, K)
    inner = _turns(cycles[:, :, None] * steps + phases[:, :, None] / (2 * np.pi))  # (count, K, 32 b)
    weight = amplitudes[:, None, :].astype(np.float32)
    left = np.concatenate([weight * np.sin(outer), weight * np.cos(outer)], axis=2)
    right = np.concatenate([np.cos(inner), np.sin(inner)], axis=1)
    return left, right


def _impact_spectrum(
    profile: TurbineProfile, shaft_hz: np.ndarray, severity: float, first_impact: np.ndarray
) -> np.ndarray:
    """Spectrum (count, bins) of outer-race impacts ringing the resonance: the DFT of an impulse
    train at BPFO starting `first_impact` periods into the window, times H."""
    period = SAMPLE_RATE_HZ / (BPFO_ORDER * shaft_hz)  # samples between impacts
    start = first_impact * period
    impacts = np.ceil((WINDOW_SAMPLES - start) / period)  # how many fall in the window
    m = np.arange(len(_FREQUENCIES))
    # Σ_j exp(−2πi·m·(start + j·P)/N) = exp(−iπm(2·start + (J−1)·P)/N) · sin(πmJP/N) / sin(πmP/N).
    # Angles are reduced to half-turns in [0, 2) in float64, then the trigonometry is float32.
    half_turns = m * period[:, None] / WINDOW_SAMPLES  # πmP/N, in units of π
    phase = _turns_of_pi(-m * (2 * start + (impacts - 1) * period)[:, None] / WINDOW_SAMPLES)
    many = _turns_of_pi(impacts[:, None] * half_turns)
    one = _turns_of_pi(half_turns)
    numerator, denominator = np.sin(many), np.sin(one)
    # At a harmonic of BPFO every impact adds in phase: the ratio's limit is J·cos(Jx)/cos(x) = ±J.
    limit = impacts[:, None].astype(np.float32) * np.cos(many) / np.cos(one)
    aligned = np.abs(denominator) < 1e-4
    dirichlet = np.where(aligned, limit, numerator / np.where(aligned, 1, denominator))
    carrier = np.empty(dirichlet.shape, np.complex64)
    carrier.real, carrier.imag = np.cos(phase), np.sin(phase)
    weight = np.float32(severity * IMPACT_AMPLITUDE * profile.gain) * dirichlet
    spectrum: np.ndarray = weight * carrier * _resonance(profile).astype(np.complex64)
    return spectrum


def _noise_spectrum(rng: np.random.Generator, shape: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Complex Gaussian spectra, (len(floor), bins) complex64: Box–Muller from two uniforms per
    bin (|X|² ~ Exp(1), phase uniform), times the turbine's amplitude `shape` and each window's
    floor factor. Computed in place: the arrays here are the bulk of the memory traffic."""
    uniforms = rng.random((2, len(floor), len(_FREQUENCIES)), dtype=np.float32)
    magnitude, angle = uniforms[0], uniforms[1]
    np.subtract(np.float32(1.0), magnitude, out=magnitude)  # (0, 1]: the log stays finite
    np.log(magnitude, out=magnitude)
    np.negative(magnitude, out=magnitude)
    np.sqrt(magnitude, out=magnitude)
    magnitude *= shape
    magnitude *= floor[:, None]
    angle *= np.float32(2 * np.pi)
    spectrum = np.empty(magnitude.shape, np.complex64)
    np.cos(angle, out=spectrum.real)
    np.sin(angle, out=spectrum.imag)
    spectrum.real *= magnitude
    spectrum.imag *= magnitude
    return spectrum


def _window_chunks(
    profile: TurbineProfile,
    count: int,
    offset: int,
    fault: Fault | None,
    severity: float,
    regime: WindRegime | None,
) -> Iterator[np.ndarray]:
    """The windows of `raw_windows`, `_CHUNK` at a time (small arrays are much faster; see the
    module docstring). Per-window parameters are drawn for all windows first, then each chunk's
    noise, so the windows depend on `_CHUNK` but never on who asks for them."""
    fault = _check_fault(fault, severity)
    if count < 0:
        raise ValueError(f"count must be ≥ 0, got {count}")
    rng = _window_rng(profile, offset)
    # Every draw happens whatever the fault, in a fixed order, so a fault changes nothing but its
    # own lines: healthy and faulty windows of the same arguments are paired, noise and all.
    shaft_hz = _shaft_hz(regime or profile.own_regime, rng.beta(2.0, 2.0, count))
    phases = rng.uniform(0.0, 2 * np.pi, (count, len(LINE_NAMES)))
    first_impact = rng.random(count)
    frequencies, amplitudes = spectral_lines(profile, shaft_hz, fault=fault, severity=severity)
    present = np.any(amplitudes != 0, axis=0)  # lines no window has cost nothing
    frequencies, amplitudes, phases = frequencies[:, present], profile.gain * amplitudes[:, present], phases[:, present]
    # Floor plus resonance hump, PSD ∝ 1 + level·|H|²; √N makes the white part's rms `noise`
    # after the irfft. No DC: an accelerometer is AC-coupled and the features skip it anyway.
    shape = profile.gain * profile.noise * np.sqrt(WINDOW_SAMPLES * (1 + profile.resonance_level * _power(profile)))
    shape[0] = 0.0
    shape32 = shape.astype(np.float32)
    floor = (FLOOR_IDLE_SHARE + (1 - FLOOR_IDLE_SHARE) * (shaft_hz / RATED_SHAFT_HZ) ** 2).astype(np.float32)
    impacts = fault is Fault.BEARING_OUTER_RACE and severity > 0
    for start in range(0, count, _CHUNK):
        rows = slice(start, min(start + _CHUNK, count))
        spectrum = _noise_spectrum(rng, shape32, floor[rows])
        if impacts:
            spectrum += _impact_spectrum(profile, shaft_hz[rows], severity, first_impact[rows])
        noise = np.fft.irfft(spectrum, n=WINDOW_SAMPLES, axis=1)
        left, right = _tone_factors(frequencies[rows], amplitudes[rows], phases[rows])
        tones = np.matmul(left, right).reshape(-1, WINDOW_SAMPLES)
        # float64 out: spectral_features works in float64 and would otherwise convert a copy.
        windows: np.ndarray = np.add(noise, tones, dtype=np.float64)
        yield windows


def raw_windows(
    profile: TurbineProfile,
    count: int,
    *,
    offset: int = 0,
    fault: Fault | None = None,
    severity: float = 1.0,
    regime: WindRegime | None = None,
) -> np.ndarray:
    """`count` accelerometer windows, (count, WINDOW_SAMPLES) float64, in g × the sensor gain.

    `offset` names an independent block of the turbine's stream (training and evaluation use
    different offsets); `regime` replaces the turbine's own speeds (e.g. `unseen_regime`);
    `fault` at `severity` is added to exactly the healthy windows of the same arguments.
    """
    chunks = list(_window_chunks(profile, count, offset, fault, severity, regime))
    return np.concatenate(chunks) if chunks else np.zeros((0, WINDOW_SAMPLES))


def turbine_features(
    profile: TurbineProfile,
    count: int,
    *,
    offset: int = 0,
    fault: Fault | None = None,
    severity: float = 1.0,
    regime: WindRegime | None = None,
    n_bins: int = N_FEATURES,
) -> np.ndarray:
    """`spectral_features(raw_windows(...), n_bins)` for the same arguments, (count, n_bins)
    float32 — computed chunk by chunk (the features are per window), which is what makes a
    turbine's 256 windows cost a few milliseconds."""
    windows = _window_chunks(profile, count, offset, fault, severity, regime)
    chunks = [spectral_features(chunk, n_bins) for chunk in windows]
    # (spectral_features cannot reshape zero windows; none in, none out.)
    return np.concatenate(chunks) if chunks else np.zeros((0, n_bins), np.float32)
