"""Models as flat vectors: the server and the algorithms see one 1-D tensor per model.

The vector holds every parameter, then every floating-point buffer (BatchNorm running
statistics), in the module's registration order. Aggregation rules are then plain vector
arithmetic, and a model snapshot is one tensor that is never modified in place.
"""

import torch
from torch import nn


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]


def num_parameters(module: nn.Module) -> int:
    """Length of the parameter prefix of the flat vector (buffers follow it)."""
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def flatten(module: nn.Module) -> torch.Tensor:
    """A new flat copy of the module's parameters and floating-point buffers."""
    return torch.cat([t.detach().reshape(-1) for t in _tensors(module)])


@torch.no_grad()
def load(module: nn.Module, vector: torch.Tensor) -> None:
    """Copy a flat vector into the module's parameters and floating-point buffers."""
    tensors = _tensors(module)
    for t, chunk in zip(tensors, vector.split([t.numel() for t in tensors])):
        t.copy_(chunk.view_as(t))


def flat_grad(module: nn.Module) -> torch.Tensor:
    """The parameters' gradients as one flat vector (zeros where a gradient is missing)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in module.parameters()])
