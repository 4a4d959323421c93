"""Run rule (executor local): one experiment's cells on this machine, on a pool of workers.

Input ``chosen``: none, or (the second of two stages) chosen.json, whose cells alone run; the
output is then evaluation.json, written when they have all finished. Params: ``experiment``,
``cells`` (``common.smk: array_cells``: name, out, base config, overrides, planned hash) and
``threads`` (torch threads per cell). The rule's threads divided by ``threads``
is the most worker processes (``afl.cluster.worker.Pool``): each imports torch once and runs
its cells one after another, each cell's output in its folder's ``train.log``. A finished cell is
reported at once; each cell's ``launch.json`` (the first stage's outputs) is written as it ends. Failed
cells: their reports go to the log and the rule fails after every other cell has ended.
"""

import sys
from pathlib import Path

from afl.atomic import write_json
from afl.cluster.array import CellRun
from afl.cluster.pipeline import chosen_cells, log_to, planned_config, write_evaluation
from afl.cluster.task import summary
from afl.cluster.worker import LOG, Pool, log_tail
from afl.config import to_dict
from afl.errors import AflError
from afl.run import checkpoint

log_to(snakemake.log[0])
params = snakemake.params
planned, listed = chosen_cells(params.cells, snakemake.input.chosen)


def resolve(cell: dict) -> CellRun:
    cfg = planned_config(cell["config"], cell["sets"], cell["config_hash"])
    return CellRun(cell["name"], str(Path(cell["out"]).resolve()), to_dict(cfg), cell["config_hash"])


def record(cell: dict, error: str | None) -> None:
    if error is not None:
        print(f"afl: error: cell {cell['name']} failed: {error}; fix: read the log below, fix the cause and rerun "
              f"(only failed cells run again)\n{log_tail(Path(cell['out']) / LOG)}", file=sys.stderr, flush=True)
        return
    info = summary(checkpoint.finished_run(Path(cell["out"]), cell["config_hash"]))
    write_json({"cell": cell["name"], **info, "executor": "local", "job_id": None}, Path(cell["out"]) / "launch.json")
    print(f"{info['status']}: {cell['name']} ({info['updates']} updates)", flush=True)


try:
    cells = [resolve(c).as_task() for c in planned]
except AflError as exc:
    print(f"afl: error: {exc}", file=sys.stderr)
    sys.exit(1)
workers = max(1, snakemake.threads // params.threads)
print(f"{params.experiment}: {len(cells)} cells, those not finished before on up to {workers} workers of "
      f"{params.threads} torch threads", flush=True)
failed = Pool(workers, params.threads).run(cells, record)  # finished cells are recorded at once
if failed:
    print(f"afl: error: {len(failed)} of {len(cells)} cells of {params.experiment} failed (above); "
          "fix: correct the cause and rerun snakemake: only these cells run again", file=sys.stderr)
    sys.exit(1)
write_evaluation(listed, snakemake.output)
