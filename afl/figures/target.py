"""The ``target`` kind: server updates until an evaluated metric (``metric``, e.g. grad_norm_sq;
its mean over the last ``smooth`` evaluations) first reaches ``target``, against the setting the
config varies (``x_key``: its number, or a straggler's slowdown for rate groups), one line per
combination of the ``hue`` keys, optionally with the best value of a ``tune`` key per group and
``x_key`` value. The staleness the runs measured until then (tau_max, tau_avg) labels the points.
"""

import json
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

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


def interval_label(seeds: int) -> str:
    """What the error bars of ``seeds`` seeds are: a t-interval stating n, or none below ``MIN_SEEDS``."""
    if seeds >= compare.MIN_SEEDS:
        return f"95% t-interval over n = {seeds} seeds"
    return f"{seeds} seeds: no interval below {compare.MIN_SEEDS}"


def draw_costs(ax, rows: pd.DataFrame, x: str, colour, label: str) -> tuple[pd.Series, pd.Series]:
    """One method's line on a log ``cost`` axis: the mean ``cost`` of ``rows`` (one per run) at each
    ``x``, Student-t 95% error bars (``t_half_width``; the lower one stops short of 0), and the runs
    that never reached the target (``hit`` false) drawn hollow at their cost. Returns the means and
    half-widths by ``x``."""
    mean = rows.groupby(x)["cost"].mean()
    half = rows.groupby(x)["cost"].apply(t_half_width).reindex(mean.index)
    low = np.minimum(half, mean * 0.9)
    ax.errorbar(mean.index, mean, yerr=[low.fillna(0), half.fillna(0)], marker="o",
                capsize=3 if half.notna().any() else 0, color=colour, label=label)
    hollow = rows[~rows["hit"]]
    ax.scatter(hollow[x], hollow["cost"], facecolors="none", edgecolors=colour, s=40)
    return mean, half


def setting(value) -> float:
    """The number an ``x_key`` value stands for on the x axis: the value, or for rate groups (JSON
    text ``[{"fraction": f, "rate": r}, ...]``) the straggler slowdown max(rate) / min(rate)."""
    if isinstance(value, str):
        rates = [group["rate"] for group in json.loads(value)]
        return max(rates) / min(rates)
    return float(value)


def x_names(x_key: str, values) -> tuple[str, str]:
    """The x axis's label and short name: the slowdown of rate groups, or the key's last part."""
    if any(isinstance(v, str) for v in values):
        return f"straggler slowdown s = max rate / min rate\n({x_key})", "slowdown s"
    short = x_key.split(".")[-1]
    return f"{short.replace('_', ' ')}\n({x_key})", short


def staleness_until(updates: pd.DataFrame, last: pd.Series) -> pd.DataFrame:
    """Per cell: ``tau_max`` and ``tau_avg``, the largest and mean staleness of its updates with
    version at most ``last[cell]`` (the version at which it reached the target, else its budget)."""
    upto = updates[updates["version"] <= updates["cell"].map(last)]
    return upto.groupby("cell")["staleness"].agg(tau_max="max", tau_avg="mean")


def target_costs(spec: dict, tables: dict, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per completed cell of ``runs``: ``cost`` (the version at which the smoothed ``metric``
    first reached ``target``, else the cell's last version: its budget), ``hit``, ``tau_max`` and
    ``tau_avg`` up to then, ``x`` (``setting`` of its ``x_key`` value) and ``method`` (its ``hue``
    values joined)."""
    metric_name, goal, x_key, hue = spec["metric"], spec["target"], spec["x_key"], spec["hue"]
    finished = runs.loc[runs["status"] == "completed"].set_index("cell")
    evals = tables["evals"][tables["evals"]["cell"].isin(finished.index)]
    updates = tables["updates"][tables["updates"]["cell"].isin(finished.index)]
    reached = first_reached(evals, metric_name, goal, spec.get("smooth", 1))
    per = finished.assign(to_target=reached.reindex(finished.index),
                          budget=updates.groupby("cell")["version"].max().reindex(finished.index))
    per["hit"] = per["to_target"].notna()
    per["cost"] = per["to_target"].fillna(per["budget"])
    per = per.join(staleness_until(updates, per["cost"]))
    per["x"] = per[x_key].map(setting)
    per["method"] = per[hue].astype(str).apply(lambda row: ", ".join(row), axis=1)
    return per


def choose(spec: dict, tables: dict, runs: pd.DataFrame) -> list[str]:
    """The two-stage workflow's choice (``afl.cluster.pipeline.staged``): the cells of the tuning seeds
    at each group's and ``x_key`` value's chosen ``tune`` value, as ``target`` chooses them."""
    per = target_costs(spec, tables, runs)
    return list(compare.evaluate(per, tuned(per, spec), spec["tuning_seeds"], []).index)


def tuned(per: pd.DataFrame, spec: dict) -> list[compare.Choice]:
    """Each group's (``method``) best ``tune`` value per ``x_key`` value, on the ``tuning_seeds``."""
    return compare.tune(per, ["method", spec["x_key"]], [spec["tune"]], "cost", spec["tuning_seeds"])


def target(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Server updates until the evaluated ``metric`` first reaches ``target`` (at most), against the
    value of ``x_key`` the config sets (a number, or the slowdown max/min rate of ``timing.rates.groups``;
    a log axis where the values span more than 10x), one line per group of the ``hue`` keys. Each
    point is labelled with the mean tau_max, the largest staleness of its runs up to the target (the
    budget if never reached); the right panel draws tau_avg, their mean staleness up to then. With
    ``tune`` (a key such as algorithm.server_lr), each group and value of the ``x`` key keeps the tuned
    value with the fewest updates on average over seeds (a run that never reaches the target counts as
    its budget), and the figure names it. With ``tuning_seeds`` too, that choice is made on those
    seeds alone and the figure shows the other seeds (the comparison protocol, ``afl.compare``),
    and a best value at an end of its grid is printed as a ``grid edge:`` line. Error bars are
    Student-t 95% intervals over seeds, drawn from 5 seeds on (``afl.compare.MIN_SEEDS``). Runs
    that never reach the target are drawn hollow at their budget, at their group's x."""
    metric_name, goal, x_key, tune, hue = spec["metric"], spec["target"], spec["x_key"], spec.get("tune"), spec["hue"]
    per = target_costs(spec, tables, runs)
    smooth = spec.get("smooth", 1)
    measure_text = metric_name if smooth == 1 else f"mean {metric_name} of the last {smooth} evaluations"
    x_name, x_short = x_names(x_key, per[x_key])
    notes = []
    if tune and spec.get("tuning_seeds"):
        tuning = spec["tuning_seeds"]
        choices = tuned(per, spec)
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
        for method, rows in best.groupby("method"):
            rows = rows.assign(x=rows[x_key].map(setting)).sort_values("x")
            notes.append(f"{method}: best {tune.split('.')[-1]} " + ", ".join(f"{v:g}" for v in rows[tune])
                         + f" ({x_short} ascending)")
    methods = sorted(per["method"].unique())
    colours = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
    fig, axes = plt.subplots(1, 2, figsize=(PANEL[0] * 2, PANEL[1] * 1.2))
    for method, rows in per.groupby("method"):
        by_x = rows.groupby("x").agg(tau_max=("tau_max", "mean"), tau_avg=("tau_avg", "mean"),
                                     cost=("cost", "mean"), sd=("cost", "std"), n=("cost", "size"))
        _, half = draw_costs(axes[0], rows, "x", colours[method], method)
        for x, point in by_x.iterrows():
            axes[0].annotate(f"tau_max {point['tau_max']:.0f}", (x, point["cost"]), xytext=(4, 4),
                             textcoords="offset points", fontsize=7, color=colours[method])
        axes[1].plot(by_x.index, by_x["tau_avg"], marker="o", color=colours[method])
        print(f"target: {method}: updates until {measure_text} <= {goal:g} (mean over seeds, Student-t 95% half-width from 5 seeds; "
              f"never-reached runs count their budget; tau up to the target) by {x_short}:\n"
              f"{by_x.assign(half=half).rename_axis(x_short).to_string()}", file=sys.stderr)
    xs = sorted(per["x"].unique())
    for ax in axes:
        if xs[0] > 0 and xs[-1] / xs[0] > 10:
            ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
        ax.margins(x=0.1)
        ax.set_xlabel(x_name)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("server updates")
    bars = interval_label(per["seed"].nunique())
    axes[0].set_title(f"updates until {measure_text} <= {goal:g}\n({bars}; labels: tau_max until then)")
    axes[1].set_ylabel("tau_avg (server versions)")
    axes[1].set_title("tau_avg of the same runs, up to the target (or budget)")
    handles, labels = axes[0].get_legend_handles_labels()
    if not per["hit"].all():
        handles.append(Line2D([], [], marker="o", ls="none", markerfacecolor="none", markeredgecolor="0.3"))
        labels.append("a run that never reached\nthe target (at its budget)")
    fig.legend(handles, labels, title=", ".join(hue), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               fontsize=8)
    if notes:  # under the legend: the bottom is draw.main's note of diverged cells
        fig.text(1.0, 0.3, "\n".join(notes), ha="left", va="top", fontsize=8)
    return fig
