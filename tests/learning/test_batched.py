"""learning.batched: training many stacked autoencoders at once gives, model by model, what
`train_local` gives with the same seed (up to bmm-vs-addmm rounding), whatever the dataset sizes,
batch boundaries or chunking; batched scoring equals `reconstruction_errors`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learning.batched import reconstruction_errors_many, stack_weights, train_many, unstack_weights
from learning.model import AutoencoderShape, initial_weights, weight_shapes
from learning.training import LocalResult, TrainingConfig, reconstruction_errors, train_local

SHAPE = AutoencoderShape(n_features=16, hidden=8, latent=3)
# 7 divides none of the dataset sizes below: every epoch ends on a short batch.
CONFIG = TrainingConfig(epochs=3, batch_size=7, learning_rate=1e-2)
ATOL = 1e-5


def _datasets(sizes: list[int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((size, SHAPE.n_features)) * rng.uniform(0.5, 2.0) + rng.uniform(-1, 1)).astype(np.float32)
        for size in sizes
    ]


def _assert_same_result(batched: LocalResult, alone: LocalResult) -> None:
    assert list(batched.delta) == list(alone.delta)
    for name in alone.delta:
        assert batched.delta[name].dtype == np.float32
        assert batched.delta[name].shape == alone.delta[name].shape
        np.testing.assert_allclose(batched.delta[name], alone.delta[name], rtol=0, atol=ATOL, err_msg=name)
    assert batched.num_samples == alone.num_samples
    assert batched.train_loss == pytest.approx(alone.train_loss, rel=1e-5, abs=ATOL)


def test_train_many_matches_train_local_per_model_with_one_initial_model() -> None:
    initial = initial_weights(SHAPE, 1)
    datasets = _datasets([40, 40, 40])
    seeds = [3, 11, 42]

    batched = train_many(initial, datasets, CONFIG, SHAPE, seeds=seeds)

    assert len(batched) == 3
    for result, windows, seed in zip(batched, datasets, seeds, strict=True):
        _assert_same_result(result, train_local(initial, windows, CONFIG, SHAPE, seed=seed))
    # Different data and seeds really give different models.
    assert not np.allclose(batched[0].delta["0.weight"], batched[1].delta["0.weight"])


def test_train_many_handles_datasets_of_different_sizes_and_per_model_initial_weights() -> None:
    initials = [initial_weights(SHAPE, seed) for seed in (1, 2, 3, 4)]
    datasets = _datasets([40, 23, 5, 40], seed=1)
    seeds = [0, 1, 2, 3]

    batched = train_many(initials, datasets, CONFIG, SHAPE, seeds=seeds)

    for result, initial, windows, seed in zip(batched, initials, datasets, seeds, strict=True):
        _assert_same_result(result, train_local(initial, windows, CONFIG, SHAPE, seed=seed))
    assert [result.num_samples for result in batched] == [40, 23, 5, 40]


def test_a_single_int_seed_is_used_for_every_model() -> None:
    initial = initial_weights(SHAPE, 1)
    datasets = _datasets([30, 30], seed=2)

    batched = train_many(initial, datasets, CONFIG, SHAPE, seeds=9)

    for result, windows in zip(batched, datasets, strict=True):
        _assert_same_result(result, train_local(initial, windows, CONFIG, SHAPE, seed=9))


def test_chunking_gives_the_same_results_as_one_chunk() -> None:
    initial = initial_weights(SHAPE, 5)
    datasets = _datasets([30, 30, 30, 30, 30, 17, 17], seed=3)
    seeds = list(range(7))

    whole = train_many(initial, datasets, CONFIG, SHAPE, seeds=seeds)
    chunked = train_many(initial, datasets, CONFIG, SHAPE, seeds=seeds, chunk_size=2)

    for one, other in zip(whole, chunked, strict=True):
        _assert_same_result(one, other)


def test_train_many_leaves_the_initial_weights_and_data_untouched() -> None:
    initial = initial_weights(SHAPE, 1)
    before = {name: array.copy() for name, array in initial.items()}
    datasets = _datasets([20, 20], seed=4)
    data_before = [windows.copy() for windows in datasets]

    train_many(initial, datasets, CONFIG, SHAPE, seeds=[1, 2])

    assert all(np.array_equal(initial[name], before[name]) for name in before)
    assert all(np.array_equal(a, b) for a, b in zip(datasets, data_before, strict=True))


def test_train_many_with_no_datasets_returns_nothing() -> None:
    assert train_many(initial_weights(SHAPE, 1), [], CONFIG, SHAPE) == []


@pytest.mark.parametrize(
    ("datasets", "kwargs", "match"),
    [
        ([np.zeros((0, 16), np.float32)], {}, "dataset 0"),
        ([np.zeros((4, 15), np.float32)], {}, "dataset 0"),
        ([np.zeros((4, 16), np.float32)] * 2, {"seeds": [1]}, "seeds"),
        ([np.zeros((4, 16), np.float32)], {"chunk_size": 0}, "chunk_size"),
    ],
)
def test_train_many_refuses_bad_arguments(datasets: list[np.ndarray], kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        train_many(initial_weights(SHAPE, 1), datasets, CONFIG, SHAPE, **kwargs)  # type: ignore[arg-type]


def test_train_many_refuses_weights_of_another_shape() -> None:
    other = initial_weights(AutoencoderShape(n_features=16, hidden=4, latent=3), 1)
    with pytest.raises(ValueError, match=r"0\.weight"):
        train_many(other, _datasets([10]), CONFIG, SHAPE)


def test_train_many_refuses_a_wrong_number_of_initial_models() -> None:
    with pytest.raises(ValueError, match="initial"):
        train_many([initial_weights(SHAPE, 1)], _datasets([10, 10]), CONFIG, SHAPE)


def test_reconstruction_errors_many_equals_reconstruction_errors_per_model() -> None:
    weights = [initial_weights(SHAPE, seed) for seed in range(5)]
    windows = _datasets([12, 3, 12, 0, 7], seed=5)

    for chunk_size in (1, 2, 1024):
        batched = reconstruction_errors_many(weights, windows, SHAPE, chunk_size=chunk_size)

        assert len(batched) == 5
        for scores, model, model_windows in zip(batched, weights, windows, strict=True):
            expected = reconstruction_errors(model, model_windows, SHAPE)
            assert scores.dtype == np.float32
            assert scores.shape == (len(model_windows),)
            np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_reconstruction_errors_many_scores_trained_models_like_the_single_model_path() -> None:
    initial = initial_weights(SHAPE, 2)
    datasets = _datasets([25, 25, 25], seed=6)
    results = train_many(initial, datasets, CONFIG, SHAPE, seeds=[1, 2, 3])
    trained = [{name: initial[name] + result.delta[name] for name in initial} for result in results]

    batched = reconstruction_errors_many(trained, datasets, SHAPE)

    for scores, model, windows in zip(batched, trained, datasets, strict=True):
        np.testing.assert_allclose(scores, reconstruction_errors(model, windows, SHAPE), rtol=1e-5, atol=1e-6)


def test_reconstruction_errors_many_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="window sets"):
        reconstruction_errors_many([initial_weights(SHAPE, 1)], [], SHAPE)


def test_stack_and_unstack_weights_round_trip() -> None:
    models = [initial_weights(SHAPE, seed) for seed in range(3)]

    stacked = stack_weights(models)

    assert list(stacked) == list(weight_shapes(SHAPE))
    assert stacked["0.weight"].shape == (3, *weight_shapes(SHAPE)["0.weight"])
    assert stacked["0.weight"].dtype == np.float32
    back = unstack_weights(stacked)
    assert len(back) == 3
    for original, restored in zip(models, back, strict=True):
        assert list(restored) == list(original)
        assert all(np.array_equal(original[name], restored[name]) for name in original)


def test_train_many_does_not_touch_torchs_global_generator() -> None:
    before = torch.random.get_rng_state()

    train_many(initial_weights(SHAPE, 1), _datasets([10, 10]), CONFIG, SHAPE, seeds=[1, 2])

    assert torch.equal(torch.random.get_rng_state(), before)
