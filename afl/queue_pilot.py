"""Constants of the routing bound estimated from a short pilot run (SPEC section 5).

The working bound ``B(p)`` of ``afl.queueing.bound`` needs the initial gap ``A``, the
smoothness ``L``, the gradient noise ``sigma`` and the client heterogeneity ``zeta`` of the
problem. ``pilot_constants`` measures them on the config's own data and model, along the
trajectory of a few AsyncSGD updates; ``afl queue optimize --pilot N`` and the routing
experiment (``workflow/scripts/queueing_routing.py``) use it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from afl import algorithms, federation, models, params
from afl.engine.executor import LazyExecutor, TrainingWorkload
from afl.engine.simulator import Simulation
from afl.errors import AflError
from afl.rng import Stream, torch_stream

PILOT_STREAM = 100  # purpose key of the pilot's sample streams (apart from afl.rng.Stream's)
CHECKPOINTS = 4
SAMPLES = 1024  # samples per client for the "full" gradients
MINIBATCHES = 8  # minibatch gradients per client for sigma^2


def pilot_constants(cfg, updates: int) -> dict:
    """Estimate ``A, L, sigma, zeta`` of the bound from ``updates`` AsyncSGD updates of ``cfg``.

    The pilot builds the federation, model and rule exactly as ``afl.train`` does and runs the
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
    if cfg.algorithm.name != "asyncsgd":
        raise AflError(f"--pilot: runs AsyncSGD updates but algorithm.name is {cfg.algorithm.name}; "
                       "fix: --set algorithm.name=asyncsgd (without client.epochs/steps) or give --L --sigma --zeta")
    if cfg.run.workload == "none":
        raise AflError("--pilot: needs training but run.workload is none; fix: --set run.workload=train "
                       "or give --L --sigma --zeta")
    every = max(1, updates // CHECKPOINTS)
    run = dataclasses.replace(cfg.run, updates=every * CHECKPOINTS, rounds=None, time=None, eval_every=every)
    cfg = dataclasses.replace(cfg, run=run)
    device = federation.device_of(cfg)
    fed = federation.build(cfg, device)
    model = models.build(cfg.model.name, fed.num_classes, fed.input_shape,
                         generator=torch_stream(cfg.seed, Stream.INIT)).to(device)
    workload = TrainingWorkload(cfg, model, fed.train_x, fed.train_y, fed.shards, run.updates)
    checkpoints = []

    def on_eval(x, version, now):
        checkpoints.append(x.clone())
        return None

    sim = Simulation(cfg, algorithms.make(cfg.algorithm, fed.routing), LazyExecutor(workload),
                     params.flatten(model), fed.sizes, fed.rates, fed.routing, workload.steps,
                     lambda *a: None, on_eval)
    outcome = sim.run()
    if outcome.status != "completed":
        raise AflError(f"--pilot: the pilot run diverged ({outcome.reason}); fix: lower algorithm.server_lr")
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
