"""Predicted vs simulated mean staleness per client on several closed networks (figure 1).

For each network of the spec (``clients``, ``concurrency``, ``rates`` as in ``timing.rates``,
``routing_power`` ``a``: ``p_i`` proportional to ``mu_i^a``, 0 = uniform), AsyncSGD runs with
exponential task times and the null workload (timing only) for ``updates`` server updates.
The table has one row per client: the closed form ``E[tau_i] = E_{m-1}[X_i] / p_i`` (the
relative delay, ``afl.queueing.network.predict``) beside the simulated mean staleness after the
warm-up, its batch-means standard error, the z-score and the relative error; and, per network,
the predicted and simulated throughput. The figure: simulated against predicted (the diagonal is
the theory) and the relative error with 95% intervals.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from afl import figures
from afl.config import load_config
from afl.cluster.pipeline import log_to
from afl.queueing.measure import simulate_all, staleness_per_client, update_rate
from afl.queueing.model import network
from afl.queueing.network import predict
from afl.queueing.routing import power_routing
from afl.atomic import write_parquet

Z95 = 1.96


def network_config(net: dict, spec: dict) -> dict:
    return {"seed": spec["seed"], "data": {"num_clients": net["clients"]},
            "algorithm": {"name": "asyncsgd", "concurrency": net["concurrency"]},
            "timing": {"distribution": "exponential", "rates": net["rates"]},
            "run": {"workload": "none", "updates": net.get("updates", spec["updates"]), "eval_every": 10**9}}


def table(spec: dict, workdir: Path, processes: int) -> pd.DataFrame:
    runs = []
    for net in spec["networks"]:
        raw = network_config(net, spec)
        # The rates the trainer will draw (same keyed stream), so that p ~ mu^a is exact.
        p = power_routing(network(load_config(raw))[0], net.get("routing_power", 0.0))
        runs.append((raw, {"algorithm.routing": [float(v) for v in p]}, workdir / net["name"].replace(" ", "-")))
    frames = []
    for net, info, (_, _, out) in zip(spec["networks"], simulate_all(runs, processes), runs):
        mu, p, m = network(load_config(info["config"]))
        pred = predict(mu, p, m)
        updates = pd.read_parquet(out / "updates.parquet")
        measured = staleness_per_client(updates, len(mu), spec["warmup"], spec["batches"])
        lam, lam_se = update_rate(updates, spec["warmup"], spec["batches"])
        frames.append(measured.assign(
            network=net["name"], clients=len(mu), concurrency=m, rate=mu, p=p,
            predicted=pred.relative_delay,
            z=(measured.simulated - pred.relative_delay) / measured.se,
            relative_error=(measured.simulated - pred.relative_delay) / pred.relative_delay,
            predicted_throughput=pred.throughput, simulated_throughput=lam, throughput_se=lam_se))
    columns = ["network", "clients", "concurrency", "client", "rate", "p", "predicted", "simulated", "se", "z",
               "relative_error", "updates", "predicted_throughput", "simulated_throughput", "throughput_se"]
    return pd.concat(frames, ignore_index=True)[columns]


def figure(data: pd.DataFrame) -> plt.Figure:
    figures.style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    order = list(dict.fromkeys(data.network))
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    for name in order:
        d = data[data.network == name]
        label = f"{name} (n={d.clients.iloc[0]}, m={d.concurrency.iloc[0]})"
        left.errorbar(d.predicted, d.simulated, yerr=Z95 * d.se, fmt="o", ms=3.5, lw=0.8, color=palette[name],
                      label=label)
        right.errorbar(d.predicted, 100 * d.relative_error, yerr=100 * Z95 * d.se / d.predicted, fmt="o", ms=3.5,
                       lw=0.8, color=palette[name], label=label)
    lo, hi = data.predicted.min() * 0.8, data.predicted.max() * 1.25
    left.plot([lo, hi], [lo, hi], color="0.3", lw=1, ls="--", label="theory: simulated = predicted")
    left.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi),
             xlabel="predicted E[tau_i] (server updates)", ylabel="simulated mean staleness (server updates)",
             title="mean staleness per client")
    right.axhline(0, color="0.3", lw=1, ls="--")
    worst = data.loc[data.relative_error.abs().idxmax()]
    right.set(xscale="log", xlabel="predicted E[tau_i] (server updates)",
              ylabel="relative error, simulated / predicted - 1 (%)",
              title=f"largest |relative error| {100 * abs(worst.relative_error):.2f}% ({worst.network})")
    left.legend(fontsize=8, loc="upper left")
    fig.text(0.5, -0.02, "error bars: 95% intervals (1.96 batch-means standard errors)", ha="center", fontsize=8)
    return fig


def run(spec: dict, table_path: Path, figure_path: Path, workdir: Path, processes: int = 1) -> pd.DataFrame:
    data = table(spec, Path(workdir), processes)
    write_parquet(data, Path(table_path))
    figures.save(figure(data), Path(figure_path))
    return data


if __name__ == "__main__":
    log_to(snakemake.log[0])  # noqa: F821
    run(dict(snakemake.params.spec), snakemake.output.table, snakemake.output.png,  # noqa: F821
        snakemake.params.workdir, snakemake.threads)  # noqa: F821
