"""cloud_core.model_store: every saved version loads back bit-exact with its metadata, versions
are listed in order, a half-written version is invisible, and the digest depends on the values."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from cloud_core.model_store import ModelStore, ModelStoreError, ModelVersion, weights_digest

NAMES = ["0.weight", "0.bias"]


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "0.weight": rng.standard_normal((3, 2)).astype(np.float32),
        "0.bias": rng.standard_normal(3).astype(np.float32),
    }


def _meta(version: int, weights: dict[str, np.ndarray], **details: object) -> ModelVersion:
    return ModelVersion(
        version, version, version - 1, 1_763_900_000.0 + version, weights_digest(weights), dict(details)
    )


def _save(store: ModelStore, version: int, seed: int | None = None) -> tuple[ModelVersion, dict[str, np.ndarray]]:
    weights = _weights(version if seed is None else seed)
    meta = _meta(version, weights)
    store.save(meta, weights)
    return meta, weights


def test_an_empty_store_has_no_latest_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)

    assert store.versions() == []
    assert store.latest(NAMES) is None


def test_a_saved_version_loads_back_bit_exact_with_its_metadata(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    weights = _weights(1)
    meta = _meta(1, weights, codec="int8-zstd", regions={"north": {"accepted": 3}})

    store.save(meta, weights)
    loaded_meta, loaded = store.load(1, NAMES)

    assert loaded_meta == meta
    assert list(loaded) == NAMES
    for name in NAMES:
        assert loaded[name].dtype == np.float32
        np.testing.assert_array_equal(loaded[name], weights[name])


def test_latest_is_the_highest_version_whatever_the_save_order(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for version in (2, 10, 1):
        _save(store, version)

    latest_meta, latest_weights = store.latest(NAMES)  # type: ignore[misc]

    assert store.versions() == [1, 2, 10]
    assert latest_meta.version == 10
    np.testing.assert_array_equal(latest_weights["0.bias"], _weights(10)["0.bias"])


def test_saving_leaves_only_the_weights_and_metadata_files(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)

    _save(store, 1)
    _save(store, 2)

    assert sorted(p.name for p in store.directory.iterdir()) == [
        "v000001.json",
        "v000001.npz",
        "v000002.json",
        "v000002.npz",
    ]
    assert store.directory == tmp_path / "models"


def test_a_version_whose_metadata_was_never_renamed_is_invisible(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _save(store, 1)
    # What a crash between the two renames of save() leaves behind for version 2:
    np.savez(store.directory / "v000002.npz", **_weights(2))
    (store.directory / "v000002.json.tmp").write_text("{half a json")
    (store.directory / "v000003.tmp.npz").write_bytes(b"partial")

    latest = store.latest(NAMES)

    assert store.versions() == [1]
    assert latest is not None and latest[0].version == 1


def test_saving_a_version_again_is_refused_and_keeps_the_first(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _, first = _save(store, 1, seed=1)

    with pytest.raises(ModelStoreError, match="v1 already exists"):
        _save(store, 1, seed=99)

    np.testing.assert_array_equal(store.load(1, NAMES)[1]["0.weight"], first["0.weight"])
    assert store.versions() == [1]


def test_loading_a_missing_version_names_what_is_stored(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _save(store, 1)

    with pytest.raises(ModelStoreError, match=r"no model v7 .*stored: v1"):
        store.load(7, NAMES)


def test_a_new_store_on_the_same_directory_sees_the_saved_versions(tmp_path: Path) -> None:
    _save(ModelStore(tmp_path), 4)

    assert ModelStore(tmp_path).versions() == [4]


def test_the_digest_is_stable_for_equal_weights() -> None:
    assert weights_digest(_weights(1)) == weights_digest({name: a.copy() for name, a in _weights(1).items()})


def test_the_digest_is_sha256_of_names_and_little_endian_float32_bytes() -> None:
    weights = {"w": np.array([1.0, -2.5], np.float32)}

    expected = hashlib.sha256(b"w" + struct.pack("<2f", 1.0, -2.5)).hexdigest()

    assert weights_digest(weights) == expected


def test_the_digest_ignores_the_input_dtype_and_memory_layout() -> None:
    weights = _weights(3)
    as_float64 = {name: a.astype(np.float64) for name, a in weights.items()}
    as_fortran = {name: np.asfortranarray(a) for name, a in weights.items()}

    assert weights_digest(as_float64) == weights_digest(weights) == weights_digest(as_fortran)


@pytest.mark.parametrize("change", ["value", "name"])
def test_the_digest_changes_with_any_value_or_name(change: str) -> None:
    weights = _weights(5)
    changed = {name: a.copy() for name, a in weights.items()}
    if change == "value":
        changed["0.bias"][0] = np.nextafter(changed["0.bias"][0], np.float32(np.inf))
    else:
        changed["1.bias"] = changed.pop("0.bias")

    assert weights_digest(changed) != weights_digest(weights)


def test_the_stored_digest_matches_the_loaded_weights(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    meta, _ = _save(store, 1)

    loaded_meta, loaded = store.load(1, NAMES)

    assert weights_digest(loaded) == loaded_meta.sha256 == meta.sha256
