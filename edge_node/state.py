"""What an edge node remembers across restarts: the newest verified global model and the last
round it trained for (so a restart mid-round neither trains twice nor forgets the model), and
how far it has scored its buffer for alerts (so a restart neither alerts twice nor floods)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_node.alerts import ScoringState
from learning.model import Weights


@dataclass
class NodeState:
    model_version: int = -1  # -1: no global model received yet
    model_round: int = 0
    last_trained_round: int = 0
    trained_through_chunk: int = -1  # newest buffer chunk the last training saw (new data is after it)


class NodeStateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._state_path = directory / "state.json"
        self._model_path = directory / "model.npz"
        self._scoring_path = directory / "scoring.json"

    def load(self) -> tuple[NodeState, Weights | None]:
        if not self._state_path.exists():
            return NodeState(), None
        state = NodeState(**json.loads(self._state_path.read_text()))
        weights = None
        if self._model_path.exists():
            with np.load(self._model_path) as archive:
                weights = {name: archive[name] for name in archive.files}
        return state, weights

    def save(self, state: NodeState, weights: Weights | None = None) -> None:
        if weights is not None:
            temporary = self.directory / "model.tmp.npz"
            np.savez(temporary, **weights)
            temporary.replace(self._model_path)
        temporary_state = self._state_path.with_suffix(".tmp")
        temporary_state.write_text(json.dumps(asdict(state)))
        temporary_state.replace(self._state_path)

    def load_scoring(self) -> ScoringState:
        if not self._scoring_path.exists():
            return ScoringState()
        return ScoringState.from_json(json.loads(self._scoring_path.read_text()))

    def save_scoring(self, scoring: ScoringState) -> None:
        temporary = self._scoring_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(scoring.to_json()))
        temporary.replace(self._scoring_path)
