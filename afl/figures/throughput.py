"""The ``throughput`` kind (the second and third seeds): throughput lambda(m) and mean staleness
against the concurrency m on the closed forms, a line style per routing; its numbers from
``throughput_table``.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from afl.figures.common import Z95, cell_tables, network_of, value_name
from afl.queueing import measure
from afl.queueing.network import predict


def rate_groups(mu: np.ndarray) -> dict[str, np.ndarray]:
    """``{"all": every client}`` plus one group per distinct rate when there are at most four."""
    out = {"all": np.ones(len(mu), dtype=bool)}
    rates = np.unique(mu)
    if 1 < len(rates) <= 4:
        out.update({f"rate {r:g}": mu == r for r in rates[::-1]})
    return out


def throughput_table(tables: dict, runs: pd.DataFrame, hue: str | None, warmup: float,
                     batches: int) -> tuple[pd.DataFrame, dict]:
    """Per completed cell (routing named by its ``hue`` value, ``common.value_name``, and m): the
    simulated throughput and the mean staleness of each rate group after the warm-up, batch-means SE,
    beside the closed forms ``lambda(m)`` and ``sum_{i in g} p_i E[tau_i] / sum_{i in g} p_i``. Also
    ``{routing: (mu, p)}``."""
    rows, networks = [], {}
    for _, r in runs[runs["status"] == "completed"].iterrows():
        updates, _, clients = cell_tables(tables, r["cell"])
        mu, p = network_of(clients)
        name = value_name(hue, r[hue]) if hue else "routing"
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
