"""Real recordings into an edge node's buffer: .npy and .wav files of a known tone become feature
windows through the shared `spectral_features`; the ingestion record keeps restarts from ingesting
twice; bad files are logged and skipped; the `[recordings]` section is validated by field."""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scipy.io import wavfile

from edge_node.buffer import FeatureBuffer
from edge_node.config import EdgeConfig, RecordingsConfig
from edge_node.recordings import RecordingError, RecordingIngestor, load_recording, recording_windows
from learning.features import band_of_frequency, spectral_features
from nacelle.config import ConfigError, build_config, load_config, write_config
from tests.nacelle.test_config import EDGE

RATE = 2048.0
WINDOW = 1024
TONE_HZ = 300.0


def tone(frequency_hz: float, samples: int, *, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    t = np.arange(samples) / RATE
    rng = np.random.default_rng(seed)
    return 0.5 * np.sin(2 * np.pi * frequency_hz * t + 0.3) + noise * rng.standard_normal(samples)


def ingestor(tmp_path: Path, capacity: int = 10_000, **recordings: Any) -> RecordingIngestor:
    config = RecordingsConfig(**{"directory": tmp_path / "recordings", "sample_rate_hz": RATE, **recordings})
    config.directory.mkdir(exist_ok=True)
    buffer = FeatureBuffer(tmp_path / "data" / "buffer", capacity)
    return RecordingIngestor(config, buffer, tmp_path / "data" / "recordings.json")


def strongest_bands(features: np.ndarray) -> set[int]:
    return set(np.argmax(features, axis=1).tolist())


TONE_BAND = band_of_frequency(TONE_HZ, RATE, WINDOW)


# -- one file -------------------------------------------------------------------------------


def test_a_float_wav_of_a_tone_becomes_windows_whose_strongest_band_is_the_tone(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path)
    wavfile.write(ingest.config.directory / "a.wav", int(RATE), tone(TONE_HZ, 5 * WINDOW + 300).astype(np.float32))

    report = ingest.ingest()

    assert report.ingested == {"a.wav": 5} and not report.refused  # the 300-sample tail is dropped
    features = ingest.buffer.windows()
    assert features.shape == (5, 64)
    assert strongest_bands(features) == {TONE_BAND}


def test_an_npy_tone_gives_exactly_the_shared_features_of_its_windows(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path)
    signal = tone(TONE_HZ, 4 * WINDOW, noise=0.05)
    np.save(ingest.config.directory / "a.npy", signal)

    assert ingest.ingest().ingested == {"a.npy": 4}

    features = ingest.buffer.windows()
    np.testing.assert_array_equal(features, spectral_features(recording_windows(signal, WINDOW), 64))
    assert strongest_bands(features) == {TONE_BAND}


def test_int16_pcm_is_scaled_and_gives_the_features_of_the_float_signal(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path)
    signal = tone(TONE_HZ, 3 * WINDOW, noise=0.05)
    pcm = np.round(signal * 20_000).astype(np.int16)  # another gain, quantized
    wavfile.write(ingest.config.directory / "pcm.wav", int(RATE), pcm)

    loaded, rate = load_recording(ingest.config.directory / "pcm.wav", RATE)
    ingest.ingest()

    assert rate == RATE
    np.testing.assert_array_equal(loaded, pcm / 32768.0)
    assert np.abs(loaded).max() <= 1.0
    # The features remove the gain; int16 quantization noise is far below the signal's noise.
    expected = spectral_features(recording_windows(signal, WINDOW), 64)
    np.testing.assert_allclose(ingest.buffer.windows(), expected, atol=1e-3)


def test_8_bit_wav_is_unsigned_around_128(tmp_path: Path) -> None:
    path = tmp_path / "u8.wav"
    wavfile.write(path, int(RATE), np.array([0, 128, 255], np.uint8))

    samples, _ = load_recording(path, None)

    np.testing.assert_array_equal(samples, [-1.0, 0.0, 127 / 128])


def test_the_configured_channel_of_a_stereo_wav_is_read(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path, channel=1)
    other_hz = 700.0
    stereo = np.stack([tone(TONE_HZ, 2 * WINDOW), tone(other_hz, 2 * WINDOW)], axis=1).astype(np.float32)
    wavfile.write(ingest.config.directory / "stereo.wav", int(RATE), stereo)

    ingest.ingest()

    assert strongest_bands(ingest.buffer.windows()) == {band_of_frequency(other_hz, RATE, WINDOW)}
    assert strongest_bands(spectral_features(recording_windows(stereo[:, 0], WINDOW))) == {TONE_BAND}


def test_a_wav_without_a_configured_rate_uses_its_own(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path, sample_rate_hz=None)
    wavfile.write(ingest.config.directory / "a.wav", 4096, tone(TONE_HZ, 2 * WINDOW).astype(np.float32))

    assert ingest.ingest().ingested == {"a.wav": 2}
    assert load_recording(ingest.config.directory / "a.wav", None)[1] == 4096.0


def test_a_wav_with_a_chunk_scipy_does_not_know_is_still_ingested(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path)
    path = ingest.config.directory / "bext.wav"
    wavfile.write(path, int(RATE), tone(TONE_HZ, 2 * WINDOW).astype(np.float32))
    data = bytearray(path.read_bytes()) + b"bext" + struct.pack("<I", 4) + b"abcd"
    data[4:8] = struct.pack("<I", len(data) - 8)
    path.write_bytes(bytes(data))

    # scipy warns (WavFileWarning) about the chunk; pytest turns warnings into errors.
    assert ingest.ingest().ingested == {"bext.wav": 2}


# -- windows --------------------------------------------------------------------------------


def test_recording_windows_do_not_overlap_by_default_and_drop_the_tail() -> None:
    windows = recording_windows(np.arange(10.0), 4)

    np.testing.assert_array_equal(windows, [[0, 1, 2, 3], [4, 5, 6, 7]])


def test_recording_windows_start_every_hop() -> None:
    np.testing.assert_array_equal(recording_windows(np.arange(7.0), 4, 2), [[0, 1, 2, 3], [2, 3, 4, 5]])
    assert recording_windows(np.arange(3.0), 4).shape == (0, 4)


def test_overlapping_windows_are_ingested_at_the_configured_hop(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path, hop_samples=WINDOW // 2)
    np.save(ingest.config.directory / "a.npy", tone(TONE_HZ, 3 * WINDOW))

    assert ingest.ingest().ingested == {"a.npy": 5}


# -- the folder over time -------------------------------------------------------------------


def test_a_second_scan_and_a_restart_ingest_nothing_new(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path)
    np.save(ingest.config.directory / "a.npy", tone(TONE_HZ, 3 * WINDOW))
    ingest.ingest()

    again = ingest.ingest()
    restarted = ingestor(tmp_path).ingest()

    assert again.ingested == {} and restarted.ingested == {}
    assert len(ingest.buffer.windows()) == 3


def test_a_file_added_later_is_ingested(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path)
    np.save(ingest.config.directory / "a.npy", tone(TONE_HZ, 3 * WINDOW))
    ingest.ingest()
    np.save(ingest.config.directory / "b.npy", tone(700.0, 2 * WINDOW))

    report = ingest.ingest()

    assert report.ingested == {"b.npy": 2}
    features = ingest.buffer.windows()
    assert len(features) == 5
    assert strongest_bands(features[3:]) == {band_of_frequency(700.0, RATE, WINDOW)}


def test_a_grown_recording_adds_only_its_new_windows(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path)
    signal = tone(TONE_HZ, 5 * WINDOW, noise=0.05)
    path = ingest.config.directory / "live.npy"
    np.save(path, signal[: 2 * WINDOW + 100])
    ingest.ingest()

    np.save(path, signal)
    report = ingest.ingest()

    assert report.ingested == {"live.npy": 3}
    np.testing.assert_array_equal(ingest.buffer.windows(), spectral_features(recording_windows(signal, WINDOW)))


def test_ingested_windows_are_recorded_at_their_files_mtime(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path)
    path = ingest.config.directory / "live.npy"
    np.save(path, tone(TONE_HZ, 2 * WINDOW))
    os.utime(path, ns=(1_763_900_000_250_000_000, 1_763_900_000_250_000_000))

    ingest.ingest()

    _, recorded_at, _ = ingest.buffer.read_recorded(ingest.buffer.chunks())
    assert recorded_at.tolist() == [1_763_900_000.25] * 2  # what alerts report as the window's time


def test_a_wav_caught_halfway_through_a_copy_gets_its_remaining_windows_later(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path)
    signal = tone(TONE_HZ, 5 * WINDOW, noise=0.05).astype(np.float32)
    path = ingest.config.directory / "copying.wav"
    wavfile.write(path, int(RATE), signal)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # scipy reads what is there and warns

    first = ingest.ingest()
    path.write_bytes(whole)
    second = ingest.ingest()

    assert (first.ingested, second.ingested) == ({"copying.wav": 2}, {"copying.wav": 3})
    np.testing.assert_array_equal(ingest.buffer.windows(), spectral_features(recording_windows(signal, WINDOW)))


def test_a_touched_recording_is_not_ingested_again(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path)
    path = ingest.config.directory / "a.npy"
    np.save(path, tone(TONE_HZ, 2 * WINDOW))
    ingest.ingest()
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    report = ingest.ingest()

    assert report.ingested == {} and report.refused == {}
    assert len(ingest.buffer.windows()) == 2


def test_a_rewritten_recording_is_refused_once_and_not_ingested_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ingest = ingestor(tmp_path)
    path = ingest.config.directory / "a.npy"
    np.save(path, tone(TONE_HZ, 2 * WINDOW))
    ingest.ingest()
    np.save(path, tone(700.0, 3 * WINDOW))

    report = ingest.ingest()
    caplog.clear()
    quiet = ingest.ingest()

    assert report.refused["a.npy"].problem == "changed"
    assert "a.npy" in str(report.refused["a.npy"])
    assert quiet.refused == {} and not caplog.records  # logged once, until it changes again
    assert len(ingest.buffer.windows()) == 2


def test_a_half_written_file_is_ingested_once_complete(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path)
    path = ingest.config.directory / "copying.npy"
    np.save(path, tone(TONE_HZ, 3 * WINDOW))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])

    assert ingest.ingest().refused["copying.npy"].problem == "unreadable"
    path.write_bytes(whole)
    assert ingest.ingest().ingested == {"copying.npy": 3}


def test_bad_files_are_logged_and_skipped_and_the_rest_ingested(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ingest = ingestor(tmp_path)
    directory = ingest.config.directory
    (directory / "garbage.wav").write_bytes(b"\x00\xffnot a wav file at all" * 10)
    np.save(directory / "strings.npy", np.array(["a", "b", "c"] * 500))
    np.save(directory / "nan.npy", np.concatenate([tone(TONE_HZ, WINDOW), [np.nan]]))
    np.save(directory / "short.npy", tone(TONE_HZ, WINDOW - 1))
    np.save(directory / "matrix.npy", np.zeros((4, WINDOW)))
    np.save(directory / "empty.npy", np.zeros(0))
    wavfile.write(directory / "fast.wav", 4096, tone(TONE_HZ, 2 * WINDOW).astype(np.float32))
    wavfile.write(directory / "mono.wav", int(RATE), tone(TONE_HZ, 2 * WINDOW).astype(np.float32))
    np.save(directory / "good.npy", tone(TONE_HZ, 2 * WINDOW))
    (directory / "notes.txt").write_text("not a recording")

    with caplog.at_level(logging.WARNING, logger="edge_node.recordings"):
        report = ingestor(tmp_path, channel=0).ingest()

    assert report.ingested == {"good.npy": 2, "mono.wav": 2}
    assert {name: error.problem for name, error in report.refused.items()} == {
        "garbage.wav": "unreadable",
        "strings.npy": "dtype",
        "nan.npy": "not_finite",
        "short.npy": "too_short",
        "matrix.npy": "shape",
        "empty.npy": "empty",
        "fast.wav": "rate_mismatch",
    }
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for name, error in report.refused.items():
        assert isinstance(error, RecordingError)
        assert str(directory / name) in str(error) and name in logged
    assert len(ingest.buffer.windows()) == 4


def test_a_channel_the_file_does_not_have_is_refused(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path, channel=1)
    wavfile.write(ingest.config.directory / "mono.wav", int(RATE), tone(TONE_HZ, 2 * WINDOW).astype(np.float32))

    error = ingest.ingest().refused["mono.wav"]

    assert error.problem == "channel" and "recordings.channel" in str(error)


def test_npy_needs_a_configured_rate(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path, sample_rate_hz=None)
    np.save(ingest.config.directory / "a.npy", tone(TONE_HZ, 2 * WINDOW))

    error = ingest.ingest().refused["a.npy"]

    assert error.problem == "no_rate" and "sample_rate_hz" in str(error)


def test_without_a_configured_rate_wavs_must_share_the_first_ones_rate(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path, sample_rate_hz=None)
    wavfile.write(ingest.config.directory / "a.wav", 2048, tone(TONE_HZ, 2 * WINDOW).astype(np.float32))
    wavfile.write(ingest.config.directory / "b.wav", 4096, tone(TONE_HZ, 2 * WINDOW).astype(np.float32))

    report = ingest.ingest()

    assert report.ingested == {"a.wav": 2}
    assert report.refused["b.wav"].problem == "rate_mismatch"


def test_a_missing_directory_or_unreadable_record_ingests_nothing_and_raises_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ingest = ingestor(tmp_path)
    np.save(ingest.config.directory / "a.npy", tone(TONE_HZ, 2 * WINDOW))
    ingest.state_path.write_text("{not json")

    assert ingest.ingest().ingested == {}
    assert "recordings.json" in caplog.text
    ingest.state_path.unlink()
    (ingest.config.directory / "a.npy").unlink()
    ingest.config.directory.rmdir()
    assert ingest.ingest().ingested == {}


def test_only_the_newest_windows_a_buffer_can_hold_are_kept(tmp_path: Path) -> None:
    ingest = ingestor(tmp_path, capacity=3)
    signal = tone(TONE_HZ, 8 * WINDOW, noise=0.05)
    np.save(ingest.config.directory / "long.npy", signal)

    assert ingest.ingest().ingested == {"long.npy": 8}
    np.testing.assert_array_equal(ingest.buffer.windows(), spectral_features(recording_windows(signal, WINDOW)[-3:]))


# -- the node -------------------------------------------------------------------------------


async def test_a_node_ingests_at_connect_and_before_each_training_decision(tmp_path: Path) -> None:
    from edge_node.node import EdgeNode
    from learning.model import AutoencoderShape, initial_weights
    from wire.messages import RoundAnnouncement

    recordings = tmp_path / "recordings"
    recordings.mkdir()
    config = build_config(
        EdgeConfig,
        {**EDGE, "data_dir": tmp_path / "data", "recordings": {"directory": recordings, "sample_rate_hz": RATE}},
    )
    node = EdgeNode(config, signing_key=Ed25519PrivateKey.generate(), trusted=lambda sender: None)
    published: list[str] = []

    async def publish(topic: str, payload: bytes, *, retain: bool = False) -> None:
        published.append(topic)

    node.session.publish = publish  # type: ignore[method-assign]
    np.save(recordings / "a.npy", tone(TONE_HZ, 2 * WINDOW))
    await node._on_connect()
    assert published and len(node.buffer.windows()) == 2

    np.save(recordings / "b.npy", tone(TONE_HZ, 3 * WINDOW))
    node.weights = initial_weights(AutoencoderShape(), 0)
    node._round = RoundAnnouncement(round_id=1, base_version=0, opened_at=0, regional_deadline=1, global_deadline=2)
    assert await node._training_due() is None  # no model of the round's version yet: ingests, does not train
    assert len(node.buffer.windows()) == 5
    assert (tmp_path / "data" / "recordings.json").exists()


# -- configuration --------------------------------------------------------------------------


def test_a_recordings_section_loads_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    write_config(path, {**EDGE, "recordings": {"directory": "/data/vibration", "sample_rate_hz": 25600}})

    config = load_config(EdgeConfig, path)

    assert config.recordings == RecordingsConfig(directory=Path("/data/vibration"), sample_rate_hz=25600.0)
    assert (config.recordings.window_samples, config.recordings.hop_samples, config.recordings.channel) == (
        1024,
        None,
        0,
    )
    assert build_config(EdgeConfig, EDGE).recordings is None


@pytest.mark.parametrize(
    ("recordings", "field", "words"),
    [
        ({"directory": "/d", "window_samples": 100}, "recordings.window_samples", "at least 128"),
        ({"directory": "/d", "hop_samples": 0}, "recordings.hop_samples", "greater than or equal to 1"),
        ({"directory": "/d", "sample_rate_hz": 0}, "recordings.sample_rate_hz", "greater than 0"),
        ({"directory": "/d", "channel": -1}, "recordings.channel", "greater than or equal to 0"),
        ({"directory": "/d", "n_features": 32}, "recordings.n_features", "Extra inputs"),
        ({"sample_rate_hz": 2048}, "recordings.directory", "Field required"),
    ],
    ids=["window", "hop", "rate", "channel", "n_features", "directory"],
)
def test_invalid_recordings_settings_name_the_field(recordings: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as refused:
        build_config(EdgeConfig, {**EDGE, "recordings": recordings})

    assert field in str(refused.value) and words in str(refused.value)


def test_an_ingestor_refuses_windows_too_short_for_the_models_features(tmp_path: Path) -> None:
    config = RecordingsConfig(directory=tmp_path, window_samples=128)

    with pytest.raises(ValueError, match="window_samples"):
        RecordingIngestor(config, FeatureBuffer(tmp_path / "buffer", 10), tmp_path / "r.json", n_bins=128)
