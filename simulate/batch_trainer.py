"""Train many simulated turbines' rounds in batches. Turbines of a simulated fleet share one
process; rather than training their local models one after another, `BatchTrainer` gathers the
requests that arrive within a short window and trains them together with `train_many`, which
returns for each node what `train_local` would have. Each node still signs and publishes its
own update; nothing that crosses the wire changes.

Training runs in processes of their own (`training_processes`), one single-threaded worker per
core (`training_workers`: fewer for a fleet of fewer batches), not in threads of the fleet's:
the fleet's event loop (ten thousand MQTT clients) holds the GIL most of the time, and a
training thread waits for it before each of its thousands of small torch calls. One thread per
process, because the batched models' small matrix products gain little from a second thread:
the benchmark's floor for 2,000 turbines took 5.5 s in two single-threaded processes and 7.0 s
in one process with two threads (one run each).

A batch starts when a worker is free: at once if it is full (`max_batch`, which bounds how long
the last batch keeps the round waiting), otherwise after `gather_s` more of gathering. Training
thus overlaps the fan-out of the model, in small batches while the round's requests trickle in
(per model, batches of 64 and 128 cost the least; 32 costs a fifth more, and 512 or more a
half more, their stacks no longer in the CPU's caches: `learning.batched`)."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from learning.batched import StackedWeights, stack_weights, train_many
from learning.model import AutoencoderShape, Weights
from learning.training import LocalResult, TrainingConfig

log = logging.getLogger(__name__)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


# Nodes a batch holds at most (BatchTrainer's default max_batch). Smaller batches start sooner
# in a round, while the fleet still takes in the model (simulate.turns): rounds of 1,000 and
# 2,000 turbines took 8-10% less with 128 than with 256 (bench.fleet_round, two runs each);
# 64 took longer again.
MAX_BATCH = 128


def training_workers(turbines: int) -> int:
    """Training processes for a fleet: one per core, but no more than it has batches (a small
    fleet's second process would only cost its start, torch's import among it)."""
    return max(1, min(os.cpu_count() or 1, math.ceil(turbines / MAX_BATCH)))


def training_processes(workers: int) -> ProcessPoolExecutor:
    """`workers` single-threaded processes for `BatchTrainer` (spawned: the fleet's process
    holds thousands of sockets and threads that a fork would copy)."""
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread
    )


@dataclass
class _Request:
    base: Weights
    windows: np.ndarray
    plan: TrainingConfig
    seed: int
    result: asyncio.Future[LocalResult]


# A batch's deltas (stacked), and each node's sample count and training loss.
_TrainedBatch = tuple[StackedWeights, list[int], list[float]]


def _train_batch(
    base: Weights | list[Weights], windows: list[np.ndarray], plan: TrainingConfig, shape: AutoencoderShape, seed: int
) -> _TrainedBatch:
    """`train_many` in the training process, its deltas sent back stacked: a few large arrays
    unpickle in a fraction of the time of eight small ones per node, on the thread of the
    fleet's process that receives them (each node gets views of its own rows)."""
    results = train_many(base, windows, plan, shape, seeds=seed)
    return (
        stack_weights([result.delta for result in results]),
        [result.num_samples for result in results],
        [result.train_loss for result in results],
    )


def _shared_base(requests: list[_Request]) -> Weights | list[Weights]:
    """The one starting model when every request has the same (every node of a round starts from
    the global model it was announced with): sent to the training process once, not per node."""
    first = requests[0].base
    for request in requests[1:]:
        base = request.base
        if base is not first and (
            base.keys() != first.keys() or not all(np.array_equal(base[name], first[name]) for name in first)
        ):
            return [r.base for r in requests]
    return first


class Arrivals:
    """Requests counted per key (a round, a model version) against how many the fleet makes for
    one key (its size; None: unknown, never all in)."""

    def __init__(self, expected: int | None) -> None:
        self._expected = expected
        self._counts: Counter[int] = Counter()

    def count(self, key: int) -> bool:
        """Count one request for `key`; True when it is the last one expected."""
        self._counts[key] += 1
        return self._counts[key] == self._expected

    def all_in(self, key: int) -> bool:
        return self._expected is not None and self._counts[key] >= self._expected


class BatchTrainer:
    """An `edge_node.node.Trainer` shared by every node of a simulated fleet: at most `workers`
    batches train at once (the executor's workers).

    A full batch starts the moment its last request arrives, from the requesting node's own
    call: a fleet's requests come in one turn of the event loop that may last seconds, and a
    timer (the gathering of a partial batch) fires only after it. So does the round's last
    partial batch once `expected` requests (the fleet's size) have come for its round: no more
    are coming, and gathering would only keep the round waiting."""

    def __init__(
        self,
        shape: AutoencoderShape,
        executor: Executor,
        *,
        workers: int = 1,
        gather_s: float = 0.2,
        max_batch: int = MAX_BATCH,
        expected: int | None = None,
    ) -> None:
        self.shape = shape
        self._executor = executor
        self._free_workers = workers
        self._worker_freed = asyncio.Event()
        self._gather_s = gather_s
        self._max_batch = max_batch
        self._pending: list[_Request] = []
        self._arrivals = Arrivals(expected)
        self._gatherer: asyncio.Task[None] | None = None
        self.batches = 0
        self.trained = 0
        # Where a round's time goes (bench/): (started, finished, nodes) of each batch, Unix s.
        self.spans: list[tuple[float, float, int]] = []

    def worker_pids(self) -> list[int]:
        """The training processes' pids (bench/ measures their memory and CPU), when there are any."""
        processes = getattr(self._executor, "_processes", None) or {}
        return sorted(processes)

    async def __call__(self, base: Weights, windows: np.ndarray, plan: TrainingConfig, seed: int) -> LocalResult:
        future: asyncio.Future[LocalResult] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(base, windows, plan, seed, future))
        self._arrivals.count(seed)
        self._start_ready_batches()
        if self._pending and (self._gatherer is None or self._gatherer.done()):
            self._gatherer = asyncio.create_task(self._start_partial_batches())
        return await future

    def _start_ready_batches(self) -> None:
        """Start, while workers are free, the batches that are full or are their round's last."""
        while (
            self._free_workers
            and self._pending
            and (len(self._pending) >= self._max_batch or self._arrivals.all_in(self._pending[0].seed))
        ):
            self._start(self._take_batch())

    async def _start_partial_batches(self) -> None:
        while self._pending:
            if not self._free_workers:
                self._worker_freed.clear()
                await self._worker_freed.wait()
                continue
            await asyncio.sleep(self._gather_s)  # let more of the fleet's requests arrive
            if self._pending and self._free_workers:
                self._start(self._take_batch())

    def _take_batch(self) -> list[_Request]:
        """Up to `max_batch` of the oldest requests that share the first one's plan and seed
        (`train_many` trains one plan; the seed is the round id)."""
        first = self._pending[0]
        batch, rest = [], []
        for request in self._pending:
            same = request.plan == first.plan and request.seed == first.seed
            (batch if same and len(batch) < self._max_batch else rest).append(request)
        self._pending = rest
        return batch

    def _start(self, requests: list[_Request]) -> None:
        self._free_workers -= 1
        plan, seed = requests[0].plan, requests[0].seed
        train = functools.partial(
            _train_batch, _shared_base(requests), [r.windows for r in requests], plan, self.shape, seed
        )
        started = time.time()
        trained = asyncio.get_running_loop().run_in_executor(self._executor, train)
        trained.add_done_callback(functools.partial(self._finish, requests, started))

    def _finish(self, requests: list[_Request], started: float, trained: asyncio.Future[_TrainedBatch]) -> None:
        finished = time.time()
        self._free_workers += 1
        self._worker_freed.set()
        self._start_ready_batches()
        if trained.cancelled():
            return  # the simulation is stopping: so are the nodes waiting
        failure = trained.exception()
        if failure is not None:  # hand the failure to every waiting node rather than hang them
            log.error("batched training of %d nodes failed", len(requests), exc_info=failure)
            for request in requests:
                if not request.result.done():
                    request.result.set_exception(failure)
            return
        deltas, samples, losses = trained.result()
        self.spans.append((started, finished, len(requests)))
        self.batches += 1
        self.trained += len(requests)
        for index, request in enumerate(requests):
            if not request.result.done():
                delta = {name: stacked[index] for name, stacked in deltas.items()}
                request.result.set_result(LocalResult(delta, samples[index], losses[index]))
