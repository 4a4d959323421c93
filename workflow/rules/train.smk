# The runs of the cells. Executor local: one Snakemake job per cell, `afl launch` running it here.
# Executor slurm: one rule per experiment, `submit_<experiment>`, whose outputs are all its cells'
# launch.json (so `snakemake -n` lists every cell): one waiting process submits the cells that are
# not finished as SLURM job arrays (afl/cluster/array.py, workflow/scripts/launch_array.py) and
# writes each cell's launch.json as its task ends. A cell's launch.json: its run has finished.

if EXECUTOR == "local":

    rule train:
        output:
            f"{RESULTS}/{{experiment}}/{{cell}}/launch.json",
        log:
            f"{RESULTS}/{{experiment}}/{{cell}}/launch.log",
        wildcard_constraints:
            experiment=one_of(CELLS),
            cell="[^/]+",
        conda:
            ENV
        threads: config["threads"]
        params:
            args=launch_args,
            python=launch_python,
        shell:
            "{params.python} -m afl.cli launch {params.args} --threads {threads} --record {output:q} > {log:q} 2>&1"

else:
    for experiment in CELLS:

        rule:
            name:
                f"submit_{experiment}"
            output:
                [
                    f"{RESULTS}/{experiment}/{c.name}/launch.json"
                    for c in CELLS[experiment]
                ],
            log:
                f"{RESULTS}/logs/submit/{experiment}.log",
            conda:
                ENV
            threads: 1
            params:
                experiment=experiment,
                folder=f"{RESULTS}/{experiment}/slurm",
                cells=array_cells(experiment),
                slurm=SLURM[experiment],
            script:
                "../scripts/launch_array.py"
