"""Figure rules: one figure from one experiment's aggregated tables.

Kinds (``figures.<name>.kind`` in the workflow config):

- ``curves``: the metrics ``y`` over ``x``, one panel each. ``server_loss`` is the first seed's
  server loss, the mean local training loss of a round's m results (from ``updates``);
  ``test_acc`` and ``test_loss`` come from ``evals``. ``round``: m results applied (m =
  algorithm.concurrency, clients per round for sfl/afl); ``time``: virtual time, each run's
  curve interpolated onto a common grid up to the end of the group's shortest run. The first
  seed's figures 1 (server loss and test accuracy over rounds), 3 (server loss for 3..8 clients
  per round) and 4 (asynchronous vs synchronous over rounds and over virtual wall-clock time).
- ``participation``: tasks applied per client.
- ``staleness``: histogram of the staleness of applied results, one panel per algorithm (group).
- ``ablation``: bars of final test accuracy, one per combination of the ``bars`` keys, one panel per
  value of the ``panel`` key (mean of each run's last quarter of evaluations; mean over seeds).
- ``target``: server updates until an evaluated metric (``metric``, e.g. grad_norm_sq; its mean
  over the last ``smooth`` evaluations) first reaches ``target``, against each run's largest staleness, one line per combination of the
  ``hue`` keys, optionally with the best value of a ``tune`` key per group and ``x_key`` value.
- ``sampling``: the first seed's sampling analysis, from cells with ``run.sampling_draws``: server
  loss over rounds per group (selection mode and m); the variance of the mean of m clients'
  updates over rounds, measured at each evaluation; and that variance over sigma^2 against m,
  mean over evaluations and seeds with a 95% t-interval, on the formulas 1/m (with
  replacement) and (n-m)/(m(n-1)) (without).

Cells that differ only in their seed form a group: one line, bar colour or panel, named by the
algorithm, m and every other grid key that varies among the selected cells. Lines and bars are
the mean over seeds with a 95% bootstrap confidence band (seaborn). A diverged cell is not drawn
(its last values are meaningless); an X at the top of a panel marks where it diverged and a note
under the figure names it.
"""

import dataclasses
import json
import math
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from afl import compare, figures
from afl.cluster.pipeline import log_to
from afl.queueing import measure
from afl.queueing.network import predict
from afl.queueing.rounds import expected_max_duration
from afl.queueing.routing import BoundConstants, bound, optimize_concurrency, optimize_routing

STANDARD = ("algorithm.name", "algorithm.concurrency", "seed")
SHORT = {"algorithm.concurrency": "m"}
Y_LABEL = {"server_loss": "server loss (NLL, nats)", "test_acc": "test accuracy (%)",
           "test_loss": "test loss (NLL, nats)", "grad_norm_sq": "||grad f(x)||^2 (training subset)"}
X_LABEL = {"round": "round (m results applied)", "time": "virtual time (mean task durations)"}
TITLE = {"server_loss": "server loss", "test_acc": "test accuracy", "test_loss": "test loss",
         "grad_norm_sq": "squared gradient norm (Theorem 1)"}
MODE_LABEL = {"with_replacement": "with replacement", "without_replacement": "without replacement"}
CI = ("ci", 95)
Z95 = 1.96
TIME_POINTS = 150
PANEL = (4.4, 3.2)  # inches per panel


def select(frame: pd.DataFrame, spec: dict) -> pd.DataFrame:
    mask = pd.Series(True, index=frame.index)
    for key, value in (spec.get("select") or {}).items():
        mask &= frame[key].isin(value if isinstance(value, list) else [value])
    return frame[mask]


def groups(runs: pd.DataFrame, keys: list[str]) -> tuple[pd.Series, list[str], str]:
    """Each cell's group label, the labels in plotting order, and the legend title.

    A label names the algorithm, m, and each further grid key that splits the groups further
    (a key that only follows the algorithm, like client.epochs for asyncsgd, is left out).
    """
    text = runs.astype(str)
    varying = []
    for key in (k for k in keys if k not in STANDARD):
        before = len(text.groupby(["algorithm.name", "algorithm.concurrency", *varying], dropna=False))
        if len(text.groupby(["algorithm.name", "algorithm.concurrency", *varying, key], dropna=False)) > before:
            varying.append(key)
    ordered = runs.sort_values(["algorithm.name", "algorithm.concurrency", *varying])

    def label(row) -> str:
        parts = [str(row["algorithm.name"]), f"m={row['algorithm.concurrency']}"]
        return ", ".join(parts + [f"{SHORT.get(k, k.split('.')[-1])}={row[k]}" for k in varying])

    labels = ordered.apply(label, axis=1)
    labels.index = ordered["cell"]
    title = ", ".join(["rule", "m = clients per round"] + [f"{SHORT.get(k, k.split('.')[-1])} = {k}" for k in varying])
    return labels, list(dict.fromkeys(labels)), title


def diverged_note(runs: pd.DataFrame, label_of: pd.Series) -> list[str]:
    bad = runs[runs["status"] != "completed"]
    return [f"X diverged: {label_of[r.cell]}, seed {r.seed} ({r.reason})" for r in bad.itertuples()]


def metric(tables: dict, y: str, cells: pd.Index) -> pd.DataFrame:
    """Per cell: columns cell, round, time, value of metric ``y``."""
    if y == "server_loss":
        u = tables["updates"][tables["updates"]["cell"].isin(cells)]
        per = u.groupby(["cell", "round"], as_index=False).agg(value=("train_loss", "mean"), time=("time", "max"))
    else:
        e = tables["evals"][tables["evals"]["cell"].isin(cells)]
        per = e[["cell", "round", "time"]].assign(value=e[y] * (100 if y == "test_acc" else 1))
    return per.replace([np.inf, -np.inf], np.nan).dropna(subset=["value"])


def on_time_grid(per: pd.DataFrame, label_of: pd.Series) -> pd.DataFrame:
    """Each run's (time, value) curve interpolated onto one grid per group (to its shortest run's end)."""
    parts = []
    for _, group in per.groupby(per["cell"].map(label_of)):
        grid = np.linspace(0.0, group.groupby("cell")["time"].max().min(), TIME_POINTS)
        for cell, run in group.groupby("cell"):
            run = run.sort_values("time")
            inside = grid[grid >= run["time"].iloc[0]]
            parts.append(pd.DataFrame({"cell": cell, "x": inside,
                                       "value": np.interp(inside, run["time"], run["value"])}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["cell", "x", "value"])


def divergence_points(tables: dict, runs: pd.DataFrame) -> pd.DataFrame:
    """Round and virtual time at which each diverged cell stopped."""
    bad = runs[runs["status"] != "completed"]
    u = tables["updates"][tables["updates"]["cell"].isin(bad["cell"])]
    last = u.groupby("cell").agg(round=("round", "max"), time=("time", "max"))
    return bad.set_index("cell")[[]].join(last).fillna(0.0)


def legend(fig, labels: list[str], palette: dict, runs: pd.DataFrame, label_of: pd.Series, title: str,
           marker: str = "line") -> None:
    """One legend for the figure; a group whose every run diverged says so; X marks divergence (lines)."""
    handles = [Line2D([], [], color=palette[lab], lw=2) if marker == "line" else
               Line2D([], [], color=palette[lab], marker="s", ls="none", markersize=8) for lab in labels]
    finished = set(runs.loc[runs["status"] == "completed", "cell"].map(label_of))
    texts = [lab if lab in finished else f"{lab} (diverged)" for lab in labels]
    if marker == "line" and (runs["status"] != "completed").any():
        handles.append(Line2D([], [], color="0.3", marker="X", ls="none", markersize=8))
        texts.append("run diverged here")
    fig.legend(handles, texts, title=title, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def curves(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    ys, xs = spec["y"], spec["x"]
    fig, axes = plt.subplots(len(ys), len(xs), figsize=(PANEL[0] * len(xs), PANEL[1] * len(ys)), squeeze=False)
    finished = pd.Index(runs.loc[runs["status"] == "completed", "cell"])
    stops = divergence_points(tables, runs)
    for i, y in enumerate(ys):
        per = metric(tables, y, finished)
        for j, x in enumerate(xs):
            ax = axes[i, j]
            data = per.rename(columns={"round": "x"}) if x == "round" else on_time_grid(per, label_of)
            data = data.assign(group=data["cell"].map(label_of))
            present = [lab for lab in order if lab in set(data["group"])]
            if present:
                sns.lineplot(data=data, x="x", y="value", hue="group", hue_order=present, palette=palette,
                             errorbar=CI, ax=ax, legend=False)
            for cell, stop in stops.iterrows():
                ax.plot(stop[x], 0.96, marker="X", color=palette[label_of[cell]], markersize=9, ls="none",
                        transform=ax.get_xaxis_transform(), clip_on=False)
            if x == "round":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if y == "grad_norm_sq":
                ax.set_yscale("log")
            ax.set_xlabel(X_LABEL[x])
            ax.set_ylabel(Y_LABEL[y])
            ax.set_title(f"{TITLE[y]} over {'rounds' if x == 'round' else 'virtual time'}")
    legend(fig, order, palette, runs, label_of, spec["legend_title"])
    return fig


def participation(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    finished = runs.loc[runs["status"] == "completed", "cell"]
    data = tables["clients"][tables["clients"]["cell"].isin(finished)]
    data = data.assign(group=data["cell"].map(label_of))
    n = data["client"].nunique() if len(data) else 1
    fig, ax = plt.subplots(figsize=(max(PANEL[0], 0.45 * n * max(1, data["group"].nunique())), PANEL[1]))
    present = [lab for lab in order if lab in set(data["group"])]
    if present:
        sns.barplot(data=data, x="client", y="tasks", hue="group", hue_order=present, palette=palette,
                    errorbar=CI, ax=ax, legend=False)
    rates = data.groupby("client")["rate"].mean() if len(data) else pd.Series(dtype=float)
    if rates.nunique() > 1:  # say which clients are slow: the bars are read against it
        ax.set_xticks(range(len(rates)), [f"{c}\n{r:.3g}" for c, r in rates.items()])
        ax.set_xlabel("client (its rate: tasks per unit time)")
    else:
        ax.set_xlabel("client")
    ax.set_ylabel("tasks applied per run (count)")
    ax.set_title("client participation")
    legend(fig, order, palette, runs, label_of, spec["legend_title"], marker="bar")
    return fig


def staleness(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    cols = min(len(order), 4)
    rows = math.ceil(len(order) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL[0] * cols, PANEL[1] * rows), squeeze=False, sharex=True,
                             sharey=True)  # one x range: the panels' staleness is compared
    finished = set(runs.loc[runs["status"] == "completed", "cell"])
    updates = tables["updates"][tables["updates"]["cell"].isin(runs["cell"])]
    # One x range for every panel, up to the 99.5th percentile of all their staleness (a rare long
    # tail would squeeze every histogram into its first bars); what lies beyond is said per panel.
    pooled = updates.loc[updates["cell"].isin(finished), "staleness"]
    top = max(1, int(np.ceil(pooled.quantile(0.995)))) if len(pooled) else 1
    for ax, lab in zip(axes.flat, order):
        mine = [c for c in runs["cell"] if label_of[c] == lab]
        data = updates[updates["cell"].isin([c for c in mine if c in finished])]
        seeds = runs[runs["cell"].isin(data["cell"].unique())]["seed"].nunique()
        if len(data):
            sns.histplot(data=data, x="staleness", discrete=True, stat="probability", color=palette[lab], ax=ax)
            ax.axvline(data["staleness"].mean(), color="0.2", ls="--", lw=1)
            beyond = (data["staleness"] > top).mean()
            tail = f", {100 * beyond:.1f}% > {top}" if beyond > 0 else ""
            ax.set_title(f"{lab}\nmean staleness {data['staleness'].mean():.2f} ({seeds} seed{'s' * (seeds != 1)}{tail})")
        else:
            ax.set_title(f"{lab}\nevery run diverged")
        if any(c not in finished for c in mine):
            ax.plot(0.97, 0.96, marker="X", color=palette[lab], markersize=9, transform=ax.transAxes, clip_on=False)
        ax.set_xlim(-0.5, top + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelbottom=True)
        ax.set_xlabel("staleness tau (server updates)")
        ax.set_ylabel("share of applied results")
    for ax in list(axes.flat)[len(order):]:
        ax.set_visible(False)
    return fig


def sampling(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Server loss (hue m, line style the run's selection mode), the probe's variance over rounds
    (hue m, style the probe's mode) and the variance over sigma^2 against m on the formulas."""
    finished = runs.loc[runs["status"] == "completed"]
    fig, axes = plt.subplots(1, 3, figsize=(PANEL[0] * 3, PANEL[1]))
    ms = sorted(set(finished["algorithm.concurrency"]) | set(tables["sampling"]["m"]))
    shades = dict(zip(ms, sns.color_palette("viridis", len(ms))))
    styles = list(MODE_LABEL.values())

    loss = metric(tables, "server_loss", pd.Index(finished["cell"])).rename(columns={"round": "x"})
    mode_of = finished.set_index("cell")["algorithm.selection"] if "algorithm.selection" in finished else None
    loss = loss.assign(m=loss["cell"].map(finished.set_index("cell")["algorithm.concurrency"]),
                       sampling=loss["cell"].map(mode_of).map(MODE_LABEL) if mode_of is not None else styles[1])
    if len(loss):
        sns.lineplot(data=loss, x="x", y="value", hue="m", hue_order=ms, style="sampling", style_order=styles,
                     palette=shades, errorbar=CI, ax=axes[0], legend=False)
    axes[0].set_xlabel(X_LABEL["round"])
    axes[0].set_ylabel(Y_LABEL["server_loss"])
    axes[0].set_title("server loss over rounds (run's selection)")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))

    probe = tables["sampling"][tables["sampling"]["cell"].isin(finished["cell"])]
    probe = probe.assign(sampling=probe["mode"].map(MODE_LABEL), ratio=probe["variance"] / probe["sigma2"])
    n = int(probe["n"].iloc[0]) if len(probe) else None
    if len(probe):
        sns.lineplot(data=probe, x="round", y="variance", hue="m", hue_order=ms, style="sampling",
                     style_order=styles, palette=shades, errorbar=CI, ax=axes[1])
        handles, labels = axes[1].get_legend_handles_labels()
        axes[1].get_legend().remove()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        axes[1].set_yscale("log")
        grid = np.arange(1, n + 1)
        colours = dict(zip(styles, sns.color_palette("colorblind", 2)))
        axes[2].plot(grid, 1 / grid, color=colours[styles[0]], lw=1.5, label="sigma^2 / m")
        axes[2].plot(grid, (n - grid) / (grid * (n - 1)), color=colours[styles[1]], lw=1.5, ls="--",
                     label="sigma^2 / m * (n-m) / (n-1)")
        for mode, rows in probe.groupby("sampling"):
            stats = rows.groupby("m")["ratio"].agg(["mean", "std", "count"])
            half = stats["std"] / np.sqrt(stats["count"]) * 1.96
            axes[2].errorbar(stats.index, stats["mean"], yerr=half.fillna(0), fmt="o", capsize=3,
                             color=colours[mode], label=f"measured, {mode}")
        axes[2].set_xticks(grid)
        axes[2].legend(frameon=False, fontsize=8)
    axes[1].set_xlabel(X_LABEL["round"])
    axes[1].set_ylabel("E||mean of m updates - mean||^2")
    axes[1].set_title("variance of the mean of m clients' updates")
    axes[2].set_xlabel(f"m = clients sampled (of n = {n})")
    axes[2].set_ylabel("variance / sigma^2")
    axes[2].set_title("measured vs the seed's formulas")
    return fig


def ablation(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """One panel per value of ``spec["panel"]`` (a setting); in each, one bar per combination of the
    ``spec["bars"]`` keys (the switched contributions): test accuracy at the end of the run (mean of
    its last quarter of evaluations), mean over seeds with a 95% interval, each seed a dot."""
    panel_key, bar_keys = spec["panel"], spec["bars"]
    finished = runs.loc[runs["status"] == "completed"].set_index("cell")
    evals = tables["evals"][tables["evals"]["cell"].isin(finished.index)]
    last = evals[evals["round"] >= 0.75 * evals.groupby("cell")["round"].transform("max")]
    final = (last.groupby("cell")["test_acc"].mean() * 100).rename("value").to_frame().join(finished)
    final["bar"] = final[bar_keys].astype(str).apply(lambda row: ", ".join(row), axis=1)
    bars = sorted(final["bar"].unique())
    colours = dict(zip(bars, sns.color_palette("colorblind", len(bars))))
    panels = sorted(final[panel_key].astype(str).unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(PANEL[0] * len(panels), PANEL[1] * 1.2), squeeze=False,
                             sharey=True)
    for ax, value in zip(axes.flat, panels):
        data = final[final[panel_key].astype(str) == value]
        sns.barplot(data=data, x="bar", y="value", hue="bar", order=bars, hue_order=bars, palette=colours,
                    errorbar=CI, ax=ax, legend=False)
        sns.stripplot(data=data, x="bar", y="value", order=bars, color="0.2", size=3, ax=ax)
        ax.set_title(f"{panel_key} = {value}")
        ax.set_xlabel("")
        ax.set_xticks([])
        ax.set_ylabel("final test accuracy (%)")
    low = final["value"].min() if len(final) else 0.0
    axes[0, 0].set_ylim(max(0.0, low - 10), None)
    handles = [Line2D([], [], color=colours[b], marker="s", ls="none", markersize=8) for b in bars]
    fig.legend(handles, bars, title=", ".join(bar_keys), loc="center left", bbox_to_anchor=(1.0, 0.5),
               frameon=False)
    return fig


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


# ----------------------------------------------------------------------------- the second and third seeds
# Queueing kinds: the closed forms (afl.queueing) evaluated from each cell's own clients table
# (rate mu_i, routing p_i, predicted E[tau_i]) and run.json (the bound's constants of an optimized
# routing), beside what the cells measured. Standard errors of one long run: batch means
# (afl.queueing.measure); over seeds: Student-t intervals. Each kind's numbers come from a
# ``*_table`` function (tests/test_queueing_figures.py checks them), its drawing from the kind.


def routing_name(value) -> str:
    """A readable name of an ``algorithm.routing`` grid value (JSON text in the tables)."""
    try:
        v = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        v = value
    if v is None or v == "uniform" or isinstance(v, dict) and v.get("power") == 0:
        return "uniform"
    if isinstance(v, dict) and v.get("power") is not None:
        return "p ~ mu (equal loads)" if v["power"] == 1 else f"p ~ mu^{v['power']:g}"
    if isinstance(v, dict):
        return f"bound-optimal per {'update' if v['optimize'] == 'update' else 'unit of time'}"
    return str(v)


def routings(names) -> list[str]:
    """Routing names in plotting order: uniform first."""
    return [n for n in ["uniform", *sorted(set(names) - {"uniform"})] if n in set(names)]


def cell_tables(tables: dict, cell: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One cell's updates, evals and clients (sorted by client)."""
    pick = {k: tables[k][tables[k]["cell"] == cell] for k in ("updates", "evals", "clients")}
    return pick["updates"], pick["evals"], pick["clients"].sort_values("client")


def network_of(clients: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, p)``: a cell's client rates and routing, from its clients table."""
    return clients["rate"].to_numpy(dtype=float, copy=True), clients["routing_p"].to_numpy(dtype=float, copy=True)


def rate_groups(mu: np.ndarray) -> dict[str, np.ndarray]:
    """``{"all": every client}`` plus one group per distinct rate when there are at most four."""
    out = {"all": np.ones(len(mu), dtype=bool)}
    rates = np.unique(mu)
    if 1 < len(rates) <= 4:
        out.update({f"rate {r:g}": mu == r for r in rates[::-1]})
    return out


def staleness_table(tables: dict, runs: pd.DataFrame, label_of, warmup: float, batches: int) -> pd.DataFrame:
    """Per client of every completed cell: ``afl.queueing.measure.staleness_per_client`` (simulated
    mean after the warm-up, its batch-means SE, updates) beside ``predicted`` (the clients table's
    closed-form E[tau_i]), ``z`` and ``relative`` = simulated / predicted - 1; ``group`` names the cell."""
    parts = []
    for cell in runs.loc[runs["status"] == "completed", "cell"]:
        updates, _, clients = cell_tables(tables, cell)
        measured = measure.staleness_per_client(updates, len(clients), warmup, batches)
        predicted = clients["predicted_staleness"].to_numpy()
        parts.append(measured.assign(group=f"{label_of[cell]}, n={len(clients)}", cell=cell, predicted=predicted,
                                     z=(measured["simulated"] - predicted) / measured["se"],
                                     relative=(measured["simulated"] - predicted) / predicted))
    return pd.concat(parts, ignore_index=True).dropna(subset=["predicted"])


def queue_staleness(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Per client: the simulated mean staleness after the warm-up (batch-means 95% interval) against
    the closed Jackson network's E[tau_i], one colour per cell (network), and the relative error."""
    data = staleness_table(tables, runs, label_of, spec.get("warmup", measure.WARMUP),
                           spec.get("batches", measure.BATCHES))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    colours = dict(zip(dict.fromkeys(data["group"]), sns.color_palette("colorblind", data["group"].nunique())))
    for group, d in data.groupby("group", sort=False):
        left.errorbar(d["predicted"], d["simulated"], yerr=Z95 * d["se"], fmt="o", ms=3.5, lw=0.8,
                      color=colours[group], label=group)
        right.errorbar(d["predicted"], 100 * d["relative"], yerr=100 * Z95 * d["se"] / d["predicted"], fmt="o",
                       ms=3.5, lw=0.8, color=colours[group])
    lo, hi = data["predicted"].min() * 0.8, data["predicted"].max() * 1.25
    left.plot([lo, hi], [lo, hi], color="0.3", lw=1, ls="--", label="theory: simulated = predicted")
    left.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="predicted E[tau_i] (server updates)",
             ylabel="simulated mean staleness (server updates)", title="mean staleness per client")
    worst = data.loc[data["relative"].abs().idxmax()]
    right.axhline(0, color="0.3", lw=1, ls="--")
    right.set(xscale="log", xlabel="predicted E[tau_i] (server updates)", ylabel="simulated / predicted - 1 (%)",
              title=f"largest |relative error| {100 * abs(worst['relative']):.2f}%")
    left.legend(fontsize=7, loc="upper left")
    fig.text(0.5, -0.02, "error bars: 95% intervals (1.96 batch-means standard errors)", ha="center", fontsize=8)
    print(f"queue_staleness: largest |relative error| {100 * abs(worst['relative']):.2f}% ({worst['group']}); "
          f"|z| > 3 for {int((data['z'].abs() > 3).sum())} of {len(data)} clients", file=sys.stderr)
    return fig


def throughput_table(tables: dict, runs: pd.DataFrame, hue: str | None, warmup: float,
                     batches: int) -> tuple[pd.DataFrame, dict]:
    """Per completed cell (routing named by its ``hue`` value, m): the simulated throughput and the
    mean staleness of each rate group after the warm-up, batch-means SE, beside the closed forms
    ``lambda(m)`` and ``sum_{i in g} p_i E[tau_i] / sum_{i in g} p_i``. Also ``{routing: (mu, p)}``."""
    rows, networks = [], {}
    for _, r in runs[runs["status"] == "completed"].iterrows():
        updates, _, clients = cell_tables(tables, r["cell"])
        mu, p = network_of(clients)
        name = routing_name(r[hue]) if hue else "routing"
        networks.setdefault(name, (mu, p))
        m = int(r["algorithm.concurrency"])
        theory = predict(mu, p, m)
        lam, se = measure.update_rate(updates, warmup, batches)
        rows.append({"routing": name, "m": m, "quantity": "throughput", "group": "all", "simulated": lam, "se": se,
                     "predicted": theory.throughput})
        steady = measure.steady_state(updates, warmup)
        for group, members in rate_groups(mu).items():
            mean, se = measure.batch_means(steady["staleness"].to_numpy()[members[steady["client"].to_numpy()]],
                                           batches)
            rows.append({"routing": name, "m": m, "quantity": "staleness", "group": group, "simulated": mean,
                         "se": se, "predicted": float((p[members] * theory.relative_delay[members]).sum()
                                                      / p[members].sum())})
    return pd.DataFrame(rows), networks


def throughput(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Throughput lambda(m) and mean staleness against the concurrency m, one line style per routing
    (the ``hue`` key): simulated points (batch-means 95% intervals) on the closed forms for every m."""
    data, networks = throughput_table(tables, runs, (spec.get("hue") or [None])[0],
                                      spec.get("warmup", measure.WARMUP), spec.get("batches", measure.BATCHES))
    dense = np.arange(1, data["m"].max() + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    styles = dict(zip(networks, ["-", "--", ":", "-."]))
    markers = dict(zip(networks, "osD^"))
    mu0 = next(iter(networks.values()))[0]
    colours = dict(zip(rate_groups(mu0), sns.color_palette("colorblind", len(rate_groups(mu0)))))
    for name, (mu, p) in networks.items():
        predictions = [predict(mu, p, int(m)) for m in dense]
        d = data[data["routing"] == name]
        left.plot(dense, [pr.throughput for pr in predictions], color=colours["all"], ls=styles[name],
                  label=f"theory, {name}")
        t = d[d["quantity"] == "throughput"]
        left.errorbar(t["m"], t["simulated"], yerr=Z95 * t["se"], fmt=markers[name], ms=4, color=colours["all"],
                      label=f"simulation, {name}")
        for group, members in rate_groups(mu).items():
            line = [float((p[members] * pr.relative_delay[members]).sum() / p[members].sum()) for pr in predictions]
            right.plot(dense, line, color=colours[group], ls=styles[name], label=f"{group}, {name}")
            g = d[(d["quantity"] == "staleness") & (d["group"] == group)]
            right.errorbar(g["m"], g["simulated"], yerr=Z95 * g["se"], fmt=markers[name], ms=4, color=colours[group])
    left.set(xlabel="concurrency m (tasks in flight)", ylabel="throughput lambda(m) (updates per unit time)",
             title=f"throughput, n = {len(mu0)} clients")
    right.set(xlabel="concurrency m (tasks in flight)", ylabel="mean staleness (server updates)",
              title="mean staleness of the updates (all = m - 1)")
    left.legend(fontsize=7)
    right.legend(fontsize=7, title="clients, routing (lines: theory; points: simulation)", title_fontsize=7)
    fig.text(0.5, -0.02, "error bars: 95% intervals (1.96 batch-means standard errors)", ha="center", fontsize=8)
    return fig


def at_budget(tables: dict, runs: pd.DataFrame, budget: float) -> pd.Series:
    """Per completed cell: the test accuracy (%) of the model the server holds at virtual time ``budget``."""
    cells = set(runs.loc[runs["status"] == "completed", "cell"])
    evals = tables["evals"][tables["evals"]["cell"].isin(cells)]
    return pd.Series({cell: 100 * float(measure.value_at(run, [budget])[0]) for cell, run in evals.groupby("cell")},
                     dtype=float)


def bound_constants(runs: pd.DataFrame) -> dict[str, BoundConstants]:
    """Per objective: the bound's constants that an optimized-routing cell recorded (run.json ``routing``)."""
    out = {}
    for text in runs["routing"].dropna() if "routing" in runs else []:
        info = json.loads(text)
        out.setdefault(info["objective"], BoundConstants(
            **{k: info[k] for k in ("A", "L", "sigma", "zeta", "eta", "T", "time_budget")}))
    return out


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


METHODS = {"asyncsgd": "asynchronous SGD", "sfl": "mini-batch SGD"}
ROUND_BATCHES = 10  # batch means of a few dozen synchronous rounds


def minibatch_table(tables: dict, runs: pd.DataFrame, steps: dict,
                    warmup: float, batches: int) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    """``(cells, best, timing)``. ``cells``: each completed cell with ``method``, ``step`` (the key
    ``steps[algorithm.name]``) and ``final``, its accuracy (%) at the end (the shortest run's last
    evaluation). ``best``: per method, the step of the highest mean ``final``. ``timing``: per method,
    the simulated time per C gradients (C = algorithm.concurrency; mean over cells, batch-means SE)
    beside the closed forms: the mean task duration (asynchronous) and ``E[max]`` of C distinct
    clients' durations (mini-batch, ``afl.queueing.rounds.expected_max_duration``)."""
    cells = runs[runs["status"] == "completed"].copy()
    cells["method"] = cells["algorithm.name"].map(METHODS)
    cells["step"] = [r[steps[r["algorithm.name"]]] for _, r in cells.iterrows()]
    evals = tables["evals"][tables["evals"]["cell"].isin(cells["cell"])]
    end = float(evals.groupby("cell")["time"].max().min())
    cells["final"] = cells["cell"].map(at_budget(tables, cells, end))
    best = cells.groupby(["method", "step"])["final"].mean().groupby(level=0).idxmax().map(lambda key: key[1])
    c = int(cells["algorithm.concurrency"].iloc[0])
    durations = 1.0 / network_of(cell_tables(tables, cells["cell"].iloc[0])[2])[0]
    theory = {METHODS["asyncsgd"]: float(durations.mean()), METHODS["sfl"]: expected_max_duration(durations, c)}
    rows = []
    for r in cells.itertuples(index=False):
        updates = cell_tables(tables, r.cell)[0]
        rate, se = measure.update_rate(updates, warmup, batches)  # server versions per unit time
        per_version = len(updates) / updates["version"].nunique()  # gradients per version: 1 or C
        per_c = c / (rate * per_version)
        rows.append({"method": r.method, "simulated": per_c, "se": per_c * se / rate})
    timing = pd.DataFrame(rows).groupby("method").agg(simulated=("simulated", "mean"), se=("se", "mean"))
    timing["theory"] = timing.index.map(theory)
    return cells.assign(end=end), best, timing


def minibatch(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Asynchronous vs mini-batch SGD over wall-clock time (Koloskova et al.'s example), each with its
    step tuned on a grid (``steps``: the step key of each algorithm.name). Panels: gradients applied
    over time against the closed forms; accuracy over time at each method's best step; the final
    accuracy against the step (the tuning)."""
    cells, best, timing = minibatch_table(tables, runs, spec["steps"], spec.get("warmup", measure.WARMUP),
                                          spec.get("batches", ROUND_BATCHES))
    end, c = float(cells["end"].iloc[0]), int(cells["algorithm.concurrency"].iloc[0])
    colours = dict(zip(METHODS.values(), sns.color_palette("colorblind", len(METHODS))))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    grid = np.linspace(0, end, TIME_POINTS)
    counts, curves = [], []
    for r in cells.itertuples(index=False):
        updates, evals, _ = cell_tables(tables, r.cell)
        counts.append(pd.DataFrame({"time": grid, "method": r.method,
                                    "gradients": np.searchsorted(np.sort(updates["time"].to_numpy()), grid, "right")}))
        if r.step == best[r.method]:
            curves.append(pd.DataFrame({"time": grid, "acc": 100 * measure.value_at(evals, grid),
                                        "method": r.method}))
    sns.lineplot(data=pd.concat(counts), x="time", y="gradients", hue="method", palette=colours, errorbar=None,
                 ax=axes[0])
    for method, style in ((METHODS["asyncsgd"], ":"), (METHODS["sfl"], "--")):
        if method in timing.index:
            duration = timing.at[method, "theory"]
            axes[0].plot(grid, c * grid / duration, color="0.3", ls=style, lw=1,
                         label=f"theory: {c} per {duration:.2f} ({'mean' if style == ':' else 'E[max]'})")
    axes[0].set(xlabel="virtual wall-clock time", ylabel="gradients applied", title=f"throughput, C = {c}")
    axes[0].legend(fontsize=7)
    sns.lineplot(data=pd.concat(curves), x="time", y="acc", hue="method", palette=colours,
                 errorbar=measure.t_interval, ax=axes[1])
    axes[1].set(xlabel="virtual wall-clock time", ylabel="test accuracy (%)", ylim=(0, 100),
                title=f"accuracy over time at each method's best step ({cells['seed'].nunique()} seeds)")
    axes[1].legend(fontsize=7, loc="lower right", title="best step: " + ", ".join(
        f"{m.split()[0]} {s:g}" for m, s in best.items()), title_fontsize=7)
    sns.pointplot(data=cells, x="step", y="final", hue="method", palette=colours, errorbar=measure.t_interval,
                  native_scale=True, log_scale=(True, False), capsize=0.1, ax=axes[2])
    axes[2].set(xlabel="step size (asynchronous: algorithm.server_lr; mini-batch: client.lr)", ylim=(0, 100),
                ylabel=f"test accuracy at time {end:g} (%)", title="each method's step-size grid (95% t-interval)")
    print(f"minibatch: time per {c} gradients (simulated, theory):\n{timing.to_string()}\nbest steps: "
          + ", ".join(f"{m} {s:g}" for m, s in best.items()), file=sys.stderr)
    return fig

KINDS = {"curves": curves, "participation": participation, "staleness": staleness, "sampling": sampling,
         "ablation": ablation, "target": target, "queue_staleness": queue_staleness, "throughput": throughput,
         "routing_gain": routing_gain, "concurrency_budget": concurrency_budget, "minibatch": minibatch}


def main(name: str, spec: dict, keys: list[str], inputs: dict, png: str) -> None:
    figures.style()
    tables = {kind: pd.read_parquet(path) for kind, path in inputs.items()}
    runs = select(tables["runs"], spec)
    label_of, order, legend_title = groups(runs, keys)
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    spec = {**spec, "legend_title": legend_title}
    fig = KINDS[spec["kind"]](spec, tables, runs, label_of, order, palette)
    fig.suptitle(spec.get("title") or name, y=1.02)
    notes = diverged_note(runs, label_of)
    if notes:
        fig.text(0.01, 0.0, "\n".join(notes), ha="left", va="top", fontsize=8)
        print(f"figure {name}: marked {len(notes)} diverged cell(s): " + "; ".join(notes), file=sys.stderr)
    figures.save(fig, png)


if __name__ == "__main__":
    log_to(snakemake.log[0])  # noqa: F821
    main(snakemake.wildcards.figure, dict(snakemake.params.spec), list(snakemake.params.columns),  # noqa: F821
         {kind: getattr(snakemake.input, kind) for kind in ("runs", "evals", "updates", "clients", "sampling")},  # noqa: F821
         snakemake.output.png)  # noqa: F821
