"""Constant vs delay-adaptive step size of AsyncSGD under heavy-tailed delays (figure 4).

AsyncSGD trains on non-IID MNIST (the spec's ``config``: task times lognormal, so a few tasks
take many times the mean and return with a staleness far above the concurrency ``m``) with
each server step size ``eta`` of ``server_lr`` and each step rule: ``constant`` (``eta``) and
Koloskova, Stich & Jaggi's delay-adaptive rule (``eta`` if ``tau <= tau_C``, else
``eta tau_C / tau``; ``tau_C`` defaults to ``m``; ``afl.rules.lr.delay_adaptive``), for every seed.

Tables: ``stepsize.parquet``, every evaluation of every run (rule, eta, seed, status, version,
virtual time, test accuracy and loss); ``stepsize_staleness.parquet``, the distribution of the
staleness of the applied updates per seed (the same for every rule and ``eta``: task times do
not depend on the learning). Figure: accuracy over virtual time per ``eta`` (mean over seeds,
95% confidence band), the accuracy where the runs settle (``late_accuracy``) against ``eta``,
and the complementary CDF of the staleness.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from afl import figures
from afl.cluster.pipeline import log_to
from afl.queueing.measure import simulate_all, t_interval, value_at
from afl.atomic import write_parquet

RULES = {"constant": "constant step eta", "delay_adaptive": "delay-adaptive step (tau_C = {tau_c})"}
GRID = 200
LATE = 0.25  # the late phase: the last quarter of a run's updates


def tables(spec: dict, workdir: Path, processes: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs, keys = [], []
    for rule in spec["rules"]:
        for eta in spec["server_lr"]:
            for seed in spec["seeds"]:
                runs.append((spec["config"], {"seed": seed, "algorithm.name": "asyncsgd", "algorithm.server_lr": eta,
                                              "algorithm.step_rule": rule},
                             workdir / f"{rule}-eta{eta:g}-seed{seed}"))
                keys.append((rule, eta, seed))
    infos = simulate_all(runs, processes)
    curves, staleness = [], []
    for (rule, eta, seed), info, (_, _, out) in zip(keys, infos, runs):
        evals = pd.read_parquet(out / "evals.parquet")
        curves.append(evals[["version", "time", "test_acc", "test_loss"]].assign(
            rule=rule, server_lr=eta, seed=seed, status=info["status"],
            concurrency=info["config"]["algorithm"]["concurrency"], tau_c=info["config"]["algorithm"]["tau_c"]))
        if rule == spec["rules"][0] and eta == spec["server_lr"][0]:
            counts = pd.read_parquet(out / "updates.parquet", columns=["staleness"]).staleness.value_counts()
            staleness.append(pd.DataFrame({"seed": seed, "staleness": counts.index, "count": counts.to_numpy()}))
    columns = ["rule", "server_lr", "seed", "status", "concurrency", "tau_c", "version", "time", "test_acc",
               "test_loss"]
    return (pd.concat(curves, ignore_index=True)[columns],
            pd.concat(staleness, ignore_index=True).sort_values(["seed", "staleness"], ignore_index=True))


def late_accuracy(curves: pd.DataFrame, fraction: float = LATE) -> pd.DataFrame:
    """Per run: the mean test accuracy over its last ``fraction`` of server updates.

    The accuracy of AsyncSGD's last iterate oscillates from one evaluation to the next on
    non-IID data; averaging the late evaluations measures where a run has settled.
    """
    last = curves.groupby(["rule", "server_lr", "seed"]).version.transform("max")
    late = curves[curves.version >= (1 - fraction) * last]
    return late.groupby(["rule", "server_lr", "seed"], as_index=False).agg(
        late_acc=("test_acc", "mean"), status=("status", "first"))


def figure(curves: pd.DataFrame, staleness: pd.DataFrame, spec: dict) -> plt.Figure:
    figures.style()
    etas = spec["server_lr"]
    cols = max(len(etas), 2)
    fig, axes = plt.subplots(2, cols, figsize=(4.6 * cols, 8.0), squeeze=False)
    grid = np.linspace(0, curves.time.max(), GRID)
    tau_c, m = int(curves.tau_c.iloc[0]), int(curves.concurrency.iloc[0])
    names = {rule: RULES[rule].format(tau_c=tau_c) for rule in spec["rules"]}
    palette = dict(zip(names.values(), sns.color_palette("colorblind", len(names))))
    runs = curves.drop_duplicates(["rule", "server_lr", "seed"])
    diverged = (runs.status == "diverged").groupby([runs.rule, runs.server_lr]).sum()
    for ax, eta in zip(axes[0], etas):
        parts = [pd.DataFrame({"time": grid, "acc": 100 * value_at(run, grid), "seed": seed, "kind": names[rule],
                               "rule": names[rule] + (f", {diverged[(rule, eta)]} diverged" if diverged[(rule, eta)]
                                                      else "")})
                 for (rule, seed), run in curves[curves.server_lr == eta].groupby(["rule", "seed"], sort=False)]
        data = pd.concat(parts, ignore_index=True)
        kinds = data.drop_duplicates("rule")
        sns.lineplot(data=data, x="time", y="acc", hue="rule", hue_order=list(kinds.rule),
                     palette=[palette[k] for k in kinds.kind], errorbar=t_interval, ax=ax)
        ax.set(xlabel="virtual wall-clock time (mean task durations)", ylabel="test accuracy (%)", ylim=(0, 100),
               title=f"AsyncSGD, eta = {eta:g}, m = {m}")
        ax.legend(fontsize=7, title=f"step rule (mean of {len(spec['seeds'])} seeds, 95% t-interval)", title_fontsize=7,
                  loc="lower right")
    for ax in axes[0][len(etas):]:
        ax.set_visible(False)
    late = late_accuracy(curves).assign(rule=lambda d: d.rule.map(names), acc=lambda d: 100 * d.late_acc)
    ax = axes[1][0]
    sns.pointplot(data=late, x="server_lr", y="acc", hue="rule", hue_order=list(names.values()), palette=palette,
                  errorbar=t_interval, dodge=0.3, capsize=0.1, ax=ax)
    sns.stripplot(data=late, x="server_lr", y="acc", hue="rule", hue_order=list(names.values()), palette=palette,
                  dodge=True, size=3, alpha=0.5, legend=False, ax=ax)
    ax.set(xlabel="server step size eta", ylabel=f"mean test accuracy, last {100 * LATE:g}% of updates (%)",
           ylim=(0, 100), title="where the runs settle (mean, 95% t-interval; dots: seeds)")
    ax.legend(fontsize=7, loc="lower left")
    ax = axes[1][1]
    for seed, d in staleness.groupby("seed"):
        tail = 1.0 - np.cumsum(d["count"].to_numpy()) / d["count"].sum()
        shown = tail > 0
        ax.step(d.staleness.to_numpy()[shown], tail[shown], where="post", lw=1, label=f"seed {seed}")
    ax.axvline(tau_c, color="0.3", ls="--", lw=1, label=f"tau_C = {tau_c}")
    ax.set(xscale="log", yscale="log", xlabel="staleness tau (server updates)", ylabel="P(staleness > tau)",
           title=f"staleness of the applied updates (lognormal task times, sigma = "
                 f"{spec['config']['timing'].get('sigma', 1.0):g})")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    for ax in axes[1][2:]:
        ax.set_visible(False)
    return fig


def run(spec: dict, table_path: Path, staleness_path: Path, figure_path: Path, workdir: Path,
        processes: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    curves, staleness = tables(spec, Path(workdir), processes)
    write_parquet(curves, Path(table_path))
    write_parquet(staleness, Path(staleness_path))
    figures.save(figure(curves, staleness, spec), Path(figure_path))
    return curves, staleness


if __name__ == "__main__":
    log_to(snakemake.log[0])  # noqa: F821
    run(dict(snakemake.params.spec), snakemake.output.table, snakemake.output.staleness,  # noqa: F821
        snakemake.output.png, snakemake.params.workdir, snakemake.threads)  # noqa: F821
