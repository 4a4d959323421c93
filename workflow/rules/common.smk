# The validated workflow config, the cells of every experiment, paths, the conda environment and
# the functions that the rules call, shared by all rule files (the catalog's rules/common.smk).
#
# FIGURES: the figure files that the target `all` builds; a rule file appends its own to it.
# table(experiment, name): an experiment's aggregated table (name in TABLES), for rules that read it.
# STAGED: the experiments run in two stages (afl.cluster.pipeline.staged), each with its tuning seeds.
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

REPO = Path(workflow.current_basedir).parents[1]
CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
# Every job's conda environment (--software-deployment-method conda): the pinned requirements and
# this checkout's afl, installed editable from "../..". Conda resolves that path from the folder
# of the file it is given, Snakemake's copy in the conda prefix (.snakemake/conda by default).
ENV = "../../envs/afl.yaml"
CONDA_PREFIX = Path(workflow.deployment_settings.conda_prefix or ".snakemake/conda")
if CONDA and CONDA_PREFIX.resolve().parents[1] != REPO.resolve():
    sys.exit(
        f"afl pipeline: error: envs/afl.yaml would install afl from "
        f"{CONDA_PREFIX.resolve().parents[1]}, not from this checkout; "
        f"fix: run Snakemake in {REPO} without --directory or --conda-prefix"
    )

# afl comes from where it is installed (make setup: pip install -e .), here and in ENV.
try:
    import afl
    from afl.cluster import array, pipeline
    from afl.errors import AflError
except ImportError as exc:
    sys.exit(
        f"afl pipeline: error: {exc} (Python {sys.executable}); fix: run the Snakemake of the "
        f"environment where afl is installed (make setup: .venv/bin/snakemake), or pip install -e {REPO}"
    )
if Path(afl.__file__).resolve().parents[1] != REPO.resolve():
    sys.exit(
        f"afl pipeline: error: afl is imported from {Path(afl.__file__).parent}, not from this "
        f"checkout; fix: pip install -e {REPO}, or run that checkout's workflow"
    )

try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError as exc:
    sys.exit(f"afl pipeline: error: {pipeline.schema_error(exc)}")
try:
    CELLS = pipeline.expand(config["experiments"], REPO)
    pipeline.check_figures(config["figures"], CELLS)
    STAGED = pipeline.staged(config, CELLS)
except AflError as exc:
    sys.exit(f"afl pipeline: error: {exc}")

RESULTS = config["results"]
EXECUTOR = config["executor"]
TABLES = pipeline.TABLES


def table(experiment, name):
    return f"{RESULTS}/{experiment}/tables/{name}.parquet"


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing, if there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def stage_cells(experiment, stage="first"):
    """An experiment's cells of a stage. ``first``, the cells of its first run rule (every cell, or,
    run in two stages, those of its tuning seeds). ``second`` (two stages only), the others:
    the evaluation cells, of which its second run rule runs those chosen."""
    tuning = STAGED.get(experiment)
    if tuning is None:
        return CELLS[experiment] if stage == "first" else []
    return [
        c
        for c in CELLS[experiment]
        if (c.columns["seed"] in tuning) == (stage == "first")
    ]


def run_stages(experiment):
    """``(stage, name)`` of an experiment's run or submit rules (train.smk): its one rule ``<experiment>``,
    or ``<experiment>_tuning`` and then ``<experiment>`` for the chosen evaluation cells.
    """
    if experiment in STAGED:
        return [("first", f"{experiment}_tuning"), ("second", experiment)]
    return [("first", experiment)]


def launch_records(experiment):
    """The launch.json of an experiment's cells that its first run or submit rule runs (train.smk)."""
    return [
        f"{RESULTS}/{experiment}/{c.name}/launch.json" for c in stage_cells(experiment)
    ]


def chosen_input(experiment, stage):
    """A run or submit rule's ``chosen`` input: the second stage's chosen.json, else none."""
    return [f"{RESULTS}/{experiment}/chosen.json"] if stage == "second" else []


def run_outputs(experiment, stage):
    """A run or submit rule's outputs: the first stage's launch.json, or the second's evaluation.json."""
    if stage == "second":
        return [f"{RESULTS}/{experiment}/evaluation.json"]
    return launch_records(experiment)


def aggregate_inputs(experiment):
    """The aggregate rule's cells: the first run rule's launch.json, and the evaluation.json of the
    second, for an experiment run in two stages."""
    second = [f"{RESULTS}/{experiment}/evaluation.json"] if experiment in STAGED else []
    return launch_records(experiment) + second


def array_cells(experiment, stage="first"):
    """An experiment's cells of a stage (``stage_cells``) as its run or submit rule takes them (train.smk)."""
    return [
        {
            "name": f"{experiment}:{c.name}",
            "out": f"{RESULTS}/{experiment}/{c.name}",
            "config": c.config,
            "sets": list(c.sets),
            "config_hash": c.config_hash,
        }
        for c in stage_cells(experiment, stage)
    ]


def figure_experiment(wildcards):
    """A figure's experiment: its category in the report (figures.smk)."""
    return config["figures"][wildcards.figure]["experiment"]


def figure_inputs(wildcards):
    """The aggregated tables of a figure's experiment (figures.smk)."""
    return {name: table(figure_experiment(wildcards), name) for name in TABLES}


def figure_keys(wildcards):
    """The grid columns of a figure's experiment (figures.smk)."""
    cells = CELLS[figure_experiment(wildcards)]
    return list(dict.fromkeys(k for c in cells for k in c.columns))


def figure_about(wildcards):
    """The report caption's line on a figure's runs (figures.smk)."""
    spec = config["figures"][wildcards.figure]
    cells = [
        c
        for c in CELLS[spec["experiment"]]
        if pipeline.matches(c.columns, spec.get("select") or {})
    ]
    seeds = sorted({c.columns["seed"] for c in cells})
    chosen = (
        ", ".join(f"{k} = {v}" for k, v in (spec.get("select") or {}).items())
        or "all cells"
    )
    tuning = STAGED.get(spec["experiment"])
    runs = (
        f"{len(cells)} runs, seeds {', '.join(map(str, seeds))}"
        if tuning is None
        else f"{sum(c.columns['seed'] in tuning for c in cells)} tuning runs on seeds "
        f"{', '.join(map(str, tuning))}, then the other seeds at the chosen values only"
    )
    return f"Experiment ``{spec['experiment']}``, {chosen}: {runs}. {spec.get('caption', '')}"


ALL_TABLES = [table(e, t) for e in CELLS for t in TABLES]
FIGURES = [f"{RESULTS}/figures/{name}.png" for name in config["figures"]]

SIZE = ""
if EXECUTOR == "slurm":
    try:  # every experiment's SLURM settings, checked before anything is submitted
        SLURM = {
            e: pipeline.slurm_settings(
                pipeline.DEFAULT_SLURM,
                config.get("slurm"),
                config["experiments"][e].get("slurm"),
            )
            for e in CELLS
        }
    except AflError as exc:
        sys.exit(f"afl pipeline: error: {exc}")
    tasks = sum(
        array.array_tasks(len(stage_cells(e, stage)), SLURM[e])
        for e in CELLS
        for stage in ("first", "second")
        if stage_cells(e, stage)
    )
    SIZE = f" (at most {tasks} array tasks; afl plan: pending cells and work)"
TWO = (
    f"; {len(STAGED)} in two stages, {sum(len(stage_cells(e, 'second')) for e in STAGED)} of "
    "their cells only if chosen"
    if STAGED
    else ""
)
print(
    f"afl pipeline: {sum(map(len, CELLS.values()))} cells in {len(CELLS)} experiments{TWO}, executor {EXECUTOR}{SIZE}",
    file=sys.stderr,
)
