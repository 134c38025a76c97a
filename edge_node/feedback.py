"""Error feedback for lossy update codecs: what an update did not send is added to the next one.

A `topk-int8-zstd` update sends only the largest values of the node's delta; left alone, the rest
would be lost every round and training would drift. With error feedback the node keeps the
*residual* (the delta it meant to send minus what the codec sent) and adds it to its next delta,
so every coordinate eventually reaches the aggregate (Seide et al. 2014; Karimireddy et al. 2019).

The residual is on disk with the round that left it and the residual that round started from, so
a restart loses nothing: a node that crashes after keeping a round's residual but before marking
the round trained retrains that round from the residual it started from, not from its own.
Pure: arrays in, arrays out; `edge_node.state.NodeStateStore` keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from learning.model import Weights

# Codecs whose updates leave a residual worth carrying (int8 and fp16 lose far less than a
# quantization step per round, and unbiased rounding keeps that from accumulating).
FEEDBACK_CODECS = frozenset({"topk-int8-zstd"})


@dataclass(frozen=True)
class Residual:
    round_id: int  # the round whose update left it
    values: Weights  # what that update did not send
    previous: Weights | None  # the residual that round started from

    def for_round(self, round_id: int) -> Weights | None:
        """The residual a training for `round_id` starts from."""
        return self.previous if round_id == self.round_id else self.values


def with_residual(delta: Weights, residual: Weights | None) -> Weights:
    """The delta to encode: this round's plus what earlier updates did not send."""
    if residual is None or list(residual) != list(delta):
        return delta
    if any(np.shape(residual[name]) != np.shape(delta[name]) for name in delta):
        return delta  # a residual of another model shape (the fleet changed models): dropped
    return {name: (delta[name] + residual[name]).astype(np.float32) for name in delta}


def left_over(meant: Weights, sent: Weights) -> Weights:
    return {name: (meant[name] - sent[name]).astype(np.float32) for name in meant}
