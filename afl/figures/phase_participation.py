"""The ``phase_participation`` kind (``diurnal`` availability): who gets to contribute, by the time
of day at which a client is most often online; its numbers from ``phase_table``.
"""

import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from afl import compare
from afl.sim.availability import diurnal_phases

RULE = "algorithm.name"


def phase_table(tables: dict, runs: pd.DataFrame, bins: int) -> pd.DataFrame:
    """Per completed cell and phase bin (``bins`` equal parts of the day, by each client's phase,
    ``afl.sim.availability.diurnal_phases`` of the cell's seed): ``results``, the share (%) of the
    cell's applied results that came from the bin's clients, and ``online``, its share (%) of the
    clients' time online."""
    rows = []
    for _, run in runs[runs["status"] == "completed"].iterrows():
        clients = tables["clients"][tables["clients"]["cell"] == run["cell"]].sort_values("client")
        phases = diurnal_phases(len(clients), int(run["seed"]))
        which = np.minimum((phases * bins).astype(int), bins - 1)
        tasks = np.bincount(which, clients["tasks"].to_numpy(dtype=float), bins)
        online = np.bincount(which, clients["online_time"].to_numpy(dtype=float), bins)
        for b in range(bins):
            rows.append({"cell": run["cell"], "rule": run[RULE], "seed": run["seed"], "bin": b,
                         "phase": (b + 0.5) / bins, "results": 100 * tasks[b] / tasks.sum(),
                         "online": 100 * online[b] / online.sum()})
    return pd.DataFrame(rows)


def phase_participation(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Share of the applied results by the clients' phase (the time of day, as a fraction of the
    day, at which each client is most likely online), one line per rule, the mean over seeds with
    its 95% t-interval from ``afl.compare.MIN_SEEDS`` seeds; grey: the bins' share of the time
    online, what participation would be if each client contributed in proportion to it. The log
    prints each rule's largest and smallest bin with intervals."""
    bins = int(spec.get("bins", 12))
    table = phase_table(tables, runs, bins)
    rules = sorted(table["rule"].unique())
    colours = dict(zip(rules, sns.color_palette("colorblind", len(rules))))
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    lines = []
    for rule in rules:
        by_bin = table[table["rule"] == rule].groupby("phase")["results"]
        mean = by_bin.mean()
        got = {p: compare.interval(v) for p, v in by_bin if len(v) >= compare.MIN_SEEDS}
        if got:
            ax.fill_between(mean.index, [got[p].low for p in mean.index], [got[p].high for p in mean.index],
                            color=colours[rule], alpha=0.15, lw=0)
        ax.plot(mean.index, mean.to_numpy(), marker="o", color=colours[rule], label=rule)
        for what, p in (("most", mean.idxmax()), ("least", mean.idxmin())):
            lines.append(f"phase_participation: {rule}: {what} results from phase {p:.3f}: "
                         + (str(got[p]) if p in got else f"{mean[p]:.4g} (n = {by_bin.size()[p]})"))
    online = table.groupby("phase")["online"].mean()
    ax.plot(online.index, online.to_numpy(), color="0.5", ls="--", label="share of time online")
    seeds = table["seed"].nunique()
    bars = "95% t-interval bands" if seeds >= compare.MIN_SEEDS else f"no band below {compare.MIN_SEEDS} seeds"
    ax.set(xlabel=f"client's phase: the time of day it is most likely online ({bins} bins of the day)",
           ylabel="results applied (% of the run's)", xlim=(0, 1),
           title=f"who gets to contribute under diurnal availability\n(mean of {seeds} seeds, {bars})")
    ax.set_ylim(bottom=0)
    ax.legend(title="rule", fontsize=8)
    print("\n".join(lines), file=sys.stderr)
    return fig
