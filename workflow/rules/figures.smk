# The figures of the workflow config's `figures:` (SPEC section 6), one rule per kind so that each
# kind has its own report caption (workflow/report/<kind>.rst); workflow/scripts/figure.py draws.


def figure_inputs(wildcards):
    experiment = config["figures"][wildcards.figure]["experiment"]
    return {name: table(experiment, name) for name in TABLES}


def figure_keys(wildcards):
    cells = CELLS[config["figures"][wildcards.figure]["experiment"]]
    return list(dict.fromkeys(k for c in cells for k in c.columns))


def figure_about(wildcards):
    spec = config["figures"][wildcards.figure]
    cells = [c for c in CELLS[spec["experiment"]] if pipeline.matches(c.columns, spec.get("select") or {})]
    seeds = sorted({c.columns["seed"] for c in cells})
    chosen = ", ".join(f"{k} = {v}" for k, v in (spec.get("select") or {}).items()) or "all cells"
    return (f"Experiment ``{spec['experiment']}``, {chosen}: {len(cells)} runs, seeds "
            f"{', '.join(map(str, seeds))}. {spec.get('caption', '')}")


for kind in ("curves", "participation", "staleness"):

    rule:
        name:
            f"figure_{kind}"
        input:
            unpack(figure_inputs),
        output:
            png=report(f"{RESULTS}/figures/{{figure}}.png", caption=f"../report/{kind}.rst",
                       category=lambda wildcards: config["figures"][wildcards.figure]["experiment"]),
            pdf=f"{RESULTS}/figures/{{figure}}.pdf",
        params:
            spec=lambda wildcards: config["figures"][wildcards.figure],
            columns=figure_keys,
            about=figure_about,
        wildcard_constraints:
            figure=one_of(n for n, s in config["figures"].items() if s["kind"] == kind),
        conda:
            ENV
        script:
            "../scripts/figure.py"
