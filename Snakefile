# afl's workflow (issue 3; README "Cluster workflow"): experiment grids -> one run per cell (here, or
# a SLURM job through submitit) -> one tidy table per experiment and table -> figures and a report.
#
#   snakemake --profile cluster/profiles/local --configfile workflow/config/demo.yaml    # make demo
#   snakemake --profile slurm --configfile workflow/config/paper.yaml                    # on a login node
#   snakemake --report results/report.html --configfile workflow/config/paper.yaml      # afterwards
#
# A rule file adds its figures by appending their paths to FIGURES (workflow/rules/common.smk) and
# is included below with one line; `rule all` builds every experiment's tables and every figure.

include: "workflow/rules/common.smk"


rule all:
    default_target: True
    input:
        lambda wildcards: ALL_TABLES + FIGURES,


include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
# The queueing experiments (issue 4) have their own target: `snakemake queueing` (make demo builds both).
include: "workflow/rules/queueing.smk"
