"""The ``horizon`` kind: the first seed's Theorem 1 as a rate in T.

Theorem 1 (the first seed, section 4, with Lemma 3) bounds a weighted average over t < T of
E||grad f(x_t)||^2 and, with a step chosen for the horizon (proportional to 1/sqrt(T)), makes it
O(1/sqrt(T)). The seed's text has lost the bound's formulas and its weights, so this kind measures
the rate alone. Each cell runs T = ``x_key`` server updates and evaluates ``metric`` after every
one (``run.eval_every: 1``); its average A(T) is the uniform mean of ``metric`` over the versions
0 .. T-1 (uniform weights: the seed's are lost). Cells form lines by their step (``step_key``): a
line "step c/sqrt(T)" holds the cells whose step times sqrt(T) is c (to 4 significant digits), a
line "step v" the cells whose step is v, for every c or v found at three horizons or more (two
points fit any slope; one cell can sit on two lines). Per line and seed, the least-squares slope
of log A(T) on log T over the line's horizons; the line's slope is the mean over seeds with its
Student-t interval (``afl.compare.interval``, from ``afl.compare.MIN_SEEDS`` seeds). Theorem 1's
rate is the slope ``rate`` (default -1/2): a c/sqrt(T) line's slope at or below it agrees with the
theorem at these horizons; above it (flatter), its average falls more slowly than the theorem's
rate.

Left: A(T) against T on log-log axes, a line per line of steps, the mean over seeds with its 95%
t-interval, and a dashed line of slope ``rate`` through the first c/sqrt(T) line's first point.
Right: the running mean of ``metric`` over the versions 0 .. t of that line's cells, a line per T in
a sequential palette, the mean over seeds. The log prints each line's A(T) per T and its slope.
"""

from __future__ import annotations

import math
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import NullFormatter

from afl import compare
from afl.figures.common import interval_bars, plain_log_axis, point_text

DIGITS = 4  # a step times sqrt(T), rounded to these significant digits, names a c/sqrt(T) line
HORIZONS = 3  # a line needs this many horizons: two points fit any slope
NAME = {"grad_norm_sq": "||grad f(x_t)||^2", "test_loss": "the test loss", "server_loss": "the server loss"}


def horizon_table(tables: dict, runs: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """One row per completed cell: ``cell``, ``seed``, ``T`` (its ``x_key``), ``step`` (its
    ``step_key``) and ``A``, the mean of ``metric`` over its evaluations of versions 0 .. T-1."""
    x_key, step_key, metric = spec["x_key"], spec["step_key"], spec.get("metric", "grad_norm_sq")
    done = runs[runs["status"] == "completed"].set_index("cell")
    evals = tables["evals"][tables["evals"]["cell"].isin(done.index)]
    rows = []
    for cell, group in evals.groupby("cell", sort=True):
        horizon = int(done.at[cell, x_key])
        values = group.loc[group["version"] < horizon, metric].dropna().to_numpy()
        if len(values) != horizon:
            raise ValueError(f"horizon figure: cell {cell} has {len(values)} evaluations of {metric} before "
                             f"version {horizon}, not {horizon}; fix: set run.eval_every: 1 (and "
                             f"run.grad_norm_samples for grad_norm_sq) in its experiment")
        rows.append({"cell": cell, "seed": int(done.at[cell, "seed"]), "T": horizon,
                     "step": float(done.at[cell, step_key]), "A": float(values.mean())})
    return pd.DataFrame(rows, columns=["cell", "seed", "T", "step", "A"])


def step_lines(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The lines of steps, name -> rows: the c/sqrt(T) lines (by c), then the constant steps (by v),
    each with ``HORIZONS`` horizons or more."""
    scaled = [float(f"{s * math.sqrt(t):.{DIGITS}g}") for s, t in zip(table["step"], table["T"])]
    lines = {}
    for c, rows in table.groupby(pd.Series(scaled, index=table.index, name="c"), sort=True):
        if rows["T"].nunique() >= HORIZONS:
            lines[f"step {c:g}/sqrt(T)"] = rows
    for v, rows in table.groupby("step", sort=True):
        if rows["T"].nunique() >= HORIZONS:
            lines[f"step {v:g}"] = rows
    return lines


def slopes(rows: pd.DataFrame) -> pd.Series:
    """Per seed with two horizons or more: the least-squares slope of log A on log T."""
    return pd.Series({seed: float(np.polyfit(np.log(r["T"]), np.log(r["A"]), 1)[0])
                      for seed, r in rows.groupby("seed", sort=True) if r["T"].nunique() >= 2}, dtype=float)


def running_means(tables: dict, rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per T of ``rows``: the mean over its cells (seeds) of the running mean of ``metric`` over
    versions 0 .. t; columns ``T``, ``t`` and ``value``."""
    evals = tables["evals"][tables["evals"]["cell"].isin(rows["cell"])]
    horizon = rows.set_index("cell")["T"]
    parts = []
    for cell, group in evals.groupby("cell", sort=True):
        group = group[group["version"] < horizon[cell]].sort_values("version")
        values = group[metric].to_numpy()
        parts.append(pd.DataFrame({"T": horizon[cell], "t": group["version"].to_numpy(),
                                   "value": np.cumsum(values) / np.arange(1, len(values) + 1)}))
    return pd.concat(parts).groupby(["T", "t"], as_index=False)["value"].mean()


def horizon(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """A(T) against T per line of steps with the theorem's slope beside it, and the running means
    of the first c/sqrt(T) line (module docstring)."""
    rate, metric = float(spec.get("rate", -0.5)), spec.get("metric", "grad_norm_sq")
    table = horizon_table(tables, runs, spec)
    lines = step_lines(table)
    if not lines:
        raise ValueError(f"horizon figure: no step of {spec['step_key']} at {HORIZONS} horizons or more; fix: run "
                         f"a step at {HORIZONS} values of {spec['x_key']} or more (a constant step), or with the "
                         f"same step x sqrt(T)")
    colours = dict(zip(lines, sns.color_palette("colorblind", len(lines))))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    log, notes = [], []
    for name, rows in lines.items():
        by_t = rows.groupby("T")["A"]
        mean, got, yerr = interval_bars(by_t)
        left.errorbar(mean.index, mean.to_numpy(), yerr=yerr, marker="o", capsize=3, color=colours[name], label=name)
        per_seed = slopes(rows)
        slope = (str(compare.interval(per_seed)) if per_seed.size >= compare.MIN_SEEDS else
                 f"{per_seed.mean():.3g} (n = {per_seed.size}: no interval below {compare.MIN_SEEDS})")
        log.append(f"horizon: {name}: A(T) = mean {metric} over versions < T, per T: " + "; ".join(
            f"{t}: {point_text(by_t, mean, got, t)}" for t in mean.index))
        log.append(f"horizon: {name}: slope of log A(T) on log T over T = {', '.join(map(str, mean.index))}: "
                   f"{slope}; Theorem 1's rate: {rate:g}")
        notes.append(f"{name}: slope {slope}")
    shown = next((name for name in lines if name.endswith("/sqrt(T)")), next(iter(lines)))
    first = lines[shown]
    t0 = first["T"].min()
    a0 = first.loc[first["T"] == t0, "A"].mean()
    ts = np.array(sorted(table["T"].unique()), dtype=float)
    left.plot(ts, a0 * (ts / t0) ** rate, ls="--", color="0.4", label=f"slope {rate:g} (Theorem 1's rate)")
    left.set(xscale="log", yscale="log", xlabel="horizon T (server updates)",
             ylabel=f"A(T): mean of {NAME.get(metric, metric)} over t < T", title="the average against the horizon")
    left.set_xticks(ts, [f"{t:g}" for t in ts])
    left.xaxis.set_minor_formatter(NullFormatter())
    plain_log_axis(left.yaxis)
    left.legend(fontsize=8)
    curves = running_means(tables, first, metric)
    horizons = sorted(curves["T"].unique())
    shades = dict(zip(horizons, sns.color_palette("rocket_r", len(horizons) + 1)[1:]))
    steps = first.groupby("T")["step"].first()
    for t in horizons:
        c = curves[curves["T"] == t]
        right.plot(c["t"] + 1, c["value"], color=shades[t], label=f"T = {t} (step {steps[t]:.3g})")
    right.set(xscale="log", yscale="log", xlabel="iterates averaged (t + 1)",
              ylabel=f"running mean of {NAME.get(metric, metric)}",
              title=f"{shown}: running means")
    plain_log_axis(right.yaxis)
    plain_log_axis(right.xaxis)
    right.legend(fontsize=8)
    print("\n".join(log), file=sys.stderr)
    seeds = table["seed"].nunique()
    bars = "95% t-interval" if seeds >= compare.MIN_SEEDS else f"no interval below {compare.MIN_SEEDS} seeds"
    fig.text(0.01, -0.02, f"mean of {seeds} seeds, {bars}; uniform weights over t < T (the seed's weights are "
             f"lost); least-squares slopes of log A on log T, per seed, then the mean: " + "; ".join(notes),
             ha="left", va="top", fontsize=8, wrap=True)
    return fig
