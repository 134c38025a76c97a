"""What each update codec costs: bytes on the wire, encode and decode time, detection quality.

Bytes are of the whole signed update message (envelope, signature, body) for a real delta: the
first round's update of a simulated turbine. Times are the median of repeated `encode_arrays`
and `decode_arrays` calls on it (plus sealing: the Ed25519 signature and canonical msgpack).
Detection: a fixed small simulated fleet trained by FedAvg for a few rounds with no wire, each
node's delta passed through the codec (top-k with the node's error feedback, the code of
`edge_node.feedback`), then the AUC of the final model on the simulator's held-out windows
(`simulate.evaluation`); the cost is the exact fp32 run's AUC minus the codec's. Every run uses
the same data and seeds, so the codec is the only difference.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.results import Section
from edge_node.feedback import left_over, with_residual
from learning.aggregation import apply_delta, fedavg
from learning.batched import train_many
from learning.model import AutoencoderShape, Weights, initial_weights, weight_shapes
from learning.training import TrainingConfig
from simulate.evaluation import eval_windows, score_model
from simulate.turbines import fleet_profile
from simulate.vibration import turbine_features
from wire.codec import Codec, decode_arrays, encode_arrays
from wire.envelope import seal
from wire.messages import NodeUpdate, update_envelope
from wire.signing import generate_key


@dataclass(frozen=True)
class Variant:
    label: str
    codec: Codec
    topk_fraction: float = 1.0


VARIANTS = [
    Variant("fp32-zstd", "fp32-zstd"),
    Variant("fp16-zstd", "fp16-zstd"),
    Variant("int8-zstd (default)", "int8-zstd"),
    Variant("topk-int8-zstd 1/16", "topk-int8-zstd", 1 / 16),
    Variant("topk-int8-zstd 1/32", "topk-int8-zstd", 1 / 32),
    Variant("topk-int8-zstd 1/64", "topk-int8-zstd", 1 / 64),
]
# (turbines, rounds, timing repetitions)
SIZES = {"tiny": (2, 1, 10), "small": (40, 6, 300), "full": (60, 12, 2000)}
WINDOWS, EPOCHS = 256, 5


def _median_us(action: Callable[[], object], repetitions: int) -> float:
    samples = []
    for _ in range(repetitions):
        began = time.perf_counter()
        action()
        samples.append(time.perf_counter() - began)
    return 1e6 * statistics.median(samples)


def _fleet(turbines: int) -> tuple[list[np.ndarray], list[tuple[str, str, int]]]:
    members = [(f"t{i:03d}", ("offshore", "onshore")[i % 2], i % 2) for i in range(turbines)]
    data = [
        turbine_features(fleet_profile(7, i, region_index), WINDOWS) for i, (_, _, region_index) in enumerate(members)
    ]
    return data, members


def federated_auc(variant: Variant | None, turbines: int, rounds: int) -> float:
    """AUC of FedAvg over the fixed fleet with every delta through `variant` (None: exact)."""
    shape = AutoencoderShape()
    shapes = weight_shapes(shape)
    data, members = _fleet(turbines)
    plan = TrainingConfig(epochs=EPOCHS, batch_size=32, learning_rate=3e-3)
    weights = initial_weights(shape, 0)
    residuals: list[Weights | None] = [None] * turbines
    for round_id in range(1, rounds + 1):
        results = train_many(weights, data, plan, shape, seeds=round_id)
        deltas = []
        for index, result in enumerate(results):
            if variant is None:
                deltas.append(result.delta)
                continue
            meant = with_residual(result.delta, residuals[index])
            sent = decode_arrays(encode_arrays(meant, variant.codec, topk_fraction=variant.topk_fraction), shapes)
            if variant.codec == "topk-int8-zstd":
                residuals[index] = left_over(meant, sent)
            deltas.append(sent)
        weights = apply_delta(weights, fedavg(deltas, [r.num_samples for r in results]))
    turbines_eval = [
        eval_windows(name, region, fleet_profile(7, i, region_index))
        for i, (name, region, region_index) in enumerate(members)
    ]
    return float(score_model("federated", [weights], turbines_eval, shape)["auc"])


def run(size: str) -> Section:
    turbines, rounds, repetitions = SIZES[size]
    shape = AutoencoderShape()
    shapes = weight_shapes(shape)
    data, _ = _fleet(1)
    plan = TrainingConfig(epochs=EPOCHS, batch_size=32, learning_rate=3e-3)
    delta = train_many(initial_weights(shape, 0), data, plan, shape, seeds=1)[0].delta
    key = generate_key()
    values = sum(int(np.prod(s)) for s in shapes.values())
    update = NodeUpdate("offshore-t00001", "offshore", 1, 0, delta, WINDOWS, 0.3)

    def message_bytes(variant: Variant) -> int:
        envelope = update_envelope(update, variant.codec, 1.0e9, topk_fraction=variant.topk_fraction)
        return len(seal(envelope, key))

    # No codec sends raw fp32: the reference is the fp32 message with its data uncompressed.
    fp32_body = encode_arrays(delta, "fp32-zstd")
    raw_fp32 = message_bytes(VARIANTS[0]) - len(fp32_body["data"]) + 4 * values
    exact_auc = federated_auc(None, turbines, rounds)
    section = Section("codecs", f"Update codecs: one signed update of the default model ({values:,} values)")
    section.add(variant="fp32 raw (reference)", bytes=raw_fp32, fraction_of_fp32=1.0, auc=exact_auc, auc_cost=0.0)
    for variant in VARIANTS:
        body = encode_arrays(delta, variant.codec, topk_fraction=variant.topk_fraction)
        size_bytes = message_bytes(variant)
        auc = federated_auc(variant, turbines, rounds)
        section.add(
            variant=variant.label,
            bytes=size_bytes,
            fraction_of_fp32=size_bytes / raw_fp32,
            encode_us=_median_us(
                lambda v=variant: encode_arrays(delta, v.codec, topk_fraction=v.topk_fraction), repetitions
            ),
            decode_us=_median_us(lambda b=body: decode_arrays(b, shapes), repetitions),
            seal_us=_median_us(
                lambda v=variant: seal(update_envelope(update, v.codec, 1.0e9, topk_fraction=v.topk_fraction), key),
                repetitions,
            ),
            auc=auc,
            auc_cost=exact_auc - auc,
        )
    section.notes.append(
        f"AUC: FedAvg of {turbines} simulated turbines, {rounds} rounds of {EPOCHS} epochs on {WINDOWS} windows, "
        "no wire; auc_cost = exact fp32 AUC - the codec's (negative: the codec's run happened to score higher). "
        "seal_us = encode + canonical msgpack + Ed25519 signature."
    )
    return section
