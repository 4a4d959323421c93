"""The test oracle: one task at a time through ``torch.nn`` and ``torch.optim``.

``local_train`` and ``local_gradient`` are the plain, sequential statement of what a task
does (``afl.learning.local``); the batched trainer (``afl.learning.trainer``), which the
engine runs, re-implements the same semantics for many tasks at once (its own grouped layers,
fused optimizers and early stopping) and is tested against this module in float64
(``tests/test_batched.py``). The training benchmark measures it as the engine before batching.
Nothing in a run calls it.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from afl import params
from afl.learning.local import LocalPlan, TaskResult, augment, draw_epoch, epoch_lr, gradient_batch, num_epochs


def _optimizer(model: nn.Module, plan: LocalPlan) -> torch.optim.Optimizer:
    if plan.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=plan.lr, weight_decay=plan.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=plan.lr, momentum=plan.momentum,
                           weight_decay=plan.weight_decay)


def _inputs(x: torch.Tensor, batch: torch.Tensor, packed: torch.Tensor | None) -> torch.Tensor:
    return x[batch] if packed is None else augment(x[batch], packed)


def local_train(model: nn.Module, base: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                shard: torch.Tensor, plan: LocalPlan, gen: torch.Generator) -> TaskResult:
    """Train ``model`` from ``base`` on ``x[shard]``; a fresh optimizer per task (stateless clients).

    Epoch ``e`` visits the shard in the order ``draw_epoch`` gives, in batches of
    ``batch_size`` (the last one smaller), at ``epoch_lr(plan, e)``; early stopping ends the
    task after ``patience`` epochs without a lower mean loss.
    """
    params.load(model, base)
    model.train()
    opt = _optimizer(model, plan)
    budget = plan.steps if plan.steps is not None else math.inf
    steps, best, since_best, losses = 0, math.inf, 0, []
    for epoch in range(num_epochs(plan, len(shard))):
        for group in opt.param_groups:
            group["lr"] = float(epoch_lr(plan, epoch))
        order, packed = draw_epoch(gen, len(shard), plan.augment)
        positions = order.to(shard.device)
        epoch_losses = [] if plan.steps is None else losses
        for start in range(0, len(shard), plan.batch_size):
            if steps == budget:
                break
            at = positions[start:start + plan.batch_size]
            batch = shard[at]
            inputs = _inputs(x, batch, None if packed is None else packed[start:start + plan.batch_size])
            loss = F.nll_loss(model(inputs), y[batch])
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
                   shard: torch.Tensor, batch_size: int, gen: torch.Generator,
                   augment_: bool = False) -> TaskResult:
    """One stochastic gradient at ``base`` on ``batch_size`` samples of the shard (AsyncSGD)."""
    params.load(model, base)
    model.train()
    pick, packed = gradient_batch(gen, len(shard), batch_size, augment_)
    batch = shard[pick.to(shard.device)]
    model.zero_grad(set_to_none=True)
    loss = F.nll_loss(model(_inputs(x, batch, packed)), y[batch])
    loss.backward()
    return TaskResult(params.flat_grad(model), loss.item(), 1)
