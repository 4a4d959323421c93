"""Aggregate rule: one experiment's cells into one tidy Parquet table per kind (``afl.cluster.tables``).

Inputs: the cells' ``launch.json`` and, for an experiment run in two stages, ``evaluation.json``
(the evaluation cells its run rule ran: ``{"cells": [name, ...]}``, their ``launch.json`` in their
folders beside it). Params: ``cells``, every cell's grid columns by name. Outputs: one table per
kind of ``afl.cluster.tables.TABLES``, written atomically.
"""

import json
from pathlib import Path

from afl.atomic import write_parquet
from afl.cluster.pipeline import log_to
from afl.cluster.tables import TABLES, collect

if __name__ == "__main__":
    log_to(snakemake.log[0])  # noqa: F821
    markers = [p for p in snakemake.input if Path(p).name == "launch.json"]  # noqa: F821 (not cells.txt)
    for listed in (p for p in snakemake.input if Path(p).name == "evaluation.json"):  # noqa: F821
        markers += [str(Path(listed).parent / name / "launch.json") for name in json.loads(Path(listed).read_text())["cells"]]
    for kind, frame in collect(snakemake.params.cells, markers).items():  # noqa: F821
        write_parquet(frame, Path(getattr(snakemake.output, kind)))  # noqa: F821
