"""``afl launch``: run one cell of an experiment grid, locally or as a SLURM job, and wait.

The run is a ``TrainCell``, a ``submitit.helpers.Checkpointable`` callable that holds the cell's
resolved config and calls ``afl.run.train.train``. With ``--executor slurm`` it is submitted through
``submitit.AutoExecutor`` (resources: ``cluster/slurm.yaml`` updated by ``--slurm KEY=VALUE``), the
job is named after the cell, its SLURM logs land in ``<out>/slurm/``, and this process waits for
it. On preemption, or ``signal_delay_s`` before the time limit, SLURM sends USR2: submitit calls
``TrainCell.checkpoint``, which has the running simulation write ``<out>/checkpoint.pt`` at
once and resubmits the same call; the requeued job resumes from it (``afl train`` resumes by
itself). Time-limit requeues are capped at ``max_requeue`` (submitit's
``slurm_max_num_timeout``); preemptions requeue without limit.

Before submitting: a finished run (completed or diverged) of the same config in ``<out>`` ends
the launch at once, and a job of an earlier launch that is still queued or running is waited
for instead of submitting a second one, so a rerun after the login session died re-attaches.
A job that ends without a result raises ``JobFailed``: one line with the SLURM state and the
fix, then the tail of the job's log. With ``--executor local`` the run happens in this process.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import submitit
import yaml
from submitit.core.utils import FailedJobError, FailedSubmissionError, UncompletedJobError

from afl.atomic import write_json
from afl.cluster.pipeline import DEFAULT_SLURM, slurm_settings
from afl.config import Config, config_hash, load_config, to_dict
from afl.errors import AflError
from afl.run import checkpoint

SUMMARY = ("status", "reason", "config_hash", "updates", "virtual_time", "wall_time", "final_test_acc")
# sacct states of a job that may still produce a result (anything else is final).
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                 "REQUEUE_FED", "RESIZING", "SUSPENDED", "PREEMPTED", "SIGNALING", "STAGE_OUT"}
JOB_ID_FILE = "job_id"
CHECKPOINT_WAIT_S = 60  # how long the USR2 handler waits for the checkpoint it asked for
LOG_LINES = 25
STATE_WAIT_S = 60  # accounting reaches sacct shortly after the job ends


class JobFailed(Exception):
    """A cell's job ended without a result: the first line says how and the fix, then its log tail."""


class TrainCell(submitit.helpers.Checkpointable):
    """One cell's training run, as submitit pickles and calls it; ``threads``: torch threads.

    ``afl.run.train.train`` runs in a worker thread while the main thread waits, so that the USR2
    handler (Python runs signal handlers in the main thread) can ask the running simulation
    for a checkpoint and wait for it (``afl.run.checkpoint.Request``).
    """

    def __init__(self, config: dict, out: str, threads: int | None = None) -> None:
        self.config = config
        self.out = out
        self.threads = threads

    def __call__(self) -> dict:
        # Imported in the job, not at the top: the login node that submits and waits never loads torch.
        import torch

        from afl.run.train import train

        if self.threads:
            torch.set_num_threads(self.threads)
        self._request = checkpoint.Request()
        outcome = {}

        def run() -> None:
            try:
                outcome["info"] = train(load_config(self.config), Path(self.out), progress=False,
                                        request=self._request)
            except BaseException as exc:  # handed to the main thread, which raises it for submitit
                outcome["error"] = exc

        worker = threading.Thread(target=run, name="afl-train", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(timeout=1.0)
        if "error" in outcome:
            raise outcome["error"]
        return {k: outcome["info"].get(k) for k in SUMMARY}

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """USR2 (preemption or time limit): checkpoint now, then resubmit this same call (it resumes)."""
        request = self.__dict__.pop("_request", None)  # not pickled with the resubmitted call
        if request is not None and request.ask(timeout=CHECKPOINT_WAIT_S):
            resume = f"the {checkpoint.NAME} just written"
        elif (Path(self.out) / checkpoint.NAME).exists():
            resume = f"the last {checkpoint.NAME} (none written within {CHECKPOINT_WAIT_S} s of the signal)"
        else:
            resume = "the start (no checkpoint yet)"
        print(f"afl launch: USR2: requeueing {self.out}; the run resumes from {resume}", file=sys.stderr, flush=True)
        return super().checkpoint(*args, **kwargs)


def sacct_state(job_id: str) -> tuple[str, str]:
    """(state, exit code) of the job's allocation from sacct; ("UNKNOWN", "") if it has no record yet."""
    try:
        out = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State,ExitCode"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "UNKNOWN", ""
    lines = [line.split("|") for line in out.splitlines() if "|" in line]
    if not lines:
        return "UNKNOWN", ""
    state, exit_code = lines[-1][0], lines[-1][1]
    return (state.split()[0] if state else "UNKNOWN"), exit_code


def final_state(job_id: str) -> tuple[str, str]:
    """The job's final sacct state, waiting up to STATE_WAIT_S for accounting to catch up."""
    deadline = time.monotonic() + STATE_WAIT_S
    state = sacct_state(job_id)
    while (state[0] in ACTIVE_STATES or state[0] == "UNKNOWN") and time.monotonic() < deadline:
        time.sleep(2)
        state = sacct_state(job_id)
    return state


def _log_tail(job: submitit.Job) -> str:
    for path in (job.paths.stderr, job.paths.stdout):
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        if lines:
            return f"--- last {min(len(lines), LOG_LINES)} lines of {path}\n" + "\n".join(lines[-LOG_LINES:])
    return f"--- no log at {job.paths.stderr}"


def failure(job: submitit.Job, name: str, error: Exception, out: Path, max_requeue: int) -> str:
    """The JobFailed message: state, what happened and the fix on the first line, then the log tail."""
    state, exit_code = final_state(job.job_id)
    kept = f"its checkpoint {out / checkpoint.NAME} is kept" if (out / checkpoint.NAME).exists() else \
        "no checkpoint was written yet (run.checkpoint_minutes)"
    if "timed-out too many times" in str(error) or state == "TIMEOUT":
        head = (f"cell {name}: SLURM job {job.job_id} ended {state}: it reached its time limit more than "
                f"max_requeue={max_requeue} times and {kept}; fix: raise slurm time_min or max_requeue "
                "in the workflow config and rerun (it resumes from the checkpoint)")
    else:
        head = (f"cell {name}: SLURM job {job.job_id} ended {state} (exit code {exit_code or '?'}); "
                f"fix: read the log below, fix the cause and rerun (only failed cells run again)")
    return f"{head}\n{_log_tail(job)}"


def _running_job(folder: Path) -> submitit.Job | None:
    """The job of an earlier launch into ``folder`` if SLURM still has it queued or running."""
    try:
        job_id = (folder / JOB_ID_FILE).read_text().strip()
    except OSError:
        return None
    if not job_id or sacct_state(job_id)[0] not in ACTIVE_STATES:
        return None
    return submitit.SlurmJob(folder=folder, job_id=job_id)


def executor_parameters(name: str, slurm: dict) -> dict:
    """submitit AutoExecutor parameters from the SLURM settings (cluster/slurm.yaml keys)."""
    params = {"name": name, "timeout_min": slurm["time_min"], "cpus_per_task": slurm["cpus"],
              "mem_gb": slurm["mem_gb"], "slurm_signal_delay_s": slurm["signal_delay_s"]}
    if slurm.get("gpus"):
        params["gpus_per_node"] = slurm["gpus"]
    for key in ("partition", "account", "qos", "constraint"):
        if slurm.get(key):
            params[f"slurm_{key}"] = slurm[key]
    if slurm.get("additional"):
        params["slurm_additional_parameters"] = dict(slurm["additional"])
    return params


def run_on_slurm(cell: TrainCell, name: str, slurm: dict) -> dict:
    """Submit ``cell`` (or re-attach to its job still in the queue), wait, return its summary."""
    folder = Path(cell.out) / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    job = _running_job(folder)
    if job is not None:
        print(f"afl launch: {name}: waiting for SLURM job {job.job_id} of an earlier launch", file=sys.stderr, flush=True)
    else:
        try:
            executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=slurm["max_requeue"])
        except RuntimeError as exc:
            raise AflError(f"executor: slurm, but no SLURM here ({exc}); "
                           "fix: run on a login node of the cluster, or use executor: local") from None
        executor.update_parameters(**executor_parameters(name, slurm))
        try:
            job = executor.submit(cell)
        except (FailedSubmissionError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "output", None) or str(exc)
            detail = detail.decode(errors="replace") if isinstance(detail, bytes) else detail
            raise AflError(f"slurm: sbatch refused job {name} ({' '.join(detail.split())}); "
                           "fix: correct the slurm settings (cluster/slurm.yaml, the workflow config's slurm)") from None
        (folder / JOB_ID_FILE).write_text(f"{job.job_id}\n")
        print(f"afl launch: {name}: submitted SLURM job {job.job_id}", file=sys.stderr, flush=True)
    try:
        result = job.result()
    except (FailedJobError, UncompletedJobError) as exc:
        raise JobFailed(failure(job, name, exc, Path(cell.out), slurm["max_requeue"])) from None
    return {**result, "executor": "slurm", "job_id": job.job_id}


def launch(cfg: Config, out: Path, name: str, executor: str = "local", slurm: dict | None = None,
           threads: int | None = None) -> dict:
    """Run ``cfg`` into ``out`` (``executor`` local: here; slurm: as a job); return its summary."""
    out = Path(out).resolve()
    if (info := checkpoint.finished_run(out, config_hash(cfg))) is not None:
        return {**{k: info.get(k) for k in SUMMARY}, "executor": executor, "job_id": None}
    if executor == "local":
        return {**TrainCell(to_dict(cfg), str(out), threads)(), "executor": "local", "job_id": None}
    return run_on_slurm(TrainCell(to_dict(cfg), str(out), slurm["cpus"]), name, slurm)


def _settings(items: list[str]) -> dict:
    settings = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise AflError(f"--slurm {item}: must look like KEY=VALUE; fix: e.g. --slurm partition=gpu")
        settings[key.strip()] = yaml.safe_load(text)
    return settings


def cmd_launch(args) -> int:
    cfg = load_config(args.config, args.set or [])
    hash_ = config_hash(cfg)
    if args.expect_hash and hash_ != args.expect_hash:
        raise AflError(f"{args.config}: resolves to config {hash_}, but the workflow planned {args.expect_hash}; "
                       "fix: the base config changed while the workflow ran: rerun snakemake")
    name = args.name or Path(args.out).name
    slurm = slurm_settings(args.slurm_defaults, _settings(args.slurm or [])) if args.executor == "slurm" else None
    try:
        info = launch(cfg, Path(args.out), name, args.executor, slurm, args.threads)
    except JobFailed as exc:
        print(f"afl: error: {exc}", file=sys.stderr)
        return 1
    if args.record:
        write_json({"cell": name, **info}, Path(args.record))
    print(f"{info['status']}: {name} ({info['updates']} updates, executor {info['executor']}"
          f"{', SLURM job ' + info['job_id'] if info['job_id'] else ''}) -> {args.out}")
    return 0


def add_parser(sub, config_args) -> None:
    """``afl launch``: the subcommand the workflow's train rule runs for each cell."""
    p = sub.add_parser("launch", help="run one grid cell here or as a SLURM job (submitit), and wait for it")
    config_args(p)
    p.add_argument("--out", required=True, help="the cell's folder: results, checkpoint, SLURM logs")
    p.add_argument("--name", help="job name (default: the --out folder's name)")
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: run in this process; slurm: submit with submitit and wait")
    p.add_argument("--slurm", action="append", metavar="KEY=VALUE",
                   help="override a key of --slurm-defaults, e.g. --slurm time_min=60 (repeatable)")
    p.add_argument("--slurm-defaults", default=str(DEFAULT_SLURM), help="SLURM settings file (default: %(default)s)")
    p.add_argument("--threads", type=int, help="torch threads of a local run (a SLURM job uses its cpus)")
    p.add_argument("--expect-hash", help="fail unless the resolved config has this hash")
    p.add_argument("--record", help="write the outcome here (JSON) once the run has finished")
    p.set_defaults(func=cmd_launch)
