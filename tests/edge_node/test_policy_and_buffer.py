"""The edge node's pure parts: when it trains (`training_decision`), its rolling on-disk feature
buffer, and the state it keeps across restarts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from edge_node.buffer import FeatureBuffer
from edge_node.node import Decision, training_decision
from edge_node.state import NodeState, NodeStateStore
from wire.messages import RoundAnnouncement

OPENED, DEADLINE = 1_763_900_000.0, 1_763_903_600.0
ANNOUNCEMENT = RoundAnnouncement(
    round_id=5, base_version=4, opened_at=OPENED, regional_deadline=DEADLINE, global_deadline=DEADLINE + 1800
)
READY = NodeState(model_version=4, model_round=4, last_trained_round=4)


def _windows(count: int, start: int = 0, features: int = 4) -> np.ndarray:
    """Windows whose first column numbers them, so order and eviction are visible."""
    windows = np.zeros((count, features), np.float32)
    windows[:, 0] = np.arange(start, start + count)
    return windows


# -- training_decision ---------------------------------------------------------------------


def test_a_ready_node_trains_for_an_open_round() -> None:
    assert training_decision(ANNOUNCEMENT, READY, windows=64, min_windows=64, now=OPENED + 10) == Decision(True, "ok")


def test_a_node_that_already_trained_for_the_round_does_not_train_again() -> None:
    state = NodeState(model_version=4, model_round=4, last_trained_round=5)

    decision = training_decision(ANNOUNCEMENT, state, windows=500, min_windows=64, now=OPENED)

    assert decision == Decision(False, "already_trained")


def test_a_node_does_not_train_after_the_regional_deadline() -> None:
    decision = training_decision(ANNOUNCEMENT, READY, windows=500, min_windows=64, now=DEADLINE + 0.5)

    assert decision == Decision(False, "round_closed")


def test_a_node_still_trains_exactly_at_the_regional_deadline() -> None:
    assert training_decision(ANNOUNCEMENT, READY, windows=500, min_windows=64, now=DEADLINE).train


@pytest.mark.parametrize("model_version", [-1, 3], ids=["no-model-yet", "older-model"])
def test_a_node_without_the_rounds_base_model_waits_for_it(model_version: int) -> None:
    state = NodeState(model_version=model_version, model_round=0, last_trained_round=0)

    decision = training_decision(ANNOUNCEMENT, state, windows=500, min_windows=64, now=OPENED)

    assert decision == Decision(False, "wait_for_model")


def test_a_node_with_too_few_windows_does_not_train() -> None:
    decision = training_decision(ANNOUNCEMENT, READY, windows=63, min_windows=64, now=OPENED)

    assert decision == Decision(False, "not_enough_data")


def test_having_trained_wins_over_every_other_reason() -> None:
    state = NodeState(model_version=-1, model_round=0, last_trained_round=9)

    decision = training_decision(ANNOUNCEMENT, state, windows=0, min_windows=64, now=DEADLINE + 100)

    assert decision.reason == "already_trained"


# -- FeatureBuffer -------------------------------------------------------------------------


def test_an_empty_buffer_has_no_windows(tmp_path: Path) -> None:
    assert FeatureBuffer(tmp_path / "buffer", capacity=10).windows().shape[0] == 0


def test_appended_windows_come_back_oldest_first_as_float32(tmp_path: Path) -> None:
    buffer = FeatureBuffer(tmp_path, capacity=100)

    buffer.append(_windows(3, start=0).astype(np.float64))
    buffer.append(_windows(2, start=3))
    windows = buffer.windows()

    assert windows.dtype == np.float32
    assert windows[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_the_buffer_keeps_only_the_newest_windows_beyond_its_capacity(tmp_path: Path) -> None:
    buffer = FeatureBuffer(tmp_path, capacity=10)

    for chunk in range(4):
        buffer.append(_windows(4, start=4 * chunk))

    assert buffer.windows()[:, 0].tolist() == list(range(6, 16))


def test_chunks_wholly_beyond_the_capacity_are_deleted(tmp_path: Path) -> None:
    buffer = FeatureBuffer(tmp_path, capacity=10)

    for chunk in range(6):
        buffer.append(_windows(4, start=4 * chunk))

    chunks = buffer.chunks()
    assert len(chunks) == 3  # 12 windows: the fewest whole chunks that still hold 10
    assert chunks[0].sequence == 3 and chunks[0].path.exists()


def test_a_chunk_larger_than_the_capacity_is_trimmed_on_read(tmp_path: Path) -> None:
    buffer = FeatureBuffer(tmp_path, capacity=5)

    buffer.append(_windows(8))

    assert buffer.windows()[:, 0].tolist() == [3, 4, 5, 6, 7]


def test_the_buffer_survives_reopening(tmp_path: Path) -> None:
    FeatureBuffer(tmp_path, capacity=10).append(_windows(3, start=0))

    reopened = FeatureBuffer(tmp_path, capacity=10)
    reopened.append(_windows(2, start=3))

    assert reopened.windows()[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_appending_leaves_no_temporary_files(tmp_path: Path) -> None:
    buffer = FeatureBuffer(tmp_path, capacity=10)

    buffer.append(_windows(3), recorded_at=1_763_900_000.25)
    buffer.append(_windows(3), recorded_at=1_763_900_010.0)

    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["chunk-0000000000-1763900000250.npy", "chunk-0000000001-1763900010000.npy"]


def test_chunks_know_when_their_windows_were_recorded(tmp_path: Path) -> None:
    buffer = FeatureBuffer(tmp_path, capacity=10)
    before = time.time()
    buffer.append(_windows(2), recorded_at=1_763_900_000.25)
    buffer.append(_windows(3, start=2))

    windows, recorded_at, sequences = buffer.read_recorded(buffer.chunks())

    assert windows[:, 0].tolist() == [0, 1, 2, 3, 4] and sequences.tolist() == [0, 0, 1, 1, 1]
    assert recorded_at[:2].tolist() == [1_763_900_000.25] * 2
    assert before - 0.001 <= recorded_at[2] == recorded_at[4] <= time.time()


def test_chunks_written_before_times_were_kept_read_their_mtime(tmp_path: Path) -> None:
    np.save(tmp_path / "chunk-0000000007.npy", _windows(2))
    os.utime(tmp_path / "chunk-0000000007.npy", (1_763_900_000.5, 1_763_900_000.5))
    buffer = FeatureBuffer(tmp_path, capacity=10)
    buffer.append(_windows(1))

    assert [(c.sequence, c.size()) for c in buffer.chunks()] == [(7, 2), (8, 1)]
    assert buffer.chunks()[0].recorded_at == 1_763_900_000.5


@pytest.mark.parametrize("shape", [(0, 4), (4,), (2, 2, 2)], ids=["empty", "one-dim", "three-dim"])
def test_appending_windows_of_the_wrong_shape_is_refused(tmp_path: Path, shape: tuple[int, ...]) -> None:
    buffer = FeatureBuffer(tmp_path, capacity=10)

    with pytest.raises(ValueError, match="expected"):
        buffer.append(np.zeros(shape, np.float32))

    assert list(tmp_path.iterdir()) == []


# -- NodeStateStore ------------------------------------------------------------------------


def test_a_fresh_store_starts_without_a_model(tmp_path: Path) -> None:
    state, weights = NodeStateStore(tmp_path / "state").load()

    assert state == NodeState(model_version=-1, model_round=0, last_trained_round=0)
    assert weights is None


def test_state_and_model_round_trip(tmp_path: Path) -> None:
    store = NodeStateStore(tmp_path)
    weights = {"0.weight": np.arange(6, dtype=np.float32).reshape(3, 2), "0.bias": np.ones(3, np.float32)}

    store.save(NodeState(model_version=7, model_round=6, last_trained_round=5), weights)
    state, loaded = NodeStateStore(tmp_path).load()

    assert state == NodeState(model_version=7, model_round=6, last_trained_round=5)
    assert loaded is not None and list(loaded) == ["0.weight", "0.bias"]
    for name, array in weights.items():
        np.testing.assert_array_equal(loaded[name], array)


def test_saving_only_the_state_keeps_the_stored_model(tmp_path: Path) -> None:
    store = NodeStateStore(tmp_path)
    store.save(NodeState(model_version=7), {"w": np.full(2, 3.0, np.float32)})

    store.save(NodeState(model_version=7, last_trained_round=8))
    state, weights = store.load()

    assert state.last_trained_round == 8
    assert weights is not None
    np.testing.assert_array_equal(weights["w"], [3.0, 3.0])


def test_saving_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = NodeStateStore(tmp_path)

    store.save(NodeState(model_version=1), {"w": np.zeros(2, np.float32)})

    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.msgpack", "state.json"]


def test_a_model_saved_by_an_older_node_as_npz_still_loads_and_is_replaced_on_the_next_save(tmp_path: Path) -> None:
    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.float32)}
    NodeStateStore(tmp_path).save(NodeState(model_version=3))
    np.savez(tmp_path / "model.npz", **weights)

    state, loaded = NodeStateStore(tmp_path).load()
    NodeStateStore(tmp_path).save(state, loaded)

    assert state.model_version == 3 and loaded is not None and list(loaded) == ["w", "b"]
    np.testing.assert_array_equal(loaded["w"], weights["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.msgpack", "state.json"]
    np.testing.assert_array_equal(NodeStateStore(tmp_path).load()[1]["b"], weights["b"])  # type: ignore[index]


def test_a_node_with_too_few_new_windows_since_it_last_trained_skips_the_round() -> None:
    decision = training_decision(
        ANNOUNCEMENT, READY, windows=500, min_windows=64, now=OPENED, new_windows=3, min_new_windows=8
    )

    assert decision == Decision(False, "not_enough_new_data")


def test_enough_new_windows_lets_a_node_train() -> None:
    decision = training_decision(
        ANNOUNCEMENT, READY, windows=500, min_windows=64, now=OPENED, new_windows=8, min_new_windows=8
    )

    assert decision.train
