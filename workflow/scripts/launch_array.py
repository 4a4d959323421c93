"""Submit rule (executor slurm): one experiment's cells as SLURM job arrays, and the wait.

Input ``chosen``: none, or (the second of two stages) chosen.json, whose cells alone are
submitted; the output is then evaluation.json, written when they have all finished. Params:
``experiment``, ``folder`` (the arrays' submitit files and ``array.json``), ``cells``
(``common.smk: array_cells``: name, out, base config, overrides, planned hash) and ``slurm`` (the
experiment's SLURM settings: cluster/slurm.yaml with the workflow config's overrides).
``afl.cluster.array.run_array`` reports finished cells at once, re-attaches to tasks still queued
or running, submits the rest and writes each cell's ``launch.json`` (the first stage's outputs)
as its task ends. Failed cells: their
reports go to the log and the rule fails after every other task has ended.
"""

import sys
from pathlib import Path

from afl.atomic import write_json
from afl.cluster.array import CellRun, run_array
from afl.cluster.pipeline import chosen_cells, log_to, planned_config, write_evaluation
from afl.config import to_dict
from afl.errors import AflError

log_to(snakemake.log[0])
params = snakemake.params
planned, listed = chosen_cells(params.cells, snakemake.input.chosen)


def resolve(cell: dict) -> CellRun:
    cfg = planned_config(cell["config"], cell["sets"], cell["config_hash"])
    return CellRun(cell["name"], str(Path(cell["out"]).resolve()), to_dict(cfg), cell["config_hash"])


def record(cell: CellRun, outcome: dict) -> None:
    write_json({"cell": cell.name, **outcome}, Path(cell.out) / "launch.json")
    print(f"{outcome['status']}: {cell.name} ({outcome['updates']} updates, SLURM job {outcome['job_id']})",
          flush=True)


try:
    failures = run_array([resolve(c) for c in planned], Path(params.folder), params.experiment, params.slurm,
                         record)
except AflError as exc:
    print(f"afl: error: {exc}", file=sys.stderr)
    sys.exit(1)
for report in failures:
    print(f"afl: error: {report}", file=sys.stderr)
if failures:
    print(f"afl: error: {len(failures)} of {len(planned)} cells of {params.experiment} failed (above); "
          "fix: correct the cause and rerun snakemake: only these cells run again", file=sys.stderr)
    sys.exit(1)
write_evaluation(listed, snakemake.output)
