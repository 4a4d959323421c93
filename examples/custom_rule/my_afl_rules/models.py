"""A model from outside afl: a factory ``(input_shape, num_classes) -> nn.Module`` built of the
layers afl's batched trainer runs, ending in log-probabilities. Name it in a config as
``model.name: "my_afl_rules.models:wide_mlp"`` or, installed, by its entry point ``wide_mlp``."""

import math

from torch import nn


def wide_mlp(input_shape, num_classes):
    """One hidden layer of 64 units."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 64), nn.ReLU(),
                         nn.Linear(64, num_classes), nn.LogSoftmax(dim=1))


def with_dropout(input_shape, num_classes):
    """A layer the batched trainer has no rule for (tests/test_extending.py: refused in one line)."""
    return nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(math.prod(input_shape), num_classes),
                         nn.LogSoftmax(dim=1))
