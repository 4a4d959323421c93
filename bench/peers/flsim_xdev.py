"""FLSim's side of bench/cross_device.py: its synchronous FedAvg on the shared cross-device inputs.

FLSim (Meta's ``flsim`` 0.1.0) simulates in one process; there is no backend to choose. The
objects, as its tutorials and trainer tests build them:

- ``SyncTrainer`` (``SyncTrainerConfig``, built with ``OmegaConf.structured`` like FLSim's tests):
  each round it selects the cohort, creates the round's clients, calls each client's
  ``generate_local_update`` one after another and steps the server. ``do_eval=False`` and
  ``report_train_metrics=False`` with no metrics reporter: nothing is evaluated or reported
  inside the rounds. Its ``epochs`` is a fraction of a pass over the clients, set so that it
  stops after exactly ``--rounds`` rounds of 50.
- ``SyncServer`` with ``FedAvgOptimizer`` (server SGD at lr 1.0, so the step is the average of
  the clients' deltas) and the ``WEIGHTED_AVERAGE`` aggregator (weights = examples, all equal
  here, so the plain average).
- ``CohortSelector``, an ``ActiveUserSelector`` (FLSim's extension point for client
  selection) that returns the given cohort of each round, so every implementation trains the
  same clients. FLSim's built-in selectors (uniform, sequential, round robin) cannot.
- ``Client`` (``ClientConfig``, 1 epoch) with ``LocalOptimizerSGD`` (lr from the inputs, no
  momentum, no weight decay): FLSim's own local loop (clone of the global model, SGD over
  the client's batches, delta).
- ``MnistFLModel``, the ``IFLModel`` wrapper of the ``nn.Sequential`` (like the tutorials'
  ``FLModel``, with NLL loss over the log-probabilities).
- ``ShardProvider`` / ``ShardUser``, an ``IFLDataProvider`` over the given shards: FLSim's data
  interfaces are meant to be implemented by the user (the tutorials write their own
  ``DataProvider`` / ``UserData``; ``flsim.utils.example_utils`` itself needs torchvision).
  Unlike the tutorials' fixed batches, ``ShardUser`` reshuffles its rows each time it is
  trained, as the workload asks.

FLSim 0.1.0 does not import on Python 3.11: its config dataclasses use other config
instances as defaults, which 3.11 rejects as mutable. ``hashable_dataclasses`` gives those classes
Python 3.10's behaviour (identity hash) while FLSim's modules load; nothing else changes.
The timed region is ``SyncTrainer.train``: the rounds, plus its few lines of set-up.
On the MLP most of that time is FLSim's own per-client work inside the round, not SGD: every
selected client, its optimizer and its LR scheduler are built anew by hydra from OmegaConf
configs, and the global model is deep-copied (about 3/4 of a cProfile of 3 rounds).
"""

import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import List

# FLSim's trainer draws tqdm progress bars; tqdm reads this once, when first imported (by torch).
os.environ["TQDM_DISABLE"] = "1"

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from workload import arguments, build_module, warm_up

COHORT = 50


@contextlib.contextmanager
def hashable_dataclasses():
    """While FLSim's modules load, dataclasses get an identity hash, as on Python 3.10."""
    original = dataclasses.dataclass

    def dataclass(cls=None, /, **kwargs):
        def wrap(c):
            c = original(c, **kwargs)
            if c.__hash__ is None:
                c.__hash__ = object.__hash__
            return c
        return wrap if cls is None else wrap(cls)

    dataclasses.dataclass = dataclass
    try:
        yield
    finally:
        dataclasses.dataclass = original


with hashable_dataclasses():
    from flsim.active_user_selectors.simple_user_selector import ActiveUserSelector, ActiveUserSelectorConfig
    from flsim.clients.base_client import ClientConfig
    from flsim.data.data_provider import IFLDataProvider, IFLUserData
    from flsim.interfaces.model import IFLModel
    from flsim.optimizers.local_optimizers import LocalOptimizerSGDConfig
    from flsim.servers.sync_servers import FedAvgOptimizerConfig, SyncServerConfig
    from flsim.trainers.sync_trainer import SyncTrainer, SyncTrainerConfig
    from flsim.utils.config_utils import fullclassname, init_self_cfg
    from flsim.utils.simple_batch_metrics import FLBatchMetrics
    from flsim.version import __version__ as FLSIM_VERSION


class MnistFLModel(IFLModel):
    """FLSim's model wrapper: batches are {"features", "labels"}, the loss is the mean NLL."""

    def __init__(self, module: nn.Module):
        self.model = module

    def fl_forward(self, batch) -> FLBatchMetrics:
        output = self.model(batch["features"])
        return FLBatchMetrics(loss=F.nll_loss(output, batch["labels"]),
                              num_examples=self.get_num_examples(batch), predictions=output.detach(),
                              targets=batch["labels"], model_inputs=[])

    def fl_create_training_batch(self, **kwargs):
        return {"features": kwargs["features"], "labels": kwargs["labels"]}

    def fl_get_module(self) -> nn.Module:
        return self.model

    def fl_cuda(self) -> None:
        self.model = self.model.cuda()

    def get_eval_metrics(self, batch) -> FLBatchMetrics:
        with torch.no_grad():
            return self.fl_forward(batch)

    def get_num_examples(self, batch) -> int:
        return len(batch["labels"])


class ShardUser(IFLUserData):
    """One client's rows, in minibatches of a fresh permutation every time it trains."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int, model: MnistFLModel,
                 generator: torch.Generator):
        self.x, self.y, self.batch, self.model, self.generator = x, y, batch, model, generator

    def train_data(self):
        order = torch.randperm(len(self.y), generator=self.generator)
        for start in range(0, len(order), self.batch):
            rows = order[start:start + self.batch]
            yield self.model.fl_create_training_batch(features=self.x[rows], labels=self.y[rows])

    def eval_data(self):
        return iter(())

    def num_train_examples(self) -> int:
        return len(self.y)

    def num_train_batches(self) -> int:
        return -(-len(self.y) // self.batch)

    def num_eval_examples(self) -> int:
        return 0

    def num_eval_batches(self) -> int:
        return 0


class ShardProvider(IFLDataProvider):
    """The training clients, one ``ShardUser`` per shard; no eval or test users (eval is off)."""

    def __init__(self, users: list):
        self.users = users

    def train_user_ids(self):
        return list(range(len(self.users)))

    def num_train_users(self) -> int:
        return len(self.users)

    def get_train_user(self, user_index: int):
        return self.users[user_index]

    def train_users(self):
        return self.users

    def eval_users(self):
        return []

    def test_users(self):
        return []


class CohortSelector(ActiveUserSelector):
    """Returns the given cohort of each round, in order."""

    def __init__(self, **kwargs):
        init_self_cfg(self, component_class=__class__, config_class=CohortSelectorConfig, **kwargs)
        super().__init__(**kwargs)
        self.cohorts = OmegaConf.to_container(self.cfg.cohorts)
        self.round = 0

    def get_user_indices(self, **kwargs) -> list:
        cohort = self.cohorts[self.round]
        self.round += 1
        return cohort


@dataclasses.dataclass
class CohortSelectorConfig(ActiveUserSelectorConfig):
    _target_: str = fullclassname(CohortSelector)
    cohorts: List[List[int]] = dataclasses.field(default_factory=list)


def build_provider(data, batch: int, model: MnistFLModel) -> ShardProvider:
    x, y = torch.from_numpy(data["train_x"]), torch.from_numpy(data["train_y"])
    generator = torch.Generator().manual_seed(0)
    return ShardProvider([ShardUser(x[rows].contiguous(), y[rows], batch, model, generator)
                          for rows in torch.from_numpy(data["shards"])])


def build_trainer(model: MnistFLModel, cohorts: list, clients: int, rounds: int, lr: float) -> SyncTrainer:
    """FedAvg for exactly ``rounds`` rounds: ``epochs`` counts passes over ``clients``."""
    epochs = rounds / SyncTrainer.rounds_in_one_epoch(clients, COHORT)
    config = SyncTrainerConfig(
        epochs=epochs,
        do_eval=False,
        eval_epoch_frequency=epochs,
        report_train_metrics=False,
        users_per_round=COHORT,
        client=ClientConfig(epochs=1, optimizer=LocalOptimizerSGDConfig(lr=lr, momentum=0.0, weight_decay=0.0)),
        server=SyncServerConfig(server_optimizer=FedAvgOptimizerConfig(),
                                active_user_selector=CohortSelectorConfig(cohorts=cohorts)),
    )
    return SyncTrainer(model=model, cuda_enabled=False, **OmegaConf.structured(config))


def test_accuracy(model: MnistFLModel, x: np.ndarray, y: np.ndarray, chunk: int = 2048) -> float:
    model.fl_get_module().eval()
    correct = 0
    for start in range(0, len(y), chunk):
        batch = model.fl_create_training_batch(features=torch.from_numpy(x[start:start + chunk]),
                                               labels=torch.from_numpy(y[start:start + chunk]))
        metrics = model.get_eval_metrics(batch)
        correct += int((metrics.predictions.argmax(1) == metrics.targets).sum())
    return correct / len(y)


def main() -> None:
    args = arguments(__doc__.split("\n\n")[0])

    folder = Path(args.inputs)
    data = np.load(folder / "data.npz")
    module = build_module(args.model)
    module.load_state_dict(torch.load(folder / f"init_{args.model}.pt", weights_only=True))
    model = MnistFLModel(module)
    provider = build_provider(data, int(data["batch"]), model)
    cohorts = data["cohorts"][:args.rounds].tolist()
    trainer = build_trainer(model, cohorts, provider.num_train_users(), args.rounds, float(data["lr"]))

    rows = data["shards"][0]
    warm_up(args.model, torch.from_numpy(data["train_x"][rows]), torch.from_numpy(data["train_y"][rows]),
            int(data["batch"]), float(data["lr"]))

    start = time.perf_counter()
    trained, _ = trainer.train(provider, metrics_reporter=None, num_total_users=provider.num_train_users(),
                               distributed_world_size=1)
    seconds = time.perf_counter() - start

    print(json.dumps({"framework": "flsim", "version": f"flsim {FLSIM_VERSION}", "model": args.model,
                      "rounds": args.rounds, "samples": args.rounds * COHORT * data["shards"].shape[1],
                      "seconds": seconds,
                      "test_accuracy": test_accuracy(trained, data["test_x"], data["test_y"])}))


if __name__ == "__main__":
    main()
