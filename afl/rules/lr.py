"""Learning-rate rules: the first seed's delay-aware local rule, the delay-adaptive server step
(Koloskova et al. 2022) and schedules over server versions.

The rules accept Python numbers (and return a ``float``) or NumPy arrays (and return an array,
elementwise with broadcasting). Invalid arguments raise ``ValueError``.
"""

import math

import numpy as np

SCHEDULES = ("constant", "cosine", "step")  # over server versions
LOCAL_RULES = ("constant", "delay_aware")  # a task's local learning rate over its epochs
STEP_RULES = ("constant", "delay_adaptive")  # a gradient rule's server step


def _array(name: str, value) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    if not np.all(a >= 0):
        raise ValueError(f"{name} must be >= 0, got {value}")
    return a


def _result(value: np.ndarray, *inputs):
    return value if any(np.ndim(x) for x in inputs) else float(value)


def delay_aware(gamma0, epoch, delay, alpha=0.01):
    """First seed's local rule: ``gamma = gamma0 / (sqrt(e + 1) * (1 + alpha * d))``.

    ``epoch`` is the 0-based local epoch ``e``; ``delay`` is ``d``, the client's own delay, so
    slower clients take smaller steps and every client's steps shrink over its local epochs.
    """
    g = _array("gamma0", gamma0)
    e = _array("epoch", epoch)
    d = _array("delay", delay)
    a = _array("alpha", alpha)
    return _result(g / (np.sqrt(e + 1.0) * (1.0 + a * d)), gamma0, epoch, delay, alpha)


def delay_adaptive(eta, tau, tau_c, drop=False):
    """Delay-adaptive step (Koloskova, Stich, Jaggi 2022, Theorem 8).

    ``eta_t = eta`` if ``tau <= tau_c``, else ``min(eta, eta * tau_c / tau)``, or ``0`` when
    ``drop`` is true (the stale update is discarded). ``tau_c`` is usually the concurrency ``m``.
    """
    e = _array("eta", eta)
    t = _array("tau", tau)
    c = _array("tau_c", tau_c)
    stale = t > c
    if drop:
        scale = np.where(stale, 0.0, 1.0)
    else:
        scale = np.where(stale, c / np.where(stale, t, 1.0), 1.0)
    return _result(e * scale, eta, tau, tau_c)


def schedule_factor(name: str, step, total: int | None = None, *, gamma: float = 0.1,
                    step_every: int | None = None, min_factor: float = 0.0):
    """Multiplicative learning-rate factor at server version ``step`` (0-based).

    - ``constant``: ``1``.
    - ``cosine``: ``min_factor + (1 - min_factor) * (1 + cos(pi * p)) / 2`` with progress
      ``p = min(step / total, 1)`` over the ``total`` planned server updates (needs ``total``);
      it falls from 1 at version 0 to ``min_factor`` at ``total`` and stays there.
    - ``step``: ``gamma ** floor(step / step_every)`` (needs ``step_every``), ``0 < gamma <= 1``.

    Every factor lies in ``[min_factor, 1]`` for cosine and in ``(0, 1]`` otherwise.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule '{name}'; choose one of {', '.join(SCHEDULES)}")
    s = _array("step", step)
    if name == "constant":
        return _result(np.ones_like(s), step)
    if name == "cosine":
        if total is None or total < 1:
            raise ValueError(f"the cosine schedule needs total >= 1 planned updates, got {total}")
        if not 0.0 <= min_factor <= 1.0:
            raise ValueError(f"min_factor must be in [0, 1], got {min_factor}")
        progress = np.minimum(s / total, 1.0)
        return _result(min_factor + (1.0 - min_factor) * 0.5 * (1.0 + np.cos(math.pi * progress)), step)
    if step_every is None or step_every < 1:
        raise ValueError(f"the step schedule needs step_every >= 1, got {step_every}")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"the step schedule needs 0 < gamma <= 1, got {gamma}")
    return _result(gamma ** np.floor(s / step_every), step)
