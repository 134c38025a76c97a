"""What an edge node remembers across restarts: the newest verified global model and the last
round it trained for (so a restart mid-round neither trains twice nor forgets the model), and
how far it has scored its buffer for alerts (so a restart neither alerts twice nor floods)."""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import msgpack
import numpy as np

from edge_node.alerts import ScoringState
from edge_node.feedback import Residual
from learning.model import Weights
from nacelle.files import write_atomically


@dataclass
class NodeState:
    model_version: int = -1  # -1: no global model received yet
    model_round: int = 0
    last_trained_round: int = 0
    trained_through_chunk: int = -1  # newest buffer chunk the last training saw (new data is after it)


def _pack_weights(weights: Weights) -> bytes:
    arrays = [np.ascontiguousarray(array, "<f4") for array in weights.values()]
    tensors = [[name, list(array.shape)] for name, array in zip(weights, arrays, strict=True)]
    packed: bytes = msgpack.packb({"tensors": tensors, "data": b"".join(a.tobytes() for a in arrays)})
    return packed


def _unpack_weights(data: bytes) -> Weights:
    body = msgpack.unpackb(data)
    values = np.frombuffer(body["data"], "<f4")
    weights: Weights = {}
    offset = 0
    for name, shape in body["tensors"]:
        size = int(np.prod(shape))
        weights[name] = values[offset : offset + size].reshape(shape).astype(np.float32)
        offset += size
    return weights


class NodeStateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._state_path = directory / "state.json"
        # One msgpack map: names and shapes, then every tensor's float32 bytes. np.savez (the
        # older model.npz, still read) writes a zip member per tensor: ten times slower, and a
        # simulated fleet saves ten thousand models a night.
        self._model_path = directory / "model.msgpack"
        self._old_model_path = directory / "model.npz"
        self._old_model_left = self._old_model_path.exists()  # removed once a model.msgpack replaces it
        self._scoring_path = directory / "scoring.json"
        self._residual_path = directory / "residual.npz"

    def load(self) -> tuple[NodeState, Weights | None]:
        if not self._state_path.exists():
            return NodeState(), None
        state = NodeState(**json.loads(self._state_path.read_text()))
        weights = None
        if self._model_path.exists():
            weights = _unpack_weights(self._model_path.read_bytes())
        elif self._old_model_path.exists():
            with np.load(self._old_model_path) as archive:
                weights = {name: archive[name] for name in archive.files}
        return state, weights

    def save(self, state: NodeState, weights: Weights | None = None) -> None:
        if weights is not None:
            write_atomically(self._model_path, _pack_weights(weights), durable=False)
            if self._old_model_left:
                self._old_model_path.unlink(missing_ok=True)
                self._old_model_left = False
        write_atomically(self._state_path, json.dumps(asdict(state)).encode(), durable=False)

    def load_scoring(self) -> ScoringState:
        if not self._scoring_path.exists():
            return ScoringState()
        return ScoringState.from_json(json.loads(self._scoring_path.read_text()))

    def save_scoring(self, scoring: ScoringState) -> None:
        write_atomically(self._scoring_path, json.dumps(scoring.to_json()).encode(), durable=False)

    def load_residual(self) -> Residual | None:
        if not self._residual_path.exists():
            return None
        with np.load(self._residual_path) as archive:
            arrays = {name: archive[name] for name in archive.files}
        round_id = int(arrays.pop("round"))
        values = {name.removeprefix("values/"): a for name, a in arrays.items() if name.startswith("values/")}
        previous = {name.removeprefix("previous/"): a for name, a in arrays.items() if name.startswith("previous/")}
        return Residual(round_id, values, previous or None)

    def save_residual(self, residual: Residual) -> None:
        arrays = {f"values/{name}": array for name, array in residual.values.items()}
        arrays.update({f"previous/{name}": array for name, array in (residual.previous or {}).items()})
        packed = io.BytesIO()
        np.savez(packed, round=np.int64(residual.round_id), **arrays)
        write_atomically(self._residual_path, packed.getvalue(), durable=False)

    def clear_residual(self) -> None:
        self._residual_path.unlink(missing_ok=True)
