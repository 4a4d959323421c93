"""A config as a closed Jackson network (``afl.queueing.network``).

A config is read as a closed Jackson network: ``m = algorithm.concurrency`` tasks, client ``i``
a FIFO queue with exponential service of rate ``mu_i`` (``timing.rates``, drawn exactly as the
trainer draws them: ``afl.sim.timing.client_rates`` on the keyed stream ``(seed, RATES)``) and
routing ``p`` (``algorithm.routing``; uniform for ``selection: with_replacement``). The model
is exact for one server update per returned result (``asyncsgd``, ``fedasync``, ``fedbuff``
with a buffer of 1), routing or with-replacement selection, exponential compute times and no
download/upload times; ``jackson_reasons`` lists how a config departs from that. Used by the
trainer (``trainer_prediction``), ``afl queue`` (``afl.queueing.cli``) and the queueing experiments.
The constants of the bound ``B(p)`` (``afl.queueing.routing``) come from
``afl.run.pilot.resolve_constants``.
"""

from __future__ import annotations

import numpy as np

from afl import rules
from afl.config import routing_vector
from afl.learning.local import task_steps
from afl.queueing.network import Prediction, predict
from afl.sim import availability
from afl.sim.timing import client_rates, speeds


def jackson_reasons(cfg, steps_known: bool = False) -> list[str]:
    """How ``cfg`` departs from the closed Jackson network (empty: the model is exact).

    ``steps_known``: the caller passes each client's local steps (the trainer does), so
    ``timing.per: step`` with local epochs is still an exponential task time.
    """
    a, t = cfg.algorithm, cfg.timing
    rule = rules.get(a.name)
    reasons = []
    batch = rule.batch(a)
    if rule.barrier:
        reasons.append(f"algorithm.name is {a.name} (synchronous rounds, not a closed network)")
    elif batch != 1:
        reasons.append(f"algorithm.name {a.name} applies {batch} results per server update (the model: one)")
    if a.selection == "without_replacement":
        reasons.append("algorithm.selection is without_replacement (the model routes with p and queues FIFO)")
    if t.distribution != "exponential":
        reasons.append(f"timing.distribution is {t.distribution}, not exponential")
    if t.modulation.kind != "none":
        reasons.append(f"timing.modulation is {t.modulation.kind}: client speeds vary over time (the model: constant "
                       "rates; it is given each client's time-averaged rate)")
    if t.availability.kind != "always":
        reasons.append(f"timing.availability is {t.availability.kind}: clients go offline (the model: always online)")
    if t.download > 0 or t.upload > 0:
        reasons.append("timing.download/upload add fixed times to the exponential service")
    if t.per == "step" and not steps_known and not rule.gradient and cfg.client.steps is None:
        reasons.append("timing.per is step with local epochs (work per task depends on the shard sizes)")
    return reasons


def service_rates(cfg, rates: np.ndarray, steps: np.ndarray | None = None) -> np.ndarray:
    """Exponential service rate of a whole task per client: ``mu_i``, or ``mu_i / steps_i`` with ``per: step``.

    With ``timing.per: step`` a task's compute time is ``steps * Exp(1) / mu_i = Exp(mu_i / steps)``.
    ``steps``: each client's local steps per task (the trainer's); without it, the count without
    data (``afl.learning.local.task_steps``): a gradient rule's 1, else ``client.steps`` or 1
    (per-task rates for local epochs: an approximation, which ``jackson_reasons`` names).
    """
    rates = np.asarray(rates, dtype=float)
    if cfg.timing.per != "step":
        return rates
    if steps is None:
        steps = task_steps(cfg.client, rules.get(cfg.algorithm.name).gradient, None, len(rates))
    return rates / np.asarray(steps, dtype=float)


def network(cfg) -> tuple[np.ndarray, np.ndarray, int]:
    """``(mu, p, m)`` of a config: the trainer's rates (``afl.sim.timing.client_rates``) and routing.
    Speeds that vary over time (``timing.modulation``) enter as each client's long-run mean speed."""
    rates = client_rates(cfg.timing.rates, cfg.data.num_clients, cfg.seed)
    routing = routing_vector(cfg.algorithm.routing if cfg.algorithm.selection == "routing" else None, rates)
    if cfg.timing.modulation.kind != "none":
        rates = speeds(cfg.timing, rates, cfg.seed).mean_rates()
    return service_rates(cfg, rates), routing, cfg.algorithm.concurrency


def trainer_prediction(cfg, rates: np.ndarray, routing: np.ndarray, steps: np.ndarray) -> Prediction | None:
    """The ``Prediction`` the trainer records, or ``None`` outside the Jackson setting."""
    if jackson_reasons(cfg, steps_known=True):
        return None
    return predict(service_rates(cfg, rates, steps), routing, cfg.algorithm.concurrency)


def online_throughput(rates: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Each client's long-run completions per unit time when it holds a task whenever it is online:
    ``mu_i a_i`` (``a_i`` its share of time online). With exponential service a client completes
    tasks at rate ``mu_i`` while it computes, and memorylessness makes that so whether a task lost
    or paused when it went offline was half done or not: exact for ``m = n`` with selection
    without replacement (every online client then holds a task, under ``drop`` or ``pause``), and
    ``sum_i mu_i a_i`` bounds the throughput of any ``m``. Not the Jackson network: with clients
    that come and go the stationary law has no product form, and afl makes no other prediction."""
    return np.asarray(rates, dtype=float) * np.asarray(shares, dtype=float)


def online_shares(cfg) -> np.ndarray:
    """Each client's long-run share of time online under ``timing.availability`` (1 for ``always``)."""
    n = cfg.data.num_clients
    path = availability.availability(cfg.timing.availability, n, cfg.seed)
    return np.ones(n) if path is None else path.shares()
