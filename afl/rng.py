"""Keyed random streams: every component draws from its own stream, never a global RNG.

A stream is keyed by ``(seed, purpose, *ids)`` through NumPy's ``SeedSequence``, so the
numbers a client, a task or the server draws do not depend on what other components drew
before, nor on the order in which work is executed or batched.
"""

from __future__ import annotations

import enum
import typing

import numpy as np

if typing.TYPE_CHECKING:
    import torch


class Stream(enum.IntEnum):
    """The purpose of a stream: the first key after the seed."""

    SUBSET = 1
    PARTITION = 2
    RATES = 3
    INIT = 4
    SELECT = 5
    DURATION = 6
    TRAIN = 7
    PROBE = 8  # measurements at evaluation points (afl.run.probes): never the run's own draws
    SPEED = 9  # time-varying client speeds (afl.sim.timing.MarkovSpeeds)
    AVAILABILITY = 10  # when clients are online (afl.sim.availability)


def numpy_stream(seed: int, purpose: Stream, *ids: int) -> np.random.Generator:
    """A NumPy generator for ``(seed, purpose, *ids)``."""
    return np.random.default_rng([seed, int(purpose), *ids])


def torch_stream(seed: int, purpose: Stream, *ids: int) -> torch.Generator:
    """A CPU torch generator for ``(seed, purpose, *ids)``."""
    import torch  # here, not at the top: the event simulation and the login node use this module without torch

    state = np.random.SeedSequence([seed, int(purpose), *ids]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
