"""``afl queue predict | optimize | optimal``: the closed Jackson network of a config, and its optimal time.

A config is read as a closed Jackson network (``afl.queueing.model``). Where the model is not
exact (``afl.queueing.model.jackson_reasons``), ``afl queue`` prints a one-line warning that its
numbers are approximate, and the trainer writes no prediction (NaN) into ``clients.parquet``.

``predict`` prints per client (or per group of equal ``(mu_i, p_i)`` for large ``n``): ``mu_i``,
``p_i``, the relative delay ``E[tau_i]`` (the mean staleness of client ``i``'s updates), the
utilisation ``rho_i lambda`` and the mean sojourn time, then the throughput ``lambda`` and the
update-weighted mean staleness ``sum_i p_i E[tau_i] = m - 1``.

``optimize`` minimises the working bound ``B(p)`` (``afl.queueing.routing.bound``) per update
(``--objective update``) or per unit of wall-clock time (``--objective time``) and writes
``{"p": [...], "objective": ..., "predicted": {...}}`` for ``algorithm.routing: FILE``.
Its constants come from flags, from a pilot run (``--pilot N``, ``afl.run.pilot``), or
from the defaults of a unit-scale problem.

``optimal`` prints Tyurin and Richtárik's optimal time with fixed compute times
(``afl.queueing.optimal``): the clients' mean task times ``tau_i`` (grouped as ``predict`` groups
them), the best number ``m*`` of fastest clients, Rennala's batch ``S`` (= Ringmaster's ``R``),
``t(m*)``, the ratio ``t(n) / t(m*)`` and ``t(m)`` at a few ``m``, for the given constants
``L, Delta, sigma^2, eps`` and up to a constant factor. A config whose speeds vary over time
(``timing.modulation``) is refused: the fixed-time formula has no theorem for it (Tyurin's
universal computation model would be needed), and its time-averaged rates would give a number
that looks like the theory but is none. A random ``timing.distribution`` is accepted with a
warning: its mean times stand in for the fixed ``tau_i`` (each client's long-run gradient rate
is ``1 / E[time]``, but the theorem is for fixed times).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np

from afl import atomic
from afl.config import config_hash, load_config
from afl.errors import AflError

MAX_ROWS = 20


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
    # Imported here, not at the top, to keep torch off `afl`'s startup (`afl --help`, `afl validate`).
    from afl.queueing.model import jackson_reasons, network
    from afl.queueing.network import predict

    cfg = load_config(args.config, args.set or [])
    max_rows = _integer("--max-rows", args.max_rows, 1)
    _warn(jackson_reasons(cfg))
    mu, p, m = network(cfg)
    pred = predict(mu, p, m)
    print(f"closed Jackson network: n = {len(mu)} clients, m = {m} tasks in flight")
    print(predict_table(pred, max_rows))
    print(f"throughput lambda = {_fmt(pred.throughput)} updates per unit time")
    print(f"mean staleness sum_i p_i E[tau_i] = {_fmt(pred.mean_staleness)} (= m - 1)")
    return 0


# --------------------------------------------------------------------------- optimize


def _number(flag: str, text, allow_zero: bool = False) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise AflError(f"{flag}: expected a number, got {text!r}; fix: pass e.g. {flag} 1.0") from None
    if not (math.isfinite(value) and (value > 0 or (allow_zero and value == 0))):
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
    # Imported here, not at the top, to keep torch off `afl`'s startup (`afl --help`, `afl validate`).
    from afl.queueing.model import jackson_reasons, network
    from afl.run.pilot import resolve_constants
    from afl.queueing.network import predict
    from afl.queueing.routing import optimize_routing

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
    given = {"A": _number("--A", args.A), "L": _number("--L", args.L),
             "sigma": _number("--sigma", args.sigma, allow_zero=True),
             "zeta": _number("--zeta", args.zeta, allow_zero=True), "eta": _number("--eta", args.eta)}
    constants, source = resolve_constants(cfg, given, _integer("--pilot", args.pilot, 1),
                                          _number("--updates", args.updates),
                                          _number("--time-budget", args.time_budget))
    mu, _, m = network(cfg)
    n = len(mu)
    res = optimize_routing(mu, m, constants, objective, p_min=p_min)
    _warn(jackson_reasons(cfg))
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
        pred = predict(mu, res.p, m)
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
            atomic.write_json(doc, out)
        except OSError as exc:
            raise AflError(f"--out {out}: cannot write it ({exc.strerror}); fix: choose a writable path") from None
        print(f"wrote {out} (use it with --set algorithm.routing={out})")
    return 0


# --------------------------------------------------------------------------- optimal


def _curve_points(n: int, m_star: int, points: int = 8) -> list[int]:
    """The ``m`` of the ``t(m)`` table: 1, ``n``, ``m*`` and about ``points`` geometrically spaced between."""
    grid = np.unique(np.round(np.geomspace(1, n, min(n, points))).astype(int))
    return sorted({1, n, m_star, *(int(m) for m in grid)})


def _rank_range(ranks: np.ndarray) -> str:
    lo, hi = int(ranks.min()), int(ranks.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def times_table(tau: np.ndarray, max_rows: int = MAX_ROWS) -> str:
    """The clients' task times, per client, per group of equal times, or per time bin (as ``predict_table``)."""
    n = len(tau)
    groups, kind = _row_groups(tau, np.zeros(n), max_rows)
    rank = np.empty(n, dtype=int)
    rank[np.argsort(tau, kind="stable")] = np.arange(1, n + 1)
    header = [kind, "count", "time tau_i", "speed rank"]
    rows = [[f"{k + 1}/{len(groups)}" if kind == "bin" else _ids(g), str(len(g)), _range(tau[g]),
             _rank_range(rank[g])] for k, g in enumerate(groups)]
    text = _table(header, rows)
    if kind == "bin":
        text += "\n(clients binned by time)"
    return text


def curve_table(res, h: np.ndarray) -> str:
    """``H_m``, ``t(m)`` and ``t(m) / t(m*)`` at a few ``m`` (``_curve_points``)."""
    n = len(h)
    rows = [[str(m), _fmt(float(h[m - 1])), _fmt(float(res.curve[m - 1])),
             _fmt(float(res.curve[m - 1] / res.time)), "<- m*" if m == res.m_star else ""]
            for m in _curve_points(n, res.m_star)]
    return "\n".join(line.rstrip() for line in _table(["m", "H_m", "t(m)", "t(m)/t(m*)", ""], rows).splitlines())


def cmd_optimal(args) -> int:
    from afl.queueing.optimal import harmonic_prefix, mean_compute_times, optimal_time
    from afl.sim.timing import client_rates

    cfg = load_config(args.config, args.set or [])
    constants = {"L": _number("--L", args.L), "Delta": _number("--delta", args.delta),
                 "sigma^2": _number("--sigma2", args.sigma2, allow_zero=True), "eps": _number("--eps", args.eps)}
    max_rows = _integer("--max-rows", args.max_rows, 1)
    t = cfg.timing
    if t.modulation.kind != "none":
        raise AflError(f"timing.modulation is {t.modulation.kind}: client speeds vary over time, and the optimal "
                       "time is a theorem for fixed compute times; fix: --set timing.modulation.kind=none")
    if t.distribution != "constant":
        print(f"afl: warning: timing.distribution is {t.distribution}: the theory is for fixed compute times; "
              "the mean task times stand in for them", file=sys.stderr)
    tau = mean_compute_times(cfg, client_rates(t.rates, cfg.data.num_clients, cfg.seed))
    res = optimal_time(tau, constants["L"], constants["Delta"], constants["sigma^2"], constants["eps"])
    n = len(tau)
    print(f"optimal time with fixed compute times (Tyurin & Richtarik 2023): n = {n} clients")
    print("constants (given): " + ", ".join(f"{k} = {_fmt(v)}" for k, v in constants.items())
          + "; times up to a constant factor")
    print(times_table(tau, max_rows))
    print(f"best m* = {res.m_star} (the m* fastest of {n} clients); "
          f"batch S = R = max(1, ceil(sigma^2/eps)) = {res.batch}; steps ~ L Delta/eps = {_fmt(res.iterations)}")
    print(f"t(m*) = {_fmt(res.time)}; all clients: t(n)/t(m*) = {_fmt(float(res.curve[-1] / res.time))}")
    print("t(m) = H_m (L Delta/eps + sigma^2 L Delta/(m eps^2)), H_m the harmonic mean of the m fastest times:")
    print(curve_table(res, harmonic_prefix(tau)))
    return 0


# --------------------------------------------------------------------------- argparse


def add_parser(sub, config_args) -> None:
    """Register ``afl queue predict | optimize | optimal`` on the top-level subparsers."""
    q = sub.add_parser("queue", help="queueing theory of AsyncSGD: predict staleness, optimise routing, optimal time")
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

    ot = qsub.add_parser("optimal", help="Tyurin-Richtarik optimal time with fixed compute times: best m*, batch S")
    config_args(ot)
    for flag, default, text in (("--eps", "0.01", "target E||grad f||^2 <= eps"), ("--L", "1.0", "smoothness constant"),
                                ("--delta", "1.0", "initial gap f(x0) - f*"),
                                ("--sigma2", "1.0", "stochastic-gradient variance sigma^2")):
        ot.add_argument(flag, default=default, metavar="X", help=f"{text} (default {default})")
    ot.add_argument("--max-rows", default=str(MAX_ROWS), metavar="N", help="table rows before grouping")
    ot.set_defaults(func=cmd_optimal)


__all__ = ["predict_table", "optimize_table", "times_table", "curve_table", "cmd_predict", "cmd_optimize",
           "cmd_optimal", "add_parser"]

