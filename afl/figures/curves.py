"""The ``curves`` kind: the metrics ``y`` over ``x``, one panel each.

``server_loss`` is the first seed's server loss, the mean local training loss of a round's m results
(from ``updates``); ``test_acc`` and ``test_loss`` come from ``evals``. ``round``: m results applied
(m = algorithm.concurrency, clients per round for sfl/afl); ``time``: virtual time, each run's curve
interpolated onto a common grid up to the end of the group's shortest run (so each line ends when
its runs' rounds are done, which the time axis says). Lines are the mean over seeds; a 95% bootstrap
band only when every group has at least ``afl.compare.MIN_SEEDS`` finished seeds; the legend title
says which, and n. The first seed's figures 1 (server loss and test accuracy over rounds), 3 (server
loss for 3..8 clients per round) and 4 (asynchronous vs synchronous over rounds and over virtual
wall-clock time).
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from afl.figures.common import PANEL, TIME_POINTS, X_LABEL, Y_LABEL, band_rule, legend, metric

TITLE = {"server_loss": "server loss", "test_acc": "test accuracy", "test_loss": "test loss",
         "grad_norm_sq": "squared gradient norm (Theorem 1)"}


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


def curves(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Per metric ``y`` (rows) and axis ``x`` (columns): one line per group, the mean over its
    finished seeds (a band from ``compare.MIN_SEEDS`` seeds on), an X where a run diverged."""
    ys, xs = spec["y"], spec["x"]
    errorbar, seeds_text = band_rule(runs, label_of)
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
                             errorbar=errorbar, ax=ax, legend=False)
            for cell, stop in stops.iterrows():
                ax.plot(stop[x], 0.96, marker="X", color=palette[label_of[cell]], markersize=9, ls="none",
                        transform=ax.get_xaxis_transform(), clip_on=False)
            if x == "round":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if y == "grad_norm_sq":
                ax.set_yscale("log")
            ax.set_xlabel(X_LABEL[x] + ("" if x == "round" else "\neach line ends where its group's shortest run ends"))
            ax.set_ylabel(Y_LABEL[y])
            ax.set_title(f"{TITLE[y]} over {'rounds' if x == 'round' else 'virtual time'}")
    legend(fig, order, palette, runs, label_of, f"{spec['legend_title']}\n{seeds_text}")
    return fig
