"""The ``minibatch`` kind (the third seed): asynchronous vs mini-batch SGD over wall-clock time
(Koloskova et al.'s example), each with its step tuned on a grid by the comparison protocol
(``afl.compare``); its numbers from ``minibatch_table``.
"""

import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from afl import compare
from afl.figures.common import TIME_POINTS, at_budget, cell_tables, network_of
from afl.queueing import measure
from afl.queueing.rounds import expected_max_duration


METHODS = {"asyncsgd": "asynchronous SGD", "sfl": "mini-batch SGD"}
ROUND_BATCHES = 10  # batch means of a few dozen synchronous rounds


def minibatch_table(tables: dict, runs: pd.DataFrame, steps: dict, warmup: float, batches: int,
                    tuning_seeds=None) -> tuple[pd.DataFrame, list, pd.DataFrame]:
    """``(cells, choices, timing)``. ``cells``: each completed cell with ``method``, ``step`` (the
    key ``steps[algorithm.name]``), ``final``, its accuracy (%) at the end (the shortest run's last
    evaluation), ``shown`` (an evaluation seed: not one of ``tuning_seeds``; every seed without
    them) and ``compared`` (shown and at its method's chosen step). ``choices``: per method, the
    step of the highest mean ``final`` on the tuning seeds (every seed without them),
    ``afl.compare.tune``. ``timing``: per method, the simulated time per C gradients (C =
    algorithm.concurrency; mean over cells, batch-means SE) beside the closed forms: the mean task
    duration (asynchronous) and ``E[max]`` of C distinct clients' durations (mini-batch,
    ``afl.queueing.rounds.expected_max_duration``)."""
    cells = runs[runs["status"] == "completed"].copy()
    cells["method"] = cells["algorithm.name"].map(METHODS)
    cells["step"] = [r[steps[r["algorithm.name"]]] for _, r in cells.iterrows()]
    evals = tables["evals"][tables["evals"]["cell"].isin(cells["cell"])]
    end = float(evals.groupby("cell")["time"].max().min())
    cells["final"] = cells["cell"].map(at_budget(tables, cells, end))
    tuning = list(tuning_seeds or [])
    shown = sorted(set(cells["seed"]) - set(tuning))
    choices = compare.tune(cells, ["method"], ["step"], "final", tuning or shown, lower=False)
    compared = compare.evaluate(cells, choices, shown, tuning)
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
    return cells.assign(end=end, shown=cells["seed"].isin(shown), compared=cells["cell"].isin(compared["cell"])), \
        choices, timing


def minibatch(spec: dict, tables: dict, runs: pd.DataFrame, label_of, order, palette) -> plt.Figure:
    """Asynchronous vs mini-batch SGD over wall-clock time (Koloskova et al.'s example), each at
    its best step of a grid (``steps``: the step key of each algorithm.name), chosen on
    ``tuning_seeds`` and shown on the other seeds (``afl.compare``; without ``tuning_seeds`` chosen
    on the seeds shown, and the figure says so). Panels: gradients applied over time (every run)
    against the closed forms; accuracy over time at each method's chosen step, evaluation seeds
    (95% t-band from ``afl.compare.MIN_SEEDS`` seeds; the final accuracy's interval is printed);
    the final accuracy against the step on the seeds the choice was made on (the tuning). Time in
    ``time_unit`` when given. A chosen step at an end of its grid is printed as a ``grid edge:`` line."""
    tuning = spec.get("tuning_seeds")
    cells, choices, timing = minibatch_table(tables, runs, spec["steps"], spec.get("warmup", measure.WARMUP),
                                             spec.get("batches", ROUND_BATCHES), tuning)
    end, c = float(cells["end"].iloc[0]), int(cells["algorithm.concurrency"].iloc[0])
    how = f"tuned on seeds {', '.join(map(str, tuning))}" if tuning else "chosen on the seeds shown"
    best = {ch.method["method"]: ch.values["step"] for ch in choices}
    time_label = f"virtual wall-clock time ({spec['time_unit']})" if spec.get("time_unit") else \
        "virtual time (task-duration units)"
    colours = dict(zip(METHODS.values(), sns.color_palette("colorblind", len(METHODS))))
    named = {m: f"{m} (step {s:g})" for m, s in best.items()}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    grid = np.linspace(0, end, TIME_POINTS)
    counts, curves = [], []
    for r in cells.itertuples(index=False):
        updates, evals, _ = cell_tables(tables, r.cell)
        counts.append(pd.DataFrame({"time": grid, "method": r.method,
                                    "gradients": np.searchsorted(np.sort(updates["time"].to_numpy()), grid, "right")}))
        if r.compared:
            curves.append(pd.DataFrame({"time": grid, "acc": 100 * measure.value_at(evals, grid),
                                        "method": named[r.method]}))
    sns.lineplot(data=pd.concat(counts), x="time", y="gradients", hue="method", palette=colours, errorbar=None,
                 ax=axes[0])
    for method, style in ((METHODS["asyncsgd"], ":"), (METHODS["sfl"], "--")):
        if method in timing.index:
            duration = timing.at[method, "theory"]
            axes[0].plot(grid, c * grid / duration, color="0.3", ls=style, lw=1,
                         label=f"theory: {c} per {duration:.2f} ({'mean' if style == ':' else 'E[max]'})")
    axes[0].set(xlabel=time_label, ylabel="gradients applied", title=f"throughput, C = {c} (all {len(cells)} runs)")
    axes[0].legend(fontsize=7)
    compared = cells[cells["compared"]]
    seeds = int(compared.groupby("method")["seed"].nunique().min())
    band = measure.t_interval if seeds >= compare.MIN_SEEDS else None
    sns.lineplot(data=pd.concat(curves), x="time", y="acc", hue="method", hue_order=list(named.values()),
                 palette={named[m]: colours[m] for m in named}, errorbar=band, ax=axes[1])
    axes[1].set(xlabel=time_label, ylabel="test accuracy (%)", ylim=(0, 100),
                title=f"accuracy over time at each method's chosen step\n({seeds} evaluation seeds, "
                      + ("95% t-band)" if band else f"no band below {compare.MIN_SEEDS})"))
    axes[1].legend(fontsize=7, loc="lower right", title=how, title_fontsize=7)
    tuned_on = cells[~cells["shown"]] if tuning else cells
    fewest = int(tuned_on.groupby(["method", "step"])["seed"].nunique().min())
    sns.pointplot(data=tuned_on, x="step", y="final", hue="method", palette=colours,
                  errorbar=measure.t_interval if fewest >= compare.MIN_SEEDS else None,
                  native_scale=True, log_scale=(True, False), capsize=0.1, ax=axes[2])
    axes[2].set(xlabel="step size (asynchronous: algorithm.server_lr; mini-batch: client.lr)", ylim=(0, 100),
                ylabel=f"test accuracy at time {end:g} (%)",
                title=f"each method's step-size grid: {'tuning seeds' if tuning else 'every seed'}\n"
                      f"({tuned_on['seed'].nunique()} seeds, " + ("95% t-interval)" if fewest >= compare.MIN_SEEDS
                                                                   else f"no interval below {compare.MIN_SEEDS})"))
    lines = compare.edge_lines(choices, how)
    for method, rows in compared.groupby("method"):
        try:
            final = str(compare.interval(rows["final"]))
        except compare.TooFewSeeds:
            final = f"{rows['final'].mean():.4g} (n = {len(rows)}: no interval below {compare.MIN_SEEDS})"
        lines.append(f"minibatch: {named[method]}: accuracy (%) at time {end:g}, evaluation seeds: {final}")
    print("\n".join(lines) + f"\nminibatch: time per {c} gradients (simulated, theory):\n{timing.to_string()}\n"
          "best steps: " + ", ".join(f"{m} {s:g}" for m, s in best.items()) + f" ({how})", file=sys.stderr)
    return fig
