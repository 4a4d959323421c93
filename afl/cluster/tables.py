"""An experiment's tables: its cells' outputs as one tidy table per kind (the aggregate rule writes
them as Parquet, workflow/scripts/aggregate.py; the two-stage choice reads them, choose.py).

Inputs: each cell's ``launch.json`` (its folder holds ``run.json``, ``evals``/``updates``/
``clients.parquet``; docs/results.md). Outputs, each cell's rows concatenated with the
columns ``cell``, ``status`` (completed or diverged) and the cell's grid coordinates
(``afl.cluster.pipeline.Cell.columns``: its overrides plus algorithm.name, algorithm.concurrency, seed):

- ``runs``: one row per cell from run.json (status, reason, updates, virtual_time, wall_time,
  final_test_acc, config_hash, predicted_throughput of the closed Jackson network or null, and
  ``routing``: the bound's optimal routing's constants as JSON, or null);
- ``evals``: plus ``round`` = results applied by that version / m;
- ``updates``: plus ``result`` (0-based order of application) and ``round`` = result // m + 1,
  a round being m results (m = algorithm.concurrency), as for the run's budget;
- ``clients``: as written by the run;
- ``sampling``: the sampling probe's rows plus ``round`` as for evals (docs/results.md;
  none where the probe was off).
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from afl.cluster.pipeline import TABLES
RUN_FIELDS = ("status", "reason", "updates", "virtual_time", "wall_time", "final_test_acc", "config_hash",
              "predicted_throughput", "routing")


def column_values(values: list) -> list:
    """Scalars of one Python type stay as they are; lists, mappings and mixed types become JSON text."""
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int, float} or len(kinds) == 1 and kinds <= {bool, str}:
        return values
    return [json.dumps(v) if v is not None else None for v in values]


def with_cell(frame: pd.DataFrame, cell: str, status: str, columns: dict) -> pd.DataFrame:
    front = pd.DataFrame({"cell": cell, "status": status, **{k: [v] * len(frame) for k, v in columns.items()}},
                         index=frame.index)
    return pd.concat([front, frame], axis=1)


def rounds(updates: pd.DataFrame, m: int) -> pd.DataFrame:
    """``updates`` with ``result`` (0-based order of application) and ``round`` = result // m + 1."""
    updates = updates.reset_index(drop=True)
    updates.insert(0, "result", np.arange(len(updates)))
    updates.insert(1, "round", updates["result"] // m + 1)
    return updates


def with_round(frame: pd.DataFrame, updates: pd.DataFrame, m: int) -> pd.DataFrame:
    """``frame`` (rows at server versions) with ``round`` = results applied by its version / m."""
    applied = np.searchsorted(np.sort(updates["version"].to_numpy()), frame["version"].to_numpy(), side="right")
    frame = frame.copy()
    frame.insert(1, "round", applied / m)
    return frame


def collect(cells: dict, markers: list[str]) -> dict[str, pd.DataFrame]:
    """The tables (``TABLES``) of the finished cells whose ``launch.json`` are ``markers`` (``cells``: every
    cell's grid columns by name): each cell's rows with ``cell``, ``status`` and its columns in front."""
    frames = {kind: [] for kind in TABLES}
    names = [Path(marker).parent.name for marker in markers]
    keys = list(dict.fromkeys(k for columns in cells.values() for k in columns))
    values = {k: dict(zip(names, column_values([cells[name].get(k) for name in names]))) for k in keys}
    for name, marker in zip(names, markers):
        folder = Path(marker).parent
        columns = {k: values[k][name] for k in keys}
        run = json.loads((folder / "run.json").read_text())
        status = run["status"]
        fields = {k: run.get(k) for k in RUN_FIELDS if k != "status"}
        fields["routing"] = json.dumps(fields["routing"]) if fields["routing"] is not None else None
        summary = pd.DataFrame([fields])
        frames["runs"].append(with_cell(summary, name, status, columns))
        m = int(columns["algorithm.concurrency"])
        updates = rounds(pd.read_parquet(folder / "updates.parquet"), m)
        evals = with_round(pd.read_parquet(folder / "evals.parquet"), updates, m)
        sampling = with_round(pd.read_parquet(folder / "sampling.parquet"), updates, m)
        frames["updates"].append(with_cell(updates, name, status, columns))
        frames["evals"].append(with_cell(evals, name, status, columns))
        frames["clients"].append(with_cell(pd.read_parquet(folder / "clients.parquet"), name, status, columns))
        frames["sampling"].append(with_cell(sampling, name, status, columns))
    return {kind: pd.concat(parts, ignore_index=True) for kind, parts in frames.items()}
