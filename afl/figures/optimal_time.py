"""The ``optimal_time`` kind: virtual time until an evaluated metric first reaches ``target``
against the number of workers or another setting (``x_key``, ``x_label``), one line per method of
the time-optimal family, each
at its best ``tune`` value chosen on ``tuning_seeds`` and shown on the other seeds, beside the
shape of Tyurin and Richtárik's lower bound for the clients' compute times; right, the share of
the clients' busy time each method wasted on results it discarded or computations it stopped.
"""

import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from afl import compare
from afl.figures.common import PANEL, plain_log_axis
from afl.figures.target import draw_costs, interval_label
from afl.queueing.optimal import time_curve

NAMES = {"asyncsgd": "AsyncSGD", "rennala": "Rennala SGD", "ringmaster": "Ringmaster ASGD", "fadas": "FADAS",
         "ringleader": "Ringleader ASGD", "mindflayer": "MindFlayer SGD"}
# Each family's own parameter, tuned beside the step: Rennala's batch S, Ringmaster's threshold R, m-sync's m,
# MindFlayer's time limit.
OWN = {"Rennala SGD": "algorithm.buffer_size", "Ringmaster ASGD": "algorithm.max_delay",
       "m-synchronous SGD": "algorithm.buffer_size", "MindFlayer SGD": "algorithm.time_limit"}


def method_label(run: pd.Series) -> str:
    """A run's method family in words; m-synchronous SGD that waits for every worker is mini-batch SGD."""
    name = run["algorithm.name"]
    if name == "msync":
        full = int(run["algorithm.buffer_size"]) == int(run["algorithm.concurrency"])
        return "mini-batch SGD" if full else "m-synchronous SGD"
    return NAMES.get(name, name)


def family_choices(per: pd.DataFrame, x_key: str, tune: str, seeds) -> list[tuple[str, pd.DataFrame, list]]:
    """Per family (``method``): its rows and, at each ``x_key`` value, its best ``tune`` value and own
    parameter (``OWN``) on ``seeds`` (``afl.compare.tune``)."""
    out = []
    for family, rows in per.groupby("method"):
        keys = [tune] + ([OWN[family]] if family in OWN and OWN[family] in rows else [])
        out.append((family, rows, compare.tune(rows, ["method", x_key], keys, "cost", seeds)))
    return out


def tune_families(per: pd.DataFrame, x_key: str, tune: str, tuning: list) -> tuple[pd.DataFrame, list[str]]:
    """Each family at each ``x_key`` value at its best ``tune`` value and own parameter (``OWN``), chosen on
    the ``tuning`` seeds (all seeds if none) and kept on the others; ``grid edge:`` lines printed; notes."""
    seeds = tuning or sorted(set(per["seed"]))
    kept, notes = [], []
    for family, rows, choices in family_choices(per, x_key, tune, seeds):
        for line in compare.edge_lines(choices, f"tuned on seed{'s' * (len(tuning) > 1)} {', '.join(map(str, tuning))}" if tuning else ""):
            print(line, file=sys.stderr)
        if tuning:
            kept.append(compare.evaluate(rows, choices, set(rows["seed"]) - set(tuning), tuning))
        else:
            best = {c.method[x_key]: c.values for c in choices}
            kept.append(rows[[all(row[k] == v for k, v in best[row[x_key]].items()) for _, row in rows.iterrows()]])
        names = ", ".join(k.split(".")[-1] for k in choices[0].values)
        notes.append(f"{family}: best {names} " + "; ".join(
            "(" + ", ".join("any (flat)" if k in c.flat else f"{v:g}" for k, v in c.values.items())
            + f") at {c.method[x_key]:g}"
            for c in sorted(choices, key=lambda c: c.method[x_key])))
    return pd.concat(kept), notes


def choose(spec: dict, tables: dict, runs: pd.DataFrame) -> list[str]:
    """The two-stage workflow's choice (``afl.cluster.pipeline.staged``): the cells of the tuning seeds
    at each family's chosen values per ``x_key`` value, as ``optimal_time`` chooses them."""
    per, tuning = time_costs(spec, tables, runs), spec["tuning_seeds"]
    return [cell for _, rows, choices in family_choices(per, spec["x_key"], spec["tune"], tuning)
            for cell in compare.evaluate(rows, choices, tuning, [])["cell"]]


def first_reached_in_time(evals: pd.DataFrame, metric: str, goal: float, window: float) -> pd.Series:
    """Per cell: the first evaluation time at which the mean of ``metric`` over the evaluations of the
    last ``window`` units of virtual time (``(t - window, t]``) is at most ``goal``; cells that never get
    there are absent. A window in virtual time, not in evaluations, so that a method with fewer
    updates per unit of time is not averaged over a longer stretch of its run."""
    out = {}
    for cell, rows in evals.sort_values(["cell", "time", "version"]).groupby("cell"):
        t, y = rows["time"].to_numpy(), rows[metric].to_numpy(dtype=float)
        sums = np.concatenate([[0.0], np.cumsum(y)])
        start = np.searchsorted(t, t - window, side="right")
        level = (sums[1:] - sums[start]) / (np.arange(1, len(t) + 1) - start)
        hit = np.flatnonzero(level <= goal)
        if len(hit):
            out[cell] = t[hit[0]]
    return pd.Series(out, dtype=float)


def bound_shape(rates: np.ndarray, batch: float) -> float:
    """``min_m H_m (1 + S/m)``: the lower bound ``min_m t(m)`` (``afl.queueing.optimal.time_curve``) for
    compute times ``1 / rate`` with ``L Delta / eps = 1`` and ``sigma^2 / eps = S`` (``batch``)."""
    return float(time_curve(1.0 / np.asarray(rates, dtype=float), 1.0, 1.0, float(batch), 1.0).min())


def time_costs(spec: dict, tables: dict, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per completed cell of ``runs``: ``method`` (``method_label``), ``cost`` (the time at which
    it reached the target, ``first_reached_in_time``, else its last evaluation's), ``hit`` and
    ``wasted`` (its clients' wasted share of their busy time)."""
    finished = runs.loc[runs["status"] == "completed"].set_index("cell")
    evals = tables["evals"][tables["evals"]["cell"].isin(finished.index)]
    clients = tables["clients"][tables["clients"]["cell"].isin(finished.index)]
    reached = first_reached_in_time(evals, spec["metric"], spec["target"], float(spec["window"]))
    per = finished.assign(method=finished.apply(method_label, axis=1))
    per["hit"] = per.index.isin(reached.index)
    end = evals.groupby("cell")["time"].max()
    per["cost"] = [reached[cell] if hit else end[cell] for cell, hit in zip(per.index, per["hit"])]
    busy = clients.groupby("cell")[["wasted_time", "busy_time"]].sum()
    per["wasted"] = (busy["wasted_time"] / busy["busy_time"]).reindex(per.index)
    return per.reset_index()


def optimal_time(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Virtual time until the mean of ``metric`` over the last ``window`` units of virtual time first
    reaches ``target`` (``first_reached_in_time``), against ``x_key`` (the number of workers; log axis), one line per method
    (``method_label``). With ``tune`` (the step key), each method and ``x_key`` value keeps the step
    and its own parameter (``OWN``) with the least mean time on ``tuning_seeds`` (a run that never
    reaches the target counts its last evaluation's time), shown on the other seeds: means with Student-t 95% intervals from 5
    seeds on; hollow points are runs that never got there (at their end). The dashed line is the
    lower bound's shape ``min_m H_m (1 + S/m)`` (``S = bound_batch``; ``H_m`` the harmonic mean of
    the m fastest compute times ``1 / rate`` of the clients table) times the one constant that fits
    it best (least squares of the logs) to the fastest method at each ``x_key`` value: it checks the
    dependence on n and on the compute times, not the constants, which the paper leaves open.
    Right: wasted time (discarded or stopped work) as a share of the clients' busy time."""
    metric_name, goal, x_key, tune = spec["metric"], spec["target"], spec["x_key"], spec.get("tune")
    window = float(spec["window"])
    per = time_costs(spec, tables, runs)
    clients = tables["clients"][tables["clients"]["cell"].isin(per["cell"])]
    notes = []
    if tune:
        tuning = list(spec.get("tuning_seeds") or [])
        per, notes = tune_families(per, x_key, tune, tuning)
        if tuning:
            notes.insert(0, f"tuned per method and {x_key.split('.')[-1]} on seed{'s' * (len(tuning) > 1)} {', '.join(map(str, tuning))}, "
                            "shown on the others")
    methods = sorted(per["method"].unique())
    colours = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
    fig, axes = plt.subplots(1, 2, figsize=(PANEL[0] * 2.1, PANEL[1] * 1.25), gridspec_kw={"width_ratios": [3, 2]})
    means = {}
    for method, rows in per.groupby("method"):
        by_x = rows.groupby(x_key).agg(time=("cost", "mean"), wasted=("wasted", "mean"), n=("cost", "size"),
                                       reached=("hit", "sum"))
        means[method], half = draw_costs(axes[0], rows, x_key, colours[method], method)
        axes[1].plot(by_x.index, 100 * by_x["wasted"], marker="o", color=colours[method])
        print(f"optimal_time: {method}: virtual time until mean {metric_name} over {window:g} time units <= "
              f"{goal:g} (mean over seeds; never-reached runs count their end), wasted share of busy time:\n"
              f"{by_x.assign(half=half).to_string()}", file=sys.stderr)
    handles, labels = axes[0].get_legend_handles_labels()
    batch = spec.get("bound_batch")
    if batch is not None:
        xs = sorted(per[x_key].unique())
        rates = {x: clients.loc[clients["cell"] == per.loc[per[x_key] == x, "cell"].iloc[0], "rate"].to_numpy()
                 for x in xs}
        shape = pd.Series({x: bound_shape(rates[x], batch) for x in xs})
        best = pd.concat(means, axis=1).min(axis=1).reindex(xs)
        scale = float(np.exp(np.mean(np.log(best) - np.log(shape))))
        axes[0].plot(xs, scale * shape, ls="--", color="0.2")
        handles.append(Line2D([], [], ls="--", color="0.2"))
        labels.append(f"lower bound's shape min_m H_m (1 + S/m),\nS = {batch:g}, x {scale:.3g} (fit to the fastest)")
        print(f"optimal_time: the lower bound's shape min_m H_m (1 + S/m), S = {batch:g}, scaled by {scale:.4g}; "
              f"fastest method / bound by {x_key}:\n{(best / (scale * shape)).rename('ratio').to_string()}",
              file=sys.stderr)
    for ax in axes:
        ax.set_xscale("log")
        xs = sorted(per[x_key].unique())
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
        ax.set_xlabel(f"{spec.get('x_label', 'workers n')}\n({x_key})")
    axes[0].set_yscale("log")
    plain_log_axis(axes[0].yaxis)  # labels within a single decade too
    axes[0].set_ylabel("virtual time")
    bars = interval_label(per["seed"].nunique())
    axes[0].set_title(f"time until {metric_name} (mean over {window:g} time units) <= {goal:g}\n({bars})")
    axes[1].set_ylabel("wasted time (% of busy time)")
    axes[1].set_title("work discarded or stopped")
    if not per["hit"].all():
        handles.append(Line2D([], [], marker="o", ls="none", markerfacecolor="none", markeredgecolor="0.3"))
        labels.append("a run that never reached\nthe target (at its end)")
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False, fontsize=8)
    if notes:
        fig.text(0.5, -0.3, "\n".join(notes), ha="center", va="top", fontsize=7)  # below the legend
        print("optimal_time: " + "\noptimal_time: ".join(notes), file=sys.stderr)  # the chosen values, in the log too
    return fig
