"""Experiment grids of the Snakemake workflow: cells, their names, their SLURM settings.

An experiment (``experiments.<name>`` in a workflow config) is a base run config plus overrides:
``set`` (fixed, for every cell), ``variants`` (a list of override mappings) and ``grid`` (key ->
list of values). Its cells are the product ``variants x grid``. Every cell's config is resolved
and validated with ``afl.config.load_config`` when the workflow is planned, so a bad cell stops
the workflow with one line before any job starts.

A cell's directory name is its own overrides (``key=value`` sorted by key, joined by ``__``)
followed by the hash of its resolved config (``afl.config.config_hash``): the same cell always
gets the same name, and any change of its config (base file, ``set``, defaults) gives a new name,
so a rerun skips finished cells and runs changed ones into a fresh directory.

This module imports neither torch nor Snakemake: the workflow imports it on the login node.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from afl.atomic import write_bytes
from afl.config import Config, config_hash, load_config, read_yaml, to_dict
from afl.errors import ConfigError

# Columns every aggregated table carries, whether or not the grid varies them.
REPO = Path(__file__).resolve().parents[2]  # the repository: relative experiment configs start here
DEFAULT_SLURM = REPO / "cluster" / "slurm.yaml"  # the site's SLURM settings of a cell
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"  # the workflow config's; its $defs.slurm
STANDARD_COLUMNS = ("algorithm.name", "algorithm.concurrency", "seed")
TABLES = ("runs", "evals", "updates", "clients", "sampling")  # an experiment's tables (afl.cluster.tables)
MAX_READABLE = 160  # characters of a cell name before the hash (file names stop at 255)
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass(frozen=True)
class Cell:
    """One run of an experiment: where its base config is, its overrides, its name."""

    experiment: str
    name: str
    config: str  # the base run config (absolute path)
    overrides: dict  # the cell's own coordinates in the grid (variant + grid values)
    sets: tuple[str, ...]  # every override (set + variant + grid) as key=value, for `afl launch --set`
    config_hash: str
    columns: dict  # STANDARD_COLUMNS and every key the experiment varies -> this cell's resolved value


def _token(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return _UNSAFE.sub("-", text).strip("-") or "-"


def cell_name(overrides: dict, hash_: str) -> str:
    """``key=value`` for each override, sorted by key, joined by ``__``, then ``__`` and the hash."""
    readable = "__".join(f"{k}={_token(v)}" for k, v in sorted(overrides.items()))[:MAX_READABLE]
    return f"{readable}__{hash_}" if readable else hash_


def _describe(overrides: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items()) or "no overrides"


def experiment_cells(name: str, spec: dict, root: Path) -> list[Cell]:
    """The cells of experiment ``name`` (a validated ``experiments.<name>`` mapping), in grid order.

    A relative ``config`` path is taken relative to ``root`` (the repository).
    """
    where = f"experiments.{name}"
    path = Path(spec["config"])
    path = path if path.is_absolute() else root / path
    try:
        base = read_yaml(path)
    except ConfigError as exc:
        raise ConfigError(f"{where}.config: {exc}") from None
    fixed = spec.get("set") or {}
    grid = spec.get("grid") or {}
    variants = spec.get("variants") or [{}]
    if both := sorted(set(fixed) & set(grid)):
        raise ConfigError(f"{where}.set.{both[0]}: also in grid; fix: keep {both[0]} in one of set and grid")
    for i, variant in enumerate(variants):
        if both := sorted(set(variant) & (set(grid) | set(fixed))):
            raise ConfigError(f"{where}.variants[{i}].{both[0]}: also in {'grid' if both[0] in grid else 'set'}; "
                              f"fix: keep {both[0]} in one place")
    planned, seen = [], {}
    for variant in variants:
        for values in itertools.product(*grid.values()):
            own = {**variant, **dict(zip(grid, values))}
            sets = tuple(f"{k}={json.dumps(v)}" for k, v in {**fixed, **own}.items())
            try:
                cfg = load_config(base, sets)
            except ConfigError as exc:
                raise ConfigError(f"{where} (cell {_describe(own)}): {exc}") from None
            hash_ = config_hash(cfg)
            cell = cell_name(own, hash_)
            if cell in seen:
                raise ConfigError(f"{where}: cells {{{_describe(seen[cell])}}} and {{{_describe(own)}}} are the "
                                  f"same run ({cell}); fix: remove the duplicate variant or grid value")
            seen[cell] = own
            planned.append((cell, own, sets, hash_, to_dict(cfg)))
    # Every cell gets a column for every key any cell overrides: its own value or the resolved one.
    keys = dict.fromkeys([*STANDARD_COLUMNS, *(k for _, own, *_ in planned for k in own)])
    return [Cell(name, cell, str(path.resolve()), own, sets, hash_, {k: _lookup(resolved, k) for k in keys})
            for cell, own, sets, hash_, resolved in planned]


def _lookup(resolved: dict, key: str):
    for part in key.split("."):
        resolved = resolved[part]
    return resolved


def expand(experiments: dict, root: Path) -> dict[str, list[Cell]]:
    """Every experiment's cells: ``{experiment: [Cell, ...]}``; raises ConfigError on a bad cell."""
    return {name: experiment_cells(name, spec, root) for name, spec in experiments.items()}


def cell_manifest(folder: str | Path, cells: list[Cell]) -> Path:
    """``folder/cells.txt``: the experiment's cell names, one a line, rewritten (atomically) only
    when they change. The aggregate rule reads it, so a grid that grew re-aggregates, and runs its
    new cells, even where Snakemake's metadata is gone (results copied from a cluster, folders
    moved): without it Snakemake keeps an existing table whose missing inputs it could make."""
    path = Path(folder) / "cells.txt"
    text = "".join(f"{c.name}\n" for c in cells)
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(text.encode(), path)
    return path


def planned_config(path: str | Path, sets: list[str], planned_hash: str | None) -> Config:
    """A cell's config resolved again where it runs (``afl launch``, the array launcher); ConfigError
    if it is not the config the workflow planned (``planned_hash``; None: no check)."""
    cfg = load_config(path, sets)
    if planned_hash and config_hash(cfg) != planned_hash:
        raise ConfigError(f"{path}: resolves to config {config_hash(cfg)}, but the workflow planned {planned_hash}; "
                          "fix: the base config changed while the workflow ran: rerun snakemake")
    return cfg


def slurm_settings(defaults: Path, *layers: dict | None) -> dict:
    """The SLURM settings of a cell: ``defaults`` (cluster/slurm.yaml) updated by each layer in turn,
    checked against the workflow schema's ``$defs.slurm`` (keys, types, ranges)."""
    from jsonschema import Draft202012Validator  # here: the array waiter imports this module, not this

    try:
        settings = yaml.safe_load(Path(defaults).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{defaults}: cannot read the SLURM defaults ({exc}); fix: restore cluster/slurm.yaml") from None
    for layer in layers:
        settings.update(layer or {})
    schema = yaml.safe_load(SCHEMA.read_text())["$defs"]["slurm"]
    keys = list(schema["properties"])
    if unknown := sorted(set(settings) - set(keys)):
        raise ConfigError(f"slurm.{unknown[0]}: unknown key; fix: use only {', '.join(keys)}")
    if missing := sorted(set(keys) - set(settings)):
        raise ConfigError(f"{defaults}: no {missing[0]}; fix: set {missing[0]} there (see cluster/slurm.yaml)")
    for key in keys:
        if error := next(Draft202012Validator(schema["properties"][key]).iter_errors(settings[key]), None):
            raise ConfigError(f"slurm.{key}: {error.message}; fix: see cluster/slurm.yaml for its meaning and range")
    return settings


def check_figures(figures: dict, cells: dict[str, list[Cell]]) -> None:
    """Each figure names an existing experiment and selects at least one of its cells."""
    for name, spec in figures.items():
        where = f"figures.{name}"
        exp = spec["experiment"]
        if exp not in cells:
            raise ConfigError(f"{where}.experiment: no experiment {exp!r}; fix: use one of {', '.join(cells)}")
        select = spec.get("select") or {}
        columns = set().union(*(c.columns for c in cells[exp]))
        for key in select:
            if key not in columns:
                raise ConfigError(f"{where}.select.{key}: not a column of experiment {exp}; "
                                  f"fix: select on one of {', '.join(sorted(columns))}")
        named = {"x_key": spec.get("x_key"), "step_key": spec.get("step_key"), "tune": spec.get("tune"),
                 "panel": spec.get("panel"),
                 **{f"bars[{i}]": k for i, k in enumerate(spec.get("bars") or [])},
                 **{f"hue[{i}]": k for i, k in enumerate(spec.get("hue") or [])},
                 **{f"steps.{rule}": k for rule, k in (spec.get("steps") or {}).items()},
                 **{f"{field}.{k}": k for field in ("control", "baseline") for k in (spec.get(field) or {})}}
        for field, key in named.items():
            if key is not None and key not in columns:
                raise ConfigError(f"{where}.{field}: {key} is not a column of experiment {exp} (a key no cell "
                                  f"overrides); fix: use one of {', '.join(sorted(columns))}, or set {key} in a "
                                  "variant or the grid")
        if not any(matches(c.columns, select) for c in cells[exp]):
            raise ConfigError(f"{where}.select: no cell of experiment {exp} has {_describe(select)}; "
                              "fix: select values that the experiment's grid contains")
        if tuning := spec.get("tuning_seeds"):
            seeds = {c.columns["seed"] for c in cells[exp] if matches(c.columns, select)}
            if missing := sorted(set(tuning) - seeds):
                raise ConfigError(f"{where}.tuning_seeds: no selected cell has seed {missing[0]}; "
                                  f"fix: tune on seeds the grid runs ({', '.join(map(str, sorted(seeds)))})")
            if not seeds - set(tuning):
                raise ConfigError(f"{where}.tuning_seeds: every seed is a tuning seed, none is left to evaluate "
                                  "on; fix: add evaluation seeds to the grid")
            if not spec.get("tune") and spec["kind"] not in ("routing_gain", "minibatch", "availability"):
                raise ConfigError(f"{where}.tuning_seeds: without tune nothing is tuned; fix: set tune or remove it")


# The figure kinds that can choose their evaluation cells from the tuning seeds' runs alone: each has a
# ``choose(spec, tables, runs)`` (afl.figures.CHOOSE; tests/test_two_stage.py checks that they agree).
STAGED_KINDS = ("availability", "heterogeneity", "optimal_time", "target")


def staged(config: dict, cells: dict[str, list[Cell]]) -> dict[str, list]:
    """The experiments that run in two stages, each with its tuning seeds (docs/comparing.md).

    An experiment runs in two stages when the workflow config's ``two_stage`` is true (the default),
    every figure drawn from it is of a kind in ``STAGED_KINDS`` and has ``tuning_seeds``, and its grid
    has other seeds: first every cell of the tuning seeds (the union of its figures'), then each
    figure's ``choose`` names the tuning cells at its chosen values, and of the other seeds only the
    cells at those values run (``evaluation_names``). A figure sees the same evaluation cells either
    way; the cells it would not show are not run."""
    if not config.get("two_stage", True):
        return {}
    out = {}
    for experiment, exp_cells in cells.items():
        specs = [s for s in config.get("figures", {}).values() if s["experiment"] == experiment]
        if not specs or any(s["kind"] not in STAGED_KINDS or not s.get("tuning_seeds") for s in specs):
            continue
        tuning = sorted(set().union(*(s["tuning_seeds"] for s in specs)))
        if {c.columns["seed"] for c in exp_cells} - set(tuning):
            out[experiment] = tuning
    return out


def _coordinates(columns: dict) -> str:
    return json.dumps({k: v for k, v in columns.items() if k != "seed"}, sort_keys=True)


def evaluation_names(columns: dict[str, dict], tuning, chosen) -> list[str]:
    """The evaluation cells to run (in grid order): of the cells ``columns`` (name -> grid columns), those
    not on a ``tuning`` seed whose columns, but for the seed, equal those of a ``chosen`` tuning cell."""
    wanted = {_coordinates(columns[name]) for name in chosen}
    return [name for name, c in columns.items() if c["seed"] not in tuning and _coordinates(c) in wanted]


def chosen_cells(cells: list[dict], chosen: list[str]) -> tuple[list[dict], list[dict] | None]:
    """A run rule's cells (``array_cells`` of the workflow: dicts with ``out``, the cell's folder) and
    ``chosen`` (the paths of its ``chosen`` input: none, or the second stage's chosen.json):
    ``(to run, listed)``, the cells it runs (all, or those chosen.json names) and, in the second
    stage, the same cells for its evaluation.json (``write_evaluation``; None in the first)."""
    if not chosen:
        return cells, None
    names = set(json.loads(Path(chosen[0]).read_text())["cells"])
    picked = [c for c in cells if Path(c["out"]).name in names]
    return picked, picked


def write_evaluation(listed: list[dict] | None, output: list[str]) -> None:
    """The second stage's output, evaluation.json: ``{"cells": [the names of the cells it ran]}``
    (the aggregate rule reads their folders beside it), written even if none was chosen; nothing
    in the first stage (``listed`` None)."""
    if listed is not None:
        write_bytes(json.dumps({"cells": [Path(c["out"]).name for c in listed]}, indent=1).encode(), Path(output[0]))


def matches(columns: dict, select: dict) -> bool:
    """Whether a cell's columns have every selected value (a list selects any of its values)."""
    return all(columns.get(k) in (v if isinstance(v, list) else [v]) for k, v in select.items())


def schema_error(exc: Exception) -> str:
    """One line from Snakemake's schema validation error (a WorkflowError raised from a jsonschema error)."""
    inner = exc.__cause__ or exc.__context__
    if not hasattr(inner, "absolute_path"):
        return f"workflow config: {str(exc).splitlines()[0]}; fix: see workflow/schemas/config.schema.yaml"
    key = ".".join(str(p) for p in inner.absolute_path) or "workflow config"
    return f"{key}: {inner.message}; fix: see workflow/schemas/config.schema.yaml"


def log_to(path: str | Path) -> None:
    """Send this process's standard output and error to ``path`` (a rule's log), from now on.

    The workflow's scripts call it first. It redirects the file descriptors, so that the output
    of C code and of child processes (the queueing experiments' workers) lands there too.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)
