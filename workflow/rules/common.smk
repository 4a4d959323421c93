# Shared by every rule file: the validated workflow config, the cells of every experiment, paths.
#
# FIGURES: the figure files `rule all` builds; a rule file appends its own targets to it.
# table(experiment, name): an experiment's aggregated table (name in TABLES), for rules that read it.
import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

REPO = Path(workflow.current_basedir).parents[1]
sys.path.insert(0, str(REPO))
# Jobs import this checkout's afl, also inside the conda environment (envs/afl.yaml), which lacks it.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

from afl import pipeline
from afl.errors import AflError

try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError as exc:
    sys.exit(f"afl pipeline: error: {pipeline.schema_error(exc)}")
try:
    CELLS = pipeline.expand(config["experiments"], REPO)
    pipeline.check_figures(config["figures"], CELLS)
except AflError as exc:
    sys.exit(f"afl pipeline: error: {exc}")

RESULTS = config["results"]
EXECUTOR = config["executor"]
ENV = "../../envs/afl.yaml"
# With --software-deployment-method conda, the job's environment provides python; else this one.
PYTHON = "python" if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method \
    else shlex.quote(sys.executable)
TABLES = ("runs", "evals", "updates", "clients")
CELL = {(c.experiment, c.name): c for cells in CELLS.values() for c in cells}


def table(experiment, name):
    return f"{RESULTS}/{experiment}/tables/{name}.parquet"


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing, if there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


ALL_TABLES = [table(e, t) for e in CELLS for t in TABLES]
FIGURES = [f"{RESULTS}/figures/{name}.png" for name in config["figures"]]

print(f"afl pipeline: {len(CELL)} cells in {len(CELLS)} experiments, executor {EXECUTOR}", file=sys.stderr)
