"""``afl queue predict | optimize``: the closed Jackson network of a config (SPEC section 5).

A config is read as a closed Jackson network: ``m = algorithm.concurrency`` tasks, client ``i``
a FIFO queue with exponential service of rate ``mu_i`` (``timing.rates``, drawn exactly as the
trainer draws them: ``afl.timing.client_rates`` on the keyed stream ``(seed, RATES)``) and
routing ``p`` (``algorithm.routing``; uniform for ``selection: with_replacement``). The model
is exact for one server update per returned result (``asyncsgd``, ``fedasync``, ``fedbuff``
with a buffer of 1), routing or with-replacement selection, exponential compute times and no
download/upload times. ``jackson_reasons`` lists how a config departs from that; ``afl queue``
then prints a one-line warning that its numbers are approximate, and the trainer writes no
prediction (NaN) into ``clients.parquet``.

``predict`` prints per client (or per group of equal ``(mu_i, p_i)`` for large ``n``): ``mu_i``,
``p_i``, the relative delay ``E[tau_i]`` (the mean staleness of client ``i``'s updates), the
utilisation ``rho_i lambda`` and the mean sojourn time, then the throughput ``lambda`` and the
update-weighted mean staleness ``sum_i p_i E[tau_i] = m - 1``.

``optimize`` minimises the working bound ``B(p)`` (``afl.queueing.bound``) per update
(``--objective update``) or per unit of wall-clock time (``--objective time``) and writes
``{"p": [...], "objective": ..., "predicted": {...}}`` for ``algorithm.routing: FILE``.
Its constants come from flags, from a pilot run (``--pilot N``, see ``pilot_constants``), or
from the defaults of a unit-scale problem.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np

from afl.errors import AflError

MAX_ROWS = 20
_PILOT_STREAM = 100  # purpose key of the pilot's sample streams (apart from afl.rng.Stream's)
_PILOT_CHECKPOINTS = 4
_PILOT_SAMPLES = 1024  # samples per client for the "full" gradients of the pilot
_PILOT_MINIBATCHES = 8  # minibatch gradients per client for sigma^2


# --------------------------------------------------------------------------- the network of a config


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
    """``(mu, p, m)`` of a config: the trainer's rates (same keyed stream) and routing."""
    from afl import federation, timing
    from afl.rng import Stream, numpy_stream

    n = cfg.data.num_clients
    rates = timing.client_rates(cfg.timing.rates, n, numpy_stream(cfg.seed, Stream.RATES))
    routing = federation.routing_vector(cfg.algorithm.routing if cfg.algorithm.selection == "routing" else None, n)
    return service_rates(cfg, rates), routing, cfg.algorithm.concurrency


def trainer_prediction(cfg, rates: np.ndarray, routing: np.ndarray, steps):
    """The ``afl.queueing.Prediction`` the trainer records, or ``None`` outside the Jackson setting."""
    from afl import queueing

    if jackson_reasons(cfg, steps_known=True):
        return None
    return queueing.predict(service_rates(cfg, rates, steps), routing, cfg.algorithm.concurrency)


def _warn(reasons: list[str]) -> None:
    if reasons:
        print(f"afl: warning: the prediction is approximate: {'; '.join(reasons)}", file=sys.stderr)


# --------------------------------------------------------------------------- tables


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e5:
        return f"{x:#.4g}".rstrip(".")
    return f"{x:.3e}"


def _ids(ids) -> str:
    """Client ids as compact ranges: ``0-4,7,9``; long lists are cut with their count."""
    ids = sorted(int(i) for i in ids)
    parts, start = [], ids[0]
    for prev, cur in zip(ids, ids[1:] + [None]):
        if cur != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    text = ",".join(parts)
    return text if len(text) <= 24 else f"{text[:20]}...".rstrip(",")


def _row_groups(mu: np.ndarray, p: np.ndarray, max_rows: int) -> tuple[list[np.ndarray], str]:
    """Client index groups for the table rows: one per client, per distinct (mu, p), or rate bins."""
    n = len(mu)
    if n <= max_rows:
        return [np.array([i]) for i in range(n)], "client"
    key = np.stack([np.round(mu, 12), np.round(p, 12)], axis=1)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    if len(first) <= max_rows:
        order = np.argsort(first)
        return [np.flatnonzero(inverse == g) for g in order], "group"
    return [np.sort(b) for b in np.array_split(np.argsort(mu, kind="stable"), max_rows)], "bin"


def _weighted(values: np.ndarray, weights: np.ndarray) -> float:
    ok = np.isfinite(values) & (weights > 0)
    return float((values[ok] * weights[ok]).sum() / weights[ok].sum()) if ok.any() else math.nan


def _range(values: np.ndarray) -> str:
    lo, hi = float(values.min()), float(values.max())
    return _fmt(lo) if math.isclose(lo, hi, rel_tol=1e-9) else f"{_fmt(lo)}-{_fmt(hi)}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) if k == 0 else h.rjust(w) for k, (h, w) in enumerate(zip(header, widths)))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def predict_table(pred, max_rows: int = MAX_ROWS) -> str:
    """The per-client (or per-group / per-rate-bin) table of a ``Prediction``."""
    groups, kind = _row_groups(pred.mu, pred.p, max_rows)
    header = [kind, "count", "rate mu_i", "p_i", "E[tau_i]", "utilisation", "sojourn"]
    rows = []
    for k, g in enumerate(groups):
        w = pred.p[g]
        rows.append([f"{k + 1}/{len(groups)}" if kind == "bin" else _ids(g), str(len(g)), _range(pred.mu[g]), _range(pred.p[g]),
                     _fmt(_weighted(pred.relative_delay[g], w)), _fmt(float(pred.utilisation[g].mean())),
                     _fmt(_weighted(pred.sojourn_time[g], w))])
    text = _table(header, rows)
    if kind == "bin":
        text += ("\n(clients binned by rate; p_i a range, utilisation the bin mean, E[tau_i] and "
                 "sojourn the means over the bin's updates, weighted by p_i)")
    return text


# --------------------------------------------------------------------------- predict


def cmd_predict(args) -> int:
    from afl import queueing
    from afl.config import load_config

    cfg = load_config(args.config, args.set or [])
    max_rows = _integer("--max-rows", args.max_rows, 1)
    _warn(jackson_reasons(cfg))
    mu, p, m = network(cfg)
    pred = queueing.predict(mu, p, m)
    print(f"closed Jackson network: n = {len(mu)} clients, m = {m} tasks in flight")
    print(predict_table(pred, max_rows))
    print(f"throughput lambda = {_fmt(pred.throughput)} updates per unit time")
    print(f"mean staleness sum_i p_i E[tau_i] = {_fmt(pred.mean_staleness)} (= m - 1)")
    return 0


# --------------------------------------------------------------------------- optimize


def _number(flag: str, text, positive: bool = True, allow_zero: bool = False) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise AflError(f"{flag}: expected a number, got {text!r}; fix: pass e.g. {flag} 1.0") from None
    ok = math.isfinite(value) and (value > 0 or (allow_zero and value == 0) or not positive)
    if not ok:
        need = ">= 0" if allow_zero else "> 0"
        raise AflError(f"{flag}: must be a finite number {need}, got {text}; fix: pass a value {need}")
    return value


def _integer(flag: str, text, minimum: int) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise AflError(f"{flag}: expected an integer, got {text!r}; fix: pass e.g. {flag} {max(minimum, 100)}") from None
    if value < minimum:
        raise AflError(f"{flag}: must be >= {minimum}, got {value}; fix: pass an integer >= {minimum}")
    return value


def pilot_constants(cfg, updates: int, progress: bool = False) -> dict:
    """Estimate ``A, L, sigma, zeta`` of the bound from ``updates`` AsyncSGD updates of the config.

    The pilot builds the federation, model and rule exactly as ``afl.train`` does and runs the
    simulator for ``updates`` server updates, keeping the model at ``K = 4`` evenly spaced
    checkpoints ``x_1..x_K`` after the start ``x_0``. For each client ``i`` a fixed random
    subset ``S_i`` of its shard (at most 1024 samples) stands in for its data. Then:

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
    """
    import torch
    import torch.nn.functional as F

    from afl import algorithms, federation, models, params
    from afl.engine.executor import LazyExecutor, TrainingWorkload
    from afl.engine.simulator import Simulation
    from afl.rng import Stream, torch_stream

    if cfg.algorithm.name != "asyncsgd":
        raise AflError(f"--pilot: runs AsyncSGD updates but algorithm.name is {cfg.algorithm.name}; "
                       "fix: --set algorithm.name=asyncsgd (without client.epochs/steps) or give --L --sigma --zeta")
    if cfg.run.workload == "none":
        raise AflError("--pilot: needs training but run.workload is none; fix: --set run.workload=train "
                       "or give --L --sigma --zeta")
    every = max(1, updates // _PILOT_CHECKPOINTS)
    run = dataclasses.replace(cfg.run, updates=every * _PILOT_CHECKPOINTS, rounds=None, time=None, eval_every=every)
    cfg = dataclasses.replace(cfg, run=run)
    device = federation.device_of(cfg)
    fed = federation.build(cfg, device)
    model = models.build(cfg.model.name, fed.num_classes, fed.input_shape,
                         generator=torch_stream(cfg.seed, Stream.INIT)).to(device)
    x0 = params.flatten(model)
    workload = TrainingWorkload(cfg, model, fed.train_x, fed.train_y, fed.shards, run.updates)
    checkpoints = []

    def on_eval(x, version, now):
        checkpoints.append(x.clone())
        return None

    sim = Simulation(cfg, algorithms.make(cfg.algorithm, fed.routing), LazyExecutor(workload), x0, fed.sizes,
                     fed.rates, fed.routing, workload.steps, lambda *a: None, on_eval)
    outcome = sim.run()
    if outcome.status != "completed":
        raise AflError(f"--pilot: the pilot run diverged ({outcome.reason}); fix: lower algorithm.server_lr")
    n, nparams = len(fed.shards), params.num_parameters(model)
    subsets, minibatches = [], []
    for i, shard in enumerate(fed.shards):
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, _PILOT_STREAM, i]).generate_state(1)[0]))
        order = torch.randperm(len(shard), generator=gen).to(shard.device)
        subsets.append(shard[order[:_PILOT_SAMPLES]])
        b = cfg.client.batch_size
        minibatches.append([shard[torch.randperm(len(shard), generator=gen)[:b].to(shard.device)]
                            for _ in range(_PILOT_MINIBATCHES)])

    def grad(x, idx):
        params.load(model, x)
        model.train()
        model.zero_grad(set_to_none=True)
        loss = F.nll_loss(model(fed.train_x[idx]), fed.train_y[idx])
        loss.backward()
        return params.flat_grad(model).detach().double(), float(loss)

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


def _constants(cfg, args, mu, p_uniform, m):
    from afl import queueing
    from afl.train import planned_updates

    given = {"A": _number("--A", args.A), "L": _number("--L", args.L),
             "sigma": _number("--sigma", args.sigma, allow_zero=True),
             "zeta": _number("--zeta", args.zeta, allow_zero=True), "eta": _number("--eta", args.eta)}
    pilot = _integer("--pilot", args.pilot, 1)
    defaults = queueing.BoundConstants()
    values, source = {}, {}
    estimated = {}
    if pilot is not None and any(given[k] is None for k in ("A", "L", "sigma", "zeta")):
        estimated = pilot_constants(cfg, pilot)
    for k in ("A", "L", "sigma", "zeta", "eta"):
        if given[k] is not None:
            values[k], source[k] = given[k], "given"
        elif k in estimated:
            values[k], source[k] = estimated[k], f"pilot ({estimated['pilot_updates']} updates)"
        elif k == "eta" and pilot is not None:
            values[k], source[k] = cfg.algorithm.server_lr, "algorithm.server_lr"
        else:
            values[k], source[k] = getattr(defaults, k), "default"
    updates = _number("--updates", args.updates)
    if updates is not None:
        source["T"] = "given"
    else:
        planned = planned_updates(cfg, 1)
        updates, source["T"] = (float(planned), "run budget") if planned else (defaults.T, "default")
    budget = _number("--time-budget", args.time_budget)
    if budget is not None:
        source["time_budget"] = "given"
    elif cfg.run.time is not None:
        budget, source["time_budget"] = cfg.run.time, "run.time"
    else:
        lam = queueing.predict(mu, p_uniform, m).throughput
        budget, source["time_budget"] = updates / lam, "T / lambda(uniform)"
    values.update(T=updates, time_budget=budget)
    return queueing.BoundConstants(**values), source


def optimize_table(mu, res, max_rows: int = MAX_ROWS) -> str:
    """Uniform routing beside the optimum, per client, per group of equal rates, or per rate bin."""
    n = len(mu)
    uniform = np.full(n, 1.0 / n)
    groups, kind = _row_groups(mu, np.zeros(n), max_rows)  # group by rate only
    header = [kind, "count", "rate mu_i", "p uniform", "p optimum", "E[tau] uniform", "E[tau] optimum"]
    rows = []
    for k, g in enumerate(groups):
        rows.append([f"{k + 1}/{len(groups)}" if kind == "bin" else _ids(g), str(len(g)), _range(mu[g]), _range(uniform[g]), _range(res.p[g]),
                     _fmt(_weighted(res.relative_delay_uniform[g], uniform[g])),
                     _fmt(_weighted(res.relative_delay[g], res.p[g]))])
    return _table(header, rows)


def _change(new: float, old: float) -> str:
    return f"{100 * (new / old - 1):+.1f}%" if old else ""


def cmd_optimize(args) -> int:
    from afl import queueing, recorder
    from afl.config import config_hash, load_config

    cfg = load_config(args.config, args.set or [])
    objective = args.objective
    if objective not in ("update", "time"):
        raise AflError(f"--objective: must be update or time, got {objective!r}; "
                       "fix: --objective update (per server update) or --objective time (per unit of time)")
    p_min = _number("--p-min", args.p_min, allow_zero=True)
    max_rows = _integer("--max-rows", args.max_rows, 1)
    out = Path(args.out) if args.out else None
    if out is not None and not out.parent.is_dir():
        raise AflError(f"--out {out}: folder {out.parent} does not exist; fix: create it or choose another path")
    _warn(jackson_reasons(cfg))
    mu, _, m = network(cfg)
    n = len(mu)
    uniform = np.full(n, 1.0 / n)
    constants, source = _constants(cfg, args, mu, uniform, m)
    res = queueing.optimize_routing(mu, m, constants, objective, p_min=p_min)
    print(f"closed Jackson network: n = {n} clients, m = {m} tasks in flight; objective: {objective} "
          f"(bound per {'server update' if objective == 'update' else 'unit of wall-clock time'})")
    print("constants: " + ", ".join(f"{k} = {_fmt(getattr(constants, k))} ({source[k]})"
                                    for k in ("A", "L", "sigma", "zeta", "eta", "T" if objective == "update"
                                              else "time_budget")))
    print(optimize_table(mu, res, max_rows))
    print(f"throughput lambda: uniform {_fmt(res.throughput_uniform)} -> optimum {_fmt(res.throughput)} "
          f"({_change(res.throughput, res.throughput_uniform)})")
    print(f"bound B(p): uniform {_fmt(res.bound_uniform)} -> optimum {_fmt(res.bound)} "
          f"({_change(res.bound, res.bound_uniform)})")
    print(f"mean staleness sum_i p_i E[tau_i] = {_fmt(res.mean_staleness)} for every routing (= m - 1)")
    if out is not None:
        pred = queueing.predict(mu, res.p, m)
        doc = {
            "p": [float(v) for v in res.p],
            "objective": objective,
            "predicted": {
                "throughput": res.throughput, "throughput_uniform": res.throughput_uniform,
                "bound": res.bound, "bound_uniform": res.bound_uniform,
                "mean_staleness": res.mean_staleness,
                "relative_delay": [float(v) for v in res.relative_delay],
                "relative_delay_uniform": [float(v) for v in res.relative_delay_uniform],
                "utilisation": [float(v) for v in pred.utilisation],
                "sojourn_time": [float(v) for v in pred.sojourn_time],
            },
            "m": m,
            "rates": [float(v) for v in mu],
            "constants": {**dataclasses.asdict(constants), "source": source},
            "p_min": p_min,
            "config": str(args.config),
            "config_hash": config_hash(cfg),
        }
        try:
            recorder.write_json(doc, out)
        except OSError as exc:
            raise AflError(f"--out {out}: cannot write it ({exc.strerror}); fix: choose a writable path") from None
        print(f"wrote {out} (use it with --set algorithm.routing={out})")
    return 0


# --------------------------------------------------------------------------- argparse


def add_parser(sub, config_args) -> None:
    """Register ``afl queue predict | optimize`` on the top-level subparsers."""
    q = sub.add_parser("queue", help="queueing theory of AsyncSGD: predict staleness, optimise routing")
    qsub = q.add_subparsers(dest="queue_command", required=True)

    pr = qsub.add_parser("predict", help="predicted staleness, utilisation, sojourn time and throughput")
    config_args(pr)
    pr.add_argument("--max-rows", default=str(MAX_ROWS), metavar="N",
                    help=f"one row per client up to N clients, else per (rate, p) group or rate bin (default {MAX_ROWS})")
    pr.set_defaults(func=cmd_predict)

    op = qsub.add_parser("optimize", help="routing p minimising the convergence bound; writes a JSON for algorithm.routing")
    config_args(op)
    op.add_argument("--objective", default="time", metavar="update|time",
                    help="bound per server update (update) or per unit of wall-clock time (time, default)")
    op.add_argument("--out", help="write {p, objective, predicted} to this JSON file")
    op.add_argument("--p-min", metavar="X", help="floor on every p_i (default 1e-3 / n)")
    op.add_argument("--updates", metavar="T", help="T of objective update (default: the run's budget, else 1000)")
    op.add_argument("--time-budget", metavar="T",
                    help="wall-clock budget of objective time (default: run.time, else T / lambda(uniform))")
    op.add_argument("--pilot", metavar="N", help="estimate A, L, sigma, zeta from N AsyncSGD updates of the config")
    for name, text in (("A", "initial gap f(x0) - f*"), ("L", "smoothness constant"),
                       ("sigma", "stochastic-gradient noise"), ("zeta", "client heterogeneity"),
                       ("eta", "step size (with --pilot default: algorithm.server_lr)")):
        op.add_argument(f"--{name}", metavar="X", help=text)
    op.add_argument("--max-rows", default=str(MAX_ROWS), metavar="N", help="table rows before grouping")
    op.set_defaults(func=cmd_optimize)


__all__ = ["jackson_reasons", "service_rates", "network", "trainer_prediction", "predict_table",
           "optimize_table", "pilot_constants", "cmd_predict", "cmd_optimize", "add_parser"]

