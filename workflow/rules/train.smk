# One run per cell: `afl launch` (afl/launch.py) runs it here, or submits it to SLURM through
# submitit and waits; it writes launch.json when the run has finished (completed or diverged).


def launch_args(wildcards):
    cell = CELL[(wildcards.experiment, wildcards.cell)]
    args = [cell.config, "--out", f"{RESULTS}/{cell.experiment}/{cell.name}", "--name",
            f"{cell.experiment}:{cell.name}", "--executor", EXECUTOR, "--expect-hash", cell.config_hash]
    for item in cell.sets:
        args += ["--set", item]
    if EXECUTOR == "slurm":
        overrides = {**(config.get("slurm") or {}), **(config["experiments"][cell.experiment].get("slurm") or {})}
        for key, value in overrides.items():
            args += ["--slurm", f"{key}={json.dumps(value)}"]
    return shlex.join(args)


rule train:
    output:
        f"{RESULTS}/{{experiment}}/{{cell}}/launch.json",
    log:
        f"{RESULTS}/{{experiment}}/{{cell}}/launch.log",
    params:
        args=launch_args,
    threads: 1 if EXECUTOR == "slurm" else config["threads"]
    wildcard_constraints:
        experiment=one_of(CELLS),
        cell="[^/]+",
    conda:
        ENV
    shell:
        "{PYTHON} -m afl.cli launch {params.args} --threads {threads} --record {output:q} > {log:q} 2>&1"
