"""The ``ablation`` kind: bars of final test accuracy, one per combination of the ``bars`` keys,
one panel per value of the ``panel`` key (mean of each run's last quarter of evaluations; mean over
seeds).
"""

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from afl.figures.common import CI, PANEL


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
