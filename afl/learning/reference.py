"""The test oracle: one task at a time through ``torch.nn`` and ``torch.optim``.

``local_train`` and ``local_gradient`` are the plain, sequential statement of what a task
does (``afl.learning.local``); the batched trainer (``afl.learning.trainer``), which the
engine runs, re-implements the same semantics for many tasks at once (its own grouped layers,
fused optimizers and early stopping) and is tested against this module in float64
(``tests/test_batched.py``). So that a bug in the helpers the trainer draws on
(``afl.learning.local``: ``draw_epoch``, ``epoch_lr``, ``num_epochs``, ``gradient_batch``) shows
there, this module restates their documented semantics itself (``_epochs``, ``_lr``, ``_draws``)
and shares only ``augment`` (tested against hand-made crops) with them. The training benchmark
measures it as the engine before batching. Nothing in a run calls it.
"""

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from afl import params
from afl.learning.local import LocalPlan, TaskResult, augment

AUG_CHOICES = 9 * 9 * 2  # a packed augmentation dy * 18 + dx * 2 + flip: dy, dx in 0..8, flip in 0..1


def _epochs(plan: LocalPlan):
    """The local epochs a task may start: ``epochs``, else until ``steps`` steps are done (the
    loop below stops at the budget, before an epoch it would not reach)."""
    return range(plan.epochs) if plan.epochs is not None else itertools.count()


def _lr(plan: LocalPlan, epoch: int) -> float:
    """Local epoch ``epoch``'s rate: ``gamma_0``, or the first seed's
    ``gamma_0 / (sqrt(e + 1) (1 + alpha d))`` with ``d`` the task's own delay."""
    if plan.lr_rule == "delay_aware":
        return plan.lr / (math.sqrt(epoch + 1) * (1 + plan.lr_alpha * plan.delay))
    return plan.lr


def _draws(gen: torch.Generator, shard_size: int, augment_: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One epoch's draws from the task's stream, in this order: a uniform random order of the
    positions ``0..n-1``, then, with augmentation, one packed crop-and-flip per position."""
    order = torch.randperm(shard_size, generator=gen)
    packed = torch.randint(0, AUG_CHOICES, (shard_size,), generator=gen) if augment_ else None
    return order, packed


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

    Epoch ``e`` visits the shard in the order ``_draws`` gives, in batches of ``batch_size``
    (the last one smaller), at ``_lr(plan, e)``; early stopping ends the task after ``patience``
    epochs without a lower mean loss.
    """
    params.load(model, base)
    model.train()
    opt = _optimizer(model, plan)
    budget = plan.steps if plan.steps is not None else math.inf
    steps, best, since_best, losses = 0, math.inf, 0, []
    for epoch in _epochs(plan):
        if steps == budget:
            break
        for group in opt.param_groups:
            group["lr"] = _lr(plan, epoch)
        order, packed = _draws(gen, len(shard), plan.augment)
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
    order, packed = _draws(gen, len(shard), augment_)  # the first batch_size of one epoch's draws
    pick, packed = order[:batch_size], None if packed is None else packed[:batch_size]
    batch = shard[pick.to(shard.device)]
    model.zero_grad(set_to_none=True)
    loss = F.nll_loss(model(_inputs(x, batch, packed)), y[batch])
    loss.backward()
    return TaskResult(params.flat_grad(model), loss.item(), 1)
