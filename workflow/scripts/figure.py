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
- ``target``: server updates until an evaluated metric (``metric``, e.g. grad_norm_sq) first
  reaches ``target``, against each run's largest staleness, one line per combination of the
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

import math
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from afl import figures
from afl.cluster.pipeline import log_to

STANDARD = ("algorithm.name", "algorithm.concurrency", "seed")
SHORT = {"algorithm.concurrency": "m"}
Y_LABEL = {"server_loss": "server loss (NLL, nats)", "test_acc": "test accuracy (%)",
           "test_loss": "test loss (NLL, nats)", "grad_norm_sq": "||grad f(x)||^2 (training subset)"}
X_LABEL = {"round": "round (m results applied)", "time": "virtual time (mean task durations)"}
TITLE = {"server_loss": "server loss", "test_acc": "test accuracy", "test_loss": "test loss",
         "grad_norm_sq": "squared gradient norm (Theorem 1)"}
MODE_LABEL = {"with_replacement": "with replacement", "without_replacement": "without replacement"}
CI = ("ci", 95)
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


def target(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Server updates until the evaluated ``metric`` first reaches ``target`` (at most), against the
    run's largest staleness ``tau_max``, one line per group of the ``hue`` keys. With ``tune`` (a
    key such as algorithm.server_lr), each group and value of the ``x`` key keeps the tuned value
    with the fewest updates on average over seeds (a run that never reaches the target counts as
    its budget), and the figure names it. Runs that never reach the target are drawn hollow at
    their budget."""
    metric_name, goal, x_key, tune, hue = spec["metric"], spec["target"], spec["x_key"], spec.get("tune"), spec["hue"]
    finished = runs.loc[runs["status"] == "completed"].set_index("cell")
    evals = tables["evals"][tables["evals"]["cell"].isin(finished.index)]
    updates = tables["updates"][tables["updates"]["cell"].isin(finished.index)]
    reached = evals[evals[metric_name] <= goal].groupby("cell")["version"].min()
    budget = updates.groupby("cell")["version"].max()
    per = finished.assign(to_target=reached.reindex(finished.index), budget=budget.reindex(finished.index),
                          tau_max=updates.groupby("cell")["staleness"].max().reindex(finished.index),
                          tau_avg=updates.groupby("cell")["staleness"].mean().reindex(finished.index))
    per["hit"] = per["to_target"].notna()
    per["cost"] = per["to_target"].fillna(per["budget"])
    per["method"] = per[hue].astype(str).apply(lambda row: ", ".join(row), axis=1)
    notes = []
    if tune:
        mean_cost = per.groupby(["method", x_key, tune], dropna=False)["cost"].mean().reset_index()
        best = mean_cost.loc[mean_cost.groupby(["method", x_key], dropna=False)["cost"].idxmin()]
        per = per.merge(best[["method", x_key, tune]], on=["method", x_key, tune])
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
        half = (by_x["sd"] / np.sqrt(by_x["n"]) * 1.96).fillna(0)
        low = np.minimum(half, by_x["cost"] * 0.9)  # a log axis: the interval stops short of 0
        axes[0].errorbar(by_x["tau_max"], by_x["cost"], yerr=[low, half], marker="o", capsize=3,
                         color=colours[method], label=method)
        hollow = rows[~rows["hit"]]
        axes[0].scatter(hollow["tau_max"], hollow["cost"], facecolors="none", edgecolors=colours[method], s=40)
        axes[1].plot(by_x["tau_max"], by_x["tau_avg"], marker="o", color=colours[method])
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("tau_max: largest staleness of the run (server updates)")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("server updates")
    axes[0].set_title(f"updates until {metric_name} <= {goal:g}\n(95% interval over seeds; hollow: never reached)")
    axes[1].set_ylabel("tau_avg: mean staleness")
    axes[1].set_title("the average delay stays put")
    axes[0].legend(frameon=False, fontsize=8)
    if notes:
        fig.text(0.01, -0.02, "; ".join(notes), ha="left", va="top", fontsize=8)
    return fig


KINDS = {"curves": curves, "participation": participation, "staleness": staleness, "sampling": sampling,
         "ablation": ablation, "target": target}


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
