"""Batched local training: the local work of many tasks computed at once (issue 5).

``BatchedTrainer`` runs the semantics of ``afl.training.local_train`` (and
``local_gradient``) for ``k`` tasks in one pass per local step, each task with its own
starting model, optimizer state, learning rates and data:

- **Grouped model.** ``GroupedModel`` runs the architecture of an ``nn.Module`` for ``k``
  parameter sets at once: convolutions as one grouped convolution over ``[N, k*C, H, W]``
  (task ``t`` owns channels ``t*C..(t+1)*C-1``), so BatchNorm's per-channel statistics are
  per task; linear layers as one batched matmul over features-first ``[k, F, N]`` (so each
  weight's gradient comes out contiguous, as the fused optimizer needs). It walks the module tree
  (``Sequential``, ``Conv2d``, ``BatchNorm2d``, ``ReLU``, ``AdaptiveAvgPool2d(1)``,
  ``Flatten``, ``Linear``, ``LogSoftmax``, ``afl.models.BasicBlock``) and refuses anything
  else.
- **Stacked state.** Each parameter of the ``k`` models is one contiguous ``[k, *shape]``
  tensor (a convolution's weight is then already the ``[k*O, I, kh, kw]`` weight of the
  grouped convolution), as are its gradient and optimizer state; BatchNorm running
  statistics are ``[k, C]`` tensors updated in place. SGD (momentum, weight decay) or Adam is
  ``torch.optim``'s fused kernel, one call per task with that task's learning rate.
- **Data.** Every task's minibatches are drawn up front from its own keyed stream
  (``afl.training.draw_epoch``, exactly the draws of the sequential path) into step tables
  on the device: sample indices ``[S, k, B]``, per-sample loss weights (``1/count`` for the
  real samples of a short last batch, ``0`` for padding), and learning rates ``[S, k]`` (kept
  on the host: the fused optimizer takes each task's rate as a number). A step
  gathers its batch from the dataset tensor by index, with the CIFAR-10 crop-and-flip per
  sample (``afl.training.augment``) when configured; BatchNorm masks padding out of its
  statistics on steps where a batch is short.
- **Ragged work.** Tasks are sorted by planned steps, longest first, so the tasks still
  training at step ``s`` are a prefix: every tensor is sliced, never gathered. Early stopping
  re-sorts when a task stops.
- **No host synchronisation in the step loop**: every decision in it is known on the host
  from shard sizes and plans; losses stay on the device until the end. The one exception is
  early stopping, which reads the losses at the epoch ends where a stop is possible.
- **Fast path.** ReLU in place (no new activation tensor: on a 2-core CPU the paper CNN's
  training step took 1.25 times less time), optional bf16 autocast, channels-last activations for convolutions,
  ``torch.compile`` of the forward pass and loss (with CUDA graphs on a GPU); TF32 is a
  process-wide backend switch (``configure_precision``), and on CPU glibc keeps freed
  activation memory for the next step (``configure_host_allocator``).

Results equal the sequential reference within float tolerance and, because all randomness
comes from each task's own stream, do not depend on which tasks are trained together.
"""

from __future__ import annotations

import ctypes
import math
import platform
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from afl.models import BasicBlock
from afl.training import LocalPlan, TaskResult, augment, draw_epoch, epoch_lr, gradient_batch, num_epochs, num_steps

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as in the sequential path
ADAM_EPS = 1e-8


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


class GroupedModel:
    """The forward pass of ``model``'s architecture for ``k`` parameter sets at once."""

    def __init__(self, model: nn.Module, channels_last: bool):
        self.model = model
        named = list(model.named_parameters())
        self.index = {name: i for i, (name, _) in enumerate(named)}
        self.shapes = [tuple(p.shape) for _, p in named]
        buffers = [(name, b) for name, b in model.named_buffers() if b.is_floating_point()]
        self.buffer_index = {name: i for i, (name, _) in enumerate(buffers)}
        self.buffer_shapes = [tuple(b.shape) for _, b in buffers]
        leaves = [m for m in model.modules() if not list(m.children())]
        self.images = isinstance(leaves[0], nn.Conv2d)  # inputs in the grouped layout [N, k*C, H, W]
        self.channels_last = channels_last and self.images
        self.has_batch_norm = any(isinstance(m, nn.BatchNorm2d) for m in leaves)

    def unstack(self, vectors: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Flat models ``[k, P]`` (``afl.params`` layout) -> contiguous parameters ``[k, *shape]``
        and running statistics ``[k, *shape]``."""
        k, shapes = len(vectors), self.shapes + self.buffer_shapes
        parts = vectors.split([math.prod(shape) for shape in shapes], 1)
        tensors = [part.reshape(k, *shape).clone(memory_format=torch.contiguous_format)  # own storage each
                   for part, shape in zip(parts, shapes)]
        return tensors[:len(self.shapes)], tensors[len(self.shapes):]

    @staticmethod
    def stack(params: list[torch.Tensor], buffers: list[torch.Tensor]) -> torch.Tensor:
        """The inverse of ``unstack``: flat models ``[k, P]``."""
        return torch.cat([t.reshape(len(t), -1) for t in params + buffers], 1)

    def forward(self, parts: list[torch.Tensor], buffers: list[torch.Tensor] | None, x: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        """Log-probabilities ``[k, classes, N]``.

        ``x``: ``[N, k*C, H, W]`` for a convolutional model, else ``[k, N, ...]``. ``buffers``:
        BatchNorm running statistics ``[k, C]``, updated in place (``None``: batch statistics
        only, nothing updated). ``mask``: ``[N, k]`` with 1 for real samples and 0 for padding,
        for BatchNorm on steps where some batch is short (``None``: no padding).
        """
        self.k, self.parts, self.buffers, self.mask = parts[0].shape[0], parts, buffers, mask
        return self._run(self.model, "", x)

    def _run(self, module: nn.Module, prefix: str, h: torch.Tensor) -> torch.Tensor:
        if isinstance(module, nn.Sequential):
            for name, child in module.named_children():
                h = self._run(child, f"{prefix}{name}.", h)
            return h
        if isinstance(module, BasicBlock):
            out = torch.relu_(self._run(module.bn1, prefix + "bn1.", self._run(module.conv1, prefix + "conv1.", h)))
            out = self._run(module.bn2, prefix + "bn2.", self._run(module.conv2, prefix + "conv2.", out))
            return torch.relu_(out + self._run(module.shortcut, prefix + "shortcut.", h))
        if isinstance(module, nn.Conv2d):
            return self._conv(module, prefix, h)
        if isinstance(module, nn.BatchNorm2d):
            return self._batch_norm(module, prefix, h)
        if isinstance(module, nn.ReLU):
            return torch.relu_(h)
        if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
            return _GlobalMean.apply(h, torch.channels_last if self.channels_last else torch.contiguous_format)
        if isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1:
            if self.images:  # grouped [N, k*C, H, W] -> [k, C*H*W, N]
                return h.reshape(h.shape[0], self.k, -1).permute(1, 2, 0)
            return h.flatten(2).transpose(1, 2)  # [k, N, ...] -> [k, F, N]
        if isinstance(module, nn.Linear):
            weight = self.parts[self.index[prefix + "weight"]]
            bias = self.parts[self.index[prefix + "bias"]]
            return torch.baddbmm(bias.unsqueeze(2), weight, h)
        if isinstance(module, nn.LogSoftmax) and module.dim == 1:
            return torch.log_softmax(h, 1)
        raise TypeError(f"batched training has no rule for {type(module).__name__} ({prefix.rstrip('.')})")

    def _conv(self, module: nn.Conv2d, prefix: str, h: torch.Tensor) -> torch.Tensor:
        k = self.k
        weight = self.parts[self.index[prefix + "weight"]].flatten(0, 1)
        bias = self.parts[self.index[prefix + "bias"]].flatten() if module.bias is not None else None
        return F.conv2d(h, weight, bias, module.stride, module.padding, module.dilation, module.groups * k)

    def _batch_norm(self, module: nn.BatchNorm2d, prefix: str, h: torch.Tensor) -> torch.Tensor:
        c = module.num_features
        weight = self.parts[self.index[prefix + "weight"]].flatten()
        bias = self.parts[self.index[prefix + "bias"]].flatten()
        mean_buf = var_buf = None
        if self.buffers is not None:
            mean_buf = self.buffers[self.buffer_index[prefix + "running_mean"]]
            var_buf = self.buffers[self.buffer_index[prefix + "running_var"]]
        if self.mask is None:
            return F.batch_norm(h, None if mean_buf is None else mean_buf.view(-1),
                                None if var_buf is None else var_buf.view(-1), weight, bias, True,
                                module.momentum, module.eps)
        n, k, (_, height, width) = h.shape[0], self.k, h.shape[1:]
        h5 = h.to(weight.dtype).view(n, k, c, height, width)
        m5 = self.mask.view(n, k, 1, 1, 1)
        count = (self.mask.sum(0) * (height * width)).view(k, 1)
        mean = (h5 * m5).sum((0, 3, 4)) / count
        centred = h5 - mean.view(1, k, c, 1, 1)
        var = (centred * centred * m5).sum((0, 3, 4)) / count
        if mean_buf is not None:
            with torch.no_grad():
                mean_buf.lerp_(mean, module.momentum)
                var_buf.lerp_(var * count / (count - 1), module.momentum)
        scale = (torch.rsqrt(var + module.eps) * weight.view(k, c)).view(1, k, c, 1, 1)
        return (centred * scale + bias.view(1, k, c, 1, 1)).reshape(n, k * c, height, width)


class _GlobalMean(torch.autograd.Function):
    """Global average pooling ``[N, C, H, W] -> [N, C, 1, 1]`` whose gradient has the memory format
    of the activations (``mean``'s is contiguous; meeting a channels-last activation, the ReLU
    before it takes a strided path: on a 2-core CPU that made the CNN's backward pass 1.3 times slower)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
        ctx.shape, ctx.memory_format = h.shape, memory_format
        return h.mean((2, 3), keepdim=True)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.memory_format)
        return out.copy_(grad.expand(ctx.shape)).div_(ctx.shape[2] * ctx.shape[3]), None


@dataclass(frozen=True)
class Options:
    """How the trainer computes (the ``run.*`` keys): arithmetic, memory format, compilation."""

    precision: str = "tf32"
    channels_last: bool = True
    compile: bool = False


def _pad(values: np.ndarray, width: int) -> np.ndarray:
    """``values`` extended to ``width`` by repeating its last element (padding of a short batch)."""
    return np.concatenate([values, np.full(width - len(values), values[-1], dtype=values.dtype)])


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on ``device``: through pinned memory, without waiting, to a GPU."""
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


class _StepTables:
    """What every task does at every local step, drawn up front from the tasks' own streams.

    Rows are tasks in the trainer's order, columns of the ``[S, k]`` tables are local steps:
    ``samples`` ``[S, k, B]`` dataset indices (a short batch padded with its last sample),
    ``weights`` ``[S, k, B]`` (``1/count`` for real samples, 0 for padding), ``packed``
    augmentations (or ``None``), ``lrs`` ``[S, k]``, ``short`` ``[S, k]`` (batch shorter than B).
    """

    def __init__(self, shards, plans, gens, sizes, spe, total, order, b):
        steps_max, k = int(total.max()), len(order)
        aug = plans[0].augment
        self.samples = np.zeros((steps_max, k, b), dtype=np.int64)
        self.weights = np.zeros((steps_max, k, b))
        self.packed = np.zeros((steps_max, k, b), dtype=np.int64) if aug else None
        self.lrs = np.zeros((steps_max, k))
        self.short = np.zeros((steps_max, k), dtype=bool)
        for row, t in enumerate(order):
            n, steps, width = int(sizes[t]), int(total[t]), int(spe[t]) * b
            draws = [draw_epoch(gens[t], n, aug) for _ in range(num_epochs(plans[t], n))]
            visit = np.stack([_pad(o.numpy(), width) for o, _ in draws])  # [epochs, spe * B] positions
            self.samples[:steps, row] = shards[t][visit].reshape(-1, b)[:steps]
            if aug:
                self.packed[:steps, row] = np.stack([_pad(a.numpy(), width) for _, a in draws]).reshape(-1, b)[:steps]
            count = np.tile(np.minimum(b, n - np.arange(spe[t]) * b), len(draws))[:steps]
            self.weights[:steps, row] = (np.arange(b) < count[:, None]) / count[:, None]
            self.short[:steps, row] = count < b
            self.lrs[:steps, row] = epoch_lr(plans[t], np.arange(steps) // spe[t])


class _Optimizer:
    """SGD (momentum, weight decay) or Adam for stacked parameters, each task with its own
    learning rate: ``torch.optim``'s update rules through its fused kernels (one pass over a
    task's parameters, gradients and state), one call per task."""

    def __init__(self, plan: LocalPlan, params: list[torch.Tensor]):
        self.plan = plan
        count = 2 if plan.optimizer == "adam" else int(plan.momentum != 0)
        self.state = [[torch.zeros_like(p) for p in params] for _ in range(count)]

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lrs: np.ndarray, t: int) -> None:
        """One step of the first ``k = len(lrs)`` tasks at learning rates ``lrs``; ``t``: the 1-based step."""
        plan, grads = self.plan, [g.contiguous() for g in grads]  # a channels-last convolution's is not
        step = [torch.full((), float(t), device=params[0].device)] * len(params)
        for i, lr in enumerate(lrs.tolist()):
            p, g = [x[i] for x in params], [x[i] for x in grads]
            if plan.optimizer == "adam":
                torch._fused_adam_(p, g, [x[i] for x in self.state[0]], [x[i] for x in self.state[1]], [], step,
                                   lr=lr, beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], weight_decay=plan.weight_decay,
                                   eps=ADAM_EPS, amsgrad=False, maximize=False)
            else:
                torch._fused_sgd_(p, g, [x[i] for x in self.state[0]] if self.state else [],
                                  weight_decay=plan.weight_decay, momentum=plan.momentum, lr=lr, dampening=0.0,
                                  nesterov=False, maximize=False, is_first_step=False)


class BatchedTrainer:
    """Local training (or one gradient each) of a batch of tasks on the dataset ``(x, y)``."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, options: Options):
        self.grouped = GroupedModel(model, options.channels_last)
        self.x, self.y, self.options = x, y, options
        self.device = x.device
        self.losses_fn = self._losses
        if options.compile:  # a graph per shape (number of tasks in a step); CUDA graphs on a GPU
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
            self.losses_fn = torch.compile(self._losses, dynamic=False, mode=mode)

    def _inputs(self, idx: torch.Tensor, packed: torch.Tensor | None) -> torch.Tensor:
        """The batch ``x[idx]`` of each task (``idx``: ``[k, B]``) in the model's layout."""
        b = idx.shape[1]
        if not self.grouped.images:
            xb = self.x[idx]
            return xb if packed is None else augment(xb.flatten(0, 1), packed.reshape(-1)).view(xb.shape)
        xb = self.x[idx.t()]  # [B, k, C, H, W]
        if packed is not None:
            xb = augment(xb.flatten(0, 1), packed.t().reshape(-1)).view(xb.shape)
        xb = xb.reshape(b, -1, *xb.shape[3:])
        return xb.contiguous(memory_format=torch.channels_last) if self.grouped.channels_last else xb

    def _losses(self, params: list[torch.Tensor], buffers: list[torch.Tensor] | None, xb: torch.Tensor,
                yb: torch.Tensor, weights: torch.Tensor, masked: bool) -> torch.Tensor:
        """Each task's loss ``[k]`` on its batch: the mean NLL over its real samples."""
        mask = (weights > 0).t().to(weights.dtype) if masked else None
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.options.precision == "bf16"):
            out = self.grouped.forward(params, buffers, xb, mask)
        nll = -out.gather(1, yb.unsqueeze(1)).squeeze(1)
        return (nll * weights).sum(1)

    def train(self, bases: list[torch.Tensor], shards: list[np.ndarray], plans: list[LocalPlan],
              gens: list[torch.Generator]) -> list[TaskResult]:
        """``local_train`` of every task at once (``shards``: host index arrays)."""
        g, patience = self.grouped, plans[0].patience
        b = plans[0].batch_size
        sizes = np.array([len(s) for s in shards])
        spe = -(-sizes // b)  # steps per epoch
        total = np.array([num_steps(p.epochs, p.steps, b, n) for p, n in zip(plans, sizes)])
        order = np.argsort(-total, kind="stable")  # longest first: the tasks still training are a prefix
        tables = _StepTables(shards, plans, gens, sizes, spe, total, order, b)
        params, buffers = g.unstack(torch.stack([bases[t] for t in order]).to(self.device))
        rows = _Rows(order, spe[order], total[order], tables, params, buffers, _Optimizer(plans[0], params))
        checks = _stop_checks(patience, order, spe, plans, sizes)
        step = 0
        while step < rows.total[0]:
            k = int(np.count_nonzero(rows.total > step))
            leaves = [p[:k].detach().requires_grad_() for p in rows.params]
            idx = rows.samples[step, :k]
            xb = self._inputs(idx, None if rows.packed is None else rows.packed[step, :k])
            masked = g.has_batch_norm and bool(rows.short[step, :k].any())
            bufs = [buf[:k] for buf in rows.buffers] if g.has_batch_norm else None
            losses = self.losses_fn(leaves, bufs, xb, self.y[idx], rows.weights[step, :k], masked)
            grads = torch.autograd.grad(losses.sum(), leaves)
            with torch.no_grad():
                rows.losses[step, :k] = losses
                rows.optimizer.step([p[:k] for p in rows.params], grads, rows.lrs[step, :k], step + 1)
            step += 1
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
        """``local_gradient`` of every task at once: one minibatch each, running statistics untouched."""
        dev, k = self.device, len(bases)
        idx = np.zeros((k, batch_size), dtype=np.int64)
        weights = np.zeros((k, batch_size))
        packed = np.zeros((k, batch_size), dtype=np.int64) if augment_ else None
        for t, (shard, gen) in enumerate(zip(shards, gens)):
            pick, aug = gradient_batch(gen, len(shard), batch_size, augment_)
            idx[t] = _pad(shard[pick.numpy()], batch_size)
            weights[t, :len(pick)] = 1.0 / len(pick)
            if aug is not None:
                packed[t] = _pad(aug.numpy(), batch_size)
        params, _ = self.grouped.unstack(torch.stack(bases).to(dev))
        leaves = [p.requires_grad_() for p in params]
        idx_d = _to_device(idx, dev)
        xb = self._inputs(idx_d, None if packed is None else _to_device(packed, dev))
        masked = self.grouped.has_batch_norm and bool((weights == 0).any())
        losses = self.losses_fn(leaves, None, xb, self.y[idx_d], _to_device(weights, dev).to(params[0].dtype), masked)
        grads = self.grouped.stack(list(torch.autograd.grad(losses.sum(), leaves)), [])
        return [TaskResult(grads[t].clone(), float(loss), 1) for t, loss in enumerate(losses.detach().cpu())]


def _stop_checks(patience, order, spe, plans, sizes) -> dict[int, list[int]]:
    """Step counts after which some task ends an epoch at which early stopping can stop it:
    epoch ``e >= patience`` (the first ``patience`` epochs cannot), not its last."""
    checks: dict[int, list[int]] = {}
    if patience is None:
        return checks
    for t in order:
        for epoch in range(patience, num_epochs(plans[t], int(sizes[t])) - 1):
            checks.setdefault((epoch + 1) * int(spe[t]), []).append(int(t))
    return checks


class _Rows:
    """Per-task state of a batch, one row per task, longest remaining work first."""

    def __init__(self, order, spe, total, tables: _StepTables, params: list[torch.Tensor],
                 buffers: list[torch.Tensor], optimizer: _Optimizer):
        device, dtype = params[0].device, params[0].dtype
        self.task, self.spe, self.total = order.copy(), spe.copy(), total.copy()
        self.params, self.buffers, self.optimizer = params, buffers, optimizer
        self.short = tables.short
        self.lrs = tables.lrs  # read on the host: the optimizer takes each task's rate as a number
        self.samples = _to_device(tables.samples, device)
        self.weights = _to_device(tables.weights, device).to(dtype)
        self.packed = None if tables.packed is None else _to_device(tables.packed, device)
        self.losses = torch.zeros(tables.lrs.shape, dtype=dtype, device=device)

    def stop_early(self, tasks: list[int], step: int, patience: int) -> None:
        """Early stopping at the end of an epoch (one host synchronisation): a task whose mean
        epoch loss has not improved for ``patience`` epochs ends now; rows are re-sorted."""
        rows = [int(np.flatnonzero(self.task == t)[0]) for t in tasks]
        history = self.losses[:step, rows].cpu().numpy()
        stopped = False
        for col, row in enumerate(rows):
            best, since = math.inf, 0
            for mean in history[:, col].reshape(-1, int(self.spe[row])).mean(1):
                best, since = (mean, 0) if mean < best else (best, since + 1)
            if since >= patience:
                self.total[row], stopped = step, True
        if stopped:
            self._permute(np.argsort(-self.total, kind="stable"))

    def _permute(self, perm: np.ndarray) -> None:
        index = torch.as_tensor(perm, device=self.losses.device)
        self.task, self.spe, self.total = self.task[perm], self.spe[perm], self.total[perm]
        self.short, self.lrs = self.short[:, perm], self.lrs[:, perm]
        self.params, self.buffers = [p[index] for p in self.params], [b[index] for b in self.buffers]
        self.optimizer.state = [[s[index] for s in state] for state in self.optimizer.state]
        self.samples, self.weights, self.losses = (t[:, index] for t in (self.samples, self.weights, self.losses))
        if self.packed is not None:
            self.packed = self.packed[:, index]
