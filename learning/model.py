"""The autoencoder every node trains, and conversions between torch modules and plain arrays.

Weights cross package boundaries as `Weights`: an ordered dict of tensor name → float32 numpy
array, in the module's state_dict order. That order is part of the wire contract (the codec
checks it), so it comes from `weight_shapes`, never from a hand-written list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

Weights = dict[str, np.ndarray]


@dataclass(frozen=True)
class AutoencoderShape:
    """Sizes of the dense autoencoder: features → hidden → latent → hidden → features."""

    n_features: int = 64
    hidden: int = 32
    latent: int = 8

    def __post_init__(self) -> None:
        for name in ("n_features", "hidden", "latent"):
            if getattr(self, name) < 1:
                raise ValueError(f"AutoencoderShape.{name} must be positive")


def build_autoencoder(shape: AutoencoderShape) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(shape.n_features, shape.hidden),
        nn.ReLU(),
        nn.Linear(shape.hidden, shape.latent),
        nn.ReLU(),
        nn.Linear(shape.latent, shape.hidden),
        nn.ReLU(),
        nn.Linear(shape.hidden, shape.n_features),
    )


def weight_shapes(shape: AutoencoderShape) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in build_autoencoder(shape).state_dict().items()}


def get_weights(module: nn.Module) -> Weights:
    return {name: t.detach().cpu().numpy().astype(np.float32, copy=True) for name, t in module.state_dict().items()}


def set_weights(module: nn.Module, weights: Weights) -> None:
    # torch.tensor copies: the arrays may be read-only (a model the simulator's turbines share),
    # which torch.from_numpy warns about, and load_state_dict copies them anyway.
    module.load_state_dict({name: torch.tensor(np.asarray(a, np.float32)) for name, a in weights.items()})


def initial_weights(shape: AutoencoderShape, seed: int) -> Weights:
    """Deterministic initial global model (torch's default init under a fixed seed)."""
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return get_weights(build_autoencoder(shape))
    finally:
        torch.random.set_rng_state(generator_state)


def subtract(left: Weights, right: Weights) -> Weights:
    return {name: (left[name] - right[name]).astype(np.float32) for name in left}
