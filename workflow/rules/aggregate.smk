# One tidy table per experiment and table kind (runs, evals, updates, clients, sampling): every cell's rows,
# with the cell's name, status and grid coordinates as columns (workflow/scripts/aggregate.py).


rule aggregate:
    input:
        lambda wildcards: [
            f"{RESULTS}/{wildcards.experiment}/{c.name}/launch.json"
            for c in CELLS[wildcards.experiment]
        ],
    output:
        runs=table("{experiment}", "runs"),
        evals=table("{experiment}", "evals"),
        updates=table("{experiment}", "updates"),
        clients=table("{experiment}", "clients"),
        sampling=table("{experiment}", "sampling"),
    log:
        f"{RESULTS}/logs/aggregate/{{experiment}}.log",
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
