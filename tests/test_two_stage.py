"""The workflow's two stages (docs/comparing.md, ``afl.cluster.pipeline.staged``): the cells of the
tuning seeds first; each figure's kind names the tuning cells at its chosen values (``choose``);
of the evaluation seeds only the cells at those values run. The figure must be the one it would
be with every cell run.

Per kind, on the hand-made tables of its own tests (built so that a choice made on the evaluation
seeds, or a wrong value, changes what is shown): the kind's choice from the tuning seeds' tables
alone, the evaluation cells it names (``evaluation_names``), and the figure drawn from those cells
only against the figure drawn from every cell: the same log, line for line (every point the kinds
draw is printed there), the same points on the first panel. A tiny grid end to end through
Snakemake, both ways, is in tests/test_pipeline.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import draw_kind
from test_figures import target_tables
from test_heterogeneity_figure import KEYS as HET_KEYS, SPEC as HET_SPEC, make_tables as heterogeneity_tables
from test_optimal_time_figure import tables as optimal_time_tables
from test_protocol_figures import AVAILABILITY_KEYS, AVAILABILITY_SPEC, availability_tables

from afl import figures
from afl.cluster import pipeline
from afl.figures.common import select

STANDARD = ["algorithm.name", "algorithm.concurrency", "seed"]
CASES = {
    "target": (target_tables, {"kind": "target", "experiment": "t", "metric": "grad_norm_sq", "target": 0.5,
                               "x_key": "algorithm.concurrency", "hue": ["algorithm.name"],
                               "tune": "algorithm.server_lr", "tuning_seeds": [0]},
               [*STANDARD, "algorithm.server_lr"]),
    "optimal_time": (optimal_time_tables, {"kind": "optimal_time", "experiment": "o", "metric": "grad_norm_sq",
                                           "target": 0.5, "window": 0.5, "x_key": "data.num_clients",
                                           "tune": "algorithm.server_lr", "tuning_seeds": [100], "bound_batch": 8},
                     [*STANDARD, "data.num_clients", "algorithm.server_lr", "algorithm.buffer_size"]),
    "heterogeneity": (heterogeneity_tables, HET_SPEC, HET_KEYS),
    "availability": (availability_tables, AVAILABILITY_SPEC, AVAILABILITY_KEYS),
}


def only(tables: dict, cells) -> dict:
    return {kind: frame[frame["cell"].isin(cells)] if "cell" in frame else frame for kind, frame in tables.items()}


def native(value):
    return value.item() if isinstance(value, np.generic) else value


def kind_log(log: str) -> list[str]:
    """The kind's own lines: not draw.main's note on diverged cells (an unchosen cell that diverged
    on an evaluation seed is not run in two stages, so not noted)."""
    return [line for line in log.splitlines() if not line.startswith("figure ")]


def test_the_staged_kinds_are_those_that_choose():
    assert sorted(figures.CHOOSE) == sorted(pipeline.STAGED_KINDS)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_the_evaluation_cells_chosen_from_the_tuning_seeds_draw_the_figure_of_every_cell(kind, tmp_path):
    make, spec, keys = CASES[kind]
    tables = make()
    runs = tables["runs"]
    tuning = spec["tuning_seeds"]
    tuning_cells = runs.loc[runs["seed"].isin(tuning), "cell"]
    first = only(tables, tuning_cells)
    chosen = figures.CHOOSE[kind](dict(spec), first, select(first["runs"], spec))
    assert chosen and set(chosen) < set(tuning_cells)
    columns = {row["cell"]: {k: native(row[k]) for k in keys if k in runs} for _, row in runs.iterrows()}
    run = pipeline.evaluation_names(columns, tuning, chosen)
    evaluation = set(runs.loc[~runs["seed"].isin(tuning), "cell"])
    assert run and set(run) < evaluation  # fewer evaluation cells run
    (tmp_path / "full").mkdir()
    (tmp_path / "staged").mkdir()
    full, full_log = draw_kind(tables, tmp_path / "full", "f", spec, keys)
    staged, staged_log = draw_kind(only(tables, set(tuning_cells) | set(run)), tmp_path / "staged", "f", spec, keys)
    assert kind_log(staged_log) == kind_log(full_log)
    assert [c.get_xydata().tolist() for c in staged.axes[0].get_lines()] == \
        [c.get_xydata().tolist() for c in full.axes[0].get_lines()]


def test_evaluation_names_keep_the_chosen_coordinates_on_the_other_seeds():
    columns = {f"{lr}_{seed}": {"algorithm.name": "asyncsgd", "algorithm.server_lr": lr,
                                "algorithm.routing": {"power": 1} if lr == 0.1 else "uniform", "seed": seed}
               for lr in (0.01, 0.1) for seed in (0, 1, 100)}
    assert pipeline.evaluation_names(columns, [100], ["0.1_100"]) == ["0.1_0", "0.1_1"]
    assert pipeline.evaluation_names(columns, [100], []) == []
    assert pipeline.evaluation_names(columns, [1, 100], ["0.01_100", "0.1_1"]) == ["0.01_0", "0.1_0"]


class FakeCell:
    def __init__(self, seed):
        self.columns = {"seed": seed}


def test_an_experiment_runs_in_two_stages_only_when_every_figure_of_it_can_choose():
    cells = {"e": [FakeCell(s) for s in (0, 1, 100, 101)], "f": [FakeCell(s) for s in (100,)]}
    target = {"kind": "target", "experiment": "e", "tuning_seeds": [100]}
    config = {"figures": {"a": target, "b": {**target, "tuning_seeds": [101]}}}
    assert pipeline.staged(config, cells) == {"e": [100, 101]}  # the union of the figures' tuning seeds
    assert pipeline.staged({**config, "two_stage": False}, cells) == {}
    assert pipeline.staged({"figures": {"a": target, "c": {"kind": "curves", "experiment": "e"}}}, cells) == {}
    assert pipeline.staged({"figures": {"a": {**target, "tuning_seeds": None}}}, cells) == {}
    assert pipeline.staged({"figures": {"a": {**target, "kind": "routing_gain"}}}, cells) == {}
    assert pipeline.staged({"figures": {"a": {**target, "experiment": "f"}}}, cells) == {}  # no seed to evaluate on
    assert pipeline.staged({"figures": {}}, cells) == {}


def test_the_second_run_rule_runs_the_chosen_cells_and_lists_them(tmp_path):
    cells = [{"name": f"e:c{i}", "out": str(tmp_path / "e" / f"c{i}")} for i in range(4)]
    assert pipeline.chosen_cells(cells, []) == (cells, None)
    chosen = tmp_path / "chosen.json"
    chosen.write_text(json.dumps({"cells": ["c1", "c3"]}))
    run, listed = pipeline.chosen_cells(cells, [str(chosen)])
    assert run == listed == [cells[1], cells[3]]
    out = tmp_path / "e" / "evaluation.json"
    out.parent.mkdir()
    pipeline.write_evaluation(listed, [str(out)])
    assert json.loads(out.read_text()) == {"cells": ["c1", "c3"]}
    pipeline.write_evaluation(None, [str(tmp_path / "first.json")])  # the first stage writes none
    assert not Path(tmp_path / "first.json").exists()
    chosen.write_text(json.dumps({"cells": []}))  # nothing chosen: an empty list, the rule's output all the same
    run, listed = pipeline.chosen_cells(cells, [str(chosen)])
    pipeline.write_evaluation(listed, [str(out)])
    assert run == [] and json.loads(out.read_text()) == {"cells": []}
