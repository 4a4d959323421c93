"""The ``concurrency_budget`` kind (the second and third seeds): accuracy at the virtual time
``budget`` against the concurrency m, a line per routing, the bound's best m marked; its numbers
from ``concurrency_table``.
"""

import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from afl.figures.common import at_budget, bound_constants, cell_tables, network_of, routing_name, routings
from afl.queueing import measure
from afl.queueing.routing import bound, optimize_concurrency


def concurrency_table(tables: dict, runs: pd.DataFrame, budget: float, hue: str) -> tuple[pd.DataFrame, dict]:
    """``(cells, marks)``: each completed cell with ``route`` (its routing's name) and ``acc`` (%) at time ``budget``;
    ``marks``: the bound's best m for uniform routing (``uniform``) and its joint optimum of m and p
    (``joint``, ``afl.queueing.routing.optimize_concurrency``), both per unit of time with the
    constants of the cells' pilots, over m = 1 .. the largest m run (empty without such constants)."""
    acc = at_budget(tables, runs, budget)
    cells = runs[runs["cell"].isin(acc.index)].assign(acc=lambda d: d["cell"].map(acc),
                                                      route=lambda d: d[hue].map(routing_name))
    constants = bound_constants(cells).get("time")
    if constants is None:
        return cells, {}
    mu, _ = network_of(cell_tables(tables, cells["cell"].iloc[0])[2])
    ms = list(range(1, int(cells["algorithm.concurrency"].max()) + 1))
    uniform = np.full(len(mu), 1.0 / len(mu))
    bounds = {m: float(bound(mu, uniform, m, constants, "time")) for m in ms}
    return cells, {"uniform": min(bounds, key=bounds.get), "joint": optimize_concurrency(mu, ms, constants, "time").m}


def concurrency_budget(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Concurrency m as a design choice: test accuracy at the virtual time ``budget`` against m, one
    line per routing (mean over seeds, 95% t-interval), with the bound's best m marked."""
    budget = spec["budget"]
    cells, marks = concurrency_table(tables, runs, budget, (spec.get("hue") or ["algorithm.routing"])[0])
    names = routings(cells["route"])
    colours = dict(zip(names, sns.color_palette("colorblind", len(names))))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    sns.lineplot(data=cells, x="algorithm.concurrency", y="acc", hue="route", hue_order=names, palette=colours,
                 errorbar=measure.t_interval, marker="o", ax=ax)
    if marks:
        ax.axvline(marks["uniform"], color=colours["uniform"], ls="--", lw=1.2,
                   label=f"bound's best m, uniform routing: {marks['uniform']}")
        ax.axvline(marks["joint"], color=colours.get(routing_name({"optimize": "time"}), "0.3"), ls=":", lw=1.5,
                   label=f"bound's joint optimum of m and p: m = {marks['joint']}")
    best = cells.groupby(["route", "algorithm.concurrency"])["acc"].mean().groupby(level=0).idxmax()
    print(f"concurrency_budget: bound's best m {marks}; measured best m "
          + ", ".join(f"{name}: {key[1]}" for name, key in best.items()), file=sys.stderr)
    ax.set(xscale="log", xlabel="concurrency m (tasks in flight)", ylabel=f"test accuracy at time {budget:g} (%)",
           ylim=(0, 100), title=f"accuracy at a fixed time budget (mean of {cells['seed'].nunique()} seeds, 95% t-interval)")
    ax.legend(fontsize=7)
    return fig
