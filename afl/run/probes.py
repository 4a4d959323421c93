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


class Probes:
    """The probes of ``run``'s config, called at each evaluation point: ``grad_norm_sq(x)`` and
    ``sampling(x, version, now)``."""

    def __init__(self, run: Run):
        cfg, fed = run.cfg, run.federation
        self.run, self.seed = run, cfg.seed
        self.m, self.n = cfg.algorithm.concurrency, len(fed.rates)
        self.draws = cfg.run.sampling_draws
        self.eval_batch = cfg.run.eval_batch
        self.subset = None
        if cfg.run.grad_norm_samples:
            total = len(fed.train_y)
            if cfg.run.grad_norm_samples > total:
                raise ConfigError(f"run.grad_norm_samples: {cfg.run.grad_norm_samples} exceeds the {total} "
                                  f"training samples; fix: set it to at most {total}")
            pick = numpy_stream(cfg.seed, Stream.PROBE, 0).permutation(total)[:cfg.run.grad_norm_samples]
            self.subset = torch.as_tensor(np.sort(pick), device=fed.train_y.device)

    def grad_norm_sq(self, x: torch.Tensor) -> float:
        """``||grad f(x)||^2`` on the fixed subset (NaN when ``run.grad_norm_samples`` is 0)."""
        if self.subset is None:
            return math.nan
        fed = self.run.federation
        return gradient_norm_sq(self.run.model, x, fed.train_x[self.subset], fed.train_y[self.subset],
                                self.eval_batch)

    def sampling(self, x: torch.Tensor, version: int, now: float) -> list[dict]:
        """The sampling analysis at the global model ``x`` (no rows when ``run.sampling_draws`` is 0)."""
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
        return rows
