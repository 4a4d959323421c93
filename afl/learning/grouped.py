"""The forward pass of one architecture for ``k`` parameter sets at once: the grouped model.

``GroupedModel`` runs the architecture of an ``nn.Module`` for ``k`` tasks' parameters:
convolutions as one grouped convolution over ``[N, k*C, H, W]`` (task ``t`` owns channels
``t*C..(t+1)*C-1``), so BatchNorm's per-channel statistics are per task; linear layers as one
batched matmul over batch-first ``[k, N, F]`` (on a 2-core CPU, 50 tasks' first MLP layer at
batch 10 ran twice as fast as features-first ``[k, F, N]``). It walks the module tree (``Sequential``, ``Conv2d``,
``BatchNorm2d``, ``ReLU``, ``AdaptiveAvgPool2d(1)``, ``Flatten``, ``Linear``, ``LogSoftmax``,
``afl.learning.models.BasicBlock``) and refuses anything else. Each parameter of the ``k``
models is one contiguous ``[k, *shape]`` tensor (a convolution's weight is then already the
``[k*O, I, kh, kw]`` weight of the grouped convolution); BatchNorm running statistics are
``[k, C]`` tensors updated in place, and BatchNorm masks padding out of its statistics on steps
where a batch is short. With plain SGD (no momentum, no weight decay) the linear layers step
their own weights in their backward pass (``_LinearSGD``). ReLU runs in place (no new activation tensor: on a 2-core CPU the paper
CNN's training step took 1.25 times less time).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from afl import params
from afl.learning.models import BasicBlock, log_softmax


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
        linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        for name, m in linears:
            if m.bias is None:
                raise TypeError(f"batched training needs a bias in every Linear layer ({name} has bias=False)")
        # The parameters that ``_LinearSGD`` steps itself when fused SGD is on; the others' indices.
        linear = {self.index[f"{name}.{p}"] for name, _ in linears for p in ("weight", "bias")}
        self.unfused = [i for i in range(len(named)) if i not in linear]
        # Softmax regression (``Flatten``, ``Linear``, ``LogSoftmax``: the ``logreg`` model), whose
        # gradient ``softmax_regression_gradients`` computes in closed form.
        core = [m for m in leaves if not isinstance(m, nn.Flatten)]
        self.softmax_regression = (len(core) == 2 and isinstance(core[0], nn.Linear)
                                   and isinstance(core[1], nn.LogSoftmax) and core[1].dim == 1)

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
                mask: torch.Tensor | None, sgd_rates: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probabilities ``[k, N, classes]``.

        ``x``: ``[N, k*C, H, W]`` for a convolutional model, else ``[k, N, ...]``. ``buffers``:
        BatchNorm running statistics ``[k, C]``, updated in place (``None``: batch statistics
        only, nothing updated). ``mask``: ``[N, k]`` with 1 for real samples and 0 for padding,
        for BatchNorm on steps where some batch is short (``None``: no padding). ``sgd_rates``:
        each task's learning rate ``[k]`` for plain SGD fused into the backward pass of the linear
        layers (``_LinearSGD``: their weights are stepped there, and get no gradient).
        """
        self.k, self.parts, self.buffers, self.mask = parts[0].shape[0], parts, buffers, mask
        self.sgd_rates = None if sgd_rates is None else sgd_rates.neg()
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
            if self.images:  # grouped [N, k*C, H, W] -> [k, N, C*H*W]
                return h.reshape(h.shape[0], self.k, -1).transpose(0, 1)
            return h.flatten(2)  # [k, N, ...] -> [k, N, F]
        if isinstance(module, nn.Linear):
            weight = self.parts[self.index[prefix + "weight"]]
            bias = self.parts[self.index[prefix + "bias"]]
            if self.sgd_rates is not None:
                return _LinearSGD.apply(h, weight, bias, self.sgd_rates)
            return _Linear.apply(h, weight, bias)
        if isinstance(module, nn.LogSoftmax) and module.dim == 1:
            return log_softmax(h, 2)
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


class _Linear(torch.autograd.Function):
    """``k`` linear layers ``bias + h @ weight^T`` (``[k, N, F]``) whose weight gradient is
    ``g^T h``, written in the weights' own ``[k, out, in]`` layout, as ``F.linear``'s is. Autograd
    through ``baddbmm`` takes it as ``(h^T g)^T``, a product whose last dimension is the layer's
    output: for a classifier's 10 outputs that orientation is 3.6-5.5 times slower on a CPU
    (bench/RESULTS.md section 10)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        ctx.save_for_backward(h, weight)
        return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        h, weight = ctx.saved_tensors  # under autocast g has the product's dtype (bf16): as autograd
        # through autocast's casts, the products run in it and each gradient returns in its input's
        grad_h = torch.bmm(g, weight.to(g.dtype)).to(h.dtype) if ctx.needs_input_grad[0] else None
        grad_weight = torch.bmm(g.transpose(1, 2), h.to(g.dtype)).to(weight.dtype) if ctx.needs_input_grad[1] else None
        grad_bias = g.sum(1).to(weight.dtype) if ctx.needs_input_grad[2] else None
        return grad_h, grad_weight, grad_bias


class _LinearSGD(torch.autograd.Function):
    """``k`` linear layers ``bias + h @ weight^T`` (``[k, N, F]``) whose backward pass steps their
    own weights by plain SGD in place, ``w -= lr_t (g^T h)`` as ``w += ((-lr_t) g)^T h``,
    after computing the input's gradient from the weights it was taken with. The step costs one
    read and one write of the weights instead of writing a gradient and then reading it, the
    weights and writing them again: at batch 10 the MLP is bound by that memory traffic
    (bench/RESULTS.md section 9). The same update as ``FusedOptimizer``'s SGD step up to float
    rounding (the rate multiplies ``g`` before the product, not the product)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, neg_rates: torch.Tensor):
        ctx.save_for_backward(h, weight, bias, neg_rates)
        return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        h, weight, bias, neg_rates = ctx.saved_tensors
        grad_h = torch.bmm(g, weight) if ctx.needs_input_grad[0] else None
        scaled = g * neg_rates.view(-1, 1, 1)
        weight.baddbmm_(scaled.transpose(1, 2), h)
        bias.add_(scaled.sum(1))
        return grad_h, None, None, None


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


@torch.no_grad()
def softmax_regression_gradients(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                                 weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each task's weighted NLL of softmax regression and its gradient, in closed form: with
    ``p = softmax(W x + b)`` and ``e_y`` the one-hot label, the loss ``sum_j w_j (-log p_yj)`` has
    gradients ``sum_j w_j (p_j - e_yj) x_j^T`` in ``W`` and ``sum_j w_j (p_j - e_yj)`` in ``b``.

    ``weight`` ``[k, C, F]``, ``bias`` ``[k, C]``, ``x`` ``[k, N, F]``, ``y`` ``[k, N]``, ``weights``
    ``[k, N]`` (0 for padding). Returns losses ``[k]`` and the gradients ``[k, C, F]``, ``[k, C]``:
    what autograd gives through ``GroupedModel.forward``, to float rounding, without the engine
    (on a 2-core CPU, one task at batch 1,024 with 60 features and 10 classes: 0.14 ms against
    0.76 ms). The logits are ``[k, C, N]``, classes first, so that ``log_softmax`` reduces across
    rows, PyTorch's fast CPU kernel for few classes (``afl.learning.models.log_softmax``)."""
    logp = torch.log_softmax(torch.baddbmm(bias.unsqueeze(2), weight, x.transpose(1, 2)), 1)
    labels = y.unsqueeze(1)  # [k, 1, N]
    losses = -(logp.gather(1, labels).squeeze(1) * weights).sum(1)
    residual = logp.exp_().scatter_add_(1, labels, torch.full_like(labels, -1, dtype=logp.dtype))
    residual.mul_(weights.unsqueeze(1))  # [k, C, N]: w_j (p_j - e_yj)
    return losses, torch.bmm(residual, x), residual.sum(2)


@torch.no_grad()
def check_trainable(model: nn.Module, input_shape, num_classes: int) -> None:
    """``TypeError`` unless batched training can run ``model``: every layer one ``GroupedModel``
    has a rule for, and log-probabilities ``[k, N, num_classes]`` out (one forward pass of one
    zero sample, for a model from outside afl before any task runs)."""
    grouped = GroupedModel(model, channels_last=False)
    parts, buffers = grouped.unstack(params.flatten(model).unsqueeze(0))
    shape = tuple(input_shape)
    x = torch.zeros(1, *shape) if grouped.images else torch.zeros(1, 1, *shape)
    out = grouped.forward(parts, buffers, x, None)
    if tuple(out.shape) != (1, 1, num_classes):
        raise TypeError(f"its output has shape {tuple(out.shape)} in batched training, not (k, N, {num_classes}): "
                        "end it with Linear(..., num_classes) and LogSoftmax(dim=1)")
