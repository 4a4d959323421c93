"""Batched local training: the local work of many tasks computed at once.

``BatchedTrainer`` runs the semantics of ``afl.learning.reference.local_train`` (and
``local_gradient``) for ``k`` tasks in one pass per local step, each task with its own starting
model, optimizer state, learning rates and data. Read ``BatchedTrainer.step`` first: one local
step of every task still training. Below it, ``afl.learning.grouped`` runs the model for ``k``
parameter sets at once and ``afl.learning.tables`` decides on the host, before the first step,
what every task does at every step (minibatches, weights, learning rates, when to check early
stopping) and holds the per-task rows and their fused optimizer.

- **No host synchronisation in the step loop**: every decision in it is known on the host from
  shard sizes and plans; losses stay on the device until the end. The one exception is early
  stopping, which reads the losses at the epoch ends where a stop is possible.
- **Fast path.** Optional bf16 autocast, channels-last activations for convolutions,
  ``torch.compile`` of the forward pass and loss (with CUDA graphs on a GPU); TF32 is a
  process-wide backend switch (``configure_precision``), and on CPU glibc keeps freed activation
  memory for the next step (``configure_host_allocator``).

Results equal the reference within float tolerance and, because all randomness comes from each
task's own stream, do not depend on which tasks are trained together beyond float rounding
(docs/reproducibility.md).
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from afl.learning.grouped import GroupedModel, softmax_regression_gradients
from afl.learning.local import LocalPlan, TaskResult, augment, gradient_batch, num_steps
from afl.learning.tables import FusedOptimizer, Rows, StepTables, pad, stop_checks, to_device

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
# On a CPU, about this many samples per pass (bench/cross_device.py, bench/RESULTS.md section 9):
# a pass of more tasks than that keeps the cores no busier and spills the tasks' parameters
# and gradients out of the caches (50 CNN tasks of batch 10 in one pass: 1,000 samples/s
# against 1,500 at 10 to 25 tasks).
CPU_SAMPLES_PER_PASS = {"conv": 128, "dense": 256}


def configure_precision(precision: str) -> None:
    """Process-wide float32 arithmetic of CUDA matmuls and convolutions: TensorFloat-32
    (``tf32``, and under ``bf16`` for what autocast leaves in float32) or exact IEEE (``fp32``).
    CPUs compute float32 exactly either way."""
    mode = "ieee" if precision == "fp32" else "tf32"
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode


def configure_host_allocator() -> None:
    """Process-wide, glibc only: keep freed memory in the heap (no trimming; fresh ``mmap`` only
    above 32 MiB, glibc's limit) instead of returning it to the system after every local step,
    so that a step's activations reuse pages rather than fault in zeroed ones. Measured on the
    2-core CPU of bench/RESULTS.md: the CNN's local training 1.3-1.6 times faster on one thread
    of a loaded machine; on two threads of the idle machine, no difference beyond its noise."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)


@dataclass(frozen=True)
class Options:
    """How the trainer computes (the ``run.*`` keys): arithmetic, memory format, compilation."""

    precision: str = "tf32"
    channels_last: bool = True
    compile: bool = False


class BatchedTrainer:
    """Local training (or one gradient each) of a batch of tasks on the dataset ``(x, y)``."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, options: Options):
        self.grouped = GroupedModel(model, options.channels_last)
        self.x, self.y, self.options = x, y, options
        self.device = x.device
        self.losses_fn = self._losses
        # One gradient each of softmax regression in closed form, not through autograd (unless bf16).
        self.closed_form = self.grouped.softmax_regression and options.precision != "bf16"
        # Called after every local step with (task-steps done, task-steps planned) of this batch.
        self.progress: Callable[[int, int], None] | None = None
        if options.compile:  # a graph per shape (number of tasks in a step); CUDA graphs on a GPU
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
            self.losses_fn = torch.compile(self._losses, dynamic=False, mode=mode)

    def tasks_per_pass(self, batch_size: int, limit: int) -> int:
        """How many tasks one pass trains together: up to ``limit`` (``run.task_batch``) on a
        GPU; on a CPU about ``CPU_SAMPLES_PER_PASS`` samples' worth of tasks. A rule of the
        shapes, not a timing, so that a run's float rounding does not depend on the machine's load."""
        if self.device.type != "cpu":
            return limit
        target = CPU_SAMPLES_PER_PASS["conv" if self.grouped.images else "dense"]
        return max(1, min(limit, round(target / batch_size)))

    def _inputs(self, idx: torch.Tensor, packed: torch.Tensor | None) -> torch.Tensor:
        """The batch ``x[idx]`` of each task (``idx``: ``[k, B]``) in the model's layout."""
        b = idx.shape[1]
        if not self.grouped.images:  # index_select: on a CPU 4 times faster than x[idx] at 1,024 rows of 60
            xb = self.x.index_select(0, idx.reshape(-1)).view(*idx.shape, *self.x.shape[1:])
            return xb if packed is None else augment(xb.flatten(0, 1), packed.reshape(-1)).view(xb.shape)
        xb = self.x[idx.t()]  # [B, k, C, H, W]
        if packed is not None:
            xb = augment(xb.flatten(0, 1), packed.t().reshape(-1)).view(xb.shape)
        xb = xb.reshape(b, -1, *xb.shape[3:])
        return xb.contiguous(memory_format=torch.channels_last) if self.grouped.channels_last else xb

    def _losses(self, params: list[torch.Tensor], buffers: list[torch.Tensor] | None, xb: torch.Tensor,
                yb: torch.Tensor, weights: torch.Tensor, masked: bool,
                sgd_rates: torch.Tensor | None = None) -> torch.Tensor:
        """Each task's loss ``[k]`` on its batch: the mean NLL over its real samples (``sgd_rates``:
        the linear layers step themselves in the backward pass, ``GroupedModel.forward``)."""
        mask = (weights > 0).t().to(weights.dtype) if masked else None
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.options.precision == "bf16"):
            out = self.grouped.forward(params, buffers, xb, mask, sgd_rates)
        nll = -out.gather(2, yb.unsqueeze(2)).squeeze(2)
        return (nll * weights).sum(1)

    def step(self, rows: Rows, step: int, k: int) -> None:
        """Local step ``step`` of the first ``k`` rows: gather each task's minibatch, its loss, the
        gradients of all ``k`` losses at once, and each task's optimizer step at its own rate."""
        leaves = [p[:k].detach().requires_grad_() for p in rows.params]
        count = rows.count[step, :k]
        b = int(count.max())  # the columns this step needs: padding no task uses is not computed
        idx = rows.samples[step, :k, :b]
        xb = self._inputs(idx, None if rows.packed is None else rows.packed[step, :k, :b])
        masked = self.grouped.has_batch_norm and bool((count < b).any())
        bufs = [buf[:k] for buf in rows.buffers] if self.grouped.has_batch_norm else None
        params = [p[:k] for p in rows.params]
        fused = self.fused_sgd(rows.optimizer)  # the linear layers step in the backward pass, the others below
        losses = self.losses_fn(leaves, bufs, xb, self.y[idx], rows.weights[step, :k, :b], masked,
                                rows.rates[step, :k] if fused else None)
        if fused:
            torch.autograd.backward(losses.sum(), inputs=leaves)
            params, grads = [params[i] for i in self.grouped.unfused], [leaves[i].grad for i in self.grouped.unfused]
        else:
            grads = torch.autograd.grad(losses.sum(), leaves)
        with torch.no_grad():
            rows.losses[step, :k] = losses
            rows.optimizer.step(params, grads, rows.lrs[step, :k], rows.rates[step, :k], step + 1)

    def fused_sgd(self, optimizer: FusedOptimizer) -> bool:
        """Whether the linear layers step themselves (``afl.learning.grouped._LinearSGD``): plain
        SGD (no momentum, no weight decay), fp32 or tf32 arithmetic, eager."""
        plan = optimizer.plan
        return (plan.optimizer == "sgd" and not plan.momentum and not plan.weight_decay
                and self.options.precision != "bf16" and not self.options.compile)

    def train(self, bases: list[torch.Tensor], shards: list[np.ndarray], plans: list[LocalPlan],
              gens: list[torch.Generator]) -> list[TaskResult]:
        """``local_train`` of every task at once (``shards``: host index arrays)."""
        g, patience = self.grouped, plans[0].patience
        b = plans[0].batch_size
        sizes = np.array([len(s) for s in shards])
        spe = -(-sizes // b)  # steps per epoch
        total = np.array([num_steps(p.epochs, p.steps, b, n) for p, n in zip(plans, sizes)])
        order = np.argsort(-total, kind="stable")  # longest first: the tasks still training are a prefix
        tables = StepTables(shards, plans, gens, sizes, spe, total, order, b)
        params, buffers = g.unstack(torch.stack([bases[t] for t in order]).to(self.device))
        rows = Rows(order, spe[order], total[order], tables, params, buffers, FusedOptimizer(plans[0], params))
        checks = stop_checks(patience, order, spe, plans, sizes)
        step, done, planned = 0, 0, int(total.sum())
        while step < rows.total[0]:
            k = int(np.count_nonzero(rows.total > step))  # the tasks still training: a prefix of the rows
            self.step(rows, step, k)
            step += 1
            done += k
            if self.progress is not None:
                self.progress(done, planned)
            if step in checks:
                rows.stop_early(checks.pop(step), step, patience)
        host = rows.losses.cpu().numpy()
        vectors = g.stack(rows.params, rows.buffers)
        out: list[TaskResult] = [None] * len(plans)  # type: ignore[list-item]
        for row, t in enumerate(rows.task):
            steps, per_epoch = int(rows.total[row]), int(rows.spe[row])
            first = 0 if plans[t].steps is not None else (steps - 1) // per_epoch * per_epoch
            out[t] = TaskResult(vectors[row].clone(), float(host[first:steps, row].mean()), steps)
        return out

    def gradients(self, bases: list[torch.Tensor], shards: list[np.ndarray], batch_size: int,
                  gens: list[torch.Generator], augment_: bool) -> list[TaskResult]:
        """``local_gradient`` of every task at once: one minibatch each, running statistics untouched.
        Softmax regression's gradients in closed form (``softmax_regression_gradients``; eager even
        under ``run.compile``), the other models' through autograd."""
        dev, k = self.device, len(bases)
        idx = np.zeros((k, batch_size), dtype=np.int64)
        weights = np.zeros((k, batch_size))
        packed = np.zeros((k, batch_size), dtype=np.int64) if augment_ else None
        for t, (shard, gen) in enumerate(zip(shards, gens)):
            pick, aug = gradient_batch(gen, len(shard), batch_size, augment_)
            idx[t] = pad(shard[pick.numpy()], batch_size)
            weights[t, :len(pick)] = 1.0 / len(pick)
            if aug is not None:
                packed[t] = pad(aug.numpy(), batch_size)
        params, _ = self.grouped.unstack(torch.stack(bases).to(dev))
        idx_d = to_device(idx, dev)
        xb = self._inputs(idx_d, None if packed is None else to_device(packed, dev))
        w = to_device(weights, dev).to(params[0].dtype)
        if self.closed_form:
            losses, *parts = softmax_regression_gradients(*params, xb.flatten(2), self.y[idx_d], w)
        else:
            leaves = [p.requires_grad_() for p in params]
            masked = self.grouped.has_batch_norm and bool((weights == 0).any())
            losses = self.losses_fn(leaves, None, xb, self.y[idx_d], w, masked)
            parts = list(torch.autograd.grad(losses.sum(), leaves))
        grads = self.grouped.stack(parts, [])
        return [TaskResult(grads[t].clone(), float(loss), 1) for t, loss in enumerate(losses.detach().cpu())]
