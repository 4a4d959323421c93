"""The ``heterogeneity`` figure kind (afl/figures/heterogeneity.py, the third seed's claim (iii)):
its numbers recomputed here from a small hand-made table, by the definitions of its docstring,
with plain loops and scipy, and compared with what ``heterogeneity_table`` returns, what the figure
draws on its Axes and what it prints.

The table: three delay settings (A, the baseline; B with a large tau_max and client delays like
A's; C with smaller delays), each with heterogeneous (``data.partition: shards``) and control
(``iid``) cells at two steps, on two tuning seeds and 11 evaluation seeds. The control floors are
lower at the step 0.05 on the tuning seeds and at 0.1 on the evaluation seeds, and the heterogeneous
floors at 0.1: tuning on the evaluation seeds or on the heterogeneous cells picks another step.
The evaluations before the last three are large, so another window changes every floor; clients
apply unequal numbers of updates, so the mean over clients of their mean staleness differs from
the mean over updates. One evaluation seed of B has a negative effect (no ratio), one control
cell of C diverged (no pair): B's ratio and C's effect still have the 10 values an interval needs.
"""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from jsonschema import Draft202012Validator  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
from scipy import stats  # noqa: E402

from helpers import REPO, draw_kind  # noqa: E402

from afl.figures.heterogeneity import heterogeneity_table  # noqa: E402

SETTINGS = {"A": {"algorithm.concurrency": 4, "timing.distribution": "exponential"},
            "B": {"algorithm.concurrency": 4, "timing.distribution": "lognormal"},
            "C": {"algorithm.concurrency": 2, "timing.distribution": "exponential"}}
EFFECT = {"A": 0.1, "B": 0.2, "C": 0.05}
STEPS = (0.05, 0.1)
TUNING, EVALUATION = (100, 101), tuple(range(11))
LAST = 3
KEYS = ["algorithm.name", "algorithm.concurrency", "seed", "data.partition", "algorithm.server_lr",
        "timing.distribution"]
SPEC = {"kind": "heterogeneity", "experiment": "h", "metric": "grad_norm_sq", "last": LAST,
        "control": {"data.partition": "iid"}, "tune": "algorithm.server_lr", "tuning_seeds": list(TUNING),
        "baseline": {"algorithm.concurrency": 4, "timing.distribution": "exponential"},
        "title": "heterogeneity test (seeds 0-10)"}
NEGATIVE = ("B", 3)  # its heterogeneous floor is below its control floor
DIVERGED = ("C", 5, 0.05)  # its control cell diverged


def control_level(seed: int, step: float) -> float:
    if seed in TUNING:
        return {0.05: 0.01, 0.1: 0.02}[step]
    return {0.05: 0.012, 0.1: 0.006}[step]


def make_tables() -> dict:
    rng = np.random.default_rng(7)
    runs, evals, updates = [], [], []
    for name, grid in SETTINGS.items():
        for seed in TUNING + EVALUATION:
            scale = 0.5 + rng.random()  # each seed its own data
            n_updates = 40
            clients = np.r_[0, 1, 2, 3, rng.choice(4, n_updates - 4, p=[0.4, 0.3, 0.2, 0.1])]
            top = 3 if name == "C" else 8
            staleness = rng.integers(0, top + 1, n_updates)
            if name == "B":
                staleness[rng.integers(n_updates)] = 60  # a rare long delay
            for step in STEPS:
                for partition in ("shards", "iid"):
                    cell = f"{name}-{partition}-{step}-{seed}"
                    level = control_level(seed, step) * (1 + 0.2 * rng.random())
                    if partition == "shards":
                        effect = EFFECT[name] * scale * (1.0 if step == 0.1 else 1.5) * (1 + 0.3 * rng.random())
                        level += -0.5 * level if (name, seed) == NEGATIVE else effect
                    diverged = (name, seed, step) == DIVERGED and partition == "iid"
                    runs.append({"cell": cell, "status": "diverged" if diverged else "completed",
                                 "reason": "non-finite loss at update 30" if diverged else None,
                                 "algorithm.name": "asyncsgd", "seed": seed, "data.partition": partition,
                                 "algorithm.server_lr": step, **grid})
                    values = np.r_[5 + rng.random(5), level * (0.5 + rng.random(LAST))]
                    evals.append(pd.DataFrame({"cell": cell, "version": np.arange(len(values)) * 10,
                                               "grad_norm_sq": values}).sample(frac=1, random_state=1))
                    updates.append(pd.DataFrame({"cell": cell, "version": np.arange(1, n_updates + 1),
                                                 "client": clients, "staleness": staleness}))
    return {"runs": pd.DataFrame(runs), "evals": pd.concat(evals, ignore_index=True),
            "updates": pd.concat(updates, ignore_index=True),
            "clients": pd.DataFrame({"cell": pd.Series(dtype=str)}),
            "sampling": pd.DataFrame({"cell": pd.Series(dtype=str)})}


def t_interval(values, log=False):
    """(mean, low, high) of ``values`` (geometric with ``log``), Student-t 95%; None ends below 10."""
    x = [math.log(v) for v in values] if log else list(values)
    n, mean = len(x), sum(x) / len(x)
    if n < 10:
        ends = (None, None)
    else:
        sd = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
        half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
        ends = (mean - half, mean + half)
    back = math.exp if log else (lambda v: v)
    return back(mean), *(None if e is None else back(e) for e in ends)


def expected(tables: dict) -> tuple[float, dict]:
    """The chosen step and, per setting, the figure's numbers, by the docstring's definitions."""
    runs = tables["runs"].set_index("cell")
    done = runs[runs["status"] == "completed"]
    floor = {}
    for cell in done.index:
        e = tables["evals"][tables["evals"]["cell"] == cell].sort_values("version")
        floor[cell] = float(np.mean(e["grad_norm_sq"].to_numpy()[-LAST:]))
    by_step = {}
    for step in STEPS:
        chosen = [floor[c] for c in done.index if done.loc[c, "data.partition"] == "iid"
                  and done.loc[c, "algorithm.server_lr"] == step and done.loc[c, "seed"] in TUNING]
        by_step[step] = sum(chosen) / len(chosen)
    step = min(by_step, key=by_step.get)

    def cell(name, partition, seed):
        c = f"{name}-{partition}-{step}-{seed}"
        return c if c in floor else None

    def client_means(c):
        u = tables["updates"][tables["updates"]["cell"] == c]
        return {k: float(v["staleness"].mean()) for k, v in u.groupby("client")}, float(u["staleness"].mean())

    effect = {(n, s): floor[cell(n, "shards", s)] - floor[cell(n, "iid", s)]
              for n in SETTINGS for s in EVALUATION if cell(n, "iid", s) and cell(n, "shards", s)}
    out = {}
    for name in SETTINGS:
        seeds = [s for s in EVALUATION if (name, s) in effect]
        ratios, lows, highs, outside = [], [], [], 0
        for s in seeds:
            if effect[(name, s)] > 0 and effect[("A", s)] > 0:
                r = effect[(name, s)] / effect[("A", s)]
                mine, avg = client_means(cell(name, "shards", s))
                base, base_avg = client_means(cell("A", "shards", s))
                each = [mine[k] / base[k] * avg / base_avg for k in mine]
                low, high = min(1.0, min(each)), max(1.0, max(each))
                ratios.append(r), lows.append(low), highs.append(high)
                outside += not (low <= r <= high)
        delays = []
        for s in seeds:
            means, avg = client_means(cell(name, "shards", s))
            u = tables["updates"][tables["updates"]["cell"] == cell(name, "shards", s)]
            delays.append((avg, sum(means.values()) / len(means), min(means.values()), max(means.values()),
                           float(u["staleness"].max())))
        d = np.mean(delays, axis=0)
        out[name] = {"effect": t_interval([effect[(name, s)] for s in seeds]),
                     "ratio": t_interval(ratios, log=True), "n": len(seeds), "n_ratio": len(ratios),
                     "floor_het": float(np.mean([floor[cell(name, "shards", s)] for s in seeds])),
                     "floor_control": float(np.mean([floor[cell(name, "iid", s)] for s in seeds])),
                     "admissible": (math.exp(np.mean(np.log(lows))), math.exp(np.mean(np.log(highs)))),
                     "outside": outside, "tau_avg": d[0], "worker_mean": d[1], "worker_min": d[2],
                     "worker_max": d[3], "tau_max": d[4]}
    return step, out


def draw(tables: dict, tmp_path, spec=SPEC):
    return draw_kind(tables, tmp_path, "het", spec, KEYS)


def errorbars(ax) -> list[tuple]:
    """Each errorbar of ``ax``: (x, y, x-error segment or None, y-error segment or None)."""
    out = []
    for container in ax.containers:
        if not isinstance(container, ErrorbarContainer):
            continue
        (x, y), = container.lines[0].get_xydata()
        segments = [c.get_segments()[0] for c in container.lines[2]]
        xseg = next((s for s in segments if s[0][1] == s[1][1]), None) if container.has_xerr else None
        yseg = next((s for s in segments if s[0][0] == s[1][0]), None) if container.has_yerr else None
        out.append((x, y, xseg, yseg))
    return out


def test_the_table_holds_the_definitions_numbers():
    tables = make_tables()
    step, want = expected(tables)
    assert step == 0.05
    settings, pairs, lines = heterogeneity_table(SPEC, tables, tables["runs"])
    assert any(line.startswith("grid edge: algorithm.server_lr = 0.05") for line in lines)
    assert lines[-1].startswith("chosen algorithm.server_lr = 0.05")
    assert sorted(settings["label"]) == sorted(["baseline", "distribution=lognormal", "m=2"])
    name_of = {"baseline": "A", "distribution=lognormal": "B", "m=2": "C"}
    for _, row in settings.iterrows():
        w = want[name_of[row["label"]]]
        for key in ("tau_avg", "worker_mean", "worker_min", "worker_max", "tau_max", "floor_het", "floor_control"):
            assert row[key] == pytest.approx(w[key], rel=1e-12), (row["label"], key)
        assert (row["effect"], row["effect_low"], row["effect_high"]) == pytest.approx(w["effect"], rel=1e-9)
        assert (row["ratio"], row["ratio_low"], row["ratio_high"]) == pytest.approx(w["ratio"], rel=1e-9)
        assert (row["admissible_low"], row["admissible_high"]) == pytest.approx(w["admissible"], rel=1e-12)
        assert (row["n"], row["n_ratio"], row["outside"]) == (w["n"], w["n_ratio"], w["outside"])
    # the designs' cases happened: a seed without a ratio, a seed without a pair, ratios outside their range
    assert (want["B"]["n"], want["B"]["n_ratio"], want["C"]["n"]) == (11, 10, 10)
    assert want["B"]["outside"] >= 5 and want["B"]["worker_mean"] != pytest.approx(want["B"]["tau_avg"])
    assert ("2|exponential", 5) not in pairs.index and ("4|lognormal", 3) in pairs.index
    assert np.isnan(pairs.loc[("4|lognormal", 3), "ratio"])


def test_the_figure_draws_the_table(tmp_path):
    tables = make_tables()
    _, want = expected(tables)
    figure, log = draw(tables, tmp_path)
    left, right = figure.axes[:2]
    drawn = errorbars(left)
    assert len(drawn) == 3
    for name, w in want.items():
        (x, y, xseg, yseg), = [d for d in drawn if d[0] == pytest.approx(w["worker_mean"], rel=1e-12)]
        assert y == pytest.approx(w["effect"][0], rel=1e-9)
        assert sorted([xseg[0][0], xseg[1][0]]) == pytest.approx([w["worker_min"], w["worker_max"]], rel=1e-12)
        assert sorted([yseg[0][1], yseg[1][1]]) == pytest.approx(list(w["effect"][1:]), rel=1e-9)
    ratios = errorbars(right)
    assert len(ratios) == 3
    for name, w in want.items():
        (x, y, _, yseg), = [d for d in ratios if d[0] == pytest.approx(w["tau_max"], rel=1e-12)]
        assert y == pytest.approx(w["ratio"][0], rel=1e-9)
        if name == "A":  # the baseline against itself: 1, no spread
            assert y == pytest.approx(1.0) and yseg[0][1] == pytest.approx(yseg[1][1])
        else:
            assert sorted([yseg[0][1], yseg[1][1]]) == pytest.approx(list(w["ratio"][1:]), rel=1e-9)
    bars = [c for c in right.collections if isinstance(c, LineCollection) and c.get_linewidth()[0] == 6]
    ranges = sorted((s[0][0], min(s[0][1], s[1][1]), max(s[0][1], s[1][1])) for c in bars for s in c.get_segments())
    wanted = sorted((w["tau_max"], *w["admissible"]) for w in want.values())
    np.testing.assert_allclose(np.array(ranges), np.array(wanted), rtol=1e-12)
    assert "chosen algorithm.server_lr = 0.05" in log and "grid edge: algorithm.server_lr = 0.05" in log
    assert "n = 11" in left.get_title()
    assert "X diverged" in "".join(t.get_text() for t in figure.texts)


def test_refuses_an_ambiguous_control_or_baseline():
    tables = make_tables()
    with pytest.raises(ValueError, match="baseline"):
        heterogeneity_table({k: v for k, v in SPEC.items() if k != "baseline"}, tables, tables["runs"])
    with pytest.raises(ValueError, match="matches 2 settings"):
        heterogeneity_table({**SPEC, "baseline": {"algorithm.concurrency": 4}}, tables, tables["runs"])
    runs = tables["runs"].copy()
    runs.loc[runs["cell"].str.startswith("C-shards"), "data.partition"] = "dirichlet"
    with pytest.raises(ValueError, match="select one"):
        heterogeneity_table(SPEC, tables, runs)


def test_the_schema_takes_the_kind_and_requires_its_control():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    figure = {"$defs": schema["$defs"], **schema["$defs"]["figure"]}
    spec = {k: v for k, v in SPEC.items() if k != "title"}
    assert not list(Draft202012Validator(figure).iter_errors(spec))
    assert list(Draft202012Validator(figure).iter_errors({k: v for k, v in spec.items() if k != "control"}))
    assert json.dumps(spec)  # plain data, as a workflow config holds it


def test_no_paired_interval_below_ten_seeds(tmp_path):
    """With 7 evaluation seeds the floors have intervals (from 5) and the effects and ratios none
    (paired: from 10), and the figure says so."""
    tables = make_tables()
    spec = {**SPEC, "select": {"seed": [*range(7), *TUNING]}}
    runs = tables["runs"][tables["runs"]["seed"].isin(spec["select"]["seed"])]
    settings, _, _ = heterogeneity_table(spec, tables, runs)
    assert (settings["n"] <= 7).all() and settings["floor_het_low"].notna().all()
    assert settings[["effect_low", "effect_high", "ratio_low", "ratio_high"]].isna().all().all()
    figure, _ = draw(tables, tmp_path, spec)
    assert all(yseg is None for *_, yseg in errorbars(figure.axes[0]))
    assert "no interval below 10 pairs" in figure.axes[0].get_title()
