"""learning.model and learning.training on tiny data: deltas have the model's tensors, training
is deterministic per seed, and federated rounds of apply-delta lower the reconstruction loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learning.aggregation import apply_delta
from learning.model import (
    AutoencoderShape,
    build_autoencoder,
    get_weights,
    initial_weights,
    set_weights,
    subtract,
    weight_shapes,
)
from learning.training import TrainingConfig, reconstruction_errors, resolve_device, train_local
from simulate.vibration import turbine_features, turbine_profile

SHAPE = AutoencoderShape(n_features=16, hidden=8, latent=3)
CONFIG = TrainingConfig(epochs=2, batch_size=16, learning_rate=1e-2)


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    return turbine_features(turbine_profile(seed=3, region_index=0), 48, n_bins=SHAPE.n_features)


def test_weight_shapes_follow_the_state_dict_order() -> None:
    shapes = weight_shapes(SHAPE)

    assert list(shapes) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias", "6.weight", "6.bias"]
    assert shapes["0.weight"] == (8, 16)
    assert shapes["6.bias"] == (16,)


def test_autoencoder_shape_refuses_a_zero_size() -> None:
    with pytest.raises(ValueError, match="latent"):
        AutoencoderShape(latent=0)


def test_initial_weights_are_the_same_for_the_same_seed_and_differ_across_seeds() -> None:
    first, again, other = initial_weights(SHAPE, 1), initial_weights(SHAPE, 1), initial_weights(SHAPE, 2)

    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert not np.array_equal(first["0.weight"], other["0.weight"])


def test_initial_weights_leave_torchs_global_generator_untouched() -> None:
    before = torch.random.get_rng_state()

    initial_weights(SHAPE, 5)

    assert torch.equal(torch.random.get_rng_state(), before)


def test_get_and_set_weights_round_trip_as_float32_arrays() -> None:
    weights = initial_weights(SHAPE, 0)
    module = build_autoencoder(SHAPE)

    set_weights(module, weights)
    copied = get_weights(module)

    assert list(copied) == list(weight_shapes(SHAPE))
    assert all(copied[name].dtype == np.float32 and np.array_equal(copied[name], weights[name]) for name in weights)


def test_subtract_is_elementwise_per_tensor() -> None:
    left = {"a": np.array([3.0, 1.0], np.float32), "b": np.array([[2.0]], np.float32)}
    right = {"a": np.array([1.0, 1.0], np.float32), "b": np.array([[5.0]], np.float32)}

    difference = subtract(left, right)

    np.testing.assert_array_equal(difference["a"], [2.0, 0.0])
    np.testing.assert_array_equal(difference["b"], [[-3.0]])


def test_local_training_returns_a_delta_of_every_tensor_and_the_sample_count(windows: np.ndarray) -> None:
    start = initial_weights(SHAPE, 0)

    result = train_local(start, windows, CONFIG, SHAPE, seed=1)

    assert list(result.delta) == list(weight_shapes(SHAPE))
    for name, shape in weight_shapes(SHAPE).items():
        assert result.delta[name].shape == shape
        assert result.delta[name].dtype == np.float32
    assert any(np.abs(delta).max() > 0 for delta in result.delta.values())
    assert result.num_samples == len(windows)
    assert np.isfinite(result.train_loss) and result.train_loss > 0


def test_local_training_does_not_modify_the_weights_it_starts_from(windows: np.ndarray) -> None:
    start = initial_weights(SHAPE, 0)
    snapshot = {name: array.copy() for name, array in start.items()}

    train_local(start, windows, CONFIG, SHAPE, seed=1)

    assert all(np.array_equal(start[name], snapshot[name]) for name in start)


def test_local_training_is_deterministic_for_a_seed(windows: np.ndarray) -> None:
    start = initial_weights(SHAPE, 0)

    first = train_local(start, windows, CONFIG, SHAPE, seed=4)
    again = train_local(start, windows, CONFIG, SHAPE, seed=4)

    assert all(np.array_equal(first.delta[name], again.delta[name]) for name in first.delta)
    assert first.train_loss == again.train_loss


def test_start_plus_delta_is_the_trained_model(windows: np.ndarray) -> None:
    start = initial_weights(SHAPE, 0)
    result = train_local(start, windows, CONFIG, SHAPE, seed=1)

    trained = apply_delta(start, result.delta)

    # The reported loss is the last epoch's mean over its batches, taken while training: the
    # final model reconstructs the same windows at least about as well.
    assert float(reconstruction_errors(trained, windows, SHAPE).mean()) <= result.train_loss * 1.1


def test_rounds_of_training_and_apply_delta_lower_the_loss(windows: np.ndarray) -> None:
    weights = initial_weights(SHAPE, 0)
    initial_loss = float(reconstruction_errors(weights, windows, SHAPE).mean())

    losses = []
    for round_id in range(4):
        result = train_local(weights, windows, CONFIG, SHAPE, seed=round_id)
        weights = apply_delta(weights, result.delta)
        losses.append(float(reconstruction_errors(weights, windows, SHAPE).mean()))

    assert all(later < earlier for earlier, later in zip([initial_loss, *losses], losses, strict=False))
    assert losses[-1] < 0.7 * initial_loss


def test_reconstruction_errors_give_one_score_per_window(windows: np.ndarray) -> None:
    scores = reconstruction_errors(initial_weights(SHAPE, 0), windows, SHAPE)

    assert scores.shape == (len(windows),)
    assert np.all(scores >= 0)


@pytest.mark.parametrize("bad_shape", [(0, 16), (10, 15), (16,)], ids=["empty", "wrong-width", "one-dim"])
def test_local_training_refuses_windows_of_the_wrong_shape(bad_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="windows must be"):
        train_local(initial_weights(SHAPE, 0), np.zeros(bad_shape, np.float32), CONFIG, SHAPE)


@pytest.mark.parametrize(
    "fields", [{"epochs": 0}, {"batch_size": 0}, {"learning_rate": 0.0}, {"learning_rate": float("nan")}]
)
def test_training_config_refuses_non_positive_settings(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="TrainingConfig"):
        TrainingConfig(**fields)  # type: ignore[arg-type]


def test_resolve_device_honours_an_explicit_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_auto_picks_cuda_only_when_present() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"

    assert resolve_device("auto").type == expected
