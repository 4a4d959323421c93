"""``Dataset``: a train/test split held in memory, what every reader and generator returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split held in memory (compared by identity: fields are tensors).

    ``client_indices`` is the natural per-client partition of the training set (one
    sorted int64 index array per client) for datasets that have one, else ``None``.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    client_indices: tuple[np.ndarray, ...] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input, e.g. ``(1, 28, 28)``."""
        return tuple(self.train_x.shape[1:])
