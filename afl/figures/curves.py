"""The ``curves`` kind: the metrics ``y`` over ``x``, one panel each.

``server_loss`` is the first seed's server loss, the mean local training loss of a round's m results
(from ``updates``); ``test_acc`` and ``test_loss`` come from ``evals``. ``round``: m results applied
(m = algorithm.concurrency, clients per round for sfl/afl); ``time``: virtual time, each run's curve
interpolated onto a common grid up to the end of the group's shortest run. The first seed's figures
1 (server loss and test accuracy over rounds), 3 (server loss for 3..8 clients per round) and 4
(asynchronous vs synchronous over rounds and over virtual wall-clock time).
"""

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from afl.figures.common import (CI, PANEL, TITLE, X_LABEL, Y_LABEL, divergence_points, legend, metric,
                                on_time_grid)


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
