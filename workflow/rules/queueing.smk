# The queueing-theory experiments (README "Queueing theory"):
# five rules, one per experiment, each running its simulations and drawing its figure with
# workflow/scripts/queueing_<experiment>.py.
#
# Included after common.smk (REPO, ENV). It reads config["queueing"], else the `queueing`
# section of config/queueing.yaml, validates it against workflow/schemas/queueing.schema.yaml
# and runs the section's `size` (demo or paper; `--config queueing_size=paper` overrides it).
# QUEUEING_FIGURES lists the figures (PNG, in the report; each has a PDF twin); the target
# `queueing` (`snakemake queueing`) builds them all.
import copy

import yaml

if "queueing" not in config:
    QUEUEING_CONFIG = yaml.safe_load((REPO / "config" / "queueing.yaml").read_text())
    config["queueing"] = QUEUEING_CONFIG["queueing"]
validate(config["queueing"], str(REPO / "workflow/schemas/queueing.schema.yaml"))

QUEUEING = config["queueing"]
QUEUEING_SIZE = config.get("queueing_size", QUEUEING["size"])
QUEUEING_RESULTS = QUEUEING["results"] or config.get("results", "results")
QUEUEING_TABLES = f"{QUEUEING_RESULTS}/queueing"
QUEUEING_FIGURE_DIR = f"{QUEUEING_RESULTS}/figures/queueing"
QUEUEING_LOGS = f"{QUEUEING_RESULTS}/logs/queueing"
QUEUEING_EXPERIMENTS = ("staleness", "concurrency", "routing", "stepsize", "minibatch")
QUEUEING_FIGURES = [
    f"{QUEUEING_FIGURE_DIR}/{name}.png" for name in QUEUEING_EXPERIMENTS
]
if QUEUEING_SIZE not in ("demo", "paper"):
    sys.exit(
        f"afl queueing: error: queueing_size: {QUEUEING_SIZE!r} is not demo or paper; "
        "fix: --config queueing_size=demo"
    )
# Each experiment's section of the chosen size, with data.root set where the section gives one.
QUEUEING_SPECS = {
    name: copy.deepcopy(QUEUEING[QUEUEING_SIZE][name]) for name in QUEUEING_EXPERIMENTS
}
for queueing_spec in QUEUEING_SPECS.values():
    if "config" in queueing_spec and QUEUEING["data_root"]:
        queueing_spec["config"].setdefault("data", {})["root"] = QUEUEING["data_root"]


rule queueing:
    input:
        QUEUEING_FIGURES,


rule queueing_staleness:
    output:
        table=f"{QUEUEING_TABLES}/staleness.parquet",
        png=report(
            f"{QUEUEING_FIGURE_DIR}/staleness.png",
            caption="../report/queueing_staleness.rst",
            category="queueing",
        ),
        pdf=f"{QUEUEING_FIGURE_DIR}/staleness.pdf",
    log:
        f"{QUEUEING_LOGS}/staleness.log",
    conda:
        ENV
    threads: QUEUEING["processes"]
    params:
        spec=QUEUEING_SPECS["staleness"],
        workdir=f"{QUEUEING_TABLES}/runs/staleness",
    script:
        "../scripts/queueing_staleness.py"


rule queueing_concurrency:
    output:
        table=f"{QUEUEING_TABLES}/concurrency.parquet",
        png=report(
            f"{QUEUEING_FIGURE_DIR}/concurrency.png",
            caption="../report/queueing_concurrency.rst",
            category="queueing",
        ),
        pdf=f"{QUEUEING_FIGURE_DIR}/concurrency.pdf",
    log:
        f"{QUEUEING_LOGS}/concurrency.log",
    conda:
        ENV
    threads: QUEUEING["processes"]
    params:
        spec=QUEUEING_SPECS["concurrency"],
        workdir=f"{QUEUEING_TABLES}/runs/concurrency",
    script:
        "../scripts/queueing_concurrency.py"


rule queueing_routing:
    output:
        table=f"{QUEUEING_TABLES}/routing.parquet",
        summary=f"{QUEUEING_TABLES}/routing_summary.parquet",
        png=report(
            f"{QUEUEING_FIGURE_DIR}/routing.png",
            caption="../report/queueing_routing.rst",
            category="queueing",
        ),
        pdf=f"{QUEUEING_FIGURE_DIR}/routing.pdf",
    log:
        f"{QUEUEING_LOGS}/routing.log",
    conda:
        ENV
    threads: QUEUEING["processes"]
    params:
        spec=QUEUEING_SPECS["routing"],
        workdir=f"{QUEUEING_TABLES}/runs/routing",
    script:
        "../scripts/queueing_routing.py"


rule queueing_stepsize:
    output:
        table=f"{QUEUEING_TABLES}/stepsize.parquet",
        staleness=f"{QUEUEING_TABLES}/stepsize_staleness.parquet",
        png=report(
            f"{QUEUEING_FIGURE_DIR}/stepsize.png",
            caption="../report/queueing_stepsize.rst",
            category="queueing",
        ),
        pdf=f"{QUEUEING_FIGURE_DIR}/stepsize.pdf",
    log:
        f"{QUEUEING_LOGS}/stepsize.log",
    conda:
        ENV
    threads: QUEUEING["processes"]
    params:
        spec=QUEUEING_SPECS["stepsize"],
        workdir=f"{QUEUEING_TABLES}/runs/stepsize",
    script:
        "../scripts/queueing_stepsize.py"


rule queueing_minibatch:
    output:
        table=f"{QUEUEING_TABLES}/minibatch.parquet",
        timing=f"{QUEUEING_TABLES}/minibatch_timing.parquet",
        png=report(
            f"{QUEUEING_FIGURE_DIR}/minibatch.png",
            caption="../report/queueing_minibatch.rst",
            category="queueing",
        ),
        pdf=f"{QUEUEING_FIGURE_DIR}/minibatch.pdf",
    log:
        f"{QUEUEING_LOGS}/minibatch.log",
    conda:
        ENV
    threads: QUEUEING["processes"]
    params:
        spec=QUEUEING_SPECS["minibatch"],
        workdir=f"{QUEUEING_TABLES}/runs/minibatch",
    script:
        "../scripts/queueing_minibatch.py"
