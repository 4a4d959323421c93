"""The ``staleness`` kind: histogram of the staleness of applied results, one panel per algorithm (group).

Staleness counts server versions, and what one version applies depends on the rule: 1 result
(asyncsgd, fedasync), a buffer of K (fedbuff) or a round of m (sfl, afl). Each panel's x axis
says it, from the rule's own ``batch`` fact (``afl.rules``).
"""

import dataclasses
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from afl import rules
from afl.config import AlgorithmConfig
from afl.figures.common import PANEL


def version_text(run: pd.Series) -> str:
    """What one server version applies in ``run``: its rule's ``batch`` of the grid's ``algorithm.*``
    keys that the rule reads (the config's and the rule's defaults for the rest), as an axis says it."""
    rule = rules.get(run["algorithm.name"])
    given = {k: run[f"algorithm.{k}"] for k in rule.keys if pd.notna(run.get(f"algorithm.{k}"))}
    algorithm = AlgorithmConfig(name=rule.name, concurrency=int(run["algorithm.concurrency"]), **given)
    k = int(rule.batch(dataclasses.replace(algorithm, **rule.defaults(algorithm))))
    return f"1 version = {k} result{'s' * (k != 1)} ({rule.name})"


def staleness(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Per group: the share of its finished runs' applied results at each staleness (seeds pooled),
    a dashed line at their mean, one x range for every panel; the x axis says what a version is."""
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
        ax.set_xlabel(f"staleness tau (server versions)\n{version_text(runs[runs['cell'] == mine[0]].iloc[0])}")
        ax.set_ylabel("share of applied results")
    for ax in list(axes.flat)[len(order):]:
        ax.set_visible(False)
    return fig
