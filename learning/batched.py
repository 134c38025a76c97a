"""Train and score many independent autoencoders at once, with their parameters stacked.

For: the simulator's local-only baselines (one model per turbine, thousands of them) and the
fastest honest floor for benchmarks. `train_many` gives, model by model, what `train_local` gives
with the same starting weights, data, config and seed — same Adam hyper-parameters, same MSE,
same per-model shuffle (a `torch.Generator` seeded with that model's seed, one `randperm` per
epoch) and the same batch boundaries — up to float rounding (batched vs unbatched matmuls).

How: each Linear layer of M models becomes a weight stack (trained as [M, in, out], the
transpose of its tensors) and a bias stack [M, out], applied with `torch.baddbmm`. One (fused)
Adam runs over the stacks: Adam is element-wise, and the loss minimised is the SUM over models
of each model's mean batch MSE, so model i's gradient is exactly the gradient of its own loss
and its Adam state and update are those of a lone model.
(`torch.func.vmap` over `functional_call` was measured too and was slower on CPU.)
Models are grouped by dataset length (models in one group take the same number of Adam steps
on batches of the same sizes) and processed `chunk_size` at a time, which bounds memory and is
also the fastest way through: the stacks of 128 models stay in the CPU's caches (1,024 models of
272 windows, 5 epochs, one thread, 2026-12-05: 1.2–1.3 CPU seconds in chunks of 64 or 128, 1.5
in chunks of 32, 1.7 of 512, 1.8–2.2 of 1,024; scoring 264 windows each: 0.12 against 0.26–0.47).

Not for: federated rounds (use `learning.training.train_local` on a node), models other than the
dense autoencoder of `learning.model`, or any I/O — arrays in, arrays out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch

from learning.model import AutoencoderShape, Weights, weight_shapes
from learning.training import LocalResult, TrainingConfig

StackedWeights = dict[str, np.ndarray]
"""Tensor name → array with a leading model axis: [M, *tensor shape], float32, state_dict order."""


def stack_weights(weights: Sequence[Weights]) -> StackedWeights:
    """Stack per-model weights along a new leading model axis (names in the first model's order)."""
    if len(weights) == 0:
        raise ValueError("stack_weights needs at least one model")
    names = list(weights[0])
    for index, model in enumerate(weights):
        if list(model) != names:
            raise ValueError(f"model {index} has tensors {list(model)}, expected {names}")
    return {name: np.stack([np.asarray(model[name], np.float32) for model in weights]) for name in names}


def unstack_weights(stacked: StackedWeights) -> list[Weights]:
    """Inverse of `stack_weights`: one `Weights` per model, each array a float32 copy."""
    counts = {len(array) for array in stacked.values()}
    if len(counts) > 1:
        raise ValueError(f"stacked tensors disagree on the number of models: {sorted(counts)}")
    count = counts.pop() if counts else 0
    return [{name: np.array(array[i], np.float32) for name, array in stacked.items()} for i in range(count)]


def train_many(
    initial: Weights | Sequence[Weights],
    datasets: Sequence[np.ndarray],
    config: TrainingConfig,
    shape: AutoencoderShape,
    *,
    seeds: Sequence[int] | int = 0,
    device: torch.device | None = None,
    chunk_size: int = 128,
) -> list[LocalResult]:
    """Train one autoencoder per dataset; result i is what `train_local` would return for model i.

    `initial` is either one `Weights` every model starts from or one per dataset. `seeds` is one
    shuffle seed per dataset, or a single int used for every model (as `train_local(seed=...)`
    would be called with it each time — pass a sequence for independent shuffles). Each dataset
    is (n_i > 0, n_features); lengths may differ. `chunk_size` bounds how many models are held in
    memory at once; results do not depend on it beyond float rounding.
    """
    count = len(datasets)
    starts = _per_model_weights(initial, count)
    seed_list = _per_model_seeds(seeds, count)
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    for index, windows in enumerate(datasets):
        if windows.ndim != 2 or windows.shape[1] != shape.n_features or len(windows) == 0:
            raise ValueError(f"dataset {index} must be (n>0, {shape.n_features}), got {windows.shape}")
    names = _check_weights(starts, shape)
    device = device or torch.device("cpu")

    results: list[LocalResult | None] = [None] * count
    for indices in _chunks_by_length([len(windows) for windows in datasets], chunk_size):
        chunk_starts = [starts[i] for i in indices]
        trained, losses = _train_chunk(
            stack_weights(chunk_starts),
            np.stack([np.asarray(datasets[i], np.float32) for i in indices]),
            [seed_list[i] for i in indices],
            config,
            names,
            device,
        )
        for position, index in enumerate(indices):
            start = chunk_starts[position]
            results[index] = LocalResult(
                delta={name: (trained[name][position] - start[name]).astype(np.float32) for name in names},
                num_samples=len(datasets[index]),
                train_loss=float(losses[position]),
            )
    return [result for result in results if result is not None]


def reconstruction_errors_many(
    weights: Sequence[Weights],
    windows: Sequence[np.ndarray],
    shape: AutoencoderShape,
    *,
    chunk_size: int = 128,
) -> list[np.ndarray]:
    """Per-window mean squared reconstruction error of windows[i] under weights[i] (float32).

    Same scores as `learning.training.reconstruction_errors`, model by model. Window sets may
    differ in length (including empty); they are sorted by length and zero-padded within a chunk.
    """
    if len(weights) != len(windows):
        raise ValueError(f"{len(weights)} models but {len(windows)} window sets")
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    for index, model_windows in enumerate(windows):
        if model_windows.ndim != 2 or model_windows.shape[1] != shape.n_features:
            raise ValueError(f"window set {index} must be (n, {shape.n_features}), got {model_windows.shape}")
    if len(weights) == 0:
        return []
    names = _check_weights(weights, shape)
    lengths = [len(model_windows) for model_windows in windows]
    order = sorted(range(len(windows)), key=lambda i: lengths[i])
    errors: list[np.ndarray] = [np.empty(0, np.float32)] * len(windows)
    with torch.no_grad():
        for begin in range(0, len(order), chunk_size):
            indices = order[begin : begin + chunk_size]
            longest = max(lengths[i] for i in indices)
            if longest == 0:
                continue
            padded = np.zeros((len(indices), longest, shape.n_features), np.float32)
            for position, index in enumerate(indices):
                padded[position, : lengths[index]] = windows[index]
            stacked = stack_weights([weights[i] for i in indices])
            params = [_input_major(torch.from_numpy(stacked[name])) for name in names]
            data = torch.from_numpy(padded)
            scores = ((_forward(params, data) - data) ** 2).mean(dim=2).numpy()
            for position, index in enumerate(indices):
                errors[index] = scores[position, : lengths[index]].copy()
    return errors


def _forward(params: Sequence[torch.Tensor], data: torch.Tensor) -> torch.Tensor:
    """The autoencoder on [M, B, features] with params [w0, b0, w1, b1, …], w [M, in, out]: each
    weight stack is the transpose of its tensor's (see `_input_major`)."""
    hidden = data
    last = len(params) // 2 - 1
    for layer in range(last + 1):
        hidden = torch.baddbmm(params[2 * layer + 1].unsqueeze(1), hidden, params[2 * layer])
        if layer < last:
            hidden = torch.relu(hidden)
    return hidden


def _input_major(tensor: torch.Tensor) -> torch.Tensor:
    """A weight stack [M, out, in] as [M, in, out] (a view); a bias stack as it is."""
    return tensor.transpose(1, 2) if tensor.dim() == 3 else tensor


def _train_chunk(
    stacked: StackedWeights,
    data_np: np.ndarray,
    seeds: Sequence[int],
    config: TrainingConfig,
    names: Sequence[str],
    device: torch.device,
) -> tuple[StackedWeights, np.ndarray]:
    """Train the models of one chunk, whose datasets all have the same length ([M, N, features])."""
    count, length = data_np.shape[0], data_np.shape[1]
    # Weights are trained input-major ([M, in, out], contiguous): the forward needs no transpose,
    # so each weight's gradient comes out of its bmm contiguous and is kept without a copy. With
    # the fused Adam (one pass over each tensor, not a dozen) and an index_select shuffle
    # (a copy per window, not per value), a model trains in 40% less time than with a transposed
    # view, the per-tensor Adam and a gather (measured on 128 models: 2.0 → 1.2 ms of CPU each).
    params = [_input_major(torch.from_numpy(stacked[name])).contiguous().to(device).requires_grad_() for name in names]
    optimiser = torch.optim.Adam(params, lr=config.learning_rate, fused=True)
    windows = torch.from_numpy(data_np).to(device).view(count * length, -1)  # model i's: rows i·N … i·N+N−1
    first_window = (torch.arange(count, device=device) * length).unsqueeze(1)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    epoch_loss = torch.zeros(count, dtype=torch.float64, device=device)
    for _ in range(config.epochs):
        order = torch.stack([torch.randperm(length, generator=generator) for generator in generators]).to(device)
        shuffled = windows.index_select(0, (first_window + order).view(-1)).view(count, length, -1)
        total = torch.zeros(count, dtype=torch.float64, device=device)
        for start in range(0, length, config.batch_size):
            batch = shuffled[:, start : start + config.batch_size]
            optimiser.zero_grad(set_to_none=True)
            errors = torch.nn.functional.mse_loss(_forward(params, batch), batch, reduction="none")
            per_model = errors.mean(dim=(1, 2))
            torch.autograd.backward(per_model.sum())
            optimiser.step()
            total += per_model.detach().double() * batch.shape[1]
        epoch_loss = total / length
    trained = {
        name: _input_major(param.detach()).cpu().numpy().astype(np.float32, copy=True)
        for name, param in zip(names, params, strict=True)
    }
    losses: np.ndarray = epoch_loss.cpu().numpy()
    return trained, losses


def _chunks_by_length(lengths: Sequence[int], chunk_size: int) -> Iterator[list[int]]:
    """Indices grouped by equal length (first-seen order), each group cut into chunks."""
    groups: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        groups.setdefault(length, []).append(index)
    for members in groups.values():
        for begin in range(0, len(members), chunk_size):
            yield members[begin : begin + chunk_size]


def _per_model_weights(initial: Weights | Sequence[Weights], count: int) -> list[Weights]:
    if isinstance(initial, Mapping):
        return [initial] * count
    starts = list(initial)
    if len(starts) != count:
        raise ValueError(f"{len(starts)} initial weights for {count} datasets")
    return starts


def _per_model_seeds(seeds: Sequence[int] | int, count: int) -> list[int]:
    if isinstance(seeds, int):
        return [seeds] * count
    seed_list = [int(seed) for seed in seeds]
    if len(seed_list) != count:
        raise ValueError(f"{len(seed_list)} seeds for {count} datasets")
    return seed_list


def _check_weights(weights: Sequence[Weights], shape: AutoencoderShape) -> list[str]:
    """The expected tensor names, after checking every model has them with the right shapes."""
    with torch.random.fork_rng(devices=[]):  # weight_shapes builds a module: keep torch's global RNG as it was
        expected = weight_shapes(shape)
    for index, model in enumerate(weights):
        if list(model) != list(expected):
            raise ValueError(f"model {index} has tensors {list(model)}, expected {list(expected)}")
        for name, tensor_shape in expected.items():
            if tuple(np.shape(model[name])) != tensor_shape:
                raise ValueError(f"model {index} tensor {name} is {np.shape(model[name])}, expected {tensor_shape}")
    return list(expected)
