"""The ``participation`` kind: tasks applied per client."""

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from afl.figures.common import CI, PANEL, legend


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
