"""learning.aggregation: the regional weighted sums merged at the cloud are flat FedAvg over every
node, exactly in float32 for lossless partials and within the int8 codec's bound for quantized
node updates. This is the property the whole hierarchy rests on."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learning.aggregation import AggregationError, Partial, WeightedSum, apply_delta, fedavg, merge_partials
from learning.model import AutoencoderShape, weight_shapes
from wire.codec import decode_arrays, encode_arrays

SHAPES: dict[str, tuple[int, ...]] = {"0.weight": (6, 4), "0.bias": (6,), "2.weight": (4, 6), "2.bias": (4,)}
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def _deltas(count: int, seed: int, shapes: dict[str, tuple[int, ...]] = SHAPES) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {
            name: (rng.standard_normal(shape) * rng.uniform(0.001, 0.1)).astype(np.float32)
            for name, shape in shapes.items()
        }
        for _ in range(count)
    ]


def _weighted_sum(deltas: list[dict[str, np.ndarray]], weights: list[float]) -> WeightedSum:
    accumulator = WeightedSum(SHAPES)
    for delta, weight in zip(deltas, weights, strict=True):
        accumulator.add(delta, weight)
    return accumulator


def _through_the_wire(arrays: dict[str, np.ndarray], codec: str) -> dict[str, np.ndarray]:
    return decode_arrays(encode_arrays(arrays, codec), SHAPES)  # type: ignore[arg-type]


def _hierarchical(
    deltas: list[dict[str, np.ndarray]], weights: list[float], region_sizes: list[int], node_codec: str | None
) -> dict[str, np.ndarray]:
    """Regions of the given sizes each stream a WeightedSum of their nodes' (possibly encoded)
    deltas; the partial sums cross the wire as fp32; the cloud merges them."""
    partials = []
    start = 0
    for size in region_sizes:
        region = WeightedSum(SHAPES)
        for delta, weight in zip(deltas[start : start + size], weights[start : start + size], strict=True):
            region.add(_through_the_wire(delta, node_codec) if node_codec else delta, weight)
        partials.append(Partial(_through_the_wire(region.sums(), "fp32-zstd"), region.total_weight))
        start += size
    return merge_partials(partials)


def _assert_float32_equal(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], scale: float) -> None:
    assert list(actual) == list(expected)
    for name in expected:
        assert actual[name].dtype == np.float32
        np.testing.assert_allclose(actual[name], expected[name], rtol=4 * FLOAT32_EPS, atol=4 * FLOAT32_EPS * scale)


def _magnitude(deltas: list[dict[str, np.ndarray]]) -> float:
    return max(float(np.abs(array).max()) for delta in deltas for array in delta.values())


# -- WeightedSum ---------------------------------------------------------------------------


def test_weighted_sum_divided_by_its_weight_is_the_weighted_mean() -> None:
    deltas, weights = _deltas(4, seed=1), [10.0, 250.0, 3.0, 77.0]

    accumulator = _weighted_sum(deltas, weights)

    assert accumulator.total_weight == sum(weights)
    assert accumulator.count == 4
    for name in SHAPES:
        expected = np.average(np.stack([d[name] for d in deltas]), axis=0, weights=weights)
        np.testing.assert_allclose(accumulator.sums()[name] / accumulator.total_weight, expected, rtol=1e-6, atol=1e-9)


def test_weighted_sum_is_independent_of_the_order_of_arrival() -> None:
    deltas, weights = _deltas(4, seed=2), [5.0, 1.0, 40.0, 12.0]
    reference = _weighted_sum(deltas, weights).sums()

    for order in itertools.permutations(range(4)):
        sums = _weighted_sum([deltas[i] for i in order], [weights[i] for i in order]).sums()
        for name in SHAPES:
            np.testing.assert_array_equal(sums[name], reference[name])


def test_weighted_sum_of_no_updates_is_zero_with_zero_weight() -> None:
    accumulator = WeightedSum(SHAPES)

    assert accumulator.total_weight == 0.0
    assert accumulator.count == 0
    assert all(not array.any() and array.shape == SHAPES[name] for name, array in accumulator.sums().items())


@pytest.mark.parametrize("weight", [0.0, -3.0, float("nan"), float("inf")])
def test_weighted_sum_refuses_a_weight_that_is_not_positive_and_finite(weight: float) -> None:
    accumulator = WeightedSum(SHAPES)

    with pytest.raises(AggregationError, match="weight"):
        accumulator.add(_deltas(1, seed=0)[0], weight)

    assert accumulator.count == 0 and accumulator.total_weight == 0.0


def test_weighted_sum_refuses_a_delta_missing_a_tensor() -> None:
    delta = _deltas(1, seed=0)[0]
    del delta["2.bias"]

    with pytest.raises(AggregationError, match="do not match"):
        WeightedSum(SHAPES).add(delta, 1.0)


def test_weighted_sum_refuses_tensors_in_another_order() -> None:
    delta = _deltas(1, seed=0)[0]
    reordered = {name: delta[name] for name in reversed(list(delta))}

    with pytest.raises(AggregationError, match="do not match"):
        WeightedSum(SHAPES).add(reordered, 1.0)


def test_weighted_sum_refuses_a_tensor_of_the_wrong_shape() -> None:
    delta = _deltas(1, seed=0)[0]
    delta["0.weight"] = np.ones(4, np.float32)

    with pytest.raises(AggregationError):
        WeightedSum(SHAPES).add(delta, 1.0)


def test_a_refused_delta_leaves_the_weighted_sum_unchanged() -> None:
    accumulator = WeightedSum(SHAPES)
    delta = _deltas(1, seed=0)[0]
    delta["2.bias"] = np.ones(5, np.float32)

    with pytest.raises(ValueError):
        accumulator.add(delta, 1.0)

    assert all(not array.any() for array in accumulator.sums().values())


# -- hierarchy == flat FedAvg ----------------------------------------------------------------


def test_merged_regional_sums_of_different_sized_regions_equal_flat_fedavg() -> None:
    deltas = _deltas(10, seed=3)
    weights = [float(w) for w in np.random.default_rng(3).integers(1, 500, size=10)]

    merged = _hierarchical(deltas, weights, region_sizes=[1, 3, 6], node_codec=None)

    _assert_float32_equal(merged, fedavg(deltas, weights), scale=_magnitude(deltas))


@settings(max_examples=40, deadline=None)
@given(
    region_sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_split_into_regions_reproduces_flat_fedavg(region_sizes: list[int], seed: int) -> None:
    deltas = _deltas(sum(region_sizes), seed=seed)
    weights = [float(w) for w in np.random.default_rng(seed).integers(1, 10_000, size=len(deltas))]

    merged = _hierarchical(deltas, weights, region_sizes, node_codec=None)

    _assert_float32_equal(merged, fedavg(deltas, weights), scale=_magnitude(deltas))


def _int8_bound(deltas: list[dict[str, np.ndarray]], weights: list[float]) -> dict[str, float]:
    """Σ wᵢ·(scaleᵢ/2) / Σ wᵢ per tensor, with each node's scale read from its encoded body."""
    total = sum(weights)
    bound = dict.fromkeys(SHAPES, 0.0)
    for delta, weight in zip(deltas, weights, strict=True):
        for name, _, scale in encode_arrays(delta, "int8-zstd")["tensors"]:
            bound[name] += weight * scale / 2 / total
    return bound


@settings(max_examples=40, deadline=None)
@given(
    region_sizes=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_hierarchy_over_int8_updates_is_flat_fedavg_within_the_quantization_bound(
    region_sizes: list[int], seed: int
) -> None:
    deltas = _deltas(sum(region_sizes), seed=seed)
    weights = [float(w) for w in np.random.default_rng(seed).integers(1, 10_000, size=len(deltas))]
    bound = _int8_bound(deltas, weights)
    exact = fedavg(deltas, weights)

    merged = _hierarchical(deltas, weights, region_sizes, node_codec="int8-zstd")

    float32_slack = 8 * FLOAT32_EPS * _magnitude(deltas)
    for name in SHAPES:
        error = np.abs(merged[name].astype(np.float64) - exact[name].astype(np.float64)).max()
        assert error <= bound[name] + float32_slack, name


def test_the_int8_bound_is_tight_enough_to_detect_a_dropped_node() -> None:
    # Guard for the property above: its bound must be far smaller than one node's contribution,
    # or a hierarchy that loses a node would pass it too.
    deltas, weights = _deltas(6, seed=5), [100.0] * 6
    bound = _int8_bound(deltas, weights)

    missing_last = fedavg(deltas[:-1], weights[:-1])
    exact = fedavg(deltas, weights)

    assert max(float(np.abs(missing_last[n] - exact[n]).max()) / bound[n] for n in SHAPES) > 10


def test_int8_hierarchy_on_the_default_model_stays_within_the_bound() -> None:
    shapes = weight_shapes(AutoencoderShape())
    rng = np.random.default_rng(11)
    deltas = [
        {name: (rng.standard_normal(s) * 0.01).astype(np.float32) for name, s in shapes.items()} for _ in range(7)
    ]
    weights = [256.0, 17.0, 1000.0, 64.0, 64.0, 3.0, 512.0]
    sizes = [2, 5]

    partials, start = [], 0
    for size in sizes:
        region = WeightedSum(shapes)
        for delta, weight in zip(deltas[start : start + size], weights[start : start + size], strict=True):
            region.add(decode_arrays(encode_arrays(delta, "int8-zstd"), shapes), weight)
        partials.append(Partial(decode_arrays(encode_arrays(region.sums(), "fp32-zstd"), shapes), region.total_weight))
        start += size
    merged, exact = merge_partials(partials), fedavg(deltas, weights)

    total = sum(weights)
    for name in shapes:
        bound = sum(w * float(np.abs(d[name]).max()) / 127 / 2 for d, w in zip(deltas, weights, strict=True)) / total
        error = float(np.abs(merged[name].astype(np.float64) - exact[name]).max())
        assert error <= bound * 1.001 + 1e-9, name


# -- merge_partials, fedavg, apply_delta ----------------------------------------------------


def test_merge_ignores_regions_that_carry_no_weight() -> None:
    deltas, weights = _deltas(3, seed=6), [1.0, 2.0, 3.0]
    full = _weighted_sum(deltas, weights)
    empty = WeightedSum(SHAPES)

    merged = merge_partials([Partial(empty.sums(), 0.0), Partial(full.sums(), full.total_weight)])

    _assert_float32_equal(merged, fedavg(deltas, weights), scale=_magnitude(deltas))


def test_merge_of_partials_without_weight_is_refused() -> None:
    empty = WeightedSum(SHAPES)

    with pytest.raises(AggregationError, match="no partial"):
        merge_partials([Partial(empty.sums(), 0.0), Partial(empty.sums(), 0.0)])


def test_merge_of_no_partials_is_refused() -> None:
    with pytest.raises(AggregationError):
        merge_partials([])


def test_fedavg_of_no_deltas_is_refused() -> None:
    with pytest.raises(AggregationError):
        fedavg([], [])


def test_fedavg_with_zero_total_weight_is_refused() -> None:
    with pytest.raises(AggregationError):
        fedavg(_deltas(2, seed=0), [0.0, 0.0])


def test_fedavg_weights_each_delta_by_its_weight() -> None:
    deltas = [{"w": np.array([1.0, 0.0], np.float32)}, {"w": np.array([4.0, 2.0], np.float32)}]

    averaged = fedavg(deltas, [3.0, 1.0])

    np.testing.assert_array_equal(averaged["w"], np.array([1.75, 0.5], np.float32))


def test_apply_delta_adds_the_delta_scaled_by_the_server_learning_rate() -> None:
    weights = {"w": np.array([1.0, -2.0], np.float32), "b": np.array([0.5], np.float32)}
    delta = {"w": np.array([0.4, 0.2], np.float32), "b": np.array([-1.0], np.float32)}

    updated = apply_delta(weights, delta, server_learning_rate=0.5)

    np.testing.assert_allclose(updated["w"], [1.2, -1.9], rtol=1e-6)
    np.testing.assert_allclose(updated["b"], [0.0], atol=1e-7)
    assert all(array.dtype == np.float32 for array in updated.values())


def test_apply_delta_defaults_to_the_plain_fedavg_step() -> None:
    weights = {"w": np.array([1.0], np.float32)}

    assert apply_delta(weights, {"w": np.array([0.25], np.float32)})["w"][0] == np.float32(1.25)


def test_apply_delta_does_not_modify_its_inputs() -> None:
    weights = {"w": np.array([1.0, 2.0], np.float32)}
    delta = {"w": np.array([1.0, 1.0], np.float32)}

    apply_delta(weights, delta, 2.0)

    np.testing.assert_array_equal(weights["w"], [1.0, 2.0])
    np.testing.assert_array_equal(delta["w"], [1.0, 1.0])
