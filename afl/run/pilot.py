"""Constants of the routing bound estimated from a short pilot run.

The working bound ``B(p)`` of ``afl.queueing.routing.bound`` (Alahyane et al. 2025) needs the
initial gap ``A``, the smoothness ``L``, the gradient noise ``sigma`` and the client
heterogeneity ``zeta`` of the problem. ``pilot_constants`` measures them on the config's own
data and model, along the trajectory of a few AsyncSGD updates; ``resolve_constants`` calls it
for ``afl queue optimize --pilot N`` and for the runs whose ``algorithm.routing`` is the bound's
optimum (``optimal_routing``, called by ``afl.run.train`` before it builds the run).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from afl import params, rules
from afl.config import RoutingConfig
from afl.errors import AflError
from afl.queueing.model import network
from afl.queueing.network import predict
from afl.queueing.routing import BoundConstants, optimize_routing
from afl.rng import torch_stream
from afl.run.build import budget, build

PILOT_STREAM = 100  # purpose key of the pilot's sample streams (apart from afl.rng.Stream's)
CHECKPOINTS = 4
SAMPLES = 1024  # samples per client for the "full" gradients
MINIBATCHES = 8  # minibatch gradients per client for sigma^2


def pilot_constants(cfg, updates: int) -> dict:
    """Estimate ``A, L, sigma, zeta`` of the bound from ``updates`` AsyncSGD updates of ``cfg``.

    The pilot builds its run exactly as ``afl train`` does (``afl.run.build``) and runs the
    simulator for ``updates`` server updates (rounded down to a multiple of ``K = 4``, at least
    ``K``), keeping the model at ``K`` evenly spaced checkpoints ``x_1..x_K`` after the start
    ``x_0``. For each client ``i`` a fixed random subset ``S_i`` of its shard (at most 1024
    samples) stands in for its data. Then:

    * ``grad f_i(x)``: the gradient of the mean loss on ``S_i``; ``grad f = (1/n) sum_i grad f_i``
      (uniform weights, the objective AsyncSGD's ``1/(n p_i)`` step is unbiased for).
    * ``zeta^2 = (1/n) sum_i ||grad f_i(x) - grad f(x)||^2``: the spread of the per-client
      gradient means, averaged over the checkpoints ``x_1..x_K``.
    * ``sigma^2 = (1/n) sum_i mean_j ||g_ij(x) - grad f_i(x)||^2`` over 8 minibatch gradients
      ``g_ij`` of the configured batch size from the client's shard: the noise of what a
      client returns, averaged over ``x_1..x_K``.
    * ``L = max_k ||grad f(x_k) - grad f(x_{k-1})|| / ||x_k - x_{k-1}||``: secant estimates along
      the pilot's trajectory (on the same samples, so sampling noise cancels). This is the
      curvature *along the path* and can underestimate the global smoothness constant.
    * ``A = f(x_0)``: the loss at the start; the NLL loss is ``>= 0``, so this bounds
      ``f(x_0) - f*`` from above.

    Returns ``{"A", "L", "sigma", "zeta", "pilot_updates"}``.
    """
    rule = rules.get(cfg.algorithm.name)
    if not rule.gradient or rule.batch(cfg.algorithm) != 1:
        raise AflError(f"--pilot: runs AsyncSGD updates but algorithm.name is {cfg.algorithm.name}; "
                       "fix: --set algorithm.name=asyncsgd (without client.epochs/steps) or give --L --sigma --zeta")
    if cfg.run.workload == "none":
        raise AflError("--pilot: needs training but run.workload is none; fix: --set run.workload=train "
                       "or give --L --sigma --zeta")
    every = max(1, updates // CHECKPOINTS)
    run = dataclasses.replace(cfg.run, updates=every * CHECKPOINTS, rounds=None, time=None, eval_every=every)
    cfg = dataclasses.replace(cfg, run=run)
    checkpoints = []

    def on_eval(x, version, now):
        checkpoints.append(x.clone())
        return None

    pilot = build(cfg, on_eval=on_eval)
    outcome = pilot.simulation.run()
    if outcome.status != "completed":
        raise AflError(f"--pilot: the pilot run diverged ({outcome.reason}); fix: lower algorithm.server_lr")
    fed, model = pilot.federation, pilot.model
    n, nparams = len(fed.shards), params.num_parameters(model)
    subsets, minibatches = [], []
    for i, shard in enumerate(fed.shards):
        gen = torch_stream(cfg.seed, PILOT_STREAM, i)
        subsets.append(shard[_randperm(len(shard), gen, shard.device)[:SAMPLES]])
        minibatches.append([shard[_randperm(len(shard), gen, shard.device)[:cfg.client.batch_size]]
                            for _ in range(MINIBATCHES)])

    def grad(x, idx):
        params.load(model, x)
        model.train()
        model.zero_grad(set_to_none=True)
        loss = F.nll_loss(model(fed.train_x[idx]), fed.train_y[idx])
        loss.backward()
        return params.flat_grad(model).detach().double(), loss.item()

    def full(x):
        gs, losses = zip(*(grad(x, s) for s in subsets))
        return torch.stack(gs), float(np.mean(losses))

    g0, f0 = full(checkpoints[0])
    prev_x, prev_g = checkpoints[0], g0.mean(0)
    secants, zetas, sigmas = [], [], []
    for x in checkpoints[1:]:
        gi, _ = full(x)
        g = gi.mean(0)
        step = float((x[:nparams] - prev_x[:nparams]).double().norm())
        if step > 0:
            secants.append(float((g - prev_g).norm()) / step)
        zetas.append(float(((gi - g) ** 2).sum(1).mean()))
        noise = [np.mean([float(((grad(x, mb)[0] - gi[i]) ** 2).sum()) for mb in minibatches[i]]) for i in range(n)]
        sigmas.append(float(np.mean(noise)))
        prev_x, prev_g = x, g
    if not secants:
        raise AflError("--pilot: the model did not move during the pilot, so L cannot be estimated; "
                       "fix: raise --pilot or algorithm.server_lr, or give --L")
    return {"A": max(f0, 1e-12), "L": max(secants), "sigma": math.sqrt(float(np.mean(sigmas))),
            "zeta": math.sqrt(float(np.mean(zetas))), "pilot_updates": run.updates}


def _randperm(size: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randperm(size, generator=gen).to(device)


def resolve_constants(cfg, given: dict | None = None, pilot: int | None = None, updates: float | None = None,
                      time_budget: float | None = None):
    """The ``BoundConstants`` of ``cfg``'s routing problem and where each came from.

    ``A, L, sigma, zeta, eta``: ``given`` (a dict; missing keys are not given), else estimated
    by a pilot of ``pilot`` AsyncSGD updates (``afl.run.pilot``; ``eta`` is then the run's
    ``algorithm.server_lr``), else ``BoundConstants``' unit-scale defaults. ``T`` (updates of
    objective ``update``): ``updates``, else the run's update/round budget, else
    ``lambda(uniform) * run.time``, else the default 1000. ``time_budget`` (objective ``time``):
    ``time_budget``, else ``run.time``, else ``T / lambda(uniform)``: uniform routing's time for
    ``T`` updates. Returns ``(BoundConstants, {name: source})``.
    """
    given = {k: v for k, v in (given or {}).items() if v is not None}
    defaults = BoundConstants()
    estimated = {}
    if pilot is not None and any(k not in given for k in ("A", "L", "sigma", "zeta")):
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
    lam_uniform = predict(mu, np.full(len(mu), 1.0 / len(mu)), m).throughput
    b = budget(cfg)  # the bound counts one update per result: T <= updates, results
    planned = min(b.updates, b.results) if min(b.updates, b.results) < math.inf else None
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
    return BoundConstants(**values, T=float(updates), time_budget=float(time_budget)), source


def optimal_routing(cfg):
    """``(cfg, info)``: ``cfg`` with ``algorithm.routing: {optimize: ...}`` replaced by its routing vector.

    The bound's constants ``A, L, sigma, zeta`` come from a pilot of ``routing.pilot`` AsyncSGD
    updates (``pilot_constants``) of the same config under uniform routing with the seed
    ``routing.pilot_seed`` (the run's when unset), ``eta`` is ``algorithm.server_lr``; then
    ``afl.queueing.routing.optimize_routing`` minimises ``B(p)`` for the run's own rates and ``m``,
    per update (``T`` = the run's update budget, else ``lambda(uniform) * run.time``) or per unit of
    time (``routing.time_budget``, else ``run.time``). ``info`` (written to run.json as ``routing``):
    the objective, the constants, ``B`` at the optimum and at uniform routing and the predicted
    throughput. Any other config comes back unchanged with ``info = None``. Deterministic: a
    resumed run computes the same routing.
    """
    rule = cfg.algorithm.routing
    if not isinstance(rule, RoutingConfig) or rule.optimize is None:
        return cfg, None
    seed = cfg.seed if rule.pilot_seed is None else rule.pilot_seed
    uniform = dataclasses.replace(cfg.algorithm, routing="uniform")
    constants, _ = resolve_constants(dataclasses.replace(cfg, seed=seed, algorithm=uniform), pilot=rule.pilot,
                                     time_budget=rule.time_budget)
    mu, _, m = network(dataclasses.replace(cfg, algorithm=uniform))
    res = optimize_routing(mu, m, constants, rule.optimize, p_min=rule.p_min)
    algorithm = dataclasses.replace(cfg.algorithm, routing=tuple(float(v) for v in res.p))
    info = {"objective": rule.optimize, "pilot_seed": seed, "pilot_updates": rule.pilot,
            **{k: getattr(constants, k) for k in ("A", "L", "sigma", "zeta", "eta", "T", "time_budget")},
            "bound": res.bound, "bound_uniform": res.bound_uniform, "throughput": res.throughput}
    return dataclasses.replace(cfg, algorithm=algorithm), info
