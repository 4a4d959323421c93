"""The ``minibatch`` kind (the third seed): asynchronous vs mini-batch SGD over wall-clock time
(Koloskova et al.'s example), each with its step tuned on a grid; its numbers from
``minibatch_table``.
"""

import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from afl.figures.common import TIME_POINTS, at_budget, cell_tables, network_of
from afl.queueing import measure
from afl.queueing.rounds import expected_max_duration


METHODS = {"asyncsgd": "asynchronous SGD", "sfl": "mini-batch SGD"}
ROUND_BATCHES = 10  # batch means of a few dozen synchronous rounds


def minibatch_table(tables: dict, runs: pd.DataFrame, steps: dict,
                    warmup: float, batches: int) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    """``(cells, best, timing)``. ``cells``: each completed cell with ``method``, ``step`` (the key
    ``steps[algorithm.name]``) and ``final``, its accuracy (%) at the end (the shortest run's last
    evaluation). ``best``: per method, the step of the highest mean ``final``. ``timing``: per method,
    the simulated time per C gradients (C = algorithm.concurrency; mean over cells, batch-means SE)
    beside the closed forms: the mean task duration (asynchronous) and ``E[max]`` of C distinct
    clients' durations (mini-batch, ``afl.queueing.rounds.expected_max_duration``)."""
    cells = runs[runs["status"] == "completed"].copy()
    cells["method"] = cells["algorithm.name"].map(METHODS)
    cells["step"] = [r[steps[r["algorithm.name"]]] for _, r in cells.iterrows()]
    evals = tables["evals"][tables["evals"]["cell"].isin(cells["cell"])]
    end = float(evals.groupby("cell")["time"].max().min())
    cells["final"] = cells["cell"].map(at_budget(tables, cells, end))
    best = cells.groupby(["method", "step"])["final"].mean().groupby(level=0).idxmax().map(lambda key: key[1])
    c = int(cells["algorithm.concurrency"].iloc[0])
    durations = 1.0 / network_of(cell_tables(tables, cells["cell"].iloc[0])[2])[0]
    theory = {METHODS["asyncsgd"]: float(durations.mean()), METHODS["sfl"]: expected_max_duration(durations, c)}
    rows = []
    for r in cells.itertuples(index=False):
        updates = cell_tables(tables, r.cell)[0]
        rate, se = measure.update_rate(updates, warmup, batches)  # server versions per unit time
        per_version = len(updates) / updates["version"].nunique()  # gradients per version: 1 or C
        per_c = c / (rate * per_version)
        rows.append({"method": r.method, "simulated": per_c, "se": per_c * se / rate})
    timing = pd.DataFrame(rows).groupby("method").agg(simulated=("simulated", "mean"), se=("se", "mean"))
    timing["theory"] = timing.index.map(theory)
    return cells.assign(end=end), best, timing


def minibatch(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Asynchronous vs mini-batch SGD over wall-clock time (Koloskova et al.'s example), each with its
    step tuned on a grid (``steps``: the step key of each algorithm.name). Panels: gradients applied
    over time against the closed forms; accuracy over time at each method's best step; the final
    accuracy against the step (the tuning)."""
    cells, best, timing = minibatch_table(tables, runs, spec["steps"], spec.get("warmup", measure.WARMUP),
                                          spec.get("batches", ROUND_BATCHES))
    end, c = float(cells["end"].iloc[0]), int(cells["algorithm.concurrency"].iloc[0])
    colours = dict(zip(METHODS.values(), sns.color_palette("colorblind", len(METHODS))))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    grid = np.linspace(0, end, TIME_POINTS)
    counts, curves = [], []
    for r in cells.itertuples(index=False):
        updates, evals, _ = cell_tables(tables, r.cell)
        counts.append(pd.DataFrame({"time": grid, "method": r.method,
                                    "gradients": np.searchsorted(np.sort(updates["time"].to_numpy()), grid, "right")}))
        if r.step == best[r.method]:
            curves.append(pd.DataFrame({"time": grid, "acc": 100 * measure.value_at(evals, grid),
                                        "method": r.method}))
    sns.lineplot(data=pd.concat(counts), x="time", y="gradients", hue="method", palette=colours, errorbar=None,
                 ax=axes[0])
    for method, style in ((METHODS["asyncsgd"], ":"), (METHODS["sfl"], "--")):
        if method in timing.index:
            duration = timing.at[method, "theory"]
            axes[0].plot(grid, c * grid / duration, color="0.3", ls=style, lw=1,
                         label=f"theory: {c} per {duration:.2f} ({'mean' if style == ':' else 'E[max]'})")
    axes[0].set(xlabel="virtual wall-clock time", ylabel="gradients applied", title=f"throughput, C = {c}")
    axes[0].legend(fontsize=7)
    sns.lineplot(data=pd.concat(curves), x="time", y="acc", hue="method", palette=colours,
                 errorbar=measure.t_interval, ax=axes[1])
    axes[1].set(xlabel="virtual wall-clock time", ylabel="test accuracy (%)", ylim=(0, 100),
                title=f"accuracy over time at each method's best step ({cells['seed'].nunique()} seeds)")
    axes[1].legend(fontsize=7, loc="lower right", title="best step: " + ", ".join(
        f"{m.split()[0]} {s:g}" for m, s in best.items()), title_fontsize=7)
    sns.pointplot(data=cells, x="step", y="final", hue="method", palette=colours, errorbar=measure.t_interval,
                  native_scale=True, log_scale=(True, False), capsize=0.1, ax=axes[2])
    axes[2].set(xlabel="step size (asynchronous: algorithm.server_lr; mini-batch: client.lr)", ylim=(0, 100),
                ylabel=f"test accuracy at time {end:g} (%)", title="each method's step-size grid (95% t-interval)")
    print(f"minibatch: time per {c} gradients (simulated, theory):\n{timing.to_string()}\nbest steps: "
          + ", ".join(f"{m} {s:g}" for m, s in best.items()), file=sys.stderr)
    return fig
