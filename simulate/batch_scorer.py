"""Score many simulated turbines' windows in one batch. Every node of a simulated fleet that
holds the same model version holds the same (signed) weights, so the requests that arrive
within a short window are scored together: one forward pass per model version over their
windows, in slices, instead of one small pass per node. Each node gets exactly the scores
`learning.training.reconstruction_errors` would give it (`learning.batched.
reconstruction_errors_many` is for one model per node; here the model is shared)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from learning.model import AutoencoderShape, Weights
from learning.training import reconstruction_errors
from simulate.batch_trainer import Arrivals

log = logging.getLogger(__name__)

# Windows per forward pass: 16 MiB of float32 features, so a 10,000-turbine night (2.6 million
# windows with the calibration sets) never needs them all in one array.
MAX_WINDOWS_PER_PASS = 1 << 16


def score_window_sets(
    weights: Weights, window_sets: Sequence[np.ndarray], shape: AutoencoderShape, max_windows: int
) -> list[np.ndarray]:
    """Scores of each window set under one model, sets grouped into passes of at most
    `max_windows` windows (a larger set gets a pass of its own)."""
    scores: list[np.ndarray] = []
    start = 0
    while start < len(window_sets):
        end, total = start + 1, len(window_sets[start])
        while end < len(window_sets) and total + len(window_sets[end]) <= max_windows:
            total += len(window_sets[end])
            end += 1
        group = window_sets[start:end]
        flat = reconstruction_errors(weights, np.concatenate(group), shape)
        scores.extend(np.split(flat, np.cumsum([len(windows) for windows in group])[:-1]))
        start = end
    return scores


@dataclass
class _Request:
    weights: Weights
    windows: np.ndarray
    result: asyncio.Future[np.ndarray]


class BatchScorer:
    """An `edge_node.scoring.Scorer` shared by every node of a simulated fleet. As soon as
    `max_nodes` requests for one model version are in, they are scored, from the requesting
    node's own call (a fleet's requests come in one turn of the event loop that may last
    seconds, and the timer that gathers the rest fires only after it); each pass's nodes then
    resume together, in one later turn. So are a version's requests once `expected` of them
    (the fleet's size) have come: the rest of the fleet has no more to send."""

    def __init__(
        self,
        shape: AutoencoderShape,
        executor: Executor,
        *,
        gather_s: float = 0.2,
        max_nodes: int = 256,
        expected: int | None = None,
    ) -> None:
        self.shape = shape
        self._executor = executor
        self._gather_s = gather_s
        self._max_nodes = max_nodes
        self._pending: dict[int, list[_Request]] = defaultdict(list)  # by model version
        # Exactly the expected count, not more: a node may score twice under one version (its
        # periodic pass), and the requests after the count are gathered as before.
        self._arrivals = Arrivals(expected)
        self._gatherer: asyncio.Task[None] | None = None
        self.passes = 0
        self.windows_scored = 0

    async def __call__(self, weights: Weights, version: int, windows: np.ndarray) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        waiting = self._pending[version]
        waiting.append(_Request(weights, windows, future))
        if self._arrivals.count(version) or len(waiting) >= self._max_nodes:
            self._start(self._pending.pop(version))
        elif self._gatherer is None or self._gatherer.done():
            self._gatherer = asyncio.create_task(self._start_gathered())
        return await future

    async def _start_gathered(self) -> None:
        while self._pending:
            await asyncio.sleep(self._gather_s)  # let the rest of the fleet's requests arrive
            for version in list(self._pending):
                self._start(self._pending.pop(version))

    def _start(self, requests: list[_Request]) -> None:
        weights, window_sets = requests[0].weights, [r.windows for r in requests]
        scoring = asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: score_window_sets(weights, window_sets, self.shape, MAX_WINDOWS_PER_PASS)
        )
        scoring.add_done_callback(functools.partial(self._finish, requests))

    def _finish(self, requests: list[_Request], scoring: asyncio.Future[list[np.ndarray]]) -> None:
        if scoring.cancelled():
            return  # the simulation is stopping: so are the nodes waiting
        failure = scoring.exception()
        if failure is not None:  # hand the failure to every waiting node rather than hang them
            log.error("batched scoring of %d nodes failed", len(requests), exc_info=failure)
            for request in requests:
                if not request.result.done():
                    request.result.set_exception(failure)
            return
        self.passes += 1
        self.windows_scored += sum(len(r.windows) for r in requests)
        for request, result in zip(requests, scoring.result(), strict=True):
            if not request.result.done():
                request.result.set_result(result)
