"""Throughput and mean staleness against the concurrency ``m`` (figure 2).

One network (``clients``, ``rates`` as in ``timing.rates``) runs AsyncSGD with exponential task
times and the null workload at every ``m`` of ``concurrency``, for each routing ``p_i``
proportional to ``mu_i^a`` (``a`` in ``routing_powers``: 0 uniform, 1 equal loads). The table
has, per routing and ``m``, the predicted and simulated throughput ``lambda(m) = G(m-1)/G(m)``
and mean staleness with batch-means standard errors: over all updates
(``sum_i p_i E[tau_i] = m - 1``) and per group of clients of equal rate (the update-weighted
``sum_{i in g} p_i E[tau_i] / sum_{i in g} p_i``). The figure draws the theory as lines over
every ``m`` and the simulations as points with 95% intervals.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from afl import figures
from afl.config import load_config
from afl.cluster.pipeline import log_to
from afl.queueing.measure import batch_means, simulate_all, steady_state, update_rate
from afl.queueing.model import network
from afl.queueing.network import predict
from afl.queueing.routing import power_routing
from afl.atomic import write_parquet

Z95 = 1.96
MAX_GROUPS = 4  # clients are grouped by rate when there are at most this many distinct rates


def base_config(spec: dict, m: int) -> dict:
    return {"seed": spec["seed"], "data": {"num_clients": spec["clients"]},
            "algorithm": {"name": "asyncsgd", "concurrency": m},
            "timing": {"distribution": "exponential", "rates": spec["rates"]},
            "run": {"workload": "none", "updates": spec["updates"], "eval_every": 10**9}}


def rate_groups(mu: np.ndarray) -> dict[str, np.ndarray]:
    """``{"all": every client}`` plus one group per distinct rate when there are few."""
    groups = {"all": np.ones(len(mu), dtype=bool)}
    rates = np.unique(mu)
    if 1 < len(rates) <= MAX_GROUPS:
        groups.update({f"rate {r:g}": mu == r for r in rates[::-1]})
    return groups


def theory(mu: np.ndarray, p: np.ndarray, m: int) -> dict:
    """Predicted throughput and update-weighted mean staleness of each rate group at concurrency ``m``."""
    pred = predict(mu, p, m)
    out = {("throughput", "all"): pred.throughput}
    for name, g in rate_groups(mu).items():
        out[("staleness", name)] = float((p[g] * pred.relative_delay[g]).sum() / p[g].sum())
    return out


def table(spec: dict, workdir: Path, processes: int) -> pd.DataFrame:
    mu = network(load_config(base_config(spec, 1)))[0]
    runs, keys = [], []
    for power in spec["routing_powers"]:
        p = power_routing(mu, power)
        for m in spec["concurrency"]:
            runs.append((base_config(spec, m), {"algorithm.routing": [float(v) for v in p]},
                         workdir / f"power{power:g}-m{m}"))
            keys.append((power, m, p))
    simulate_all(runs, processes)
    rows = []
    for (power, m, p), (_, _, out) in zip(keys, runs):
        updates = pd.read_parquet(out / "updates.parquet")
        predicted = theory(mu, p, m)
        steady = steady_state(updates, spec["warmup"])
        client = steady.client.to_numpy()
        for (quantity, group), value in predicted.items():
            if quantity == "throughput":
                simulated, se = update_rate(updates, spec["warmup"], spec["batches"])
            else:
                in_group = rate_groups(mu)[group][client]
                simulated, se = batch_means(steady.staleness.to_numpy()[in_group], spec["batches"])
            rows.append({"routing_power": power, "concurrency": m, "quantity": quantity, "group": group,
                         "predicted": value, "simulated": simulated, "se": se})
    return pd.DataFrame(rows)


def figure(data: pd.DataFrame, spec: dict) -> plt.Figure:
    figures.style()
    mu = network(load_config(base_config(spec, 1)))[0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    dense = np.arange(1, max(spec["concurrency"]) + 1)
    powers = spec["routing_powers"]
    styles = dict(zip(powers, ["-", "--", ":", "-."]))
    markers = dict(zip(powers, "osD^"))
    colors = dict(zip(rate_groups(mu), sns.color_palette("colorblind", len(rate_groups(mu)))))
    name = {0: "uniform p", 1: "p ~ mu (equal loads)"}
    for power in powers:
        p = power_routing(mu, power)
        lines = [theory(mu, p, m) for m in dense]
        routing = name.get(power, f"p ~ mu^{power:g}")
        d = data[data.routing_power == power]
        thr = d[d.quantity == "throughput"]
        left.plot(dense, [line[("throughput", "all")] for line in lines], color=colors["all"], ls=styles[power],
                  label=f"theory, {routing}")
        left.errorbar(thr.concurrency, thr.simulated, yerr=Z95 * thr.se, fmt=markers[power], ms=4, color=colors["all"],
                      label=f"simulation, {routing}")
        for group in colors:
            st = d[(d.quantity == "staleness") & (d.group == group)]
            right.plot(dense, [line[("staleness", group)] for line in lines], color=colors[group],
                       ls=styles[power], label=f"{group}, {routing}")
            right.errorbar(st.concurrency, st.simulated, yerr=Z95 * st.se, fmt=markers[power], ms=4, color=colors[group])
    left.set(xlabel="concurrency m (tasks in flight)", ylabel="throughput lambda(m) (server updates per unit time)",
             title=f"throughput, n = {spec['clients']} clients")
    right.set(xlabel="concurrency m (tasks in flight)", ylabel="mean staleness (server updates)",
              title="mean staleness of the updates (all = m - 1)")
    left.legend(fontsize=8)
    right.legend(fontsize=8, title="clients, routing (lines: theory; points: simulation)", title_fontsize=8)
    fig.text(0.5, -0.02, "error bars: 95% intervals (1.96 batch-means standard errors)", ha="center", fontsize=8)
    return fig


def run(spec: dict, table_path: Path, figure_path: Path, workdir: Path, processes: int = 1) -> pd.DataFrame:
    data = table(spec, Path(workdir), processes)
    write_parquet(data, Path(table_path))
    figures.save(figure(data, spec), Path(figure_path))
    return data


if __name__ == "__main__":
    log_to(snakemake.log[0])  # noqa: F821
    run(dict(snakemake.params.spec), snakemake.output.table, snakemake.output.png,  # noqa: F821
        snakemake.params.workdir, snakemake.threads)  # noqa: F821
