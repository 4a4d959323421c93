# The figures of the workflow config's `figures:`, one rule per kind so that each
# kind has its own report caption (workflow/report/<kind>.rst); ../scripts/figure.py runs the
# kind's module of afl/figures/ (the kinds here: afl.figures.KINDS, tests/test_figures.py checks).


for kind in (
    "curves",
    "participation",
    "staleness",
    "sampling",
    "ablation",
    "target",
    "queue_staleness",
    "throughput",
    "routing_gain",
    "concurrency_budget",
    "minibatch",
    "heterogeneity",
    "optimal_time",
    "availability",
    "phase_participation",
    "horizon",
):

    rule:
        name:
            f"figure_{kind}"
        input:
            unpack(figure_inputs),
        output:
            png=report(
                f"{RESULTS}/figures/{{figure}}.png",
                caption=f"../report/{kind}.rst",
                category=figure_experiment,
            ),
            pdf=f"{RESULTS}/figures/{{figure}}.pdf",
        log:
            f"{RESULTS}/logs/figures/{{figure}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/figures/{{figure}}.tsv"
        wildcard_constraints:
            figure=one_of(n for n, s in config["figures"].items() if s["kind"] == kind),
        conda:
            ENV
        resources:
            login_node=1,
        params:
            spec=lambda wildcards: config["figures"][wildcards.figure],
            columns=figure_keys,
            about=figure_about,
        script:
            "../scripts/figure.py"
