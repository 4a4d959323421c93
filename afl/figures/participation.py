"""The ``participation`` kind: tasks applied per client, the mean over seeds per group (with a 95%
bootstrap error bar from ``afl.compare.MIN_SEEDS`` seeds on; the legend title says which, and n)."""

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from afl.figures.common import PANEL, band_rule, legend


def participation(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    finished = runs.loc[runs["status"] == "completed", "cell"]
    data = tables["clients"][tables["clients"]["cell"].isin(finished)]
    data = data.assign(group=data["cell"].map(label_of))
    n = data["client"].nunique() if len(data) else 1
    fig, ax = plt.subplots(figsize=(max(PANEL[0], 0.45 * n * max(1, data["group"].nunique())), PANEL[1]))
    present = [lab for lab in order if lab in set(data["group"])]
    errorbar, seeds_text = band_rule(runs, label_of, marks="bars")
    if present:
        sns.barplot(data=data, x="client", y="tasks", hue="group", hue_order=present, palette=palette,
                    errorbar=errorbar, ax=ax, legend=False)
    rates = data.groupby("client")["rate"].mean() if len(data) else pd.Series(dtype=float)
    if rates.nunique() > 1:  # say which clients are slow: the bars are read against it
        ax.set_xticks(range(len(rates)), [f"{c}\n{r:.3g}" for c, r in rates.items()])
        ax.set_xlabel("client (its rate: tasks per unit time)")
    else:
        ax.set_xlabel("client")
    ax.set_ylabel("tasks applied per run (count)")
    ax.set_title("client participation")
    legend(fig, order, palette, runs, label_of, f"{spec['legend_title']}\n{seeds_text}", marker="bar")
    return fig
