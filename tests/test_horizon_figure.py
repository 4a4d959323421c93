"""The ``horizon`` figure kind (afl/figures/horizon.py, the first seed's Theorem 1 as a rate in T):
its numbers recomputed here from a small hand-made table with plain loops and scipy, and compared
with what the kind's functions return, what the figure draws on its Axes and what it prints.

The table: five seeds, horizons T = 10, 20, 40 and 80, the step 0.2/sqrt(T) at each and the constant
step 0.2/sqrt(20) at T = 10, 40 and 80 (its T = 20 cell is the scaled line's, so it sits on both
lines). Each evaluation's value is random, and the evaluation after the last version before T
(version T, which the average leaves out) is huge, so an average that took it would be far off.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from jsonschema import Draft202012Validator  # noqa: E402
from scipy import stats  # noqa: E402

from helpers import REPO, draw_kind  # noqa: E402

from afl import figures  # noqa: E402
from afl.figures.horizon import horizon_table, slopes, step_lines  # noqa: E402

SEEDS = (0, 1, 2, 3, 4)
C = 0.2
SCALED = {t: round(C / math.sqrt(t), 7) for t in (10, 20, 40, 80)}
CONSTANT = SCALED[20]
KEYS = ["algorithm.name", "algorithm.concurrency", "seed", "run.rounds", "client.lr"]
SPEC = {"kind": "horizon", "experiment": "h", "x_key": "run.rounds", "step_key": "client.lr",
        "metric": "grad_norm_sq", "title": "horizon test (seeds 0-4)"}


def cells() -> list[tuple[int, float]]:
    return sorted(set(SCALED.items()) | {(t, CONSTANT) for t in (10, 40, 80)})


def make_tables(seeds=SEEDS) -> dict:
    rng = np.random.default_rng(3)
    runs, evals = [], []
    for seed in seeds:
        for t, step in cells():
            cell = f"T{t}-lr{step}-s{seed}"
            runs.append({"cell": cell, "status": "completed", "algorithm.name": "afl", "algorithm.concurrency": 5,
                         "seed": seed, "run.rounds": t, "client.lr": step})
            values = rng.uniform(0.5, 2.0, t) * 10.0 / np.sqrt(np.arange(1, t + 1)) * (1 + seed / 10)
            for version in range(t + 1):
                evals.append({"cell": cell, "version": version, "round": float(version), "time": float(version),
                              "grad_norm_sq": float(values[version]) if version < t else 1e6})
    return {"runs": pd.DataFrame(runs), "evals": pd.DataFrame(evals), "updates": pd.DataFrame(),
            "clients": pd.DataFrame(), "sampling": pd.DataFrame()}


def expected(tables: dict) -> dict:
    """By the definitions: A per cell (a loop over versions 0 .. T-1), per line and T the mean over
    seeds, per line the per-seed slopes (scipy's linregress on the logs), their mean and t-interval."""
    evals = tables["evals"]
    average = {}
    for _, run in tables["runs"].iterrows():
        rows = evals[evals["cell"] == run["cell"]]
        horizon, total = int(run["run.rounds"]), 0.0
        for version in range(horizon):
            total += float(rows.loc[rows["version"] == version, "grad_norm_sq"].iloc[0])
        average[(int(run["seed"]), horizon, float(run["client.lr"]))] = total / horizon
    lines = {f"step {C:g}/sqrt(T)": sorted(SCALED.items()),
             f"step {CONSTANT:g}": [(t, CONSTANT) for t in (10, 20, 40, 80)]}
    out = {}
    for name, members in lines.items():
        seeds = sorted({s for s, _, _ in average})
        per_t = {t: float(np.mean([average[(s, t, lr)] for s in seeds])) for t, lr in members}
        each = [stats.linregress(np.log([t for t, _ in members]),
                                 np.log([average[(s, t, lr)] for t, lr in members])).slope for s in seeds]
        half = stats.t.ppf(0.975, len(each) - 1) * np.std(each, ddof=1) / math.sqrt(len(each))
        out[name] = {"per_t": per_t, "slopes": each, "slope": (np.mean(each), np.mean(each) - half,
                                                               np.mean(each) + half)}
    return {"average": average, "lines": out}


def draw(tables: dict, tmp_path, spec=SPEC):
    return draw_kind(tables, tmp_path, "horizon", spec, KEYS)


def test_the_table_and_the_lines_hold_the_definitions_numbers():
    tables = make_tables()
    want = expected(tables)
    table = horizon_table(tables, tables["runs"], SPEC)
    assert len(table) == len(SEEDS) * len(cells())
    for row in table.itertuples():
        assert row.A == pytest.approx(want["average"][(row.seed, row.T, row.step)], rel=1e-12)
    lines = step_lines(table)
    assert list(lines) == list(want["lines"])
    assert list(step_lines(table[table["T"] != 80])) == list(want["lines"])  # three horizons make a line
    shared = set(lines[f"step {C:g}/sqrt(T)"]["cell"]) & set(lines[f"step {CONSTANT:g}"]["cell"])
    assert shared == {f"T20-lr{CONSTANT}-s{s}" for s in SEEDS}  # the T = 20 cell is on both lines
    for name, rows in lines.items():
        assert slopes(rows).to_numpy() == pytest.approx(want["lines"][name]["slopes"], rel=1e-9)


def test_the_figure_draws_and_prints_the_lines(tmp_path):
    tables = make_tables()
    want = expected(tables)["lines"]
    figure, log = draw(tables, tmp_path)
    left, right = figure.axes[:2]
    drawn = {line.get_label(): line for line in left.get_lines()}
    bars = {container.get_label(): container.lines[0] for container in left.containers}
    for name, w in want.items():
        x, y = bars[name].get_data()
        assert list(x) == [10, 20, 40, 80]
        assert list(y) == pytest.approx([w["per_t"][t] for t in (10, 20, 40, 80)], rel=1e-12)
        mean, low, high = w["slope"]
        assert f"horizon: {name}: slope of log A(T) on log T over T = 10, 20, 40, 80: {mean:.4g} [{low:.4g}, " \
               f"{high:.4g}] (95% t-interval, n = 5); Theorem 1's rate: -0.5" in log
        assert f"{name}: slope {mean:.4g} [{low:.4g}, {high:.4g}] (95% t-interval, n = 5)" in figure.texts[0].get_text()
    reference = drawn["slope -0.5 (Theorem 1's rate)"]
    x, y = reference.get_data()
    first = want[f"step {C:g}/sqrt(T)"]["per_t"][10]
    assert list(y) == pytest.approx([first * (t / 10) ** -0.5 for t in x], rel=1e-12)
    assert [line.get_label() for line in right.get_lines()] == [f"T = {t} (step {SCALED[t]:.3g})" for t in (10, 20, 40, 80)]
    last = right.get_lines()[-1].get_ydata()
    runs = [make_tables()["evals"].query("cell == @c and version < 80")["grad_norm_sq"].to_numpy()
            for c in (f"T80-lr{SCALED[80]}-s{s}" for s in SEEDS)]
    assert last[-1] == pytest.approx(np.mean([r.mean() for r in runs]), rel=1e-12)


def test_no_interval_below_five_seeds(tmp_path):
    figure, log = draw(make_tables(seeds=(0, 1, 2)), tmp_path)
    assert "(n = 3: no interval below 5)" in log and "t-interval" not in log
    assert "no interval below 5 seeds" in figure.texts[0].get_text()


def test_refuses_missing_evaluations_and_a_step_at_one_horizon():
    tables = make_tables()
    evals = tables["evals"]
    thinned = {**tables, "evals": evals[evals["version"] % 2 == 0]}
    with pytest.raises(ValueError, match="run.eval_every: 1"):
        horizon_table(thinned, tables["runs"], SPEC)
    two = tables["runs"][tables["runs"]["run.rounds"] <= 20]  # two horizons fit any slope: no line
    with pytest.raises(ValueError, match="no step of client.lr at 3 horizons or more"):
        figures.KINDS["horizon"](SPEC, tables, two, None, [], {})


def test_the_schema_takes_the_kind_and_requires_its_keys():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    figure = {"$defs": schema["$defs"], **schema["$defs"]["figure"]}
    assert not list(Draft202012Validator(figure).iter_errors(SPEC))
    assert list(Draft202012Validator(figure).iter_errors({k: v for k, v in SPEC.items() if k != "step_key"}))
