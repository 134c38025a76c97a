"""The Flower side of `bench.flower`: Nacelle's autoencoder trained by Flower's simulation engine.

Runs inside the benchmark's own virtualenv (`.bench-venv/flower`, made by `bench.flower`), never
in Nacelle's: it imports only Flower, torch, numpy and Nacelle's `learning` package (torch and
numpy alone), so the model, the local training (`learning.training.train_local`: Adam, MSE,
same batches) and the data are Nacelle's. What Flower users would write: a ClientApp that trains
on its partition, a ServerApp running FedAvg over every client each round, Ray as the backend.

    python bench/flower_app.py --data windows.npy --clients 100 --rounds 3 --num-cpus 1 --out result.json

Prints nothing of its own; writes the seconds at which each round ended (server side).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # Nacelle's `learning` package

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from learning.model import AutoencoderShape, initial_weights
from learning.training import TrainingConfig, train_local

SHAPE = AutoencoderShape()
EPOCHS, BATCH, LEARNING_RATE = 5, 32, 3e-3


def _state_dict(weights: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.asarray(array, np.float32)) for name, array in weights.items()}


client = ClientApp()


@client.train()
def train(message: Message, context: Context) -> Message:
    torch.set_num_threads(1)
    data = np.load(os.environ["NACELLE_BENCH_DATA"], mmap_mode="r")
    windows = np.array(data[int(context.node_config["partition-id"])], np.float32)
    state = message.content["arrays"].to_torch_state_dict()
    weights = {name: np.array(tensor.numpy(), np.float32) for name, tensor in state.items()}
    round_id = int(message.content["config"]["server-round"])
    result = train_local(weights, windows, TrainingConfig(EPOCHS, BATCH, LEARNING_RATE), SHAPE, seed=round_id)
    trained = {name: weights[name] + result.delta[name] for name in weights}
    content = RecordDict(
        {
            "arrays": ArrayRecord(_state_dict(trained)),
            "metrics": MetricRecord({"train_loss": result.train_loss, "num-examples": result.num_samples}),
        }
    )
    return Message(content=content, reply_to=message)


def server_app(clients: int, rounds: int, ended: list[float]) -> ServerApp:
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=clients,
            min_available_nodes=clients,
        )

        def round_ended(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            ended.append(time.time())
            return None

        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(_state_dict(initial_weights(SHAPE, 0))),
            num_rounds=rounds,
            evaluate_fn=round_ended,
        )

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--num-cpus", type=float, default=1.0, help="Ray CPUs per client (2 cores: 1 runs two at once)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    os.environ["NACELLE_BENCH_DATA"] = str(args.data.resolve())
    ended: list[float] = []
    began = time.time()
    run_simulation(
        server_app=server_app(args.clients, args.rounds, ended),
        client_app=client,
        num_supernodes=args.clients,
        backend_config={"client_resources": {"num_cpus": args.num_cpus, "num_gpus": 0.0}},
    )
    # ended[0]: the evaluation before round 1, once everything has started.
    args.out.write_text(json.dumps({"began": began, "ended": ended, "finished": time.time()}))


if __name__ == "__main__":
    main()
