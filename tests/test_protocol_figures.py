"""The comparison protocol (afl.compare) in the figure kinds routing_gain, concurrency_budget,
minibatch and ablation, on small hand-made tables where the right choice differs from the wrong ones.

Each table gives the tuning seeds a best value that the evaluation seeds would not pick, so a
figure that tuned on the wrong seeds (or on all of them) shows other numbers; every expected number
is computed here with pandas and SciPy from the design, not with afl.compare. Checked: the tuned
values and the ``grid edge:`` lines (exactly when a best value is at an end of its grid), the
tuned gain and the paired differences with their Student-t intervals, and that no interval or band
is drawn from fewer seeds than the protocol allows (5; a gain 10 pairs).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from unittest import mock

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from afl import figures  # noqa: E402
from afl.figures.draw import main as draw_figure  # noqa: E402

STANDARD = ["algorithm.name", "algorithm.concurrency", "seed"]
CONSTANTS = {"A": 2.0, "L": 50.0, "sigma": 4.0, "zeta": 8.0, "eta": 0.002, "T": 100.0, "time_budget": 200.0}
MU = [1.0] * 3 + [0.2] * 3


def write_tables(folder: Path, tables: dict) -> dict:
    """Hand-made tables as the parquet files a figure job reads (empty ones where none is given)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for kind in ("runs", "evals", "updates", "clients", "sampling"):
        frame = tables.get(kind, pd.DataFrame({"cell": pd.Series(dtype=str)}))
        out[kind] = str(folder / f"{kind}.parquet")
        frame.to_parquet(out[kind])
    return out


def draw(spec: dict, keys: list[str], inputs: dict) -> tuple[plt.Figure, str]:
    """The figure ``afl.figures.draw.main`` draws (its save replaced by a catch) and its log."""
    caught, log = [], io.StringIO()
    with mock.patch.object(figures, "save", lambda fig, png: caught.append(fig)), contextlib.redirect_stderr(log):
        draw_figure("f", dict(spec), list(keys), inputs, "unused.png")
    return caught[0], log.getvalue()


def t_interval(values) -> tuple[float, float]:
    """``(mean, half-width)`` of the 95% Student-t interval, by hand."""
    x = np.asarray(values, dtype=float)
    return x.mean(), stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))


def interval_text(values) -> str:
    mean, half = t_interval(values)
    return f"{mean:.4g} [{mean - half:.4g}, {mean + half:.4g}] (95% t-interval, n = {len(values)})"


def edges(log: str) -> list[str]:
    return sorted(line for line in log.splitlines() if line.startswith("grid edge:"))


def bands(ax) -> list:
    """The filled confidence bands of ``ax`` (seaborn's fill_between) that have any area."""
    return [c for c in ax.collections if isinstance(c, matplotlib.collections.PolyCollection)
            and any(len(p.vertices) for p in c.get_paths())]


def error_bars(container) -> list[float]:
    """The vertical lengths of an errorbar container's bars (empty without bars)."""
    if not container.has_yerr:
        return []
    return [s[1][1] - s[0][1] for s in container.lines[2][0].get_segments()]


# ----------------------------------------------------------------------------- routing_gain

UNIFORM = json.dumps("uniform")
OPTIMIZED = json.dumps({"optimize": "update", "pilot": 20, "pilot_seed": 1000})
STEPS = (0.005, 0.01, 0.02)
# Accuracy (%) at the budget (80) per routing and step: on the tuning seeds 0, 1 and on the others.
ROUTING_TUNE = {"uniform": (50, 80, 60), "opt": (60, 70, 85)}  # best: uniform 0.01, opt 0.02 (its grid's largest)
ROUTING_EVAL = {"uniform": (55, 70, 78), "opt": (95, 65, 75)}  # here the best would be uniform 0.02, opt 0.005


def routing_acc(route: str, step: float, seed: int) -> float:
    design = ROUTING_TUNE if seed < 2 else ROUTING_EVAL
    noise = np.random.default_rng([seed, STEPS.index(step), route == "opt"]).normal(0, 1)
    return design[route][STEPS.index(step)] + 0.5 * seed + noise


def routing_tables(seeds: int = 12) -> dict:
    """Uniform and bound-optimal (per update) routing x three step sizes x ``seeds`` seeds, m = 2
    on 6 clients; evaluations every 20 time units, the one at 80 (the budget) reading
    ``routing_acc``."""
    runs, evals, clients = [], [], []
    for route, routing in (("uniform", UNIFORM), ("opt", OPTIMIZED)):
        for step in STEPS:
            for seed in range(seeds):
                cell = f"{route}_{step:g}_s{seed}"
                recorded = None if route == "uniform" else json.dumps(
                    {**CONSTANTS, "eta": step, "objective": "update", "bound": 0.8, "bound_uniform": 1.0})
                runs.append({"cell": cell, "status": "completed", "algorithm.name": "asyncsgd",
                             "algorithm.concurrency": 2, "seed": seed, "algorithm.server_lr": step,
                             "algorithm.routing": routing, "routing": recorded})
                for t in range(0, 101, 20):
                    acc = routing_acc(route, step, seed) if t == 80 else 10 + t / 2 + seed
                    evals.append({"cell": cell, "round": t, "version": 3 * t, "time": float(t), "test_acc": acc / 100})
                clients += [{"cell": cell, "client": i, "rate": r, "routing_p": 1 / 6} for i, r in enumerate(MU)]
    return {"runs": pd.DataFrame(runs), "evals": pd.DataFrame(evals), "clients": pd.DataFrame(clients)}


ROUTING_SPEC = {"kind": "routing_gain", "experiment": "r", "budget": 80, "panel": "algorithm.server_lr"}
ROUTING_KEYS = [*STANDARD, "algorithm.server_lr", "algorithm.routing"]
OPT = "bound-optimal per update"


def gains(chosen: dict, seeds) -> np.ndarray:
    """Per evaluation seed: the optimized routing at its step minus uniform at its step."""
    return np.array([routing_acc("opt", chosen["opt"], s) - routing_acc("uniform", chosen["uniform"], s) for s in seeds])


def test_routing_gain_compares_each_routing_at_its_own_step_tuned_on_the_tuning_seeds(tmp_path):
    """Tuned on seeds 0, 1: uniform keeps 0.01, the optimized routing 0.02 (its grid's largest: one
    ``grid edge:`` line); the tuned gain on seeds 2-11 is about 75 - 70 = +5, where tuning on the
    evaluation seeds or on every seed would give 95 - 78 = +17, and the per-step gains are +40, -5,
    -3. The main panels draw those two runs' mean over the evaluation seeds with a band;
    the per-step panel draws points with intervals (10 pairs), not joined."""
    figure, log = draw({**ROUTING_SPEC, "tuning_seeds": [0, 1]}, ROUTING_KEYS,
                       write_tables(tmp_path, routing_tables()))
    evaluation = range(2, 12)
    tuned = gains({"uniform": 0.01, "opt": 0.02}, evaluation)
    assert tuned.mean() == pytest.approx(5, abs=1.5)
    assert gains({"uniform": 0.02, "opt": 0.005}, evaluation).mean() == pytest.approx(17, abs=1.5)  # wrong seeds
    assert [gains({"uniform": s, "opt": s}, evaluation).mean() for s in STEPS] == pytest.approx([40, -5, -3], abs=1.5)
    assert (f"routing_gain: tuned: {OPT} (server_lr 0.02) vs uniform (server_lr 0.01): {interval_text(tuned)}"
            in log.splitlines())
    assert edges(log) == [f"grid edge: algorithm.server_lr = 0.02 (the largest of 0.005, 0.01, 0.02) for route={OPT} "
                          "(tuned on seeds 0, 1)"]
    over_time, over_updates, per_step, _ = figure.axes
    assert [t.get_text() for t in over_time.get_legend().get_texts()] == \
        ["uniform (server_lr 0.01)", f"{OPT} (server_lr 0.02)"]
    assert "10 evaluation seeds" in over_time.get_legend().get_title().get_text()
    for line, (route, step) in zip(over_time.lines[:2], (("uniform", 0.01), ("opt", 0.02))):
        assert line.get_ydata()[-1] == pytest.approx(np.mean([routing_acc(route, step, s) for s in evaluation]))
    assert len(bands(over_time)) == 2 and len(bands(over_updates)) == 2
    (points,) = per_step.containers
    assert points.lines[0].get_linestyle() == "None"  # points, not a line through the step sizes
    per = [gains({"uniform": s, "opt": s}, evaluation) for s in STEPS]
    assert list(points.lines[0].get_xdata()) == pytest.approx(STEPS)
    assert list(points.lines[0].get_ydata()) == pytest.approx([g.mean() for g in per])
    assert error_bars(points) == pytest.approx([2 * t_interval(g)[1] for g in per])
    assert "10 evaluation seeds shown" in " ".join(t.get_text() for t in figure.texts)
    plt.close(figure)


def test_routing_gain_draws_no_interval_from_too_few_seeds_and_says_where_it_chose(tmp_path):
    """Seeds 0-4 with 0, 1 for tuning: 3 evaluation seeds, so no band (5) and no gain interval (10);
    without ``tuning_seeds`` the steps are chosen on the seeds shown (on seeds 0-4 uniform keeps 0.01,
    mean 74, and opt 0.005, mean 81 against 79 at 0.02) and the log and the figure say so."""
    inputs = write_tables(tmp_path, routing_tables(seeds=5))
    figure, log = draw({**ROUTING_SPEC, "tuning_seeds": [0, 1]}, ROUTING_KEYS, inputs)
    tuned = gains({"uniform": 0.01, "opt": 0.02}, range(2, 5))
    assert (f"routing_gain: tuned: {OPT} (server_lr 0.02) vs uniform (server_lr 0.01): {tuned.mean():.4g} "
            "(n = 3: no interval below 10)") in log.splitlines()
    over_time, over_updates, per_step, _ = figure.axes
    assert bands(over_time) == [] and bands(over_updates) == []
    assert over_time.get_legend().get_title().get_text() == "mean of 3 evaluation seeds (no band below 5)"
    assert error_bars(per_step.containers[0]) == []
    assert "no interval below 10" in per_step.get_title()
    plt.close(figure)

    figure, log = draw(ROUTING_SPEC, ROUTING_KEYS, inputs)
    mean = {(r, s): np.mean([routing_acc(r, s, seed) for seed in range(5)]) for r in ("uniform", "opt") for s in STEPS}
    best = {r: max(STEPS, key=lambda s: mean[(r, s)]) for r in ("uniform", "opt")}
    assert best == {"uniform": 0.01, "opt": 0.005}  # the design
    assert f"routing_gain: tuned: {OPT} (server_lr 0.005) vs uniform (server_lr 0.01): " \
           f"{gains(best, range(5)).mean():.4g} (n = 5: no interval below 10)" in log.splitlines()
    assert "chosen on the seeds shown" in log and "chosen on the seeds shown" in figure.texts[0].get_text()
    assert edges(log) == [f"grid edge: algorithm.server_lr = 0.005 (the smallest of 0.005, 0.01, 0.02) for "
                          f"route={OPT} (chosen on the seeds shown)"]
    plt.close(figure)


# ----------------------------------------------------------------------------- concurrency_budget

LRS = (0.01, 0.1, 1.0)
CONCURRENCY_BASE = {"uniform": {1: 40, 2: 60, 4: 50, 6: 45}, "time": {1: 30, 2: 45, 4: 70, 6: 60}}
# Each (routing, m)'s best lr (+10 points) on the tuning seed 0 and on the others.
BEST_LR_TUNE = {("uniform", 1): 0.1, ("uniform", 2): 0.1, ("uniform", 4): 1.0, ("uniform", 6): 0.1,
                ("time", 1): 0.1, ("time", 2): 0.01, ("time", 4): 0.1, ("time", 6): 0.1}
BEST_LR_EVAL = {key: 0.01 if lr != 0.01 else 1.0 for key, lr in BEST_LR_TUNE.items()}
TIME = json.dumps({"optimize": "time", "pilot": 20, "pilot_seed": 1000})


def concurrency_acc(route: str, m: int, lr: float, seed: int) -> float:
    best = (BEST_LR_TUNE if seed == 0 else BEST_LR_EVAL)[(route, m)]
    noise = np.random.default_rng([seed, m, LRS.index(lr), route == "time"]).normal(0, 1)
    return CONCURRENCY_BASE[route][m] + (10 if lr == best else 0) + seed + noise


def concurrency_tables() -> dict:
    """Uniform and bound-optimal (per unit of time) routing x m in (1, 2, 4, 6) x three server_lr
    x seeds 0-5; the evaluation at 40 reads ``concurrency_acc``, the budget is 50."""
    runs, evals, clients = [], [], []
    for route, routing in (("uniform", UNIFORM), ("time", TIME)):
        for m in CONCURRENCY_BASE[route]:
            for lr in LRS:
                for seed in range(6):
                    cell = f"{route}_m{m}_lr{lr:g}_s{seed}"
                    recorded = None if route == "uniform" else json.dumps(
                        {**CONSTANTS, "objective": "time", "bound": 1.0, "bound_uniform": 1.0})
                    runs.append({"cell": cell, "status": "completed", "algorithm.name": "asyncsgd",
                                 "algorithm.concurrency": m, "seed": seed, "algorithm.server_lr": lr,
                                 "algorithm.routing": routing, "routing": recorded})
                    for t in (0.0, 40.0, 60.0):
                        acc = concurrency_acc(route, m, lr, seed) if t == 40 else 5.0
                        evals.append({"cell": cell, "round": int(t), "version": int(t), "time": t, "test_acc": acc / 100})
                    clients += [{"cell": cell, "client": i, "rate": r, "routing_p": 1 / 6} for i, r in enumerate(MU)]
    return {"runs": pd.DataFrame(runs), "evals": pd.DataFrame(evals), "clients": pd.DataFrame(clients)}


CONCURRENCY_SPEC = {"kind": "concurrency_budget", "experiment": "c", "budget": 50.0, "tune": "algorithm.server_lr",
                    "tuning_seeds": [0]}
CONCURRENCY_KEYS = [*STANDARD, "algorithm.server_lr", "algorithm.routing"]


def test_concurrency_tunes_each_point_on_the_tuning_seeds_and_labels_the_m_run(tmp_path):
    """Each (routing, m) at its lr of seed 0 (BEST_LR_TUNE; the other seeds prefer another lr), its
    mean over seeds 1-5 with the 5-seed t-interval; ticks at m = 1, 2, 4, 6. ``grid edge:`` lines
    for the lr at an end of (0.01, 0.1, 1): uniform m=4 (1.0), time m=2 (0.01); the measured best m
    (uniform 2, time 4) and the bound's (uniform 4, joint 2; tests/test_figures.py) are inside 1..6."""
    inputs = write_tables(tmp_path, concurrency_tables())
    figure, log = draw(CONCURRENCY_SPEC, CONCURRENCY_KEYS, inputs)
    ax = figure.axes[0]
    assert list(ax.get_xticks()) == [1, 2, 4, 6]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "6"]
    assert len(ax.xaxis.get_minorticklocs()) == 0
    assert "mean of 5 evaluation seeds, 95% t-interval" in ax.get_title()
    containers = {c.get_label(): c for c in ax.containers}
    for route, name in (("uniform", "uniform"), ("time", "bound-optimal per unit of time")):
        values = [[concurrency_acc(route, m, BEST_LR_TUNE[(route, m)], s) for s in range(1, 6)]
                  for m in CONCURRENCY_BASE[route]]
        assert list(containers[name].lines[0].get_ydata()) == pytest.approx([np.mean(v) for v in values])
        assert error_bars(containers[name]) == pytest.approx([2 * t_interval(v)[1] for v in values])
    assert edges(log) == [
        "grid edge: algorithm.server_lr = 0.01 (the smallest of 0.01, 0.1, 1.0) for route=bound-optimal per unit of "
        "time, algorithm.concurrency=2 (tuned on seeds 0)",
        "grid edge: algorithm.server_lr = 1.0 (the largest of 0.01, 0.1, 1.0) for route=uniform, "
        "algorithm.concurrency=4 (tuned on seeds 0)"]
    assert "measured best m bound-optimal per unit of time: 4, uniform: 2" in log
    plt.close(figure)


def test_concurrency_names_a_best_m_at_the_largest_m_run_and_draws_no_interval_below_5_seeds(tmp_path):
    """m in (1, 2, 4) and seeds 0-2: the optimized routing's measured best m (4) and the bound's
    best m for uniform routing (4 over 1..4) are the largest m run: ``grid edge:`` lines; 2
    evaluation seeds: no error bars."""
    inputs = write_tables(tmp_path, concurrency_tables())
    spec = {**CONCURRENCY_SPEC, "select": {"algorithm.concurrency": [1, 2, 4], "seed": [0, 1, 2]}}
    figure, log = draw(spec, CONCURRENCY_KEYS, inputs)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4"]
    assert all(error_bars(c) == [] for c in ax.containers)
    assert "mean of 2 evaluation seeds, no interval below 5" in ax.get_title()
    assert [line for line in edges(log) if "server_lr" not in line] == [
        "grid edge: algorithm.concurrency = 4 (the largest of 1, 2, 4) for route=bound-optimal per unit of time "
        "(measured best m, tuned on seeds 0)",
        "grid edge: bound's best m = 4 is the largest m run (uniform routing)"]
    plt.close(figure)


# ----------------------------------------------------------------------------- minibatch

STEP_KEY = {"asyncsgd": "algorithm.server_lr", "sfl": "client.lr"}
MB_STEPS = {"asyncsgd": (0.01, 0.02, 0.05), "sfl": (0.05, 0.1, 0.2)}
# Accuracy (%) at the end (100) per method and step: on the tuning seeds 0, 1 and on the others.
MB_TUNE = {"asyncsgd": (60, 80, 70), "sfl": (40, 60, 75)}  # best 0.02 (inside), 0.2 (the largest)
MB_EVAL = {"asyncsgd": (60, 65, 85), "sfl": (40, 80, 50)}  # here the best would be 0.05 and 0.1
NAMED = {"asyncsgd": "asynchronous SGD", "sfl": "mini-batch SGD"}


def minibatch_acc(name: str, step: float, seed: int) -> float:
    design = MB_TUNE if seed < 2 else MB_EVAL
    return design[name][MB_STEPS[name].index(step)] + seed + np.random.default_rng([seed, int(step * 1000)]).normal(0, 1)


def minibatch_tables() -> dict:
    """asyncsgd and sfl with C = 2 on 4 clients, three steps each, seeds 0-6; evaluations every 20
    time units to 100 (the end, reading ``minibatch_acc``); 40 server versions per run."""
    runs, updates, evals, clients = [], [], [], []
    for name, steps in MB_STEPS.items():
        for step in steps:
            for seed in range(7):
                cell = f"{name}_{step:g}_s{seed}"
                runs.append({"cell": cell, "status": "completed", "algorithm.name": name, "algorithm.concurrency": 2,
                             "seed": seed, STEP_KEY[name]: step, STEP_KEY["sfl" if name == "asyncsgd" else "asyncsgd"]: 0.5})
                for v in range(1, 41):
                    for k in range(2 if name == "sfl" else 1):
                        updates.append({"cell": cell, "round": v, "version": v, "time": 2.5 * v + 0.01 * k,
                                        "client": (v + k) % 4, "staleness": 0})
                for t in range(0, 101, 20):
                    acc = minibatch_acc(name, step, seed) if t == 100 else 10 + t / 4 + seed
                    evals.append({"cell": cell, "round": t, "version": t, "time": float(t), "test_acc": acc / 100})
                clients += [{"cell": cell, "client": i, "rate": r, "routing_p": 0.25} for i, r in enumerate([0.5, 0.5, 0.1, 0.1])]
    return {"runs": pd.DataFrame(runs), "updates": pd.DataFrame(updates), "evals": pd.DataFrame(evals),
            "clients": pd.DataFrame(clients)}


MB_SPEC = {"kind": "minibatch", "experiment": "mb", "warmup": 0.0, "batches": 4, "steps": STEP_KEY}


def test_minibatch_tunes_the_steps_on_the_tuning_seeds_and_shows_the_others(tmp_path):
    """Tuned on seeds 0, 1: asyncsgd 0.02, sfl 0.2 (its grid's largest: the one ``grid edge:``
    line); the accuracy panel draws seeds 2-6 at those steps with a band (5 seeds), the final
    accuracy's interval is logged, the step-grid panel draws the tuning seeds' means; the time axis
    carries ``time_unit``."""
    inputs = write_tables(tmp_path, minibatch_tables())
    figure, log = draw({**MB_SPEC, "tuning_seeds": [0, 1], "time_unit": "s"}, [*STANDARD, *STEP_KEY.values()], inputs)
    best = {"asyncsgd": 0.02, "sfl": 0.2}
    assert edges(log) == ["grid edge: step = 0.2 (the largest of 0.05, 0.1, 0.2) for method=mini-batch SGD "
                          "(tuned on seeds 0, 1)"]
    left, middle, right = figure.axes[:3]
    assert left.get_xlabel() == middle.get_xlabel() == "virtual wall-clock time (s)"
    assert [t.get_text() for t in middle.get_legend().get_texts()] == \
        ["asynchronous SGD (step 0.02)", "mini-batch SGD (step 0.2)"]
    assert "5 evaluation seeds" in middle.get_title() and len(bands(middle)) == 2
    for line, name in zip(middle.lines[:2], ("asyncsgd", "sfl")):
        finals = [minibatch_acc(name, best[name], s) for s in range(2, 7)]
        assert line.get_ydata()[-1] == pytest.approx(np.mean(finals))
        assert (f"minibatch: {NAMED[name]} (step {best[name]:g}): accuracy (%) at time 100, evaluation seeds: "
                f"{interval_text(finals)}") in log.splitlines()
    points = [ln for ln in right.lines if ln.get_marker() == "o"]
    for line, name in zip(points, ("asyncsgd", "sfl")):
        drawn = line.get_xydata()[np.isfinite(line.get_ydata())]  # a line per method over every step drawn
        np.testing.assert_allclose(drawn, [[s, np.mean([minibatch_acc(name, s, seed) for seed in (0, 1)])]
                                           for s in MB_STEPS[name]])
    assert "tuning seeds" in right.get_title() and "no interval below 5" in right.get_title()
    plt.close(figure)

    figure, log = draw(MB_SPEC, [*STANDARD, *STEP_KEY.values()], inputs)  # no tuning seeds: every seed
    assert figure.axes[1].get_xlabel() == "virtual time (task-duration units)"
    assert "7 evaluation seeds" in figure.axes[1].get_title()
    assert "chosen on the seeds shown" in figure.axes[1].get_legend().get_title().get_text()
    plt.close(figure)


# ----------------------------------------------------------------------------- ablation

BARS = ["algorithm.staleness.name", "client.lr_rule"]
# Each combination's effect (points) over constant, constant; the reference's level per panel.
EFFECT = {("constant", "constant"): 0, ("constant", "delay_aware"): 3, ("polynomial", "constant"): 8,
          ("polynomial", "delay_aware"): 20}
SETTINGS = {"uniform": {"timing.sigma": None, "client.lr_alpha": 0.01},
            "lognormal": {"timing.sigma": 1.5, "client.lr_alpha": 0.5}}


def ablation_tables(seeds: int = 6, lrs=(0.1,)) -> dict:
    """Two settings (timing.distribution, with sigma and lr_alpha following it) x four combinations
    of BARS x ``lrs`` x ``seeds`` seeds; rounds 0-8, the last quarter (rounds 6-8) at the run's
    final accuracy: 40 + EFFECT + a seed effect + noise (the lr 0.1 best on seed 0 but for one
    combination, 0.01 best on the others)."""
    runs, evals = [], []
    for dist, settings in SETTINGS.items():
        for (staleness, rule), effect in EFFECT.items():
            for lr in lrs:
                for seed in range(seeds):
                    cell = f"{dist}_{staleness}_{rule}_{lr:g}_s{seed}"
                    runs.append({"cell": cell, "status": "completed", "algorithm.name": "afl", "algorithm.concurrency": 2,
                                 "seed": seed, "timing.distribution": dist, **settings,
                                 "algorithm.staleness.name": staleness, "client.lr_rule": rule, "client.lr": lr})
                    rng = np.random.default_rng([seed, int(lr * 100), effect, dist == "uniform"])
                    best = (0.01 if (staleness, rule) == ("polynomial", "delay_aware") else 0.1) if seed == 0 else 0.01
                    final = 40 + effect + 2 * seed + rng.normal(0, 2) + (15 if lr == best and len(lrs) > 1 else 0)
                    for r in range(9):
                        evals.append({"cell": cell, "round": r, "version": r, "time": float(r),
                                      "test_acc": (final + (r - 7) * (r >= 6)) / 100 if r >= 6 else 0.1})
    return {"runs": pd.DataFrame(runs), "evals": pd.DataFrame(evals)}


def ablation_finals(tables: dict) -> pd.DataFrame:
    """Per run: its mean test accuracy (%) over rounds 6-8, with its panel and bar, by pandas."""
    evals = tables["evals"][tables["evals"]["round"] >= 6]
    final = evals.groupby("cell")["test_acc"].mean() * 100
    runs = tables["runs"].set_index("cell")
    return runs.assign(final=final, bar=runs[BARS].agg(", ".join, axis=1))


ABLATION_SPEC = {"kind": "ablation", "experiment": "a", "panel": "timing.distribution", "bars": BARS}
ABLATION_KEYS = [*STANDARD, "timing.distribution", "timing.sigma", "client.lr_alpha", *BARS, "client.lr"]


def check_differences(ax, finals: pd.DataFrame, reference: str) -> None:
    """In one panel: per bar but the reference (x = its index in sorted order), the paired
    differences to the reference by seed as dots, their mean and 95% t-interval."""
    base = finals[finals["bar"] == reference].set_index("seed")["final"]
    bars = sorted(set(finals["bar"]) - {reference})
    assert [t.get_text() for t in ax.get_xticklabels()] == [bar.replace(", ", "\n") for bar in bars]
    dots = [c for c in ax.collections if len(c.get_offsets()) and not isinstance(c, matplotlib.collections.LineCollection)]
    assert len(dots) == len(bars) == len(ax.containers)
    for x, (bar, points, container) in enumerate(zip(bars, dots, ax.containers)):
        diff = finals[finals["bar"] == bar].set_index("seed")["final"] - base
        assert sorted(points.get_offsets()[:, 1]) == pytest.approx(sorted(diff))
        assert np.abs(points.get_offsets()[:, 0] - x).max() < 0.2
        mean, half = t_interval(diff)
        assert list(container.lines[0].get_ydata()) == pytest.approx([mean])
        assert error_bars(container) == pytest.approx([2 * half])
    low, high = ax.get_ylim()
    assert low <= 0 <= high


def test_ablation_draws_paired_differences_to_the_reference(tmp_path):
    """Each panel: every combination minus ``constant, constant`` (the first in sorted order),
    paired by seed over 6 seeds, with intervals; the title names the setting and what changes with
    it (sigma, lr_alpha) and the reference's accuracy; an explicit ``reference`` is honoured."""
    tables = ablation_tables()
    inputs = write_tables(tmp_path, tables)
    finals = ablation_finals(tables)
    figure, log = draw(ABLATION_SPEC, ABLATION_KEYS, inputs)
    titles = {"lognormal": "lognormal (sigma 1.5, lr_alpha 0.5)", "uniform": "uniform (sigma default, lr_alpha 0.01)"}
    for ax, (dist, title) in zip(figure.axes, sorted(titles.items())):
        here = finals[finals["timing.distribution"] == dist]
        reference = here.loc[here["bar"] == "constant, constant", "final"]
        assert ax.get_title() == f"{title}\nreference constant, constant:\n{interval_text(reference)}"
        check_differences(ax, here, "constant, constant")
        diff = here[here["bar"] == "polynomial, delay_aware"].set_index("seed")["final"] \
            - here[here["bar"] == "constant, constant"].set_index("seed")["final"]
        assert f"ablation: {title}: polynomial, delay_aware minus constant, constant, paired by seed: " \
               f"{interval_text(diff)}" in log.splitlines()
    assert "6 evaluation seeds" in figure.texts[0].get_text()
    plt.close(figure)

    figure, _ = draw({**ABLATION_SPEC, "reference": ["polynomial", "delay_aware"]}, ABLATION_KEYS, inputs)
    for ax, dist in zip(figure.axes, ("lognormal", "uniform")):
        check_differences(ax, finals[finals["timing.distribution"] == dist], "polynomial, delay_aware")  # all < 0
    plt.close(figure)


def test_ablation_tunes_each_combination_on_the_tuning_seeds(tmp_path):
    """With ``tune`` (client.lr in 0.01, 0.1) and tuning seed 0: each combination keeps 0.1 but
    polynomial, delay_aware keeps 0.01 (both ends of the grid: a ``grid edge:`` line each); the
    differences are drawn from seeds 1-4 at those lr, without intervals (4 seeds)."""
    tables = ablation_tables(seeds=5, lrs=(0.01, 0.1))
    finals = ablation_finals(tables)
    figure, log = draw({**ABLATION_SPEC, "tune": "client.lr", "tuning_seeds": [0]}, ABLATION_KEYS,
                       write_tables(tmp_path, tables))
    chosen = {bar: 0.01 if bar == "polynomial, delay_aware" else 0.1 for bar in finals["bar"]}
    assert len(edges(log)) == 8 and sum("client.lr = 0.01 (the smallest" in line for line in edges(log)) == 2
    shown = finals[(finals["seed"] > 0) & (finals["client.lr"] == finals["bar"].map(chosen))]
    for ax, dist in zip(figure.axes, ("lognormal", "uniform")):
        here = shown[shown["timing.distribution"] == dist]
        base = here[here["bar"] == "constant, constant"].set_index("seed")["final"]
        dots = [c for c in ax.collections if len(c.get_offsets())]
        for bar, points in zip(sorted(set(here["bar"]) - {"constant, constant"}), dots):
            diff = here[here["bar"] == bar].set_index("seed")["final"] - base
            assert sorted(points.get_offsets()[:, 1]) == pytest.approx(sorted(diff))
        assert ax.containers == [] and "no interval below 5" in ax.get_title()
    assert "4 evaluation seeds" in figure.texts[0].get_text()
    plt.close(figure)


# ----------------------------------------------------------------------------- availability

ALWAYS, HALF, FIFTH = (json.dumps(a) for a in ({"kind": "always"}, {"kind": "markov", "mean_on": 10, "mean_off": 10},
                                                {"kind": "markov", "mean_on": 5, "mean_off": 20}))
SHARES = {ALWAYS: 1.0, HALF: 0.5, FIFTH: 0.2}
AV_STEPS = (0.02, 0.05, 0.1)
# Each (rule, share)'s best step (+10 points) on the tuning seed 0; the other seeds prefer the next one.
AV_BEST = {("sfl", 1.0): 0.05, ("sfl", 0.5): 0.05, ("sfl", 0.2): 0.02,
           ("asyncsgd", 1.0): 0.1, ("asyncsgd", 0.5): 0.05, ("asyncsgd", 0.2): 0.05}


def availability_acc(rule: str, share: float, step: float, seed: int) -> float:
    best = AV_BEST[(rule, share)]
    if seed > 0:
        best = AV_STEPS[(AV_STEPS.index(best) + 1) % 3]
    noise = np.random.default_rng([seed, AV_STEPS.index(step), rule == "sfl", int(10 * share)]).normal(0, 1)
    return 40 + 40 * share + (10 if step == best else 0) + seed + noise


def availability_wasted(rule: str, share: float, step: float, seed: int) -> float:
    """The wasted share (%) of a cell's busy time: its clients spent 100 each, 4 clients."""
    return 30 * (1 - share) + (5 if rule == "sfl" else 0) + 2 * seed + 10 * step


def availability_tables() -> dict:
    runs, evals, clients = [], [], []
    for rule, key in (("sfl", "client.lr"), ("asyncsgd", "algorithm.server_lr")):
        for avail, share in SHARES.items():
            for step in AV_STEPS:
                for seed in range(6):
                    cell = f"{rule}_{share}_{step}_s{seed}"
                    runs.append({"cell": cell, "status": "completed", "algorithm.name": rule, "algorithm.concurrency": 2,
                                 "seed": seed, key: step, "timing.availability": avail, "virtual_time": 60.0})
                    for t in (0.0, 40.0, 60.0):
                        acc = availability_acc(rule, share, step, seed) if t == 40 else 5.0
                        evals.append({"cell": cell, "round": int(t), "version": int(t), "time": t, "test_acc": acc / 100})
                    wasted = availability_wasted(rule, share, step, seed)
                    clients += [{"cell": cell, "client": i, "busy_time": 100.0, "wasted_time": wasted,
                                 "online_time": 60.0 * share} for i in range(4)]
    runs = pd.DataFrame(runs)
    return {"runs": runs, "evals": pd.DataFrame(evals), "clients": pd.DataFrame(clients)}


AVAILABILITY_SPEC = {"kind": "availability", "experiment": "a", "budget": 50.0, "tuning_seeds": [0],
                     "steps": {"sfl": "client.lr", "asyncsgd": "algorithm.server_lr"}}
AVAILABILITY_KEYS = [*STANDARD, "client.lr", "algorithm.server_lr", "timing.availability"]


def test_availability_tunes_each_rule_and_share_on_the_tuning_seeds(tmp_path):
    """Per rule and online share: the step seed 0 prefers (AV_BEST; the other seeds prefer the next
    step), shown on seeds 1-5 with the 5-seed t-interval, accuracy at the budget and the wasted
    share at the same runs; ``grid edge:`` lines for the chosen steps at an end of (0.02, 0.05, 0.1)."""
    inputs = write_tables(tmp_path, availability_tables())
    figure, log = draw(AVAILABILITY_SPEC, AVAILABILITY_KEYS, inputs)
    for ax, value in zip(figure.axes[:2], (availability_acc, availability_wasted)):
        assert list(ax.get_xticks()) == [0.2, 0.5, 1.0]
        containers = {c.get_label(): c for c in ax.containers}
        for rule in ("sfl", "asyncsgd"):
            values = [[value(rule, share, AV_BEST[(rule, share)], s) for s in range(1, 6)] for share in (0.2, 0.5, 1.0)]
            assert list(containers[rule].lines[0].get_ydata()) == pytest.approx([np.mean(v) for v in values])
            assert error_bars(containers[rule]) == pytest.approx([2 * t_interval(v)[1] for v in values])
    values = [availability_acc("sfl", 0.2, 0.02, s) for s in range(1, 6)]
    assert f"0.2: {interval_text(values)}" in log
    assert edges(log) == [
        "grid edge: algorithm.server_lr = 0.1 (the largest of 0.02, 0.05, 0.1) for algorithm.name=asyncsgd, share=1.0 "
        "(tuned on seeds 0)",
        "grid edge: client.lr = 0.02 (the smallest of 0.02, 0.05, 0.1) for algorithm.name=sfl, share=0.2 "
        "(tuned on seeds 0)"]
    assert "measured online share per nominal share (the cells shown): 0.2: 0.200, 0.5: 0.500, 1: 1.000" in log
    plt.close(figure)
