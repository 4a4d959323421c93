"""A dataset from outside afl: a provider ``(root, seed) -> afl.data.Dataset``. Name it in a config
as ``data.name: "my_afl_rules.data:blobs"`` or, installed, by its entry point ``blobs``."""

import torch

from afl.data import Dataset


def blobs(root, seed):
    """Four Gaussian classes in the plane (unit variance, centres at (+-2, +-2)), 2,000 training and
    500 test points, generated from ``seed`` (``root`` is not needed: nothing is read)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])

    def draw(n):
        y = torch.randint(0, 4, (n,), generator=g)
        return centres[y] + torch.randn(n, 2, generator=g), y

    (train_x, train_y), (test_x, test_y) = draw(2000), draw(500)
    return Dataset("blobs", train_x, train_y, test_x, test_y, num_classes=4)
