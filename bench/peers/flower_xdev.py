"""Flower (flwr) on the cross-device workload of ``bench/cross_device.py``.

The objects are Flower's own, wired the way its legacy simulation (``start_simulation``) wires them:

- the client is a ``NumPyClient`` with the PyTorch tutorial's ``fit``: load the global weights
  into a fresh model, train with the tutorial's loop (a ``DataLoader`` over the client's rows,
  batch 10, shuffled; ``zero_grad``/forward/``backward``/``step`` with plain SGD), return the
  weights, the example count and the mean training loss. A ``client_fn`` builds it per message
  from the ``Context`` (``partition-id`` in ``node_config``; lr, batch size, epochs in
  ``run_config``), and a ``ClientApp(client_fn=...)`` handles the messages;
- the server is ``flwr.server.Server`` with ``flwr.server.strategy.FedAvg``: each round
  ``Server.fit_round`` calls ``FedAvg.configure_fit`` (``FitIns`` for the sampled clients),
  the clients' ``fit`` and ``FedAvg.aggregate_fit`` (weighted in-place average; every client has
  as many rows, so the plain average). Weights travel as ``Parameters``
  (``ndarrays_to_parameters`` / ``parameters_to_ndarrays``);
- a ``SimpleClientManager`` whose ``sample`` returns the round's given cohort, so that
  ``configure_fit`` picks the benchmark's 50 clients instead of its own random draw.

Flower's only simulation backend is Ray (``flwr[simulation]``; it would install Ray 2.55.1 without
another torch, but Ray starts its own daemons and worker processes, which on a small machine
compete with the timed process). This benchmark does without it and drives the rounds in one
process: ``InProcessClientProxy`` is Flower's
``RayActorClientProxy`` with the Ray actor call replaced by a direct call of the ``ClientApp``.
The ``FitIns`` still become a ``Message`` (``fitins_to_recorddict``), the ``ClientApp``'s
legacy handler still turns it into ``FitIns`` for the ``NumPyClient`` and its ``FitRes`` into the
reply, and the proxy turns that back into ``FitRes``. What is left out is the transport: Ray's
actor pool, its object store and scheduling. ``Server.set_max_workers(1)`` runs the cohort's
clients one after another, as a Ray backend with one CPU and one client per CPU would. Ray would
add its processes and per-call latency on top of this, so this is Flower's fastest path on one
CPU. Flower has no thread setting of its own; ``--threads`` sets torch's.

Timed: the rounds (``fit_round``: configure, 50 client fits, aggregate). Not timed: loading the
inputs, splitting the clients' rows, building the Flower objects, a warm-up epoch on a throwaway
model (torch's lazy imports, see ``warm_up``), the final test accuracy.
"""

import json
import time
from collections import OrderedDict
from pathlib import Path

import flwr
import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import DEFAULT_TTL, Context, Metadata, RecordDict
from flwr.app.message import make_message
from flwr.app.message_type import MessageType
from flwr.client import ClientApp, NumPyClient
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import NUM_PARTITIONS_KEY, PARTITION_ID_KEY
from flwr.compat.common.recorddict_compat import fitins_to_recorddict, recorddict_to_fitres
from flwr.server import Server, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from flwr.supercore.date import now
from torch import nn
from workload import arguments, build_module
from torch.utils.data import DataLoader, TensorDataset


def get_weights(net: nn.Module) -> list[np.ndarray]:
    return [val.cpu().numpy() for _, val in net.state_dict().items()]


def set_weights(net: nn.Module, parameters: list[np.ndarray]) -> None:
    state_dict = OrderedDict({k: torch.tensor(v) for k, v in zip(net.state_dict().keys(), parameters)})
    net.load_state_dict(state_dict, strict=True)


def train(net: nn.Module, trainloader: DataLoader, epochs: int, lr: float) -> float:
    """The Flower PyTorch tutorial's training loop, with plain SGD and the NLL loss."""
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    net.train()
    running_loss = 0.0
    for _ in range(epochs):
        for images, labels in trainloader:
            optimizer.zero_grad()
            loss = F.nll_loss(net(images), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
    return running_loss / (epochs * len(trainloader))


class FlowerClient(NumPyClient):
    def __init__(self, net: nn.Module, trainloader: DataLoader, epochs: int, lr: float):
        self.net, self.trainloader, self.epochs, self.lr = net, trainloader, epochs, lr

    def fit(self, parameters, config):
        set_weights(self.net, parameters)
        train_loss = train(self.net, self.trainloader, self.epochs, self.lr)
        return get_weights(self.net), len(self.trainloader.dataset), {"train_loss": train_loss}


def make_client_app(model: str, partitions: list[TensorDataset]) -> ClientApp:
    def client_fn(context: Context):
        loader = DataLoader(partitions[int(context.node_config[PARTITION_ID_KEY])],
                            batch_size=int(context.run_config["batch-size"]), shuffle=True)
        return FlowerClient(build_module(model), loader, int(context.run_config["local-epochs"]),
                            float(context.run_config["lr"])).to_client()

    return ClientApp(client_fn=client_fn)


class InProcessClientProxy(ClientProxy):
    """``RayActorClientProxy.fit`` with the Ray actor call replaced by a direct ``ClientApp`` call."""

    def __init__(self, app: ClientApp, context: Context):
        super().__init__(cid=str(context.node_id))
        self.app, self.context = app, context

    def fit(self, ins, timeout, group_id):
        message = make_message(content=fitins_to_recorddict(ins, keep_input=True), metadata=Metadata(
            run_id=self.context.run_id, message_id="", src_node_id=0, dst_node_id=self.context.node_id,
            reply_to_message_id="", group_id=str(group_id), created_at=now().timestamp(),
            ttl=timeout or DEFAULT_TTL, message_type=MessageType.TRAIN))
        reply = self.app(message=message, context=self.context)
        return recorddict_to_fitres(reply.content, keep_input=False)

    def get_properties(self, ins, timeout, group_id):
        raise NotImplementedError("the benchmark only trains")

    def get_parameters(self, ins, timeout, group_id):
        raise NotImplementedError("the benchmark only trains")

    def evaluate(self, ins, timeout, group_id):
        raise NotImplementedError("the benchmark only trains")

    def reconnect(self, ins, timeout, group_id):
        raise NotImplementedError("the benchmark only trains")


class CohortClientManager(SimpleClientManager):
    """Hands the strategy the given cohorts, the next one at each ``sample`` (one per round)."""

    def __init__(self, cohorts: np.ndarray):
        super().__init__()
        self.cohorts = iter(cohorts)

    def sample(self, num_clients, min_num_clients=None, criterion=None):
        cohort = next(self.cohorts)
        if len(cohort) != num_clients:
            raise ValueError(f"FedAvg asked for {num_clients} clients, the cohort has {len(cohort)}")
        return [self.clients[str(c)] for c in cohort]


def client_partitions(data) -> list[TensorDataset]:
    """Client c's rows, ``shards[c]``, as its own dataset."""
    x, y = torch.from_numpy(data["train_x"]), torch.from_numpy(data["train_y"])
    return [TensorDataset(x[rows], y[rows]) for rows in torch.from_numpy(data["shards"])]


def build_server(data, model: str, init: list[np.ndarray], partitions: list[TensorDataset]) -> Server:
    """The clients (one ``Context`` each, registered by proxy), FedAvg and the server."""
    clients, cohort = len(partitions), data["cohorts"].shape[1]
    app = make_client_app(model, partitions)
    run_config = {"lr": float(data["lr"]), "batch-size": int(data["batch"]), "local-epochs": 1}
    manager = CohortClientManager(data["cohorts"])
    for c in range(clients):
        context = Context(run_id=0, node_id=c, node_config={PARTITION_ID_KEY: c, NUM_PARTITIONS_KEY: clients},
                          state=RecordDict(), run_config=run_config)
        manager.register(InProcessClientProxy(app, context))
    strategy = FedAvg(fraction_fit=cohort / clients, fraction_evaluate=0.0, min_fit_clients=cohort,
                      min_available_clients=clients, initial_parameters=ndarrays_to_parameters(init))
    server = Server(client_manager=manager, strategy=strategy)
    server.set_max_workers(1)
    server.parameters = strategy.initialize_parameters(manager)
    return server


def warm_up(model: str, partition: TensorDataset, batch: int, lr: float) -> None:
    """One epoch of the training loop on a throwaway model: torch's first optimizer step imports
    ``torch._dynamo`` (~2 s), which would otherwise land in the first timed round."""
    train(build_module(model), DataLoader(partition, batch_size=batch), 1, lr)


def run_rounds(server: Server, rounds: int) -> None:
    """``Server.fit``'s loop without its evaluation steps (none are configured)."""
    for server_round in range(1, rounds + 1):
        parameters, _, (_, failures) = server.fit_round(server_round=server_round, timeout=None)
        if failures:
            raise RuntimeError(f"round {server_round}: {len(failures)} clients failed: {failures[0]!r}")
        server.parameters = parameters


def test_accuracy(model: str, weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    net = build_module(model)
    set_weights(net, weights)
    net.eval()
    with torch.no_grad():
        predictions = torch.cat([net(chunk).argmax(1) for chunk in torch.from_numpy(x).split(2048)])
    return (predictions == torch.from_numpy(y)).float().mean().item()


def main() -> None:
    args = arguments(__doc__.split("\n\n")[0])
    torch.manual_seed(0)

    inputs = Path(args.inputs)
    data = dict(np.load(inputs / "data.npz"))
    net = build_module(args.model)
    net.load_state_dict(torch.load(inputs / f"init_{args.model}.pt", weights_only=True))
    partitions = client_partitions(data)
    server = build_server(data, args.model, get_weights(net), partitions)
    warm_up(args.model, partitions[0], int(data["batch"]), float(data["lr"]))

    start = time.perf_counter()
    run_rounds(server, args.rounds)
    seconds = time.perf_counter() - start

    weights = parameters_to_ndarrays(server.parameters)
    accuracy = test_accuracy(args.model, weights, data["test_x"], data["test_y"])
    samples = args.rounds * data["cohorts"].shape[1] * data["shards"].shape[1]
    print(json.dumps({"framework": "flower", "version": f"flower {flwr.__version__}", "model": args.model,
                      "rounds": args.rounds, "samples": int(samples), "seconds": seconds,
                      "test_accuracy": accuracy}))


if __name__ == "__main__":
    main()
