"""Local work of one task, and evaluation of the global model.

A task starts from the flat model ``base`` it was sent (version ``v``) and either trains
``epochs`` local epochs (or ``steps`` local steps) of SGD/Adam on its client's shard, or,
for AsyncSGD, returns one stochastic gradient at ``base``. Its random stream ``gen`` is
keyed by (seed, client, task index), so a result does not depend on which other tasks are
computed with it or in which order.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from afl import lr as lr_rules
from afl import params


@dataclass(frozen=True)
class LocalPlan:
    """What a task's local training does, fixed when the task is dispatched."""

    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    epochs: int | None
    steps: int | None
    lr_rule: str
    lr_alpha: float
    delay: float
    patience: int | None


@dataclass(frozen=True)
class TaskResult:
    vector: torch.Tensor  # the trained model, or the gradient for AsyncSGD
    train_loss: float  # mean loss of the final local epoch (of all steps in step mode)
    steps: int  # local steps actually run


def num_steps(epochs: int | None, steps: int | None, batch_size: int, shard_size: int) -> int:
    """Planned local steps of a task: ``steps``, or ``epochs`` passes over the shard in batches."""
    if steps is not None:
        return steps
    return epochs * math.ceil(shard_size / batch_size)


def _optimizer(model: nn.Module, plan: LocalPlan) -> torch.optim.Optimizer:
    if plan.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=plan.lr, weight_decay=plan.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=plan.lr, momentum=plan.momentum,
                           weight_decay=plan.weight_decay)


def _epoch_lr(plan: LocalPlan, epoch: int) -> float:
    if plan.lr_rule == "delay_aware":
        return lr_rules.delay_aware(plan.lr, epoch, plan.delay, plan.lr_alpha)
    return plan.lr


def local_train(model: nn.Module, base: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                shard: torch.Tensor, plan: LocalPlan, gen: torch.Generator) -> TaskResult:
    """Train ``model`` from ``base`` on ``x[shard]``; a fresh optimizer per task (stateless clients)."""
    params.load(model, base)
    model.train()
    opt = _optimizer(model, plan)
    epochs = plan.epochs if plan.epochs is not None else math.ceil(
        plan.steps / math.ceil(len(shard) / plan.batch_size))
    budget = plan.steps if plan.steps is not None else math.inf
    steps, best, since_best, losses = 0, math.inf, 0, []
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = _epoch_lr(plan, epoch)
        order = shard[torch.randperm(len(shard), generator=gen).to(shard.device)]
        epoch_losses = [] if plan.steps is None else losses
        for batch in order.split(plan.batch_size):
            if steps == budget:
                break
            loss = F.nll_loss(model(x[batch]), y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epoch_losses.append(loss.detach())
            steps += 1
        mean = torch.stack(epoch_losses).mean().item()
        if plan.patience is not None:
            best, since_best = (mean, 0) if mean < best else (best, since_best + 1)
            if since_best >= plan.patience:
                break
    return TaskResult(params.flatten(model), mean, steps)


def local_gradient(model: nn.Module, base: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                   shard: torch.Tensor, batch_size: int, gen: torch.Generator) -> TaskResult:
    """One stochastic gradient at ``base`` on ``batch_size`` samples of the shard (AsyncSGD)."""
    params.load(model, base)
    model.train()
    pick = torch.randperm(len(shard), generator=gen)[:batch_size].to(shard.device)
    batch = shard[pick]
    model.zero_grad(set_to_none=True)
    loss = F.nll_loss(model(x[batch]), y[batch])
    loss.backward()
    return TaskResult(params.flat_grad(model), loss.item(), 1)


@torch.no_grad()
def evaluate(model: nn.Module, vector: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
             batch_size: int) -> tuple[float, float]:
    """Mean NLL loss and accuracy of the flat model ``vector`` on ``(x, y)``."""
    params.load(model, vector)
    model.eval()
    loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        out = model(xb)
        loss += F.nll_loss(out, yb, reduction="sum")
        correct += (out.argmax(1) == yb).sum()
    return loss.item() / len(y), correct.item() / len(y)
