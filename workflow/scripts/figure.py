"""The figure job of workflow/rules/figures.smk: one figure from one experiment's aggregated tables.

The drawing is ``afl.figures.draw.main``, each kind in its own module of afl/figures/; this script
sends the job's output to its log and hands it Snakemake's figure name, spec, grid columns, tables
and PNG path.
"""

from afl.cluster.pipeline import TABLES, log_to
from afl.figures.draw import main

if __name__ == "__main__":
    log_to(snakemake.log[0])  # noqa: F821
    main(snakemake.wildcards.figure, dict(snakemake.params.spec), list(snakemake.params.columns),  # noqa: F821
         {kind: getattr(snakemake.input, kind) for kind in TABLES},  # noqa: F821
         snakemake.output.png)  # noqa: F821
