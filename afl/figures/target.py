"""The ``target`` kind: server updates until an evaluated metric (``metric``, e.g. grad_norm_sq;
its mean over the last ``smooth`` evaluations) first reaches ``target``, against each run's largest
staleness, one line per combination of the ``hue`` keys, optionally with the best value of a
``tune`` key per group and ``x_key`` value.
"""

import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from afl import compare
from afl.figures.common import PANEL


def first_reached(evals: pd.DataFrame, metric: str, goal: float, smooth: int = 1) -> pd.Series:
    """Per cell: the first server version at which the mean of ``metric`` over the last ``smooth``
    evaluations (fewer at the start) is at most ``goal``; cells that never get there are absent.
    ``smooth = 1`` is the first evaluation at or below the goal."""
    ordered = evals.sort_values(["cell", "version"])
    level = ordered.groupby("cell")[metric].transform(lambda x: x.rolling(smooth, min_periods=1).mean())
    return ordered[level <= goal].groupby("cell")["version"].min()


def t_half_width(values: pd.Series) -> float:
    """The half-width of the Student-t 95% interval of ``values`` (``afl.compare.interval``); NaN
    below ``afl.compare.MIN_SEEDS`` values: no error bar from fewer seeds."""
    try:
        got = compare.interval(values)
    except compare.TooFewSeeds:
        return float("nan")
    return got.high - got.mean


def target(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Server updates until the evaluated ``metric`` first reaches ``target`` (at most), against the
    run's largest staleness ``tau_max``, one line per group of the ``hue`` keys. With ``tune`` (a
    key such as algorithm.server_lr), each group and value of the ``x`` key keeps the tuned value
    with the fewest updates on average over seeds (a run that never reaches the target counts as
    its budget), and the figure names it. With ``tuning_seeds`` too, that choice is made on those
    seeds alone and the figure shows the other seeds (the comparison protocol, ``afl.compare``),
    and a best value at an end of its grid is printed as a ``grid edge:`` line. Error bars are
    Student-t 95% intervals over seeds, drawn from 5 seeds on (``afl.compare.MIN_SEEDS``). Runs
    that never reach the target are drawn hollow at their budget."""
    metric_name, goal, x_key, tune, hue = spec["metric"], spec["target"], spec["x_key"], spec.get("tune"), spec["hue"]
    finished = runs.loc[runs["status"] == "completed"].set_index("cell")
    evals = tables["evals"][tables["evals"]["cell"].isin(finished.index)]
    updates = tables["updates"][tables["updates"]["cell"].isin(finished.index)]
    reached = first_reached(evals, metric_name, goal, spec.get("smooth", 1))
    budget = updates.groupby("cell")["version"].max()
    per = finished.assign(to_target=reached.reindex(finished.index), budget=budget.reindex(finished.index),
                          tau_max=updates.groupby("cell")["staleness"].max().reindex(finished.index),
                          tau_avg=updates.groupby("cell")["staleness"].mean().reindex(finished.index))
    per["hit"] = per["to_target"].notna()
    smooth = spec.get("smooth", 1)
    measure_text = metric_name if smooth == 1 else f"mean {metric_name} of the last {smooth} evaluations"
    per["cost"] = per["to_target"].fillna(per["budget"])
    per["method"] = per[hue].astype(str).apply(lambda row: ", ".join(row), axis=1)
    notes = []
    if tune and spec.get("tuning_seeds"):
        tuning = spec["tuning_seeds"]
        choices = compare.tune(per, ["method", x_key], [tune], "cost", tuning)
        for line in compare.edge_lines(choices, f"tuned on seeds {', '.join(map(str, tuning))}"):
            print(line, file=sys.stderr)
        best = pd.DataFrame([{**c.method, **c.values} for c in choices])
        per = compare.evaluate(per, choices, set(per["seed"]) - set(tuning), tuning)
        notes.append(f"{tune.split('.')[-1]} tuned on seeds {', '.join(map(str, tuning))}, shown on the others")
    elif tune:
        mean_cost = per.groupby(["method", x_key, tune], dropna=False)["cost"].mean().reset_index()
        best = mean_cost.loc[mean_cost.groupby(["method", x_key], dropna=False)["cost"].idxmin()]
        per = per.merge(best[["method", x_key, tune]], on=["method", x_key, tune])
    if tune:
        reach = per.groupby(x_key)["tau_max"].mean()  # name the tuned values in the x axis's order
        for method, rows in best.groupby("method"):
            rows = rows.assign(tau=rows[x_key].map(reach)).sort_values("tau")
            notes.append(f"{method}: best {tune.split('.')[-1]} " + ", ".join(f"{v:g}" for v in rows[tune])
                         + " (tau_max ascending)")
    methods = sorted(per["method"].unique())
    colours = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
    fig, axes = plt.subplots(1, 2, figsize=(PANEL[0] * 2, PANEL[1] * 1.2))
    for method, rows in per.groupby("method"):
        by_x = rows.groupby(x_key, dropna=False).agg(tau_max=("tau_max", "mean"), tau_avg=("tau_avg", "mean"),
                                                     cost=("cost", "mean"), sd=("cost", "std"), n=("cost", "size"))
        by_x = by_x.sort_values("tau_max")
        half = rows.groupby(x_key, dropna=False)["cost"].apply(t_half_width).reindex(by_x.index)
        low = np.minimum(half, by_x["cost"] * 0.9)  # a log axis: the interval stops short of 0
        axes[0].errorbar(by_x["tau_max"], by_x["cost"], yerr=[low.fillna(0), half.fillna(0)], marker="o",
                         capsize=3 if half.notna().any() else 0, color=colours[method], label=method)
        hollow = rows[~rows["hit"]]
        axes[0].scatter(hollow["tau_max"], hollow["cost"], facecolors="none", edgecolors=colours[method], s=40)
        axes[1].plot(by_x["tau_max"], by_x["tau_avg"], marker="o", color=colours[method])
        print(f"target: {method}: updates until {measure_text} <= {goal:g} (mean over seeds, Student-t 95% half-width from 5 seeds; "
              f"never-reached runs count their budget):\n{by_x.assign(half=half).to_string()}", file=sys.stderr)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("tau_max: largest staleness of the run (server updates)")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("server updates")
    seeds = per["seed"].nunique()
    bars = f"95% t-interval over {seeds} seeds" if seeds >= compare.MIN_SEEDS else \
        f"{seeds} seeds: no interval below {compare.MIN_SEEDS}"
    axes[0].set_title(f"updates until {measure_text} <= {goal:g}\n({bars}; hollow: never reached)")
    axes[1].set_ylabel("tau_avg: mean staleness")
    axes[1].set_title("tau_avg: the mean staleness of the same runs")
    axes[0].legend(frameon=False, fontsize=8)
    if notes:
        fig.text(0.01, -0.02, "; ".join(notes), ha="left", va="top", fontsize=8)
    return fig
