"""The ``concurrency_budget`` kind (the second and third seeds): accuracy at the virtual time
``budget`` against the concurrency m, a line per routing, optionally each point at its best
``tune`` value (the comparison protocol, ``afl.compare``), the bound's best m marked; its numbers
from ``concurrency_table`` and ``concurrency_choices``.
"""

import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import NullLocator

from afl import compare
from afl.figures.common import (at_budget, bound_constants, cell_tables, interval_bars, network_of, point_text,
                                routing_name, routings)
from afl.queueing.routing import bound, optimize_concurrency

M = "algorithm.concurrency"
# The bound's joint optimum of m and the routing is searched over m at most this ratio apart (10%,
# finer than the figure's log axis shows): one routing optimization per m, whose cost grows with
# m: every integer up to m = 300 took over 15 minutes on 2 cores, bound_ms(300)'s 47 values 54 s.
M_RATIO = 1.1


def bound_ms(largest: int) -> list[int]:
    """The m the joint optimum is searched over: 1, then each next ``max(m + 1, round(M_RATIO m))``
    (every integer up to 10), and ``largest``."""
    ms = [1]
    while ms[-1] < largest:
        ms.append(min(largest, max(ms[-1] + 1, round(M_RATIO * ms[-1]))))
    return ms


def concurrency_table(tables: dict, runs: pd.DataFrame, budget: float, hue: str) -> tuple[pd.DataFrame, dict]:
    """``(cells, marks)``: each completed cell with ``route`` (its routing's name) and ``acc`` (%) at time ``budget``;
    ``marks``: the bound's best m for uniform routing (``uniform``) and its joint optimum of m and p
    (``joint``, ``afl.queueing.routing.optimize_concurrency``), both per unit of time with the
    constants of the cells' pilots: the first over every m from 1 to the largest m run, the second
    over ``bound_ms`` of it (empty without such constants)."""
    acc = at_budget(tables, runs, budget)
    cells = runs[runs["cell"].isin(acc.index)].assign(acc=lambda d: d["cell"].map(acc),
                                                      route=lambda d: d[hue].map(routing_name))
    constants = bound_constants(cells).get("time")
    if constants is None:
        return cells, {}
    mu, _ = network_of(cell_tables(tables, cells["cell"].iloc[0])[2])
    ms = list(range(1, int(cells[M].max()) + 1))
    uniform = np.full(len(mu), 1.0 / len(mu))
    bounds = {m: float(bound(mu, uniform, m, constants, "time")) for m in ms}
    joint = optimize_concurrency(mu, bound_ms(ms[-1]), constants, "time").m
    return cells, {"uniform": min(bounds, key=bounds.get), "joint": joint}


def concurrency_choices(cells: pd.DataFrame, tune: str | None, tuning_seeds) -> tuple[pd.DataFrame, list, list]:
    """``(shown, tuned, best_m)`` by ``afl.compare``. ``tuned``: with ``tune``, each (routing, m)'s
    value of it with the highest mean ``acc`` on the tuning seeds (every seed without
    ``tuning_seeds``; none without ``tune``). ``shown``: the cells drawn, at those values, on the
    evaluation seeds (the seeds that are not tuning seeds). ``best_m``: per routing, the m of the
    highest mean ``acc`` on the tuning seeds (at the tuned values)."""
    tuning = list(tuning_seeds or [])
    evaluation = sorted(set(cells["seed"]) - set(tuning))
    chosen_on = tuning or evaluation
    tuned = compare.tune(cells, ["route", M], [tune], "acc", chosen_on, lower=False) if tune else []
    shown = compare.evaluate(cells, tuned, evaluation, tuning) if tune else cells[cells["seed"].isin(evaluation)]
    at_tuned = compare.evaluate(cells, tuned, chosen_on, []) if tune else cells  # the tuning seeds' runs, kept values
    return shown, tuned, compare.tune(at_tuned, ["route"], [M], "acc", chosen_on, lower=False)


def concurrency_budget(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Concurrency m as a design choice: test accuracy at the virtual time ``budget`` against m
    (log axis, ticks at the m run), one line per routing, the mean over the evaluation seeds with
    its 95% t-interval from ``afl.compare.MIN_SEEDS`` seeds, with the bound's best m marked. With
    ``tune`` each point is at its best value of that key, chosen on ``tuning_seeds`` (the
    comparison protocol, ``afl.compare``; every seed without them). ``grid edge:`` lines name a
    tuned value, a routing's measured best m, or the bound's best m at an end of its grid."""
    budget, tune, tuning = spec["budget"], spec.get("tune"), spec.get("tuning_seeds")
    cells, marks = concurrency_table(tables, runs, budget, (spec.get("hue") or ["algorithm.routing"])[0])
    shown, tuned, best_m = concurrency_choices(cells, tune, tuning)
    how = f"tuned on seeds {', '.join(map(str, tuning))}" if tuning else "chosen on every seed"
    ms = sorted(cells[M].unique())
    lines = compare.edge_lines(tuned, how) + compare.edge_lines(best_m, f"measured best m, {how}")
    lines += [f"grid edge: bound's {what} = {marks[key]} is the largest m run ({routing})"
              for key, what, routing in (("uniform", "best m", "uniform routing"),
                                         ("joint", "joint optimum of m and p: m", "optimized routing"))
              if marks and marks[key] == max(ms)]
    print("\n".join(lines + [f"concurrency_budget: bound's best m {marks}; measured best m "
                             + ", ".join(f"{c.method['route']}: {c.values[M]}" for c in best_m)]), file=sys.stderr)
    names = routings(cells["route"])
    colours = dict(zip(names, sns.color_palette("colorblind", len(names))))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name in names:
        by_m = shown[shown["route"] == name].groupby(M)["acc"]
        mean, got, yerr = interval_bars(by_m)
        ax.errorbar(mean.index, mean.to_numpy(), yerr=yerr, marker="o", capsize=3, color=colours[name], label=name)
        print(f"concurrency_budget: {name}: accuracy (%) at time {budget:g} per m, evaluation seeds: "
              + "; ".join(f"m = {m}: {point_text(by_m, mean, got, m)}" for m in mean.index), file=sys.stderr)
    if marks:
        ax.axvline(marks["uniform"], color=colours["uniform"], ls="--", lw=1.2,
                   label=f"bound's best m, uniform routing: {marks['uniform']}")
        ax.axvline(marks["joint"], color=colours.get(routing_name({"optimize": "time"}), "0.3"), ls=":", lw=1.5,
                   label=f"bound's joint optimum of m and p: m = {marks['joint']}")
    seeds = shown["seed"].nunique()
    bars = "95% t-interval" if seeds >= compare.MIN_SEEDS else f"no interval below {compare.MIN_SEEDS}"
    ax.set(xscale="log", xlabel="concurrency m (tasks in flight)", ylabel=f"test accuracy at time {budget:g} (%)",
           ylim=(0, 100), title=f"accuracy at a fixed time budget\n(mean of {seeds} evaluation seeds, {bars})")
    ax.set_xticks(ms, [str(m) for m in ms])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.legend(fontsize=7)
    if tune:
        fig.text(0.01, -0.02, f"each routing and m at its best {tune.split('.')[-1]}, {how}", ha="left", va="top",
                 fontsize=8)
    return fig
