# The two-stage comparison's choice (docs/comparing.md): for an experiment run in two stages
# (STAGED), the tables of its tuning seeds' cells, each figure's chosen values on them (the kind's
# `choose`, afl/figures/<kind>.py) and, in chosen.json, the evaluation cells at those values, which
# its second run rule runs (train.smk; workflow/scripts/choose.py).


rule choose:
    input:
        cells=lambda wildcards: launch_records(wildcards.experiment),
    output:
        f"{RESULTS}/{{experiment}}/chosen.json",
    log:
        f"{RESULTS}/logs/choose/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/choose/{{experiment}}.tsv"
    wildcard_constraints:
        experiment=one_of(STAGED),
    conda:
        ENV
    resources:
        login_node=1,
    params:
        cells=lambda wildcards: {c.name: c.columns for c in CELLS[wildcards.experiment]},
        tuning=lambda wildcards: STAGED[wildcards.experiment],
        figures=lambda wildcards: {
            name: spec
            for name, spec in config["figures"].items()
            if spec["experiment"] == wildcards.experiment
        },
    script:
        "../scripts/choose.py"
