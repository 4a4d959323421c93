# afl's workflow (README "Cluster workflow"): experiment grids -> one run per cell (here, or
# a SLURM job through submitit) -> one tidy table per experiment and table -> figures and a report.
# Laid out as the Snakemake workflow catalog's template: the configs a user edits in config/
# (config/README.md), rules in workflow/rules/, scripts in workflow/scripts/, report captions in
# workflow/report/, schemas in workflow/schemas/; `snakemake --lint` and `snakefmt --check` pass.
#
#   snakemake --profile cluster/profiles/local --configfile config/demo.yaml    # make demo
#   snakemake --profile slurm --configfile config/paper.yaml                    # on a login node
#   snakemake --report results/report.html --configfile config/paper.yaml      # afterwards
#
# A rule file adds its figures by appending their paths to FIGURES (workflow/rules/common.smk) and
# is included below with one line; the target `all` builds every experiment's tables and figures.


include: "workflow/rules/common.smk"


rule all:
    default_target: True
    input:
        lambda wildcards: ALL_TABLES + FIGURES,


include: "workflow/rules/train.smk"
include: "workflow/rules/choose.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
