"""What one task's local work is: its plan, its step count, its random draws, its result.

A task starts from the flat model ``base`` it was sent (version ``v``) and either trains
``epochs`` local epochs (or ``steps`` local steps) of SGD/Adam on its client's shard, or,
for a gradient rule (AsyncSGD), returns one stochastic gradient at ``base``. Its random
stream ``gen`` is keyed by (seed, client, task index), so a result does not depend on which
other tasks are computed with it or in which order. The batched trainer
(``afl.learning.trainer``) and its test oracle (``afl.learning.reference``) both draw here.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from afl.rules import lr as lr_rules

CROP_PAD = 4  # CIFAR-10 augmentation: random crop of the image padded by 4, then a random flip
_AUG_CHOICES = (2 * CROP_PAD + 1) ** 2 * 2  # (dy, dx, flip) packed as dy * 18 + dx * 2 + flip


@dataclass(frozen=True, kw_only=True)
class LocalPlan:
    """What a task's local training does, fixed when the task is dispatched (keywords only)."""

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


def task_steps(client, gradient: bool, sizes: np.ndarray | None, n: int) -> np.ndarray:
    """Planned local steps of a task at each of ``n`` clients (what ``timing.per: step`` charges).

    ``client``: the config's client section; ``gradient``: the rule's tasks return one gradient
    (one step); ``sizes``: the clients' shard sizes, or None where no data is loaded (the null
    workload, the queueing CLI), where a task counts ``client.steps`` (or 1: the config refuses
    per-step timing of local epochs without data).
    """
    if gradient:
        return np.ones(n, dtype=np.int64)
    if sizes is None:
        return np.full(n, client.steps or 1, dtype=np.int64)
    return np.array([num_steps(client.epochs, client.steps, client.batch_size, int(k)) for k in sizes], dtype=np.int64)


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


def gradient_batch(gen: torch.Generator, shard_size: int, batch_size: int,
                   augment_: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The positions (and packed augmentations) of AsyncSGD's one minibatch: the first
    ``batch_size`` of one epoch's draws."""
    order, packed = draw_epoch(gen, shard_size, augment_)
    return order[:batch_size], None if packed is None else packed[:batch_size]
