"""Asynchronous vs mini-batch SGD over wall-clock time: Koloskova et al.'s example (figure 5).

``clients`` clients in ``groups`` of fixed task durations (the example: 90% take 10 s, 10% take
60 s). Asynchronous SGD keeps ``C = gradients_per_round`` gradients in flight, each routed to a
uniformly random client, and applies each on arrival: ``C`` gradients take the mean duration
(15 s). Mini-batch SGD (``sfl`` with one local SGD step and equal weights: the mean of ``C``
gradients) waits each round for the slowest of ``C`` distinct clients:
``E[max] = afl.queueing.rounds.expected_max_duration`` (42.65 s; 42.57 s for i.i.d. draws,
Koloskova, Stich & Jaggi 2022). Both train on MNIST (the spec's ``config``) for the virtual time ``time``,
with every seed and each step size of ``async_lr`` and ``minibatch_lr``. With fixed durations
the asynchronous gradients arrive in bursts computed at nearly the same model (every fast
task dispatched at one instant returns at one instant), so asynchronous SGD behaves like a
mini-batch sum and needs a step about ``C`` times smaller than mini-batch SGD's.

Tables: ``minibatch.parquet``, every evaluation (algorithm, step size, seed, version, gradients
applied, virtual time, test accuracy and loss); ``minibatch_timing.parquet``, per run: the
simulated time per ``C`` gradients (batch-means SE) beside the theory. Figure: gradients
applied, and test accuracy, over virtual time and accuracy over gradients (mean over seeds,
95% confidence band).
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from afl import figures
from afl.cluster.pipeline import log_to
from afl.queueing.measure import simulate_all, t_interval, update_rate, value_at
from afl.queueing.rounds import expected_max_duration
from afl.atomic import write_parquet
from afl.sim.timing import group_sizes

ASYNC, MINIBATCH = "asynchronous SGD", "mini-batch SGD"
GRID = 200


def durations(spec: dict) -> np.ndarray:
    """Every client's task duration (``afl.sim.timing.group_sizes`` splits the clients as the trainer does)."""
    sizes = group_sizes([g["fraction"] for g in spec["groups"]], spec["clients"])
    return np.repeat([float(g["duration"]) for g in spec["groups"]], sizes)


def common(spec: dict, seed: int) -> dict:
    c = spec["gradients_per_round"]
    return {"seed": seed, "data.num_clients": spec["clients"], "algorithm.concurrency": c,
            "timing.distribution": "constant",
            "timing.rates": {"kind": "groups", "groups": [{"fraction": g["fraction"], "rate": 1.0 / g["duration"]}
                                                          for g in spec["groups"]]},
            "run.time": spec["time"], "run.updates": None, "run.rounds": None}


def tables(spec: dict, workdir: Path, processes: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    c = spec["gradients_per_round"]
    runs, keys = [], []
    for seed in spec["seeds"]:
        for lr in spec["async_lr"]:
            runs.append((spec["config"], {**common(spec, seed), "algorithm.name": "asyncsgd", "algorithm.server_lr": lr,
                                          "run.eval_every": spec["eval_gradients"]},
                         workdir / f"async-lr{lr:g}-seed{seed}"))
            keys.append((ASYNC, lr, seed, 1))
        for lr in spec["minibatch_lr"]:
            runs.append((spec["config"], {**common(spec, seed), "algorithm.name": "sfl", "client.steps": 1,
                                          "client.lr": lr, "client.optimizer": "sgd", "client.momentum": 0.0,
                                          "algorithm.weighting": "uniform",
                                          "run.eval_every": max(1, spec["eval_gradients"] // c)},
                         workdir / f"minibatch-lr{lr:g}-seed{seed}"))
            keys.append((MINIBATCH, lr, seed, c))
    infos = simulate_all(runs, processes)
    d = durations(spec)
    theory = {ASYNC: float(d.mean()), MINIBATCH: expected_max_duration(d, c)}
    curves, timing = [], []
    for (algorithm, lr, seed, per_version), info, (_, _, out) in zip(keys, infos, runs):
        evals = pd.read_parquet(out / "evals.parquet")
        curves.append(evals[["version", "time", "test_acc", "test_loss"]].assign(
            algorithm=algorithm, lr=lr, seed=seed, gradients=evals.version * per_version))
        rate, se = update_rate(pd.read_parquet(out / "updates.parquet", columns=["version", "time"]),
                               spec["warmup"], spec["batches"])
        per_round = c / (rate * per_version)  # time for C gradients
        timing.append({"algorithm": algorithm, "lr": lr, "seed": seed, "status": info["status"],
                       "simulated": per_round, "se": per_round * se / rate, "theory": theory[algorithm],
                       "theory_iid": float(d.mean()) if algorithm == ASYNC
                       else expected_max_duration(d, c, replace=True)})
    curves = pd.concat(curves, ignore_index=True)[["algorithm", "lr", "seed", "version", "gradients", "time",
                                                    "test_acc", "test_loss"]]
    return curves, pd.DataFrame(timing)


def figure(curves: pd.DataFrame, timing: pd.DataFrame, spec: dict) -> plt.Figure:
    figures.style()
    c = spec["gradients_per_round"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    grid = np.linspace(0, spec["time"], GRID)
    parts = []
    for (algorithm, lr, seed), run in curves.groupby(["algorithm", "lr", "seed"], sort=False):
        parts.append(pd.DataFrame({"time": grid, "acc": 100 * value_at(run, grid), "run": f"{algorithm}, step {lr:g}",
                                   "algorithm": algorithm, "gradients": value_at(run, grid, "gradients"),
                                   "seed": seed}))
    data = pd.concat(parts, ignore_index=True)
    order = list(dict.fromkeys(data.run))
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    theory = timing.groupby("algorithm").theory.first()
    ax = axes[0]
    # The step size does not change the timing: one line per algorithm.
    timed = data[data.run == data.groupby("algorithm").run.transform("first")]
    sns.lineplot(data=timed, x="time", y="gradients", hue="algorithm", errorbar=None, ax=ax,
                 palette={a: palette[r] for a, r in zip(timed.algorithm, timed.run)})
    for algorithm, style in ((ASYNC, ":"), (MINIBATCH, "--")):
        ax.plot(grid, c * grid / theory[algorithm], color="0.3", ls=style, lw=1,
                label=f"theory: {c} gradients per {theory[algorithm]:.2f} s ({'mean' if algorithm == ASYNC else 'E[max]'})")
    ax.set(xlabel="virtual wall-clock time (s)", ylabel="gradients applied",
           title=f"throughput, C = {c} (mean of {len(spec['seeds'])} seeds)")
    ax.legend(fontsize=7)
    sns.lineplot(data=data, x="time", y="acc", hue="run", hue_order=order, palette=palette, errorbar=t_interval,
                 ax=axes[1])
    axes[1].set(xlabel="virtual wall-clock time (s)", ylabel="test accuracy (%)", ylim=(0, 100),
                title="accuracy over time")
    per_gradient = curves.assign(acc=100 * curves.test_acc,
                                 run=[f"{a}, step {lr:g}" for a, lr in zip(curves.algorithm, curves.lr)])
    sns.lineplot(data=per_gradient, x="gradients", y="acc", hue="run", hue_order=order, palette=palette,
                 errorbar=t_interval, ax=axes[2])
    axes[2].set(xlabel="gradients applied", ylabel="test accuracy (%)", ylim=(0, 100), title="accuracy over gradients")
    groups = ", ".join(f"{100 * g['fraction']:g}% at {g['duration']:g} s" for g in spec["groups"])
    for ax in axes[1:]:
        ax.legend(fontsize=7, title=f"mean of {len(spec['seeds'])} seeds, 95% t-interval", title_fontsize=7, loc="lower right")
    fig.suptitle(f"{spec['clients']} clients: {groups}", fontsize=10)
    return fig


def run(spec: dict, table_path: Path, timing_path: Path, figure_path: Path, workdir: Path,
        processes: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    curves, timing = tables(spec, Path(workdir), processes)
    write_parquet(curves, Path(table_path))
    write_parquet(timing, Path(timing_path))
    figures.save(figure(curves, timing, spec), Path(figure_path))
    return curves, timing


if __name__ == "__main__":
    log_to(snakemake.log[0])  # noqa: F821
    run(dict(snakemake.params.spec), snakemake.output.table, snakemake.output.timing,  # noqa: F821
        snakemake.output.png, snakemake.params.workdir, snakemake.threads)  # noqa: F821
