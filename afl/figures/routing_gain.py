"""The ``routing_gain`` kind (the second and third seeds): accuracy over time and over server
updates per routing, a row per ``panel`` value, the paired gain at ``budget`` over uniform routing
and the bound's predicted improvement; its numbers from ``routing_table`` and
``predicted_improvement``.
"""

import dataclasses
import json
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from afl.figures.common import (TIME_POINTS, at_budget, bound_constants, cell_tables, network_of, routing_name,
                                routings)
from afl.queueing import measure
from afl.queueing.routing import BoundConstants, optimize_routing


def routing_table(tables: dict, runs: pd.DataFrame, budget: float, panel: str,
                  hue: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(cells, gains)``. ``cells``: each completed cell with ``route`` (its routing's name) and ``acc``, the
    test accuracy (%) at time ``budget``. ``gains``: per optimized routing and ``panel`` value, the
    mean over seeds of the accuracy minus uniform routing's with the same seed and ``panel`` value
    (paired: same data split, initial model and task times), its 95% t-interval, and both means."""
    acc = at_budget(tables, runs, budget)
    cells = runs[runs["cell"].isin(acc.index)].assign(acc=lambda d: d["cell"].map(acc),
                                                      route=lambda d: d[hue].map(routing_name))
    base = cells[cells["route"] == "uniform"].set_index([panel, "seed"])["acc"]
    rows = []
    for (name, value), d in cells[cells["route"] != "uniform"].groupby(["route", panel]):
        gain = d["acc"].to_numpy() - base.reindex(list(zip(d[panel], d["seed"]))).to_numpy()
        low, high = measure.t_interval(gain)
        rows.append({"routing": name, panel: value, "seeds": int(np.isfinite(gain).sum()), "gain": np.nanmean(gain),
                     "low": low, "high": high, "uniform": base.xs(value, level=0).mean(), "acc": d["acc"].mean()})
    return cells, pd.DataFrame(rows)


def predicted_improvement(mu: np.ndarray, m: int, constants: BoundConstants, objective: str, etas) -> np.ndarray:
    """The bound's relative improvement ``1 - B(p*) / B(uniform)`` (%) at each step size of ``etas``."""
    out = []
    for eta in etas:
        res = optimize_routing(mu, m, dataclasses.replace(constants, eta=float(eta)), objective)
        out.append(100 * (1 - res.bound / res.bound_uniform))
    return np.array(out)


def routing_gain(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """The second seed's routing: test accuracy over virtual time and over server updates per
    routing (rows: values of ``panel``, e.g. the step size), the paired gain at time ``budget`` over
    uniform routing against the ``panel`` value, and the bound's predicted improvement over a range
    of step sizes (the constants the cells' pilots measured)."""
    budget, panel, hue = spec["budget"], spec["panel"], (spec.get("hue") or ["algorithm.routing"])[0]
    cells, gains = routing_table(tables, runs, budget, panel, hue)
    names = routings(cells["route"])
    colours = dict(zip(names, sns.color_palette("colorblind", len(names))))
    values = sorted(cells[panel].unique())
    evals_of = dict(tuple(tables["evals"][tables["evals"]["cell"].isin(cells["cell"])].groupby("cell")))
    fig, axes = plt.subplots(max(len(values), 2), 3, figsize=(14, 3.8 * max(len(values), 2)), squeeze=False)
    for row, value in enumerate(values):
        here = cells[cells[panel] == value]
        grid = np.linspace(0, budget, TIME_POINTS)
        over_time, over_updates = [], []
        for r in here.itertuples(index=False):
            evals = evals_of[r.cell]
            over_time.append(pd.DataFrame({"time": grid, "routing": r.route,
                                           "acc": 100 * measure.value_at(evals, grid)}))
            over_updates.append(pd.DataFrame({"version": evals["version"], "routing": r.route,
                                              "acc": 100 * evals["test_acc"]}))
        present = [n for n in names if n in set(here["route"])]
        sns.lineplot(data=pd.concat(over_time), x="time", y="acc", hue="routing", hue_order=present,
                     palette=colours, errorbar=measure.t_interval, ax=axes[row, 0])
        axes[row, 0].set(xlabel="virtual wall-clock time", ylabel="test accuracy (%)", ylim=(0, 100),
                         title=f"{panel.split('.')[-1]} = {value:g}: accuracy over time")
        sns.lineplot(data=pd.concat(over_updates), x="version", y="acc", hue="routing", hue_order=present,
                     palette=colours, errorbar=measure.t_interval, ax=axes[row, 1], legend=False)
        axes[row, 1].set(xlabel="server updates", ylabel="test accuracy (%)", ylim=(0, 100),
                         title="accuracy over server updates (the per-update view)")
        axes[row, 0].legend(fontsize=7, title=f"mean of {here['seed'].nunique()} seeds, 95% t-interval",
                            title_fontsize=7, loc="lower right")
    print(f"routing_gain: accuracy (%) at time {budget:g}, gain over uniform routing (points, 95% t-interval):\n"
          f"{gains.to_string(index=False)}", file=sys.stderr)
    ax = axes[0, 2]
    for name, d in gains.groupby("routing"):
        ax.errorbar(d[panel], d["gain"], yerr=[d["gain"] - d["low"], d["high"] - d["gain"]], fmt="o-", capsize=3,
                    color=colours[name], label=name)
    ax.axhline(0, color="0.3", lw=1)
    ax.set(xscale="log", xlabel=panel, ylabel=f"accuracy gain at time {budget:g} (points)",
           title="measured gain over uniform (paired by seed, 95% t-interval)")
    ax.legend(fontsize=7)
    ax = axes[1, 2]
    mu, _ = network_of(cell_tables(tables, cells["cell"].iloc[0])[2])
    m = int(cells["algorithm.concurrency"].iloc[0])
    etas = np.geomspace(min(values) / 8, max(values) * 8, 25)
    for objective, constants in bound_constants(cells).items():
        name = routing_name({"optimize": objective})
        ax.plot(etas, predicted_improvement(mu, m, constants, objective, etas), color=colours.get(name, "0.3"),
                ls="--", label=f"{name}: constants of the pilot at eta = {constants.eta:g}")
    recorded = [json.loads(text) for text in cells["routing"].dropna()]
    for objective in dict.fromkeys(info["objective"] for info in recorded):
        points = {info["eta"]: 100 * (1 - info["bound"] / info["bound_uniform"])
                  for info in recorded if info["objective"] == objective}
        ax.plot(list(points), list(points.values()), "o", color=colours.get(routing_name({"optimize": objective}), "0.3"),
                label=f"{routing_name({'optimize': objective})}: each run's own pilot")
    for value in values:
        ax.axvline(value, color="0.6", lw=0.8)
    ax.set(xscale="log", xlabel=f"{panel} (eta of the bound)", ylabel="predicted 1 - B(p*)/B(uniform) (%)",
           title="the bound's predicted improvement (grey: the step sizes run)")
    ax.legend(fontsize=6, loc="upper left")
    for row in range(2, len(values)):
        axes[row, 2].set_visible(False)
    return fig
