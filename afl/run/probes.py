"""What a run measures at its evaluation points besides test loss and accuracy (``run.*`` keys).

- ``run.grad_norm_samples``: ``||grad f(x)||^2`` of the training objective on a fixed random
  subset of that many training samples (``afl.learning.models.gradient_norm_sq``), the left-hand
  side of the first seed's Theorem 1: the ``grad_norm_sq`` column of ``evals.parquet``.
- ``run.sampling_draws``: the first seed's sampling analysis (section 2.2) measured on the run's
  own clients. Every client trains one task from the current global model (no delay, random
  draws from streams the run's own tasks never use, ``Stream.PROBE``), giving its update ``u_i``
  (model minus global model; the gradient itself for gradient rules). Then ``draws`` uniform
  samples of ``m`` clients, with and without replacement, measure ``E||mean_S u - mean u||^2``
  beside the formulas ``sigma^2 / m`` and ``sigma^2 / m * (n - m) / (n - 1)``
  (``afl.sim.selection``). One row per evaluation and mode in ``sampling.parquet``. At a fixed
  model this isolates the sampling variance from the training's own noise.

  For an ``afl`` run a third mode, ``afl_rule``, measures the aggregate the rule really applied
  (``rule_deviations``): each server update since the previous evaluation is one draw, its
  clients and the weights ``w_k = n_k s(tau_k) / sum n s(tau)`` the rule gave them (read back
  from the recorder: the real selection, staleness and ``s``) applied to the same ``u_i``:
  ``E||sum_k w_k u_k - ubar_n||^2`` around the data-weighted mean ``ubar_n = sum n_i u_i / sum n_i``
  the rule targets (``ubar`` with ``algorithm.weighting: uniform``), its variance plus any bias.
  Its ``sigma2`` is the weighted population variance ``(1/n) sum (n_i/nbar)^2 ||u_i - ubar_n||^2``
  and its ``theory`` the first-order variance of the ``n_k``-weighted mean of ``m`` clients
  drawn uniformly as the run's selection draws them, every ``s = 1``: ``sigma2 / m`` with
  replacement, ``sigma2 / m * (n - m) / (n - 1)`` without (NaN for routing). What it does not
  reproduce: each result's own model (the rule's were trained from stale models, with the
  delay-aware rate at their own delay; ``u_i`` from the current model at delay 0), and a client
  applied twice in one update counts its one ``u_i`` twice. No random draws.

Neither changes the run: probes read the global model and draw from their own streams.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from afl.errors import ConfigError
from afl.learning.models import gradient_norm_sq
from afl.rng import Stream, numpy_stream
from afl.run.build import Run
from afl.sim.selection import draw_counts, sample_mean_deviations, sample_mean_variance
from afl.sim.tasks import Task

MODES = (("with_replacement", True), ("without_replacement", False))
RULE_MODE = "afl_rule"  # the aggregate the afl rule really applied (``rule_deviations``)
UNIFORM = {"with_replacement": True, "without_replacement": False}  # the selections drawn uniformly


def round_weights(n: int, versions: np.ndarray, clients: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weight each client had in each server update, ``[updates, n]``: the rows of ``updates.parquet``
    (``version``, ``client``, ``weight``) of the updates in order; a client applied twice sums its weights."""
    _, update = np.unique(np.asarray(versions), return_inverse=True)
    out = np.zeros((int(update.max()) + 1 if len(update) else 0, n))
    np.add.at(out, (update, np.asarray(clients, dtype=np.int64)), np.asarray(weights, dtype=float))
    return out


def rule_deviations(gram: np.ndarray, sizes: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """``(sigma_w^2, deviations)`` of weighted aggregates of fixed vectors ``u_i``.

    ``gram``: ``<u_i - c, u_j - c>`` for any centre ``c``; ``sizes``: the data weights ``n_i`` the
    target is weighted by; ``weights``: one aggregate per row, ``w`` over the ``n`` clients (summing
    to 1, as ``round_weights`` gives the rule's). ``deviations[r] = ||sum_i w_ri u_i - ubar_n||^2``
    with ``ubar_n = sum_i n_i u_i / sum_i n_i``, and ``sigma_w^2 = (1/n) sum_i (n_i / nbar)^2
    ||u_i - ubar_n||^2``: the population variance in the first-order variance
    ``sigma_w^2 / m * (n - m) / (n - 1)`` of ``sum_S n_k u_k / sum_S n_k`` over uniform samples ``S`` of
    ``m`` distinct clients (the ratio estimator's first-order variance, Cochran 1977 ch. 6; ``sigma_w^2 / m``
    with replacement), exact when the ``n_i`` are equal, where it is the unweighted formula."""
    n = len(sizes)
    b = np.asarray(sizes, dtype=float) / np.sum(sizes)
    gb = gram @ b
    centred = gram - gb[:, None] - gb[None, :] + b @ gb  # <u_i - ubar_n, u_j - ubar_n>
    sigma_w2 = float((n * b) ** 2 @ np.diag(centred)) / n
    return sigma_w2, sample_mean_deviations(centred, weights)


class Probes:
    """The probes of ``run``'s config, called at each evaluation point: ``grad_norm_sq(x)`` and
    ``sampling(x, version, now, applied)``."""

    def __init__(self, run: Run):
        cfg, fed = run.cfg, run.federation
        self.run, self.seed = run, cfg.seed
        self.m, self.n = cfg.algorithm.concurrency, len(fed.rates)
        self.draws = cfg.run.sampling_draws
        # The afl rule's own aggregate (RULE_MODE): its data weights and selection.
        self.rule_mode = run.rule.name == "afl"
        a = cfg.algorithm
        self.sizes = np.ones(self.n) if a.weighting == "uniform" else np.asarray(fed.sizes, dtype=float)
        self.replace = UNIFORM.get(a.selection)  # None: routing, no uniform formula
        self.eval_batch = cfg.run.eval_batch
        self.subset = None  # (x, y): the fixed training samples of ||grad f||^2, gathered once
        if cfg.run.grad_norm_samples:
            total = len(fed.train_y)
            if cfg.run.grad_norm_samples > total:
                raise ConfigError(f"run.grad_norm_samples: {cfg.run.grad_norm_samples} exceeds the {total} "
                                  f"training samples; fix: set it to at most {total}")
            pick = numpy_stream(cfg.seed, Stream.PROBE, 0).permutation(total)[:cfg.run.grad_norm_samples]
            rows = torch.as_tensor(np.sort(pick), device=fed.train_y.device)
            self.subset = fed.train_x[rows], fed.train_y[rows]

    def grad_norm_sq(self, x: torch.Tensor) -> float:
        """``||grad f(x)||^2`` on the fixed subset (NaN when ``run.grad_norm_samples`` is 0)."""
        if self.subset is None:
            return math.nan
        return gradient_norm_sq(self.run.model, x, *self.subset, self.eval_batch)

    def sampling(self, x: torch.Tensor, version: int, now: float, applied: tuple | None = None) -> list[dict]:
        """The sampling analysis at the global model ``x`` (no rows when ``run.sampling_draws`` is 0).

        ``applied``: ``(versions, clients, weights)`` of the results the rule applied since the
        previous evaluation (``Recorder.applied_since``), for the ``afl_rule`` row of an ``afl``
        run (none without them, or before the first update)."""
        if not self.draws:
            return []
        n, m = self.n, self.m
        tasks = [Task(id=-1, client=c, index=version, base_version=version, base=x, dispatch_time=now, duration=0.0)
                 for c in range(n)]
        results = self.run.workload(tasks, purpose=Stream.PROBE)
        gradient = self.run.rule.gradient
        u = torch.stack([r.vector if gradient else r.vector - x for r in results]).double()
        centred = u - u.mean(0)
        gram = (centred @ centred.T).cpu().numpy()
        sigma2 = float(np.trace(gram)) / n
        rows = []
        for mode, replace in MODES:
            if not replace and m > n:
                continue  # m distinct clients do not exist
            rng = numpy_stream(self.seed, Stream.PROBE, 1, version, int(replace))
            deviations = sample_mean_deviations(gram, draw_counts(rng, n, m, replace, self.draws))
            rows.append({"version": version, "time": now, "mode": mode, "m": m, "n": n, "draws": self.draws,
                         "sigma2": sigma2, "variance": float(deviations.mean()),
                         "stderr": float(deviations.std(ddof=1) / math.sqrt(self.draws)),  # draws >= 2
                         "theory": sample_mean_variance(sigma2, m, n, replace)})
        if self.rule_mode and applied is not None and len(applied[0]):
            rows.append(self._rule_row(gram, version, now, applied))
        return rows

    def _rule_row(self, gram: np.ndarray, version: int, now: float, applied: tuple) -> dict:
        """The ``afl_rule`` row: each update in ``applied`` one draw (``rule_deviations``)."""
        n, m = self.n, self.m
        sigma_w2, deviations = rule_deviations(gram, self.sizes, round_weights(n, *applied))
        draws = len(deviations)
        theory = math.nan
        if self.replace is not None and (self.replace or m <= n):
            theory = sample_mean_variance(sigma_w2, m, n, self.replace)
        return {"version": version, "time": now, "mode": RULE_MODE, "m": m, "n": n, "draws": draws,
                "sigma2": sigma_w2, "variance": float(deviations.mean()),
                "stderr": float(deviations.std(ddof=1) / math.sqrt(draws)) if draws > 1 else math.nan,
                "theory": theory}
