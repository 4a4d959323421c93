# The queueing-theory experiments of issue 4 (README "Queueing theory"; SPEC sections 5 and 6):
# five rules, one per experiment, each running its simulations and drawing its figure with
# workflow/scripts/queueing_<experiment>.py.
#
# Self-contained: include it from any Snakefile. It reads config["queueing"], else the
# `queueing` section of workflow/config/queueing.yaml, validates it against
# workflow/schemas/queueing.schema.yaml and runs the section's `size` (demo or paper;
# `--config queueing_size=paper` overrides it). QUEUEING_FIGURES lists the figures (PNG; each
# has a PDF twin) for a target rule; `snakemake queueing` builds them all.
import copy
import os
import sys
from pathlib import Path

import yaml
from snakemake.utils import validate

QUEUEING_REPO = Path(workflow.current_basedir).parents[1]
sys.path.insert(0, str(QUEUEING_REPO))
# Jobs import this checkout's afl, also inside the conda environment (envs/afl.yaml), which lacks it.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(QUEUEING_REPO), os.environ.get("PYTHONPATH")]))

if "queueing" not in config:
    config["queueing"] = yaml.safe_load((QUEUEING_REPO / "workflow/config/queueing.yaml").read_text())["queueing"]
validate(config["queueing"], str(QUEUEING_REPO / "workflow/schemas/queueing.schema.yaml"))

QUEUEING = config["queueing"]
QUEUEING_SIZE = config.get("queueing_size", QUEUEING["size"])
QUEUEING_RESULTS = QUEUEING["results"] or config.get("results", "results")
QUEUEING_TABLES = f"{QUEUEING_RESULTS}/queueing"
QUEUEING_FIGURE_DIR = f"{QUEUEING_RESULTS}/figures/queueing"
QUEUEING_EXPERIMENTS = ("staleness", "concurrency", "routing", "stepsize", "minibatch")
QUEUEING_FIGURES = [f"{QUEUEING_FIGURE_DIR}/{name}.png" for name in QUEUEING_EXPERIMENTS]
if QUEUEING_SIZE not in ("demo", "paper"):
    sys.exit(f"afl queueing: error: queueing_size: {QUEUEING_SIZE!r} is not demo or paper; fix: --config queueing_size=demo")


def queueing_spec(name):
    """The experiment's section of the chosen size, with data.root set where the section gives one."""
    spec = copy.deepcopy(QUEUEING[QUEUEING_SIZE][name])
    if "config" in spec and QUEUEING["data_root"]:
        spec["config"].setdefault("data", {})["root"] = QUEUEING["data_root"]
    return spec


rule queueing:
    input:
        QUEUEING_FIGURES,


rule queueing_staleness:
    output:
        table=f"{QUEUEING_TABLES}/staleness.parquet",
        png=f"{QUEUEING_FIGURE_DIR}/staleness.png",
        pdf=f"{QUEUEING_FIGURE_DIR}/staleness.pdf",
    params:
        spec=queueing_spec("staleness"),
        workdir=f"{QUEUEING_TABLES}/runs/staleness",
    threads: QUEUEING["processes"]
    conda:
        "../../envs/afl.yaml"
    script:
        "../scripts/queueing_staleness.py"


rule queueing_concurrency:
    output:
        table=f"{QUEUEING_TABLES}/concurrency.parquet",
        png=f"{QUEUEING_FIGURE_DIR}/concurrency.png",
        pdf=f"{QUEUEING_FIGURE_DIR}/concurrency.pdf",
    params:
        spec=queueing_spec("concurrency"),
        workdir=f"{QUEUEING_TABLES}/runs/concurrency",
    threads: QUEUEING["processes"]
    conda:
        "../../envs/afl.yaml"
    script:
        "../scripts/queueing_concurrency.py"


rule queueing_routing:
    output:
        table=f"{QUEUEING_TABLES}/routing.parquet",
        summary=f"{QUEUEING_TABLES}/routing_summary.parquet",
        png=f"{QUEUEING_FIGURE_DIR}/routing.png",
        pdf=f"{QUEUEING_FIGURE_DIR}/routing.pdf",
    params:
        spec=queueing_spec("routing"),
        workdir=f"{QUEUEING_TABLES}/runs/routing",
    threads: QUEUEING["processes"]
    conda:
        "../../envs/afl.yaml"
    script:
        "../scripts/queueing_routing.py"


rule queueing_stepsize:
    output:
        table=f"{QUEUEING_TABLES}/stepsize.parquet",
        staleness=f"{QUEUEING_TABLES}/stepsize_staleness.parquet",
        png=f"{QUEUEING_FIGURE_DIR}/stepsize.png",
        pdf=f"{QUEUEING_FIGURE_DIR}/stepsize.pdf",
    params:
        spec=queueing_spec("stepsize"),
        workdir=f"{QUEUEING_TABLES}/runs/stepsize",
    threads: QUEUEING["processes"]
    conda:
        "../../envs/afl.yaml"
    script:
        "../scripts/queueing_stepsize.py"


rule queueing_minibatch:
    output:
        table=f"{QUEUEING_TABLES}/minibatch.parquet",
        timing=f"{QUEUEING_TABLES}/minibatch_timing.parquet",
        png=f"{QUEUEING_FIGURE_DIR}/minibatch.png",
        pdf=f"{QUEUEING_FIGURE_DIR}/minibatch.pdf",
    params:
        spec=queueing_spec("minibatch"),
        workdir=f"{QUEUEING_TABLES}/runs/minibatch",
    threads: QUEUEING["processes"]
    conda:
        "../../envs/afl.yaml"
    script:
        "../scripts/queueing_minibatch.py"
