"""Choose rule: an experiment's evaluation cells, from its tuning seeds' runs (docs/comparing.md).

Inputs: the launch.json of the cells of its tuning seeds. Params: ``cells`` (every cell's grid
columns by name), ``tuning`` (the tuning seeds), ``figures`` (the specs of the figures drawn from
it). Each figure's kind names the tuning cells at its chosen values (``afl.figures.CHOOSE``, on the
cells its ``select`` keeps); the evaluation cells with the same columns but the seed
(``afl.cluster.pipeline.evaluation_names``) are written to chosen.json as ``{"cells": [...],
"tuning_seeds": [...], "chosen": {figure: [tuning cells]}}``, atomically.
"""

import json
from pathlib import Path

from afl.atomic import write_bytes
from afl.cluster.pipeline import evaluation_names, log_to
from afl.cluster.tables import collect
from afl.figures import CHOOSE
from afl.figures.common import select

if __name__ == "__main__":
    log_to(snakemake.log[0])  # noqa: F821
    params = snakemake.params  # noqa: F821
    tables = collect(params.cells, list(snakemake.input.cells))  # noqa: F821
    chosen = {}
    for name, spec in params.figures.items():
        chosen[name] = CHOOSE[spec["kind"]](dict(spec), tables, select(tables["runs"], spec))
        print(f"{name}: {len(chosen[name])} tuning cells at the chosen values:\n  " + "\n  ".join(chosen[name]))
    cells = evaluation_names(params.cells, params.tuning, sorted({c for names in chosen.values() for c in names}))
    evaluation = sum(c["seed"] not in params.tuning for c in params.cells.values())
    print(f"{len(cells)} of {evaluation} evaluation cells chosen to run")
    write_bytes(json.dumps({"cells": cells, "tuning_seeds": list(params.tuning), "chosen": chosen}, indent=1).encode(),
                Path(snakemake.output[0]))  # noqa: F821
