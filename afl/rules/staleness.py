"""Staleness functions ``s(tau)``: how much a result computed ``tau`` server versions ago counts.

Each function takes the staleness ``tau >= 0`` as a Python number (returns a ``float``) or a
NumPy array (returns an array of the same shape, elementwise), then its parameters as
keywords. ``make(name, **params)`` validates a name and its parameters and binds them, so the
server calls ``s(tau)`` with the staleness alone. ``PARAMS`` lists each function's parameters
with their defaults, for config validation.

Sources: polynomial and hinge from FedAsync (Xie, Koyejo, Gupta 2019, "Asynchronous
Federated Optimization", section 5.2); the ``fedbuff`` weighting from FedBuff (Nguyen et al.
2022, "Federated Learning with Buffered Asynchronous Aggregation", AISTATS).
"""

import functools
import math
import numbers
from collections.abc import Callable

import numpy as np


def _staleness(tau):
    if isinstance(tau, numbers.Real):  # a scalar: skip the array round trip (the server's hot path)
        if not tau >= 0:
            raise ValueError(f"staleness tau must be >= 0, got {tau}")
        return float(tau)
    t = np.asarray(tau, dtype=np.float64)
    if not np.all(t >= 0):
        raise ValueError(f"staleness tau must be >= 0, got {tau}")
    return t


def _result(value, tau):
    return float(value) if isinstance(tau, numbers.Real) or np.ndim(tau) == 0 else value


def _check(function: str, param: str, value: float, ok: bool, rule: str) -> None:
    if not ok:
        raise ValueError(f"staleness '{function}': {param} must be {rule}, got {value}")


def constant(tau):
    """``s(tau) = 1``: every result counts fully, however stale."""
    t = _staleness(tau)
    return 1.0 if isinstance(t, float) else _result(np.ones_like(t), tau)


def polynomial(tau, a: float = 0.5):
    """``s(tau) = (tau + 1)^(-a)``, ``a >= 0`` (FedAsync, Xie et al. 2019, polynomial)."""
    _check("polynomial", "a", a, a >= 0, ">= 0")
    return _result((_staleness(tau) + 1.0) ** -a, tau)


def hinge(tau, a: float = 1.0, b: float = 10):
    """``s(tau) = 1`` if ``tau <= b`` else ``1 / (a (tau - b) + 1)``, ``a > 0``, ``b >= 0``.

    FedAsync (Xie et al. 2019), hinge: no discount up to ``b`` versions, then hyperbolic decay.
    Written as ``1 / (a max(tau - b, 0) + 1)``, which is the same function.
    """
    _check("hinge", "a", a, a > 0, "> 0")
    _check("hinge", "b", b, b >= 0, ">= 0")
    return _result(1.0 / (a * np.maximum(_staleness(tau) - b, 0.0) + 1.0), tau)


def fedbuff(tau):
    """``s(tau) = 1 / sqrt(1 + tau)`` (FedBuff, Nguyen et al. 2022, its staleness scaling)."""
    return _result((1.0 + _staleness(tau)) ** -0.5, tau)


def inverse_linear(tau, beta: float = 1.0):
    """``s(tau) = 1 / (1 + beta tau)``, ``beta >= 0``."""
    _check("inverse_linear", "beta", beta, beta >= 0, ">= 0")
    return _result(1.0 / (1.0 + beta * _staleness(tau)), tau)


def exponential(tau, beta: float = 1.0):
    """``s(tau) = exp(-beta tau)``, ``beta >= 0``."""
    _check("exponential", "beta", beta, beta >= 0, ">= 0")
    return _result(np.exp(-beta * _staleness(tau)), tau)


FUNCTIONS: dict[str, Callable] = {
    "constant": constant,
    "polynomial": polynomial,
    "hinge": hinge,
    "fedbuff": fedbuff,
    "inverse_linear": inverse_linear,
    "exponential": exponential,
}

PARAMS: dict[str, dict[str, float]] = {
    "constant": {},
    "polynomial": {"a": 0.5},
    "hinge": {"a": 1.0, "b": 10.0},
    "fedbuff": {},
    "inverse_linear": {"beta": 1.0},
    "exponential": {"beta": 1.0},
}


def make(name: str, **params: float) -> Callable:
    """The staleness function ``name`` with ``params`` bound: call it as ``s(tau)``.

    Raises ``ValueError`` for an unknown name or parameter (naming the allowed ones) and for a
    parameter out of range; parameters left out take the defaults in ``PARAMS``.
    """
    if name not in FUNCTIONS:
        raise ValueError(f"unknown staleness function '{name}'; choose one of {', '.join(FUNCTIONS)}")
    allowed = PARAMS[name]
    for key, value in params.items():
        if key not in allowed:
            takes = ", ".join(allowed) if allowed else "no parameters"
            raise ValueError(f"staleness '{name}' has no parameter '{key}'; it takes {takes}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"staleness '{name}': {key} must be a finite number, got {value!r}")
    bound = functools.partial(FUNCTIONS[name], **{**allowed, **params})
    bound(0)  # the functions check their own parameters: fail here, not at the first arrival
    return bound
