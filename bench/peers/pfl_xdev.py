"""pfl-research (Apple's ``pfl``) on the cross-device workload of ``bench/cross_device.py``.

Run with the peers' interpreter; see ``bench/cross_device.py`` for the workload and the inputs.
The pfl objects, set up the way pfl's own ``benchmarks/image_classification/pytorch/train.py`` does:

- ``pfl.model.pytorch.PyTorchModel`` wraps the ``nn.Sequential`` (with ``loss`` and ``metrics``
  bound to it, as pfl requires), local optimizer ``torch.optim.SGD`` (created per user by pfl at
  the local learning rate) and central optimizer ``torch.optim.SGD`` at lr 1.0, so the central
  step adds the averaged model difference: the plain average of the client models.
- ``pfl.data.FederatedDataset`` over the given shards: its ``make_dataset_fn`` returns a user's
  rows, shuffled, as an in-memory ``pfl.data.pytorch.PyTorchTensorDataset`` (pfl's ``Dataset``
  does not shuffle), and its user sampler is ``pfl.data.sampling.MinimizeReuseUserSampler`` over
  the cohorts laid end to end, so round r trains exactly ``cohorts[r]``.
- ``pfl.algorithm.FederatedAveraging`` with ``NNAlgorithmParams`` (cohort 50, no validation
  cohort) and ``pfl.hyperparam.NNTrainHyperParams`` (1 local epoch, the given batch and lr):
  local training is pfl's own PyTorch SGD bridge (``do_multiple_epochs_of``).
- ``pfl.aggregate.simulate.SimulatedBackend`` with the ``WeightByUser`` weighting postprocessor
  (pfl's documented unweighted FedAvg) and the default ``SumAggregator``: pfl's single-process
  simulation, the fastest it documents for one CPU process (its other mode is several
  processes/GPUs via Horovod or torch.distributed).

``algorithm.run`` runs the rounds and is what is timed. It is called with
``send_metrics_to_platform=False`` (otherwise pfl prints every round's metrics to stdout).
pfl always evaluates each user's data before and after local training in round 0
(``iteration % evaluation_frequency == 0``), which no setting turns off; with
``evaluation_frequency = rounds`` it does so in round 0 only. The final test accuracy comes from
``PyTorchModel.evaluate`` on the test set, untimed.
"""

import json
import time
import types
from pathlib import Path

import numpy as np
import pfl
import torch
import torch.nn.functional as F
from pfl.aggregate.simulate import SimulatedBackend
from pfl.aggregate.weighting import WeightByUser
from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
from pfl.data import FederatedDataset
from pfl.data.pytorch import PyTorchTensorDataset
from pfl.data.sampling import MinimizeReuseUserSampler
from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
from pfl.metrics import Weighted
from pfl.model.pytorch import PyTorchModel
from workload import arguments, build_module, warm_up


def loss(self, x, y):
    return F.nll_loss(self(x), y)


@torch.no_grad()
def metrics(self, x, y):
    log_probs = self(x)
    return {"loss": Weighted(F.nll_loss(log_probs, y, reduction="sum").item(), len(y)),
            "accuracy": Weighted((log_probs.argmax(1) == y).sum().item(), len(y))}


def build_model(inputs: Path, name: str) -> PyTorchModel:
    """The initial weights in pfl's wrapper: local SGD per user, central SGD at lr 1 (plain average)."""
    module = build_module(name)
    module.load_state_dict(torch.load(inputs / f"init_{name}.pt", weights_only=True))
    module.loss = types.MethodType(loss, module)
    module.metrics = types.MethodType(metrics, module)
    return PyTorchModel(model=module, local_optimizer_create=torch.optim.SGD,
                        central_optimizer=torch.optim.SGD(module.parameters(), lr=1.0))


def federated_dataset(train_x, train_y, shards, cohorts) -> FederatedDataset:
    """Users are shard ids, sampled in cohort order; each user's rows come shuffled."""
    generator = torch.Generator().manual_seed(0)

    def make_dataset_fn(user_id):
        rows = shards[user_id][torch.randperm(shards.shape[1], generator=generator)]
        return PyTorchTensorDataset((train_x[rows], train_y[rows]), user_id=user_id)

    return FederatedDataset(make_dataset_fn, MinimizeReuseUserSampler(cohorts.reshape(-1).tolist()))


def main() -> None:
    args = arguments(__doc__.split("\n\n")[0])
    np.random.seed(0)  # pfl seeds its algorithm's and datasets' states from numpy's global RNG
    torch.manual_seed(0)

    data = np.load(args.inputs / "data.npz")
    shards, cohorts = torch.from_numpy(data["shards"]), data["cohorts"]
    cohort_size, per_client = cohorts.shape[1], shards.shape[1]
    train_data = federated_dataset(torch.from_numpy(data["train_x"]), torch.from_numpy(data["train_y"]),
                                   shards, cohorts)
    # No validation cohort is ever asked for; val_data is required, so it gets the train data.
    backend = SimulatedBackend(training_data=train_data, val_data=train_data, postprocessors=[WeightByUser()])
    model = build_model(args.inputs, args.model)
    algorithm = FederatedAveraging()
    algorithm_params = NNAlgorithmParams(central_num_iterations=args.rounds, evaluation_frequency=args.rounds,
                                         train_cohort_size=cohort_size, val_cohort_size=None)
    train_params = NNTrainHyperParams(local_learning_rate=float(data["lr"]), local_num_epochs=1,
                                      local_batch_size=int(data["batch"]))

    rows = shards[0]
    warm_up(args.model, torch.from_numpy(data["train_x"])[rows], torch.from_numpy(data["train_y"])[rows],
            int(data["batch"]), float(data["lr"]))

    start = time.perf_counter()
    model = algorithm.run(algorithm_params=algorithm_params, backend=backend, model=model,
                          model_train_params=train_params, send_metrics_to_platform=False)
    seconds = time.perf_counter() - start

    test = PyTorchTensorDataset((torch.from_numpy(data["test_x"]), torch.from_numpy(data["test_y"])))
    test_metrics = model.evaluate(test, eval_params=NNEvalHyperParams(local_batch_size=2048))
    accuracy = test_metrics["accuracy"].overall_value
    print(json.dumps({"framework": "pfl", "version": f"pfl {pfl.__version__}", "model": args.model,
                      "rounds": args.rounds, "samples": args.rounds * cohort_size * per_client,
                      "seconds": seconds, "test_accuracy": accuracy}))


if __name__ == "__main__":
    main()
