"""The ``routing_gain`` kind (the second and third seeds): each routing at its own best step size
(the comparison protocol, ``afl.compare``), its accuracy over time and over server updates, the
tuned gain at ``budget`` over uniform routing paired by seed, the gain at each step size as a
secondary view and the bound's predicted improvement; its numbers from ``routing_table``,
``tuned_gains``, ``step_gains`` and ``predicted_improvement``.
"""

import dataclasses
import json
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import NullLocator

from afl import compare
from afl.figures.common import (TIME_POINTS, at_budget, bound_constants, cell_tables, network_of, routing_name,
                                routings)
from afl.queueing import measure
from afl.queueing.routing import BoundConstants, optimize_routing

OFFSET = 1.06  # routings side by side on the log step axis: x times OFFSET ** (k - centre)


def routing_table(tables: dict, runs: pd.DataFrame, budget: float, panel: str, hue: str,
                  tuning_seeds=None) -> tuple[pd.DataFrame, list]:
    """``(cells, choices)``. ``cells``: each completed cell with ``route`` (its routing's name),
    ``acc``, the test accuracy (%) at time ``budget``, ``shown`` (an evaluation seed: not one of
    ``tuning_seeds``; every seed without them) and ``compared`` (shown and at its routing's chosen
    step). ``choices``: each routing's ``panel`` value (its step size) of the highest mean ``acc``
    on the tuning seeds (every seed without them), ``afl.compare.tune``."""
    acc = at_budget(tables, runs, budget)
    cells = runs[runs["cell"].isin(acc.index)].assign(acc=lambda d: d["cell"].map(acc),
                                                      route=lambda d: d[hue].map(routing_name))
    tuning = list(tuning_seeds or [])
    shown = sorted(set(cells["seed"]) - set(tuning))
    choices = compare.tune(cells, ["route"], [panel], "acc", tuning or shown, lower=False)
    compared = compare.evaluate(cells, choices, shown, tuning)
    return cells.assign(shown=cells["seed"].isin(shown), compared=cells["cell"].isin(compared["cell"])), choices


def paired_gain(mine: pd.Series, base: pd.Series) -> dict:
    """``mine - base`` paired by seed (both indexed by seed): ``afl.compare.paired``'s mean and
    95% t-interval, or the mean alone (``low``, ``high`` NaN) from fewer than
    ``afl.compare.MIN_SEEDS_GAIN`` pairs."""
    both = mine.index.intersection(base.index)
    try:
        got = compare.paired(mine, base)
        return {"seeds": got.n, "gain": got.mean, "low": got.low, "high": got.high}
    except compare.TooFewSeeds:
        return {"seeds": len(both), "gain": float((mine.loc[both] - base.loc[both]).mean()),
                "low": np.nan, "high": np.nan}


def interval_text(row) -> str:
    """A gain row as ``afl.compare.Interval`` prints it, or its mean and ``n`` without an interval."""
    if np.isfinite(row["low"]):
        return str(compare.Interval(row["gain"], row["low"], row["high"], row["seeds"]))
    return f"{row['gain']:.4g} (n = {row['seeds']}: no interval below {compare.MIN_SEEDS_GAIN})"


def tuned_gains(cells: pd.DataFrame, choices: list, panel: str) -> pd.DataFrame:
    """Per optimized routing, tuned against tuned: its accuracy at its chosen step minus uniform
    routing's at uniform's chosen step, paired by seed over the evaluation seeds (``compared`` cells)."""
    step = {c.method["route"]: c.values[panel] for c in choices}
    acc = {route: d.set_index("seed")["acc"] for route, d in cells[cells["compared"]].groupby("route")}
    return pd.DataFrame([{"routing": route, "step": step[route], "uniform_step": step["uniform"],
                          **paired_gain(acc[route], acc["uniform"])} for route in routings(acc) if route != "uniform"])


def step_gains(cells: pd.DataFrame, panel: str) -> pd.DataFrame:
    """Per optimized routing and ``panel`` value, the secondary per-step view: its accuracy minus
    uniform routing's at the same step, paired by seed over the evaluation seeds, with both means."""
    shown = cells[cells["shown"]]
    base = shown[shown["route"] == "uniform"]
    rows = []
    for (name, value), d in shown[shown["route"] != "uniform"].groupby(["route", panel]):
        uniform = base[base[panel] == value].set_index("seed")["acc"]
        rows.append({"routing": name, panel: value, **paired_gain(d.set_index("seed")["acc"], uniform),
                     "uniform": uniform.mean(), "acc": d["acc"].mean()})
    return pd.DataFrame(rows)


def predicted_improvement(mu: np.ndarray, m: int, constants: BoundConstants, objective: str, etas) -> np.ndarray:
    """The bound's relative improvement ``1 - B(p*) / B(uniform)`` (%) at each step size of ``etas``."""
    out = []
    for eta in etas:
        res = optimize_routing(mu, m, dataclasses.replace(constants, eta=float(eta)), objective)
        out.append(100 * (1 - res.bound / res.bound_uniform))
    return np.array(out)


def step_panel(ax, gains: pd.DataFrame, panel: str, budget: float, colours: dict) -> None:
    """The secondary view: ``step_gains`` as points with their intervals (none from fewer than
    ``afl.compare.MIN_SEEDS_GAIN`` pairs), not joined, the routings side by side on the log axis."""
    others = list(dict.fromkeys(gains["routing"]))
    for k, name in enumerate(others):
        d = gains[gains["routing"] == name]
        yerr = None if d["low"].isna().all() else [d["gain"] - d["low"], d["high"] - d["gain"]]
        ax.errorbar(d[panel] * OFFSET ** (k - (len(others) - 1) / 2), d["gain"], yerr=yerr, fmt="o", capsize=3,
                    color=colours[name], label=name)
    ax.axhline(0, color="0.3", lw=1)
    pairs, values = int(gains["seeds"].min()), sorted(gains[panel].unique())
    ax.set(xscale="log", xlabel=panel, ylabel=f"accuracy gain at time {budget:g} (points)",
           title=f"secondary: gain over uniform at the same {panel.split('.')[-1]}\n(paired, n = {pairs}"
                 + (", 95% t-interval)" if pairs >= compare.MIN_SEEDS_GAIN else
                    f": no interval below {compare.MIN_SEEDS_GAIN})"))
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.legend(fontsize=7)


def bound_panel(ax, tables: dict, cells: pd.DataFrame, panel: str, colours: dict) -> None:
    """The bound's predicted improvement over a range of step sizes: lines with the constants of
    one pilot per objective, points with each run's own pilot, grey lines at the step sizes run."""
    values = sorted(cells[panel].unique())
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


def routing_gain(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Uniform against optimized routing, each at its own best step size (key ``panel``), chosen
    on ``tuning_seeds`` and compared on the other seeds (``afl.compare``; without ``tuning_seeds``
    chosen on the seeds shown, and the figure says so). Top: test accuracy over virtual time and
    over server updates of each routing at its step, evaluation seeds (95% t-band from
    ``afl.compare.MIN_SEEDS`` seeds). The tuned gain at time ``budget``, paired by seed with its
    interval from ``afl.compare.MIN_SEEDS_GAIN`` pairs, is printed and noted under the figure.
    Bottom left (secondary): the gain over uniform at each step size, points with intervals, not
    joined; bottom right: the bound's predicted improvement over a range of step sizes (the
    constants the cells' pilots measured). A best step at an end of its grid is printed as a
    ``grid edge:`` line."""
    budget, panel, hue, tuning = spec["budget"], spec["panel"], (spec.get("hue") or ["algorithm.routing"])[0], \
        spec.get("tuning_seeds")
    short = panel.split(".")[-1]
    cells, choices = routing_table(tables, runs, budget, panel, hue, tuning)
    shown_seeds = sorted(cells.loc[cells["shown"], "seed"].unique())
    how = f"tuned on seeds {', '.join(map(str, tuning))}" if tuning else "chosen on the seeds shown"
    for line in compare.edge_lines(choices, how):
        print(line, file=sys.stderr)
    if not tuning:
        print(f"routing_gain: no tuning_seeds: each routing's {short} was chosen on the seeds shown "
              f"({', '.join(map(str, shown_seeds))}), so the tuned gain is optimistic", file=sys.stderr)
    step = {c.method["route"]: c.values[panel] for c in choices}
    names = routings(cells["route"])
    colours = dict(zip(names, sns.color_palette("colorblind", len(names))))
    named = {n: f"{n} ({short} {step[n]:g})" for n in names}
    tuned = tuned_gains(cells, choices, panel)
    notes = [f"{short} {how}; {len(shown_seeds)} evaluation seeds shown"
             + ("" if tuning else " (no tuning_seeds: the tuned gain is optimistic)")]
    for row in tuned.to_dict("records"):
        line = f"tuned: {named[row['routing']]} vs {named['uniform']}: {interval_text(row)}"
        print(f"routing_gain: {line}", file=sys.stderr)
        notes.append(f"gain at time {budget:g}, {line}")
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    compared = cells[cells["compared"]]
    evals_of = dict(tuple(tables["evals"][tables["evals"]["cell"].isin(compared["cell"])].groupby("cell")))
    grid = np.linspace(0, budget, TIME_POINTS)
    over_time = pd.concat([pd.DataFrame({"time": grid, "routing": named[r.route],
                                         "acc": 100 * measure.value_at(evals_of[r.cell], grid)})
                           for r in compared.itertuples(index=False)])
    over_updates = pd.concat([pd.DataFrame({"version": evals_of[r.cell]["version"], "routing": named[r.route],
                                            "acc": 100 * evals_of[r.cell]["test_acc"]})
                              for r in compared.itertuples(index=False)])
    fewest = int(compared.groupby("route")["seed"].nunique().min())
    band = measure.t_interval if fewest >= compare.MIN_SEEDS else None
    style = dict(hue="routing", hue_order=[named[n] for n in names], palette={named[n]: colours[n] for n in names},
                 errorbar=band)
    sns.lineplot(data=over_time, x="time", y="acc", ax=axes[0, 0], **style)
    axes[0, 0].set(xlabel="virtual wall-clock time", ylabel="test accuracy (%)", ylim=(0, 100),
                   title=f"accuracy over time, each routing at its best {short}")
    sns.lineplot(data=over_updates, x="version", y="acc", ax=axes[0, 1], legend=False, **style)
    axes[0, 1].set(xlabel="server updates", ylabel="test accuracy (%)", ylim=(0, 100),
                   title="accuracy over server updates (the per-update view)")
    axes[0, 0].legend(fontsize=7, title_fontsize=7, loc="lower right", title=(
        f"mean of {fewest} evaluation seeds, 95% t-band" if band else
        f"mean of {fewest} evaluation seeds (no band below {compare.MIN_SEEDS})"))
    gains = step_gains(cells, panel)
    print(f"routing_gain: accuracy (%) at time {budget:g}, gain over uniform routing at the same {short} "
          f"(points; paired by seed, 95% t-interval from {compare.MIN_SEEDS_GAIN} pairs), evaluation seeds:\n"
          f"{gains.to_string(index=False)}", file=sys.stderr)
    step_panel(axes[1, 0], gains, panel, budget, colours)
    bound_panel(axes[1, 1], tables, cells, panel, colours)
    fig.text(0.01, -0.02, "\n".join(notes), ha="left", va="top", fontsize=8)
    return fig
