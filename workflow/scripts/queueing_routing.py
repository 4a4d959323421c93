"""Test accuracy over virtual wall-clock time under uniform and optimised routing (figure 3).

AsyncSGD trains on non-IID MNIST (the spec's ``config``: clients in speed groups, exponential
task times) under uniform routing and under the routings that minimise the working bound
``B(p)`` of Alahyane et al. 2025 per server update (``afl.queueing.routing.optimize_routing``,
objective ``update``) and per unit of wall-clock time (objective ``time``,
``T = lambda(p) * budget``). Each entry of ``constants`` is one set of the bound's constants --
given (``A, L, sigma, zeta, eta``) or estimated by a pilot run (``pilot: N`` updates,
``afl.queueing.pilot``, with ``eta`` the run's server step) -- and gives its own pair of
optimised routings, computed once for the first seed's client rates and pilot (the rates of the
``constant``, ``groups`` and ``trace`` kinds do not depend on the seed). Every routing runs
with every seed up to the virtual time ``time``.

Tables: ``routing.parquet``, every evaluation of every run (tidy: constants, routing, seed,
version, time, test accuracy and loss); ``routing_summary.parquet``, per run: the routing ``p``,
its predicted throughput, the updates done and the test accuracy at the time ``budget``, and
the gain over uniform routing with the same seed (same data split and initial model).
Figure: accuracy over time per constants set (mean over seeds, 95% confidence band), and the
accuracy at the budget per routing.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from afl import figures
from afl.config import apply_overrides, load_config
from afl.cluster.pipeline import log_to
from afl.queueing.measure import one_torch_thread, simulate_all, t_interval, value_at
from afl.queueing.model import network
from afl.queueing.pilot import resolve_constants
from afl.queueing.network import throughput
from afl.queueing.routing import optimize_routing
from afl.atomic import write_parquet

OBJECTIVES = {"update": "per-update optimal", "time": "wall-clock optimal"}
UNIFORM = "uniform"
GRID = 200
BOUND_KEYS = ("A", "L", "sigma", "zeta", "eta")


def routings(spec: dict) -> list[dict]:
    """Uniform routing and, per constants set and objective, the bound's optimum."""
    cfg = load_config(spec["config"], [f"seed={spec['seeds'][0]}", f"run.time={spec['budget']}", "run.updates=null",
                                       "run.rounds=null"])
    mu, _, m = network(cfg)
    n = len(mu)
    uniform = np.full(n, 1.0 / n)
    out = [{"constants": UNIFORM, "routing": UNIFORM, "p": uniform, "throughput": throughput(mu, uniform, m).item(),
            "bound": np.nan, "bound_uniform": np.nan}]
    for entry in spec["constants"]:
        given = {k: entry[k] for k in BOUND_KEYS if k in entry}
        with one_torch_thread():
            constants, _ = resolve_constants(cfg, given, entry.get("pilot"))
        about = ", ".join(f"{k}={getattr(constants, k):.3g}" for k in BOUND_KEYS)
        for objective, label in OBJECTIVES.items():
            res = optimize_routing(mu, m, constants, objective, p_min=spec.get("p_min"))
            out.append({"constants": entry["name"], "routing": label, "p": res.p, "throughput": res.throughput,
                        "bound": res.bound, "bound_uniform": res.bound_uniform, "about": about})
    return out


def run_name(r: dict, seed: int) -> str:
    return f"{r['constants']}-{r['routing'].replace(' ', '-')}-seed{seed}"


def tables(spec: dict, workdir: Path, processes: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    chosen = routings(spec)
    raw = apply_overrides(spec["config"], [f"run.time={spec['time']}", "run.updates=null", "run.rounds=null"])
    runs, keys = [], []
    for r in chosen:
        for seed in spec["seeds"]:
            runs.append((raw, {"seed": seed, "algorithm.routing": [float(v) for v in r["p"]]},
                         workdir / run_name(r, seed)))
            keys.append((r, seed))
    infos = simulate_all(runs, processes)
    curves, summary = [], []
    for (r, seed), info, (_, _, out) in zip(keys, infos, runs):
        evals = pd.read_parquet(out / "evals.parquet")
        versions = pd.read_parquet(out / "updates.parquet", columns=["version", "time"])
        curves.append(evals[["version", "time", "test_acc", "test_loss"]].assign(
            constants=r["constants"], routing=r["routing"], seed=seed))
        summary.append({"constants": r["constants"], "routing": r["routing"], "seed": seed, "status": info["status"],
                        "p": [float(v) for v in r["p"]], "p_min": float(r["p"].min()), "p_max": float(r["p"].max()),
                        "predicted_throughput": r["throughput"], "bound": r["bound"],
                        "bound_uniform": r["bound_uniform"], "constants_values": r.get("about", ""),
                        "budget": spec["budget"],
                        "updates_at_budget": int((versions.time <= spec["budget"]).sum()),
                        "acc_at_budget": float(value_at(evals, [spec["budget"]])[0])})
    curves = pd.concat(curves, ignore_index=True)[["constants", "routing", "seed", "version", "time", "test_acc",
                                                    "test_loss"]]
    summary = pd.DataFrame(summary)
    baseline = summary[summary.routing == UNIFORM].set_index("seed").acc_at_budget
    summary["gain"] = np.where(summary.routing == UNIFORM, np.nan,
                               summary.acc_at_budget - summary.seed.map(baseline))
    return curves, summary


def gains(summary: pd.DataFrame) -> pd.DataFrame:
    """Per optimised routing: mean accuracy at the budget, and the gain over uniform routing.

    ``gain``: the mean over seeds of the paired difference in accuracy (percentage points as a
    fraction), with a 95% Student-t interval; ``relative``: mean accuracy over uniform's, minus 1.
    """
    uniform = summary[summary.routing == UNIFORM].acc_at_budget.mean()
    rows = {}
    for key, d in summary[summary.routing != UNIFORM].groupby(["constants", "routing"]):
        low, high = t_interval(d.gain)
        rows[key] = {"seeds": len(d), "acc": d.acc_at_budget.mean(), "acc_uniform": uniform, "gain": d.gain.mean(),
                     "gain_low": low, "gain_high": high, "relative": d.acc_at_budget.mean() / uniform - 1}
    return pd.DataFrame.from_dict(rows, orient="index")


def label(row) -> str:
    return f"{row.routing}: lambda = {row.predicted_throughput:.2f}, p in [{row.p_min:.3f}, {row.p_max:.3f}]"


def figure(curves: pd.DataFrame, summary: pd.DataFrame, spec: dict) -> plt.Figure:
    figures.style()
    sets = [c["name"] for c in spec["constants"]]
    fig, axes = plt.subplots(1, len(sets) + 1, figsize=(5.0 * (len(sets) + 1), 4.4))
    grid = np.linspace(0, spec["time"], GRID)
    runs = summary.drop_duplicates(["constants", "routing"])
    labels = {(r.constants, r.routing): label(r) for r in runs.itertuples()}
    about = dict(zip(runs.constants, runs.constants_values))
    palette = dict(zip([UNIFORM, *OBJECTIVES.values()], sns.color_palette("colorblind", 3)))
    for ax, name in zip(axes, sets):
        parts = [pd.DataFrame({"time": grid, "acc": 100 * value_at(run, grid), "seed": seed,
                               "routing": labels[(constants, routing)], "kind": routing})
                 for (constants, routing, seed), run in curves.groupby(["constants", "routing", "seed"], sort=False)
                 if constants in (name, UNIFORM)]
        data = pd.concat(parts, ignore_index=True)
        kinds = data.drop_duplicates("routing")
        sns.lineplot(data=data, x="time", y="acc", hue="routing", hue_order=list(kinds.routing),
                     palette=[palette[k] for k in kinds.kind], errorbar=t_interval, ax=ax)
        ax.axvline(spec["budget"], color="0.4", ls="--", lw=1)
        ax.set(xlabel="virtual wall-clock time (time units)", ylabel="test accuracy (%)", ylim=(0, 100))
        ax.set_title(f"bound constants: {name}\n({about[name]})", fontsize=9)
        ax.legend(fontsize=7, title=f"routing (mean of {len(spec['seeds'])} seeds, 95% t-interval; dashed: budget)", title_fontsize=7,
                  loc="lower right")
    s = summary.assign(acc=100 * summary.acc_at_budget,
                       which=[UNIFORM if r == UNIFORM else f"{c}: {r}" for c, r in zip(summary.constants, summary.routing)])
    ax = axes[-1]
    sns.pointplot(data=s, x="which", y="acc", errorbar=t_interval, linestyle="none", color="0.2",
                  capsize=0.2, ax=ax)
    sns.stripplot(data=s, x="which", y="acc", color="C1", size=4, alpha=0.7, ax=ax)
    ax.set(xlabel="", ylabel=f"test accuracy at time {spec['budget']:g} (%)",
           title="accuracy at the budget (mean, 95% t-interval; dots: seeds)")
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    return fig


def run(spec: dict, table_path: Path, summary_path: Path, figure_path: Path, workdir: Path,
        processes: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    curves, summary = tables(spec, Path(workdir), processes)
    write_parquet(curves, Path(table_path))
    write_parquet(summary, Path(summary_path))
    print(f"accuracy at time {spec['budget']:g}, optimised vs uniform routing:\n{gains(summary).to_string()}")
    figures.save(figure(curves, summary, spec), Path(figure_path))
    return curves, summary


if __name__ == "__main__":
    log_to(snakemake.log[0])  # noqa: F821
    run(dict(snakemake.params.spec), snakemake.output.table, snakemake.output.summary,  # noqa: F821
        snakemake.output.png, snakemake.params.workdir, snakemake.threads)  # noqa: F821
