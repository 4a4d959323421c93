"""FADAS (Wang, Wang, Lu and Chen, ICML 2024): buffered asynchronous FL with an AMSGrad server step."""

from dataclasses import dataclass, field

import numpy as np

from afl.errors import config_fail
from afl.rules.fedbuff import check_buffer
from afl.rules.spec import Rule

DEFAULT_BUFFER = 5  # M = min(m, 5) unless set: the authors' code's default update_freq
DEFAULTS = {"server_beta1": 0.9, "server_beta2": 0.99, "server_eps": 1e-8}  # the authors' code's defaults


def delay_adaptive_factor(tau_max: int, tau_c: int) -> float:
    """FADAS's delay-adaptive step: ``eta_t = eta / tau_max`` when the buffer's largest delay
    ``tau_max`` exceeds ``tau_c``, else ``eta`` (the factor; the authors' ``g_delay_adaptive.py``)."""
    return 1.0 / tau_max if tau_max > tau_c else 1.0


@dataclass(frozen=True)
class Fadas:
    """When ``M`` deltas ``d_i = x_i - x_v`` are buffered, ``D = (1/M) sum_i d_i`` and, at server step ``t``:
    ``m = b1 m + (1 - b1) D``, ``v = b2 v + (1 - b2) D^2``, ``v_hat = max(v_hat, v)``,
    ``x <- x + eta_t / (1 - b1^t) m / (sqrt(v_hat) / sqrt(1 - b2^t) + eps)``.

    AMSGrad as the authors' code writes it (``update.py``, optimizer ``fedams``: Adam's bias
    corrections, ``eps`` outside the root); the paper's text was not available to check them.
    ``eta_t`` is ``server_lr``, times ``delay_adaptive_factor`` under ``step_rule: delay_adaptive``.
    The moments and the step count are the rule's ``state``, saved with every checkpoint.
    """

    buffer_size: int
    server_lr: float
    beta1: float
    beta2: float
    eps: float
    adaptive: bool
    tau_c: int
    state: dict = field(default_factory=dict)

    def aggregate(self, x, arrivals, taus):
        eta = self.server_lr * (delay_adaptive_factor(max(taus), self.tau_c) if self.adaptive else 1.0)
        delta = x.new_zeros(x.shape)
        for a in arrivals:
            delta.add_(a.vector - a.base, alpha=1.0 / self.buffer_size)
        s = self.state
        if not s:
            s.update(step=0, m=x.new_zeros(x.shape), v=x.new_zeros(x.shape), v_hat=x.new_zeros(x.shape))
        s["step"] = t = s["step"] + 1
        s["m"] = self.beta1 * s["m"] + (1 - self.beta1) * delta
        s["v"] = self.beta2 * s["v"] + (1 - self.beta2) * delta * delta
        s["v_hat"] = s["v_hat"].maximum(s["v"])
        denom = s["v_hat"].sqrt() / (1 - self.beta2**t) ** 0.5 + self.eps
        new = x + eta / (1 - self.beta1**t) * s["m"] / denom
        return new, np.full(len(arrivals), eta / self.buffer_size)


def _check(a) -> None:
    check_buffer(a)
    for key in ("server_beta1", "server_beta2"):
        if not 0 <= getattr(a, key) < 1:
            config_fail(f"algorithm.{key}", f"must be in [0, 1), got {getattr(a, key)}",
                        f"set it to {DEFAULTS[key]}")
    if not a.server_eps > 0:
        config_fail("algorithm.server_eps", f"must be > 0, got {a.server_eps}", "set it to 1e-8")


def _defaults(a) -> dict:
    out = {k: getattr(a, k) if getattr(a, k) is not None else v for k, v in DEFAULTS.items()}
    return out | {"buffer_size": a.buffer_size if a.buffer_size is not None else min(a.concurrency, DEFAULT_BUFFER)}


FADAS = Rule(
    name="fadas", build=lambda a, s, clients: Fadas(a.buffer_size, a.server_lr, a.server_beta1, a.server_beta2,
                                                    a.server_eps, a.step_rule == "delay_adaptive", a.tau_c),
    batch=lambda a: a.buffer_size,
    keys=("buffer_size", "server_lr", "step_rule", "tau_c", "server_beta1", "server_beta2", "server_eps"),
    defaults=_defaults, check=_check,
)
