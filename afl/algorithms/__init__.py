"""Server rules (SPEC section 3): each turns a batch of arrivals into the next global model.

The simulator buffers arrivals until a rule's ``batch`` is full (``m`` for ``sfl``/``afl``,
``K`` for ``fedbuff``, 1 for ``fedasync``/``asyncsgd``), computes each arrival's staleness
``tau = t - v`` at the current version ``t``, and calls ``rule.aggregate(x, arrivals, taus)``,
which returns the new model and the weight (or step size) applied to each arrival.
``barrier`` marks synchronous rules: a new round is dispatched only when none is in flight.
"""

from dataclasses import dataclass

import numpy as np
import torch

from afl import staleness
from afl.algorithms.asyncsgd import AsyncSGD
from afl.algorithms.fedasync import FedAsync
from afl.algorithms.fedavg import StalenessAwareFedAvg, SyncFedAvg
from afl.algorithms.fedbuff import FedBuff
from afl.config import AlgorithmConfig


@dataclass(frozen=True)
class Arrival:
    """A finished task as the server sees it."""

    client: int
    base_version: int
    base: torch.Tensor  # the model x_v the task was sent
    vector: torch.Tensor  # the client's model x_i, or its gradient g_i for asyncsgd
    num_samples: int  # n_i, the client's shard size
    train_loss: float


def make(cfg: AlgorithmConfig, routing: np.ndarray):
    """The server rule named in ``cfg``; ``routing`` is p (used by asyncsgd's 1/(n p_i))."""
    s = staleness.make(cfg.staleness.name, **{k: getattr(cfg.staleness, k) for k in ("a", "b", "beta")
                                              if getattr(cfg.staleness, k) is not None})
    m = cfg.concurrency
    if cfg.name == "sfl":
        return SyncFedAvg(batch=m, weighting=cfg.weighting)
    if cfg.name == "afl":
        return StalenessAwareFedAvg(batch=m, weighting=cfg.weighting, s=s)
    if cfg.name == "fedasync":
        return FedAsync(mixing=cfg.mixing, s=s)
    if cfg.name == "fedbuff":
        return FedBuff(batch=cfg.buffer_size, server_lr=cfg.server_lr, s=s)
    return AsyncSGD(server_lr=cfg.server_lr, routing=routing, step_rule=cfg.step_rule,
                    tau_c=cfg.tau_c, drop=cfg.drop_stale, s=s)
