"""Models: each returns log-probabilities (``log_softmax``) of shape ``(batch, num_classes)``.

``build`` constructs a model on the meta device (so construction draws nothing from torch's
global RNG), materialises it on the CPU in float32 and initialises every parameter and buffer
explicitly from the caller's ``torch.Generator``: the same generator state gives bitwise the
same model, and the global RNG is never touched.

- ``cnn``: the first seed's MNIST CNN, three ``Conv2d(k=3, s=1, p=1)`` C->32->32->32 with ReLU,
  global average pool, ``Linear(32, classes)``; Xavier-uniform weights, zero biases (19,146
  parameters for 1 channel and 10 classes).
- ``resnet20``: CIFAR ResNet-20 (He et al. 2016, section 4.2) with 1x1 conv + BN projection
  shortcuts where the shape changes (272,474 parameters for 3 channels and 10 classes).
- ``mlp``: McMahan et al.'s (2017) "2NN", two hidden layers of 200 ReLU units.
- ``logreg``: multinomial logistic regression, one ``Linear`` layer.

``evaluate`` gives a flat parameter vector's test loss and accuracy.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from afl import extensions, params
from afl.errors import config_fail

MODELS = ("cnn", "resnet20", "mlp", "logreg")

# PyTorch's CPU log_softmax over a last dimension shorter than 16 goes element by element: 2,048
# rows of 10 classes take 310 us here, the same reduction over the first dimension of the
# transposed rows (vectorised across them) 58 us, forward and backward 490 us against 160 us; at
# 16 classes and more the last-dimension kernel is the faster, below 256 rows the backward is not
# faster (bench/cell_time.py measures whole cells: evaluations of the logistic regression are most
# of its runs).
FEW_CLASSES = 16
MANY_ROWS = 256


def log_softmax(h: torch.Tensor, dim: int) -> torch.Tensor:
    """``torch.log_softmax(h, dim)``, through the transposed rows where PyTorch's last-dimension
    kernel is slow (on the CPU, fewer than ``FEW_CLASSES`` classes, at least ``MANY_ROWS`` rows):
    the same values to float rounding, not bitwise (the reductions run in another order)."""
    size = h.shape[dim]
    if h.device.type == "cpu" and size < FEW_CLASSES and h.numel() >= MANY_ROWS * size:
        return torch.log_softmax(h.movedim(dim, 0).contiguous(), 0).movedim(0, dim).contiguous()
    return torch.log_softmax(h, dim)


class LogSoftmax(nn.LogSoftmax):
    """``nn.LogSoftmax`` computed by ``log_softmax`` (the built-in models' last layer)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return log_softmax(h, self.dim)


class BasicBlock(nn.Module):
    """``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))``; the shortcut is the identity,
    or a 1x1 convolution + BatchNorm when the stride or channel count changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def _cnn(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(input_shape[0], 32, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, 1, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, num_classes), LogSoftmax(dim=1))


def _resnet20(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(input_shape[0], 16, 3, 1, 1, bias=False),
                               nn.BatchNorm2d(16), nn.ReLU()]
    in_channels = 16
    for channels, stride in ((16, 1), (32, 2), (64, 2)):
        for block in range(3):
            layers.append(BasicBlock(in_channels, channels, stride if block == 0 else 1))
            in_channels = channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes), LogSoftmax(dim=1)]
    return nn.Sequential(*layers)


def _mlp(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), 200), nn.ReLU(),
        nn.Linear(200, 200), nn.ReLU(),
        nn.Linear(200, num_classes), LogSoftmax(dim=1))


def _logreg(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes),
                         LogSoftmax(dim=1))


_ARCHITECTURES = {"cnn": _cnn, "resnet20": _resnet20, "mlp": _mlp, "logreg": _logreg}


def _torch_default(weight: torch.Tensor, bias: torch.Tensor | None, g: torch.Generator) -> None:
    """PyTorch's default for ``Linear``/``Conv2d``: ``kaiming_uniform_(a=sqrt(5))`` weights,
    biases uniform in ``+-1/sqrt(fan_in)``."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=g)
    if bias is not None:
        bound = 1.0 / math.sqrt(weight[0].numel())
        nn.init.uniform_(bias, -bound, bound, generator=g)


@torch.no_grad()
def _initialise(model: nn.Module, name: str, g: torch.Generator) -> None:
    """Initialise every parameter and buffer of ``model`` from ``g``, modules in registration order.

    cnn: Xavier-uniform weights, zero biases (the first seed). resnet20: Kaiming-normal
    (fan_out, ReLU) convolutions as in He et al. 2016, BatchNorm weight 1 and bias 0 with fresh
    running statistics, PyTorch's default for the classifier. mlp, logreg: PyTorch's default.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if name == "cnn":
                nn.init.xavier_uniform_(module.weight, generator=g)
                nn.init.zeros_(module.bias)
            elif name == "resnet20" and isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=g)
            else:
                _torch_default(module.weight, module.bias, g)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            module.reset_running_stats()
        elif list(module.parameters(recurse=False)) or list(module.buffers(recurse=False)):
            raise TypeError(f"no initialisation rule for {type(module).__name__}")


def build(name: str, num_classes: int, input_shape: Sequence[int], generator: torch.Generator) -> nn.Module:
    """The model ``name`` for inputs of shape ``input_shape`` (one sample, e.g. ``(1, 28, 28)``)
    and ``num_classes`` classes, float32 on the CPU, initialised from ``generator`` only.

    ``name`` may also name a factory from outside afl (``afl.extensions``: an import path or an
    ``afl.models`` entry point): ``factory(input_shape, num_classes)`` returns the ``nn.Module``,
    built of the layers ``afl.learning.grouped`` trains and ending in ``LogSoftmax(dim=1)``; it is
    initialised like ``mlp`` (PyTorch's defaults, from ``generator``)."""
    if name not in _ARCHITECTURES and not extensions.external(extensions.MODEL_GROUP, name):
        raise ValueError(f"unknown model '{name}'; choose one of {', '.join(MODELS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"input_shape must be non-empty with positive sizes, got {tuple(input_shape)}")
    if name in ("cnn", "resnet20") and len(shape) != 3:
        raise ValueError(f"model '{name}' needs an input_shape (channels, height, width), got {shape}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    factory = _ARCHITECTURES.get(name) or extensions.load_function(
        extensions.MODEL_GROUP, "model.name", name, "model factory", "(input_shape, num_classes) -> nn.Module")
    try:
        with torch.device("meta"):
            model = factory(shape, num_classes)
    except Exception as exc:  # a factory from outside afl that fails: one line, not its traceback
        if name in _ARCHITECTURES:
            raise
        config_fail("model.name", f"{name}{shape, num_classes} raised {type(exc).__name__}: {exc}",
                    "fix the factory: it is called as factory(input_shape, num_classes)")
    if not isinstance(model, nn.Module):
        config_fail("model.name", f"{name} returned a {type(model).__name__}, not a torch.nn.Module",
                    "return an nn.Module from factory(input_shape, num_classes)")
    model = model.to_empty(device="cpu").float()
    try:
        _initialise(model, name, generator)
    except TypeError as exc:
        config_fail("model.name", f"{name}: {exc}", "use layers with parameters afl knows (Linear, Conv2d, BatchNorm2d)")
    return model


@torch.no_grad()
def flops_per_sample(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs of one sample: 2 x the multiply-accumulates of every ``Conv2d`` and ``Linear``.

    A ``Conv2d`` costs ``out.numel() * (in_channels / groups) * kh * kw`` MACs and a ``Linear``
    ``out.numel() * in_features``; bias additions, activations, pooling and normalisation are
    not counted. Counted with forward hooks on one zero sample in eval mode (so BatchNorm
    statistics are not updated); the model's training mode is restored afterwards.
    """
    macs = 0

    def count(module: nn.Module, inputs, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs += output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            macs += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    modes = {m: m.training for m in model.modules()}
    reference = next(model.parameters())
    try:
        model.eval()
        model(torch.zeros(1, *input_shape, dtype=reference.dtype, device=reference.device))
    finally:
        for m, mode in modes.items():
            m.training = mode
        for hook in hooks:
            hook.remove()
    return 2 * macs


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


def gradient_norm_sq(model: nn.Module, vector: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                     batch_size: int) -> float:
    """``||grad f||^2`` at the flat model ``vector``, ``f`` the mean NLL over all of ``(x, y)``: the
    quantity the first seed's Theorem 1 bounds. BatchNorm uses its running statistics (eval
    mode), so ``f`` is a function of the model alone; gradients accumulate over batches of
    ``batch_size``; the norm is summed in float64."""
    params.load(model, vector)
    model.eval()
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
            (F.nll_loss(model(xb), yb, reduction="sum") / len(y)).backward()
    grad = params.flat_grad(model)
    model.zero_grad(set_to_none=True)
    return float(grad.double().square().sum())
