"""edge_node.feedback: what a top-k update did not send reaches the aggregate in later updates,
and the residual survives a restart, also one between keeping it and marking the round trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_node.feedback import Residual, left_over, with_residual
from edge_node.state import NodeStateStore
from wire.codec import decode_arrays, encode_arrays

SHAPES: dict[str, tuple[int, ...]] = {"w": (8, 8), "b": (8,)}


def _delta(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * 0.01).astype(np.float32) for name, shape in SHAPES.items()}


def _send(meant: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return decode_arrays(encode_arrays(meant, "topk-int8-zstd", topk_fraction=1 / 8), SHAPES)


def test_with_error_feedback_what_was_sent_over_rounds_adds_up_to_what_was_meant() -> None:
    residual = None
    meant_total = {name: np.zeros(shape, np.float64) for name, shape in SHAPES.items()}
    sent_total = {name: np.zeros(shape, np.float64) for name, shape in SHAPES.items()}
    for round_id in range(40):
        delta = _delta(round_id)
        meant = with_residual(delta, residual)
        sent = _send(meant)
        residual = left_over(meant, sent)
        for name in SHAPES:
            meant_total[name] += delta[name]
            sent_total[name] += sent[name]

    for name in SHAPES:  # the difference is only the last residual, bounded: nothing is lost
        np.testing.assert_allclose(sent_total[name] + residual[name], meant_total[name], atol=1e-5)


def test_a_residual_of_another_model_shape_is_dropped() -> None:
    delta = _delta(0)

    assert with_residual(delta, {"w": np.ones((2, 2), np.float32), "b": np.ones(8, np.float32)}) is delta


def test_residual_round_trips_through_the_node_state_store(tmp_path: Path) -> None:
    store = NodeStateStore(tmp_path)
    residual = Residual(7, _delta(1), _delta(2))

    store.save_residual(residual)
    loaded = NodeStateStore(tmp_path).load_residual()

    assert loaded is not None and loaded.round_id == 7
    for name in SHAPES:
        np.testing.assert_array_equal(loaded.values[name], residual.values[name])
        np.testing.assert_array_equal(loaded.previous[name], residual.previous[name])  # type: ignore[index]


def test_retraining_a_round_after_a_crash_starts_from_the_residual_that_round_started_from() -> None:
    before, after = _delta(1), _delta(2)
    kept = Residual(round_id=7, values=after, previous=before)

    assert kept.for_round(7) is before  # crashed after keeping round 7's residual: retrain from before
    assert kept.for_round(8) is after


def test_a_first_residual_has_no_previous_and_clearing_forgets_it(tmp_path: Path) -> None:
    store = NodeStateStore(tmp_path)
    store.save_residual(Residual(1, _delta(1), None))

    loaded = store.load_residual()
    store.clear_residual()

    assert loaded is not None and loaded.previous is None and loaded.for_round(1) is None
    assert store.load_residual() is None
