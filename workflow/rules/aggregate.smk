# One tidy table per experiment and table kind (runs, evals, updates, clients, sampling): every cell's rows,
# with the cell's name, status and grid coordinates as columns (workflow/scripts/aggregate.py). Its
# cells.txt (afl.cluster.pipeline.cell_manifest) changes with the grid, so a grown grid re-aggregates.


rule aggregate:
    input:
        manifest=lambda wildcards: str(
            pipeline.cell_manifest(
                f"{RESULTS}/{wildcards.experiment}", CELLS[wildcards.experiment]
            )
        ),
        cells=lambda wildcards: aggregate_inputs(wildcards.experiment),
    output:
        runs=table("{experiment}", "runs"),
        evals=table("{experiment}", "evals"),
        updates=table("{experiment}", "updates"),
        clients=table("{experiment}", "clients"),
        sampling=table("{experiment}", "sampling"),
    log:
        f"{RESULTS}/logs/aggregate/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate/{{experiment}}.tsv"
    wildcard_constraints:
        experiment=one_of(CELLS),
    conda:
        ENV
    resources:
        login_node=1,
    params:
        cells=lambda wildcards: {c.name: c.columns for c in CELLS[wildcards.experiment]},
    script:
        "../scripts/aggregate.py"
