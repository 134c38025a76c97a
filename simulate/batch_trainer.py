"""Train many simulated turbines' rounds in one batch. Turbines of a simulated fleet share one
process; rather than training their local models one after another, `BatchTrainer` gathers the
requests that arrive within a short window and trains them together with `train_many`, which
returns for each node what `train_local` would have. Each node still signs and publishes its
own update; nothing that crosses the wire changes.

Training runs in a process of its own (`training_process`), not a thread of the fleet's: the
fleet's event loop (ten thousand MQTT clients) holds the GIL most of the time, and a training
thread waits for it before each of its thousands of small torch calls (up to the 5 ms switch
interval each). At 10,000 turbines (bench/fleet_round.py, one run each on a shared machine) a
round's training took 127 s in a thread and 84 s in its own process, against 47 s alone."""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import time
from collections import defaultdict
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from learning.batched import train_many
from learning.model import AutoencoderShape, Weights
from learning.training import LocalResult, TrainingConfig

log = logging.getLogger(__name__)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # the other core serves the fleet, brokers and daemons


def training_process() -> ProcessPoolExecutor:
    """One worker process for `BatchTrainer` (spawned: the fleet's process holds thousands of
    sockets and threads that a fork would copy)."""
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread)


@dataclass
class _Request:
    base: Weights
    windows: np.ndarray
    plan: TrainingConfig
    seed: int
    result: asyncio.Future[LocalResult]


class BatchTrainer:
    """An `edge_node.node.Trainer` shared by every node of a simulated fleet."""

    def __init__(self, shape: AutoencoderShape, executor: Executor, *, gather_s: float = 0.2, max_batch: int = 1024):
        self.shape = shape
        self._executor = executor
        self._gather_s = gather_s
        self._max_batch = max_batch
        self._pending: list[_Request] = []
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.trained = 0
        # Where a round's time goes (bench/): (started, finished, nodes) of each batch, Unix s.
        self.spans: list[tuple[float, float, int]] = []

    def worker_pids(self) -> list[int]:
        """The training process's pid (bench/ measures its memory and CPU), when there is one."""
        processes = getattr(self._executor, "_processes", None) or {}
        return sorted(processes)

    async def __call__(self, base: Weights, windows: np.ndarray, plan: TrainingConfig, seed: int) -> LocalResult:
        future: asyncio.Future[LocalResult] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(base, windows, plan, seed, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(self._gather_s)  # let the rest of the fleet's requests arrive
            taken, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            groups: dict[tuple[TrainingConfig, int], list[_Request]] = defaultdict(list)
            for request in taken:
                groups[(request.plan, request.seed)].append(request)
            for (plan, seed), requests in groups.items():
                await self._train(plan, seed, requests)

    async def _train(self, plan: TrainingConfig, seed: int, requests: list[_Request]) -> None:
        started = time.time()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor,
                functools.partial(
                    train_many, [r.base for r in requests], [r.windows for r in requests], plan, self.shape, seeds=seed
                ),
            )
        except Exception as exc:  # hand the failure to every waiting node rather than hang them
            log.exception("batched training of %d nodes failed", len(requests))
            for request in requests:
                if not request.result.done():
                    request.result.set_exception(exc)
            return
        self.spans.append((started, time.time(), len(requests)))
        self.batches += 1
        self.trained += len(requests)
        for request, result in zip(requests, results, strict=True):
            if not request.result.done():
                request.result.set_result(result)
