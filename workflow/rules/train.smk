# The runs of the cells: one rule per experiment, whose outputs are all its cells' launch.json (so
# `snakemake -n` lists every cell). A cell's launch.json: its run has finished.
# Executor local: `run_<experiment>` runs the cells not finished on a pool of worker processes here,
# each importing torch once (afl/cluster/worker.py, workflow/scripts/run_cells.py).
# Executor slurm: `submit_<experiment>`: one waiting process submits the cells that are not finished
# as SLURM job arrays (afl/cluster/array.py, workflow/scripts/launch_array.py) and writes each
# cell's launch.json as its task ends.

if EXECUTOR == "local":
    for experiment in CELLS:

        rule:
            name:
                f"run_{experiment}"
            output:
                launch_records(experiment),
            log:
                f"{RESULTS}/logs/run/{experiment}.log",
            benchmark:
                f"{RESULTS}/benchmarks/run/{experiment}.tsv"
            conda:
                ENV
            threads: len(CELLS[experiment]) * config["threads"]  # Snakemake caps it at --cores
            params:
                experiment=experiment,
                cells=array_cells(experiment),
                threads=config["threads"],
            script:
                "../scripts/run_cells.py"

else:
    for experiment in CELLS:

        rule:
            name:
                f"submit_{experiment}"
            output:
                launch_records(experiment),
            log:
                f"{RESULTS}/logs/submit/{experiment}.log",
            benchmark:
                f"{RESULTS}/benchmarks/submit/{experiment}.tsv"
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
