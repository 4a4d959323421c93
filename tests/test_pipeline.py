"""The workflow (issue 3) on this machine: the workflow config's schema and every cell's config are
checked before anything runs, cell names are stable and follow the config, and a tiny grid runs
through Snakemake (local profile) to aggregated tables, figures (a diverged cell marked, not a
crash) and an HTML report; a rerun does nothing and a changed base config reruns its cells.
SLURM runs of the same workflow: tests/test_pipeline_slurm.py.
"""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import REPO, TINY, error_lines, snakemake, train_jobs, write_yaml
from packaging.requirements import Requirement
from test_figures import CHECKS, STANDARD, TABLES, check_figure

from afl.cluster import pipeline
from afl.config import config_hash, load_config
from afl.errors import ConfigError

job_seconds = runpy.run_path(str(REPO / "bench" / "demo_time.py"))["job_seconds"]


# ------------------------------------------------------------------ cells: names and validation


def test_cell_names_are_stable_and_follow_the_config(tmp_path: Path) -> None:
    base = write_yaml(tmp_path / "base.yaml", TINY)
    spec = {"config": str(base), "grid": {"algorithm.name": ["afl", "sfl"], "seed": [0, 1]}}
    cells = pipeline.experiment_cells("e", spec, tmp_path)
    names = [c.name for c in cells]
    expected_hash = config_hash(load_config(TINY, ["algorithm.name=\"sfl\"", "seed=1"]))
    assert names[3] == f"algorithm.name=sfl__seed=1__{expected_hash}"
    assert len(set(names)) == 4
    # The same cells whatever the order of the grid's keys, and on every expansion.
    swapped = {"config": str(base), "grid": {"seed": [0, 1], "algorithm.name": ["afl", "sfl"]}}
    assert sorted(c.name for c in pipeline.experiment_cells("e", swapped, tmp_path)) == sorted(names)
    assert [c.name for c in pipeline.experiment_cells("e", spec, tmp_path)] == names
    # A changed config (the base file, or a fixed override) renames every cell: same overrides, new hash.
    write_yaml(base, {**TINY, "client": {**TINY["client"], "lr": 0.1}})
    changed = [c.name for c in pipeline.experiment_cells("e", spec, tmp_path)]
    fixed = [c.name for c in pipeline.experiment_cells("e", {**spec, "set": {"run.rounds": 7}}, tmp_path)]
    for other in (changed, fixed):
        assert [n.rsplit("__", 1)[0] for n in other] == [n.rsplit("__", 1)[0] for n in names]
        assert not set(other) & set(names)
    # Columns: the standard ones and every varied key, with each cell's resolved value.
    assert cells[3].columns == {"algorithm.name": "sfl", "algorithm.concurrency": 2, "seed": 1}


def test_a_cell_whose_base_config_changed_after_planning_is_refused_where_it_runs(tmp_path: Path) -> None:
    base = write_yaml(tmp_path / "base.yaml", TINY)
    planned = config_hash(load_config(TINY, ["seed=1"]))
    assert config_hash(pipeline.planned_config(base, ["seed=1"], planned)) == planned
    write_yaml(base, {**TINY, "run": {"rounds": 7, "eval_every": 2}})
    with pytest.raises(ConfigError) as caught:
        pipeline.planned_config(base, ["seed=1"], planned)
    changed = config_hash(load_config(base, ["seed=1"]))
    assert str(caught.value) == (f"{base}: resolves to config {changed}, but the workflow planned {planned}; "
                                 "fix: the base config changed while the workflow ran: rerun snakemake")


def test_a_bad_cell_is_named_with_the_config_error(tmp_path: Path) -> None:
    base = write_yaml(tmp_path / "base.yaml", TINY)
    spec = {"config": str(base), "grid": {"algorithm.concurrency": [2, 5]}}
    with pytest.raises(ConfigError) as excinfo:
        pipeline.experiment_cells("e", spec, tmp_path)
    assert str(excinfo.value) == (
        "experiments.e (cell algorithm.concurrency=5): algorithm.concurrency: 5 tasks in flight but only 4 "
        "clients and selection without replacement; fix: lower it to at most 4 or set algorithm.selection: "
        "with_replacement")
    with pytest.raises(ConfigError, match=r"^experiments.e: cells .* are the same run"):
        pipeline.experiment_cells("e", {**spec, "grid": {"seed": [0, 0]}}, tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"experiments": {"e": {"grid": {"seed": 0}}}},
     "experiments.e.grid.seed: 0 is not of type 'array'; fix: see workflow/schemas/config.schema.yaml"),
    ({"slurm": {"gpu": 1}},
     "slurm: Additional properties are not allowed ('gpu' was unexpected); "
     "fix: see workflow/schemas/config.schema.yaml"),
    ({"experiments": {"e": {"grid": {"algorithm.concurrency": [2, 5]}}}},
     "experiments.e (cell algorithm.concurrency=5): algorithm.concurrency: 5 tasks in flight but only 4 "
     "clients and selection without replacement; fix: lower it to at most 4 or set algorithm.selection: "
     "with_replacement"),
    ({"figures": {"f": {"kind": "curves", "experiment": "e", "select": {"seed": 3}}}},
     "figures.f.select: no cell of experiment e has seed=3; fix: select values that the experiment's grid contains"),
    ({"figures": {"f": {"kind": "ablation", "experiment": "e", "bars": ["seed"]}}},
     "figures.f: 'panel' is a required property; fix: see workflow/schemas/config.schema.yaml"),
    ({"figures": {"f": {"kind": "target", "experiment": "e", "metric": "grad_norm_sq", "target": 1.0,
                        "hue": ["seed"]}}},
     "figures.f: 'x_key' is a required property; fix: see workflow/schemas/config.schema.yaml"),
    ({"figures": {"f": {"kind": "target", "experiment": "e", "metric": "grad_norm_sq", "target": 1.0,
                        "x_key": "seed", "hue": ["algorithm.name"], "tune": "seed", "tuning_seeds": [3]}}},
     "figures.f.tuning_seeds: no selected cell has seed 3; fix: tune on seeds the grid runs (0, 1)"),
    ({"figures": {"f": {"kind": "target", "experiment": "e", "metric": "grad_norm_sq", "target": 1.0,
                        "x_key": "seed", "hue": ["algorithm.name"], "tune": "seed", "tuning_seeds": [0, 1]}}},
     "figures.f.tuning_seeds: every seed is a tuning seed, none is left to evaluate on; fix: add evaluation "
     "seeds to the grid"),
    ({"figures": {"f": {"kind": "target", "experiment": "e", "metric": "grad_norm_sq", "target": 1.0,
                        "x_key": "seed", "hue": ["algorithm.name"], "tuning_seeds": [0]}}},
     "figures.f.tuning_seeds: without tune nothing is tuned; fix: set tune or remove it"),
    ({"figures": {"f": {"kind": "minibatch", "experiment": "e", "steps": {"sfl": "client.lr"}}}},
     "figures.f.steps.sfl: client.lr is not a column of experiment e (a key no cell overrides); fix: use one of "
     "algorithm.concurrency, algorithm.name, seed, or set client.lr in a variant or the grid"),
    ({"figures": {"f": {"kind": "routing_gain", "experiment": "e", "panel": "seed"}}},
     "figures.f: 'budget' is a required property; fix: see workflow/schemas/config.schema.yaml"),
    ({"figures": {"f": {"kind": "horizon", "experiment": "e", "x_key": "seed"}}},
     "figures.f: 'step_key' is a required property; fix: see workflow/schemas/config.schema.yaml"),
    ({"figures": {"f": {"kind": "horizon", "experiment": "e", "x_key": "seed", "step_key": "client.lr"}}},
     "figures.f.step_key: client.lr is not a column of experiment e (a key no cell overrides); fix: use one of "
     "algorithm.concurrency, algorithm.name, seed, or set client.lr in a variant or the grid"),
])
def test_bad_workflow_config_stops_before_any_job(tmp_path: Path, change: dict, message: str) -> None:
    base = write_yaml(tmp_path / "base.yaml", TINY)
    config = {"experiments": {"e": {"config": str(base), "grid": {"seed": [0, 1]}}}}
    for key, value in change.items():
        if key == "experiments":
            config["experiments"]["e"].update(value["e"])
        else:
            config[key] = value
    result = snakemake(tmp_path, "--configfile", str(write_yaml(tmp_path / "wf.yaml", config)))
    assert result.returncode != 0
    assert error_lines(result) == [f"afl pipeline: error: {message}"], result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------ a tiny grid, end to end


def test_tiny_grid_runs_to_tables_figures_and_report(tmp_path: Path) -> None:
    base = write_yaml(tmp_path / "base.yaml", TINY)
    config = {
        "threads": 1,
        "experiments": {"tiny": {
            "config": str(base),
            "variants": [{"algorithm.name": "afl", "seed": 0}, {"algorithm.name": "afl", "seed": 1},
                         {"algorithm.name": "sfl", "seed": 0},
                         {"algorithm.name": "afl", "client.lr": 1.0e30, "seed": 0}],  # diverges at once
        }, "sampling": {
            "config": str(base),
            "set": {"run.sampling_draws": 200, "run.grad_norm_samples": 100},
            "grid": {"algorithm.selection": ["with_replacement", "without_replacement"],
                     "algorithm.concurrency": [2, 3]},
        }},
        "figures": {
            "curves": {"kind": "curves", "experiment": "tiny", "y": ["server_loss", "test_acc"],
                       "x": ["round", "time"]},
            "participation": {"kind": "participation", "experiment": "tiny", "select": {"algorithm.name": "afl"}},
            "staleness": {"kind": "staleness", "experiment": "tiny"},
            "sampling": {"kind": "sampling", "experiment": "sampling"},
            "gradient": {"kind": "curves", "experiment": "sampling", "y": ["grad_norm_sq"], "x": ["round"]},
            "ablation": {"kind": "ablation", "experiment": "sampling", "panel": "algorithm.selection",
                         "bars": ["algorithm.concurrency"]},
            "target": {"kind": "target", "experiment": "sampling", "metric": "grad_norm_sq", "target": 1.0e9,
                       "x_key": "algorithm.concurrency", "hue": ["algorithm.selection"]},
        },
    }
    wf = write_yaml(tmp_path / "wf.yaml", config)
    result = snakemake(tmp_path, "--configfile", str(wf), "--cores", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert train_jobs(result.stdout + result.stderr) == 8

    tables = {k: pd.read_parquet(tmp_path / "results" / "tiny" / "tables" / f"{k}.parquet")
              for k in ("runs", "evals", "updates", "clients")}
    runs = tables["runs"].set_index("cell")
    assert len(runs) == 4
    assert {"status", "algorithm.name", "algorithm.concurrency", "seed", "client.lr", "final_test_acc"} <= set(runs.columns)
    assert set(runs["status"]) == {"completed", "diverged"}
    assert (runs["status"] == "diverged").sum() == 1
    assert (runs.loc[runs["status"] == "diverged", "client.lr"] == 1e30).all()
    assert (runs.loc[runs["status"] == "completed", "client.lr"] == 0.05).all()  # the default client.lr
    for kind in ("evals", "updates", "clients"):
        assert set(tables[kind]["cell"]) == set(runs.index)
        assert {"algorithm.name", "seed", "status"} <= set(tables[kind].columns)
    # A round is m = 2 results; every completed cell ran its 6 rounds.
    finished = tables["updates"][tables["updates"]["status"] == "completed"]
    assert (finished.groupby("cell")["round"].max() == 6).all()
    assert (finished.groupby(["cell", "round"]).size() == 2).all()
    sfl = tables["updates"][tables["updates"]["algorithm.name"] == "sfl"]
    assert (sfl["staleness"] == 0).all()

    figures = tmp_path / "results" / "figures"
    # The sampling probe: both uniform modes at every evaluation of every cell, the afl rule's own
    # updates (afl_rule) at every one after the first, with its round.
    sampling = pd.read_parquet(tmp_path / "results" / "sampling" / "tables" / "sampling.parquet")
    evals = pd.read_parquet(tmp_path / "results" / "sampling" / "tables" / "evals.parquet")
    uniform, rule = sampling[sampling["mode"] != "afl_rule"], sampling[sampling["mode"] == "afl_rule"]
    assert (uniform.groupby("cell").size() == 2 * evals.groupby("cell").size()).all()
    assert (rule.groupby("cell").size() == evals.groupby("cell").size() - 1).all()
    assert set(sampling["m"]) == {2, 3} and (uniform["draws"] == 200).all() and sampling["round"].notna().all()
    assert (evals["grad_norm_sq"] > 0).all()
    assert len(pd.read_parquet(tmp_path / "results" / "tiny" / "tables" / "sampling.parquet")) == 0  # probe off
    for name in ("curves", "participation", "staleness", "sampling", "gradient", "ablation", "target"):
        assert (figures / f"{name}.png").stat().st_size > 10_000
        assert (figures / f"{name}.pdf").stat().st_size > 1_000
    # What the figures draw: each first-seed kind redrawn from the aggregated tables by the figure
    # script, its lines, bands, bars, histograms and points checked against the tables
    # (tests/test_figures.py's checks, pandas on the same tables).
    keys = {"tiny": [*STANDARD, "client.lr"], "sampling": [*STANDARD, "algorithm.selection"]}
    for name, spec in config["figures"].items():
        if spec["kind"] in CHECKS:
            tables = tmp_path / "results" / spec["experiment"] / "tables"
            check_figure(name, spec, keys[spec["experiment"]], {k: tables / f"{k}.parquet" for k in TABLES})
    # Every job writes its log (and every cell its train.log), not the terminal.
    logs = tmp_path / "results" / "logs"
    assert (logs / "aggregate" / "tiny.log").is_file()
    curves_log = (logs / "figures" / "curves.log").read_text()
    assert "figure curves: marked 1 diverged cell(s): X diverged: afl, m=2, lr=1e+30, seed 0" in curves_log
    assert "marked" not in result.stderr
    assert all((tmp_path / "results" / "tiny" / cell / "train.log").is_file() for cell in runs.index)
    assert (logs / "run" / "tiny.log").is_file()
    # ... and its time (Snakemake's benchmark: files), as bench/demo_time.py reads them.
    seconds = job_seconds(tmp_path / "results" / "benchmarks")
    assert set(seconds) == {"run/tiny", "run/sampling", "aggregate/tiny", "aggregate/sampling",
                            *(f"figures/{name}" for name in config["figures"])}
    assert all(s > 0 for s in seconds.values()), seconds

    report = tmp_path / "report.html"
    made = snakemake(tmp_path, "--configfile", str(wf), "--report", str(report))
    assert made.returncode == 0, made.stdout + made.stderr
    html = report.read_text()
    for name in ("curves.png", "participation.png", "staleness.png", "sampling.png", "gradient.png"):
        assert name in html

    # Nothing to do on a rerun; a changed base config gives every cell a new name and reruns them.
    again = snakemake(tmp_path, "--configfile", str(wf), "--dry-run")
    assert again.returncode == 0 and train_jobs(again.stdout) == 0, again.stdout
    write_yaml(base, {**TINY, "run": {**TINY["run"], "rounds": 5}})
    changed = snakemake(tmp_path, "--configfile", str(wf), "--dry-run")
    assert changed.returncode == 0 and train_jobs(changed.stdout) == 8, changed.stdout

    # A grid grown by one cell runs that cell alone and re-aggregates, even where Snakemake's metadata
    # is gone (results copied from a cluster): the experiment's cells.txt changed with the grid.
    write_yaml(base, TINY)
    shutil.rmtree(tmp_path / ".snakemake" / "metadata")
    tiny = config["experiments"]["tiny"]
    grown = {**config, "experiments": {**config["experiments"],
                                       "tiny": {**tiny, "variants": [*tiny["variants"], {"algorithm.name": "sfl", "seed": 1}]}}}
    before = {cell: (tmp_path / "results" / "tiny" / cell / "run.json").stat().st_mtime_ns for cell in runs.index}
    result = snakemake(tmp_path, "--configfile", str(write_yaml(tmp_path / "grown.yaml", grown)), "--cores", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    after = pd.read_parquet(tmp_path / "results" / "tiny" / "tables" / "runs.parquet").set_index("cell")
    assert len(after) == 5 and set(runs.index) < set(after.index)
    assert {cell: (tmp_path / "results" / "tiny" / cell / "run.json").stat().st_mtime_ns for cell in runs.index} == before


# ------------------------------------------------------------------ environments


def test_two_stages_run_only_the_chosen_evaluation_cells_and_draw_the_same_figure(tmp_path: Path) -> None:
    """docs/comparing.md: an experiment whose figure tunes on tuning seeds runs those first, then of
    the other seeds only the cells at the chosen values; its figure's log is the log of the same
    grid run whole (two_stage: false), line for line."""
    base = write_yaml(tmp_path / "base.yaml", {**TINY, "run": {**TINY["run"], "grad_norm_samples": 100}})
    config = {
        "threads": 1,
        "experiments": {"tuned": {"config": str(base), "grid": {
            "client.lr": [0.01, 0.1, 0.5], "algorithm.concurrency": [2, 3], "seed": [0, 1, 100]}}},
        "figures": {"target": {"kind": "target", "experiment": "tuned", "metric": "grad_norm_sq", "target": 0.5,
                               "x_key": "algorithm.concurrency", "hue": ["algorithm.name"], "tune": "client.lr",
                               "tuning_seeds": [100]}},
    }
    logs, ran = {}, {}
    for two in (True, False):
        folder = tmp_path / ("two" if two else "one")
        folder.mkdir()
        wf = write_yaml(folder / "wf.yaml", {**config, "two_stage": two})
        result = snakemake(folder, "--configfile", str(wf), "--cores", "2")
        assert result.returncode == 0, result.stdout + result.stderr
        results = folder / "results"
        logs[two] = (results / "logs" / "figures" / "target.log").read_text()
        ran[two] = sorted(p.parent.name for p in (results / "tuned").glob("*/launch.json"))
        runs = pd.read_parquet(results / "tuned" / "tables" / "runs.parquet")
        assert sorted(runs["cell"]) == ran[two]
    chosen = json.loads((tmp_path / "two" / "results" / "tuned" / "chosen.json").read_text())
    assert len(chosen["chosen"]["target"]) == 2  # one step per m, on seed 100
    assert len(chosen["cells"]) == 4 and set(chosen["cells"]) < set(ran[False])  # at those steps, on seeds 0 and 1
    assert ran[True] == sorted([c for c in ran[False] if "seed=100" in c] + chosen["cells"])
    assert json.loads((tmp_path / "two" / "results" / "tuned" / "evaluation.json").read_text()) == \
        {"cells": chosen["cells"]}
    assert logs[True] == logs[False] and "target: afl: updates until grad_norm_sq" in logs[True]
    assert set(job_seconds(tmp_path / "two" / "results" / "benchmarks")) == {
        "run/tuned_tuning", "choose/tuned", "run/tuned", "aggregate/tuned", "figures/target"}
    again = snakemake(tmp_path / "two", "--configfile", str(tmp_path / "two" / "wf.yaml"), "--dry-run")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout


def test_pinned_requirements_match_pyproject_and_conda_env() -> None:
    import tomllib

    declared = {Requirement(r).name.lower(): Requirement(r)
                for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    lines = [line.strip() for line in (REPO / "envs" / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    pinned = {Requirement(line).name.lower(): Requirement(line) for line in lines}
    assert set(pinned) == set(declared)
    for name, req in pinned.items():
        (spec,) = req.specifier
        assert spec.operator == "==", req
        assert declared[name].specifier.contains(spec.version), (req, declared[name])
    conda = yaml.safe_load((REPO / "envs" / "afl.yaml").read_text())
    pip = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    # afl itself, editable from the repository: conda resolves the path from the folder of the env
    # file it is given, Snakemake's copy in <repository>/.snakemake/conda/.
    assert pip == [*lines, "--editable ../.."]
    assert "python=3.11" in conda["dependencies"]
