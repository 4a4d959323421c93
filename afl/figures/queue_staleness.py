"""The ``queue_staleness`` kind (the second and third seeds): the simulated mean staleness per client
against the closed Jackson network's E[tau_i]; its numbers from ``staleness_table``.
"""

import sys

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from afl.figures.common import Z95, cell_tables
from afl.queueing import measure


def staleness_table(tables: dict, runs: pd.DataFrame, label_of, warmup: float, batches: int) -> pd.DataFrame:
    """Per client of every completed cell: ``afl.queueing.measure.staleness_per_client`` (simulated
    mean after the warm-up, its batch-means SE, updates) beside ``predicted`` (the clients table's
    closed-form E[tau_i]), ``z`` and ``relative`` = simulated / predicted - 1; ``group`` names the cell
    (its group's label, values readable by ``common.value_name``, and its number of clients n)."""
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
