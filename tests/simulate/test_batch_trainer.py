"""The simulator's batched training (simulate.batch_trainer): what each node gets back, how
requests become batches, and failures. Pure: a thread pool stands in for the training processes."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from learning.model import AutoencoderShape, initial_weights
from learning.training import LocalResult, TrainingConfig, train_local
from simulate.batch_trainer import MAX_BATCH, BatchTrainer, _shared_base, training_workers

SHAPE = AutoencoderShape(n_features=16, hidden=8, latent=4)
PLAN = TrainingConfig(epochs=2, batch_size=8, learning_rate=1e-2)


def _windows(seed: int, count: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, SHAPE.n_features)).astype(np.float32)


async def _train_all(trainer: BatchTrainer, requests: list[tuple[np.ndarray, int]]) -> list[LocalResult]:
    base = initial_weights(SHAPE, 0)
    return await asyncio.gather(*(trainer({k: v.copy() for k, v in base.items()}, w, PLAN, s) for w, s in requests))


async def test_each_node_gets_what_training_alone_would_give_it() -> None:
    requests = [(_windows(i, 16 + 8 * (i % 3)), 1 + i % 2) for i in range(7)]  # two seeds, three data sizes
    with ThreadPoolExecutor(2) as executor:
        trainer = BatchTrainer(SHAPE, executor, workers=2, gather_s=0.01, max_batch=3)
        results = await _train_all(trainer, requests)

    base = initial_weights(SHAPE, 0)
    for (windows, seed), result in zip(requests, results, strict=True):
        alone = train_local(base, windows, PLAN, SHAPE, seed=seed)
        assert result.num_samples == alone.num_samples == len(windows)
        assert result.train_loss == pytest.approx(alone.train_loss, rel=1e-4)
        assert set(result.delta) == set(alone.delta)
        for name in alone.delta:
            np.testing.assert_allclose(result.delta[name], alone.delta[name], rtol=1e-4, atol=1e-6)


async def test_batches_hold_one_seed_at_most_max_batch_nodes_and_run_at_most_workers_at_once() -> None:
    requests = [(_windows(i), 1) for i in range(7)] + [(_windows(10 + i), 2) for i in range(2)]
    with ThreadPoolExecutor(4) as executor:
        trainer = BatchTrainer(SHAPE, executor, workers=2, gather_s=0.01, max_batch=3)
        await _train_all(trainer, requests)

    assert trainer.trained == 9
    assert sorted(nodes for _, _, nodes in trainer.spans) == [1, 2, 3, 3]  # 7 of seed 1 in threes, 2 of seed 2
    events = sorted([(start, 1) for start, _, _ in trainer.spans] + [(end, -1) for _, end, _ in trainer.spans])
    running = np.cumsum([change for _, change in events])
    assert running.max() <= 2


async def test_a_full_batch_starts_without_waiting_for_the_gathering() -> None:
    with ThreadPoolExecutor(2) as executor:
        trainer = BatchTrainer(SHAPE, executor, workers=2, gather_s=60.0, max_batch=2)  # a gather never over here
        results = await asyncio.wait_for(_train_all(trainer, [(_windows(i), 1) for i in range(4)]), 30)

    assert [result.num_samples for result in results] == [24] * 4
    assert trainer.batches == 2


async def test_a_rounds_last_partial_batch_starts_once_the_fleet_has_asked() -> None:
    with ThreadPoolExecutor(1) as executor:  # one worker: the last batch waits for the first, not the gathering
        trainer = BatchTrainer(SHAPE, executor, gather_s=60.0, max_batch=2, expected=3)
        results = await asyncio.wait_for(_train_all(trainer, [(_windows(i), 1) for i in range(3)]), 30)
        assert [result.num_samples for result in results] == [24] * 3
        assert sorted(nodes for _, _, nodes in trainer.spans) == [1, 2]

        # A round the fleet does not finish asking for (a node sat it out) gathers as before.
        pending = asyncio.ensure_future(_train_all(trainer, [(_windows(i), 2) for i in range(2)]))
        late = asyncio.ensure_future(_train_all(trainer, [(_windows(9), 3)]))
        assert len(await asyncio.wait_for(pending, 30)) == 2  # a full batch
        await asyncio.sleep(0.2)
        assert not late.done()
        late.cancel()


async def test_a_failed_batch_fails_every_node_in_it_and_the_trainer_goes_on() -> None:
    with ThreadPoolExecutor(1) as executor:
        trainer = BatchTrainer(SHAPE, executor, gather_s=0.01)
        wrong = np.zeros((8, SHAPE.n_features + 1), np.float32)  # a feature too many
        outcomes = await asyncio.gather(
            *(trainer(initial_weights(SHAPE, 0), wrong, PLAN, 1) for _ in range(2)), return_exceptions=True
        )
        assert all(isinstance(outcome, Exception) for outcome in outcomes)

        (result,) = await _train_all(trainer, [(_windows(0), 1)])
        assert result.num_samples == 24


def test_a_base_model_every_request_shares_is_sent_once() -> None:
    base = initial_weights(SHAPE, 0)
    copies = [{k: v.copy() for k, v in base.items()} for _ in range(3)]
    requests = [SimpleNamespace(base=weights) for weights in copies]
    assert _shared_base(requests) is copies[0]  # type: ignore[arg-type]

    first = next(iter(base))
    copies[2][first] = copies[2][first] + 1
    shared = _shared_base(requests)  # type: ignore[arg-type]
    assert isinstance(shared, list) and all(a is b for a, b in zip(shared, copies, strict=True))


def test_a_fleet_gets_a_training_process_per_core_up_to_one_per_batch() -> None:
    cores = os.cpu_count() or 1
    assert training_workers(1) == 1
    assert training_workers(MAX_BATCH) == 1
    assert training_workers(MAX_BATCH * cores + 1) == cores
