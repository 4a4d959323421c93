# The runs of the cells: one rule per experiment, whose outputs are all its cells' launch.json (so
# `snakemake -n` lists every cell). A cell's launch.json: its run has finished.
# Executor local: `run_<experiment>` runs the cells not finished on a pool of worker processes here,
# each importing torch once (afl/cluster/worker.py, workflow/scripts/run_cells.py).
# Executor slurm: `submit_<experiment>`: one waiting process submits the cells that are not finished
# as SLURM job arrays (afl/cluster/array.py, workflow/scripts/launch_array.py) and writes each
# cell's launch.json as its task ends.
#
# An experiment run in two stages (STAGED; docs/comparing.md) has two such rules:
# `run_<experiment>_tuning` runs the cells of its tuning seeds (its outputs their launch.json); the
# rule `choose` (choose.smk) reads their tables and writes chosen.json, the evaluation cells at each
# figure's chosen values; `run_<experiment>` takes chosen.json, runs those cells and writes
# evaluation.json, their names, once all have finished (each keeps its launch.json too).

for experiment in CELLS:
    for stage, name in run_stages(experiment):
        if EXECUTOR == "local":

            rule:
                name:
                    f"run_{name}"
                input:
                    chosen=chosen_input(experiment, stage),
                output:
                    run_outputs(experiment, stage),
                log:
                    f"{RESULTS}/logs/run/{name}.log",
                benchmark:
                    f"{RESULTS}/benchmarks/run/{name}.tsv"
                conda:
                    ENV
                threads: len(stage_cells(experiment, stage)) * config["threads"]  # Snakemake caps it at --cores
                params:
                    experiment=name,
                    cells=array_cells(experiment, stage),
                    threads=config["threads"],
                script:
                    "../scripts/run_cells.py"

        else:

            rule:
                name:
                    f"submit_{name}"
                input:
                    chosen=chosen_input(experiment, stage),
                output:
                    run_outputs(experiment, stage),
                log:
                    f"{RESULTS}/logs/submit/{name}.log",
                benchmark:
                    f"{RESULTS}/benchmarks/submit/{name}.tsv"
                conda:
                    ENV
                threads: 1
                params:
                    experiment=name,
                    folder=f"{RESULTS}/{experiment}/slurm"
                    + ("-tuning" if name != experiment else ""),
                    cells=array_cells(experiment, stage),
                    slurm=SLURM[experiment],
                script:
                    "../scripts/launch_array.py"
