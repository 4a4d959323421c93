"""Local work of one task: its random draws, the sequential reference, and evaluation.

A task starts from the flat model ``base`` it was sent (version ``v``) and either trains
``epochs`` local epochs (or ``steps`` local steps) of SGD/Adam on its client's shard, or,
for AsyncSGD, returns one stochastic gradient at ``base``. Its random stream ``gen`` is
keyed by (seed, client, task index), so a result does not depend on which other tasks are
computed with it or in which order.

The engine trains pending tasks together (``afl.batched``). ``local_train`` and
``local_gradient`` here are the sequential reference of the same semantics, one task at a
time through ``torch.nn`` and ``torch.optim``: the batched trainer is tested against them,
and the training benchmark measures them as the engine before batching.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from afl import lr as lr_rules
from afl import params

CROP_PAD = 4  # CIFAR-10 augmentation: random crop of the image padded by 4, then a random flip
_AUG_CHOICES = (2 * CROP_PAD + 1) ** 2 * 2  # (dy, dx, flip) packed as dy * 18 + dx * 2 + flip


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
    augment: bool = False


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


def num_epochs(plan: LocalPlan, shard_size: int) -> int:
    """Local epochs a task starts: ``epochs``, or as many as ``steps`` steps reach into."""
    if plan.epochs is not None:
        return plan.epochs
    return math.ceil(plan.steps / math.ceil(shard_size / plan.batch_size))


def epoch_lr(plan: LocalPlan, epoch):
    """The learning rate of local epoch ``epoch`` (a number or a NumPy array of epochs)."""
    if plan.lr_rule == "delay_aware":
        return lr_rules.delay_aware(plan.lr, epoch, plan.delay, plan.lr_alpha)
    return np.full(np.shape(epoch), plan.lr) if np.ndim(epoch) else plan.lr


def draw_epoch(gen: torch.Generator, shard_size: int, augment: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One epoch's draws of a task, in this order from its stream: the order in which it visits
    its shard (positions ``0..n-1``), then, with augmentation, one packed crop-and-flip per
    position of that order."""
    order = torch.randperm(shard_size, generator=gen)
    return order, torch.randint(0, _AUG_CHOICES, (shard_size,), generator=gen) if augment else None


def augment(images: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """Random crop of each image zero-padded by ``CROP_PAD`` and a horizontal flip, per sample.

    ``packed[i] = dy * 18 + dx * 2 + flip``: image ``i`` becomes rows ``dy..dy+H-1`` and
    columns ``dx..dx+W-1`` of its padded copy, mirrored left-right if ``flip``. One gather on
    the images' device.
    """
    n, _, h, w = images.shape
    packed = packed.to(images.device)
    dy, dx, flip = packed // 18, packed // 2 % 9, packed % 2
    padded = F.pad(images, (CROP_PAD,) * 4)
    cols = torch.arange(w, device=images.device)
    cols = torch.where(flip[:, None].bool(), w - 1 - cols, cols) + dx[:, None]
    rows = dy[:, None] + torch.arange(h, device=images.device)
    return padded[torch.arange(n, device=images.device)[:, None, None, None],
                  torch.arange(images.shape[1], device=images.device)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


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


def gradient_batch(gen: torch.Generator, shard_size: int, batch_size: int,
                   augment_: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The positions (and packed augmentations) of AsyncSGD's one minibatch: the first
    ``batch_size`` of one epoch's draws."""
    order, packed = draw_epoch(gen, shard_size, augment_)
    return order[:batch_size], None if packed is None else packed[:batch_size]


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


@torch.no_grad()
def evaluate(model: nn.Module, vector: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
             batch_size: int) -> tuple[float, float]:
    """Mean NLL loss and accuracy of the flat model ``vector`` on ``(x, y)``, in batches of
    ``batch_size`` with one host synchronisation at the end."""
    params.load(model, vector)
    model.eval()
    loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        out = model(xb)
        loss += F.nll_loss(out, yb, reduction="sum")
        correct += (out.argmax(1) == yb).sum()
    return loss.item() / len(y), correct.item() / len(y)
