"""The closed Jackson network of a config (SPEC section 5), and the constants of its routing bound.

A config is read as a closed Jackson network: ``m = algorithm.concurrency`` tasks, client ``i``
a FIFO queue with exponential service of rate ``mu_i`` (``timing.rates``, drawn exactly as the
trainer draws them: ``afl.timing.client_rates`` on the keyed stream ``(seed, RATES)``) and
routing ``p`` (``algorithm.routing``; uniform for ``selection: with_replacement``). The model
is exact for one server update per returned result (``asyncsgd``, ``fedasync``, ``fedbuff``
with a buffer of 1), routing or with-replacement selection, exponential compute times and no
download/upload times; ``jackson_reasons`` lists how a config departs from that. Used by the
trainer (``trainer_prediction``), ``afl queue`` (``afl.queue_cli``) and the queueing experiments.
"""

from __future__ import annotations

import numpy as np


def jackson_reasons(cfg, steps_known: bool = False) -> list[str]:
    """How ``cfg`` departs from the closed Jackson network (empty: the model is exact).

    ``steps_known``: the caller passes each client's local steps (the trainer does), so
    ``timing.per: step`` with local epochs is still an exponential task time.
    """
    a, t = cfg.algorithm, cfg.timing
    reasons = []
    batch = {"sfl": a.concurrency, "afl": a.concurrency, "fedbuff": a.buffer_size}.get(a.name, 1)
    if a.name == "sfl":
        reasons.append("algorithm.name is sfl (synchronous rounds, not a closed network)")
    elif batch != 1:
        reasons.append(f"algorithm.name {a.name} applies {batch} results per server update (the model: one)")
    if a.selection == "without_replacement":
        reasons.append("algorithm.selection is without_replacement (the model routes with p and queues FIFO)")
    if t.distribution != "exponential":
        reasons.append(f"timing.distribution is {t.distribution}, not exponential")
    if t.download > 0 or t.upload > 0:
        reasons.append("timing.download/upload add fixed times to the exponential service")
    if t.per == "step" and not steps_known and a.name != "asyncsgd" and cfg.client.steps is None:
        reasons.append("timing.per is step with local epochs (work per task depends on the shard sizes)")
    return reasons


def service_rates(cfg, rates: np.ndarray, steps=None) -> np.ndarray:
    """Exponential service rate of a whole task per client: ``mu_i``, or ``mu_i / steps_i`` with ``per: step``.

    With ``timing.per: step`` a task's compute time is ``steps * Exp(1) / mu_i = Exp(mu_i / steps)``.
    ``steps`` is a callable ``client -> local steps`` (the trainer's); without it, asyncsgd does
    1 step and ``client.steps`` is used where set (else per-task rates, an approximation).
    """
    rates = np.asarray(rates, dtype=float)
    if cfg.timing.per != "step":
        return rates
    if steps is not None:
        return rates / np.array([steps(i) for i in range(len(rates))], dtype=float)
    if cfg.algorithm.name == "asyncsgd":
        return rates
    return rates / (cfg.client.steps or 1)


def network(cfg) -> tuple[np.ndarray, np.ndarray, int]:
    """``(mu, p, m)`` of a config: the trainer's rates (``afl.federation.client_rates``) and routing."""
    from afl import federation

    n = cfg.data.num_clients
    routing = federation.routing_vector(cfg.algorithm.routing if cfg.algorithm.selection == "routing" else None, n)
    return service_rates(cfg, federation.client_rates(cfg)), routing, cfg.algorithm.concurrency


def trainer_prediction(cfg, rates: np.ndarray, routing: np.ndarray, steps):
    """The ``afl.queueing.Prediction`` the trainer records, or ``None`` outside the Jackson setting."""
    from afl import queueing

    if jackson_reasons(cfg, steps_known=True):
        return None
    return queueing.predict(service_rates(cfg, rates, steps), routing, cfg.algorithm.concurrency)


def resolve_constants(cfg, given: dict | None = None, pilot: int | None = None, updates: float | None = None,
                      time_budget: float | None = None):
    """The ``BoundConstants`` of ``cfg``'s routing problem and where each came from.

    ``A, L, sigma, zeta, eta``: ``given`` (a dict; missing keys are not given), else estimated
    by a pilot of ``pilot`` AsyncSGD updates (``afl.queue_pilot``; ``eta`` is then the run's
    ``algorithm.server_lr``), else ``BoundConstants``' unit-scale defaults. ``T`` (updates of
    objective ``update``): ``updates``, else the run's update/round budget, else
    ``lambda(uniform) * run.time``, else the default 1000. ``time_budget`` (objective ``time``):
    ``time_budget``, else ``run.time``, else ``T / lambda(uniform)``: uniform routing's time for
    ``T`` updates. Returns ``(BoundConstants, {name: source})``.
    """
    from afl import queueing
    from afl.train import planned_updates

    given = {k: v for k, v in (given or {}).items() if v is not None}
    defaults = queueing.BoundConstants()
    estimated = {}
    if pilot is not None and any(k not in given for k in ("A", "L", "sigma", "zeta")):
        from afl.queue_pilot import pilot_constants

        estimated = pilot_constants(cfg, pilot)
    values, source = {}, {}
    for k in ("A", "L", "sigma", "zeta", "eta"):
        if k in given:
            values[k], source[k] = float(given[k]), "given"
        elif k in estimated:
            values[k], source[k] = estimated[k], f"pilot ({estimated['pilot_updates']} updates)"
        elif k == "eta" and pilot is not None:
            values[k], source[k] = cfg.algorithm.server_lr, "algorithm.server_lr"
        else:
            values[k], source[k] = getattr(defaults, k), "default"
    mu, _, m = network(cfg)
    lam_uniform = queueing.predict(mu, np.full(len(mu), 1.0 / len(mu)), m).throughput
    planned = planned_updates(cfg, 1)
    if updates is not None:
        source["T"] = "given"
    elif planned:
        updates, source["T"] = float(planned), "run budget"
    elif cfg.run.time is not None:
        updates, source["T"] = lam_uniform * cfg.run.time, "lambda(uniform) * run.time"
    else:
        updates, source["T"] = defaults.T, "default"
    if time_budget is not None:
        source["time_budget"] = "given"
    elif cfg.run.time is not None:
        time_budget, source["time_budget"] = cfg.run.time, "run.time"
    else:
        time_budget, source["time_budget"] = updates / lam_uniform, "T / lambda(uniform)"
    return queueing.BoundConstants(**values, T=float(updates), time_budget=float(time_budget)), source
