# One run per cell: `afl launch` (afl/cluster/launch.py) runs it here, or submits it to SLURM through
# submitit and waits; it writes launch.json when the run has finished (completed or diverged).


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
    threads: 1 if EXECUTOR == "slurm" else config["threads"]
    params:
        args=launch_args,
        python=launch_python,
    shell:
        "{params.python} -m afl.cli launch {params.args} --threads {threads} --record {output:q} > {log:q} 2>&1"
