"""``afl train``: build the federation, the model and the rule, simulate, write the results."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

import afl
from afl import algorithms, federation, models, params, recorder
from afl.config import Config, config_hash, to_dict
from afl.engine.executor import LazyExecutor, NullWorkload, TrainingWorkload
from afl.engine.simulator import Simulation
from afl.errors import AflError
from afl.rng import Stream, torch_stream
from afl.training import evaluate


def planned_updates(cfg: Config, batch: int) -> int | None:
    """Server updates the budget allows, where it is given in updates or rounds."""
    budgets = []
    if cfg.run.updates is not None:
        budgets.append(cfg.run.updates)
    if cfg.run.rounds is not None:
        budgets.append(cfg.run.rounds * cfg.algorithm.concurrency // batch)
    return min(budgets) if budgets else None


def check_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AflError(f"--out {out}: cannot create it ({exc.strerror}); fix: choose a writable folder") from None
    if not os.access(out, os.W_OK):
        raise AflError(f"--out {out}: not writable; fix: choose a writable folder or fix its permissions")


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(afl.__file__).parent, text=True,
                              capture_output=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def train(cfg: Config, out: Path, progress: bool = True) -> dict:
    """Run one simulation; write updates/evals/clients Parquet tables and run.json into ``out``."""
    out = Path(out)
    check_output_dir(out)
    started, wall0 = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    device = federation.device_of(cfg)
    fed = federation.build(cfg, device)
    rule = algorithms.make(cfg.algorithm, fed.routing)
    total = planned_updates(cfg, rule.batch)
    if cfg.run.workload == "none":
        model, x0, workload = None, torch.zeros(0), NullWorkload(cfg)
    else:
        model = models.build(cfg.model.name, fed.num_classes, fed.input_shape,
                             generator=torch_stream(cfg.seed, Stream.INIT)).to(device)
        x0 = params.flatten(model)
        workload = TrainingWorkload(cfg, model, fed.train_x, fed.train_y, fed.shards, total)

    rec = recorder.Recorder()
    recent_losses = deque(maxlen=cfg.algorithm.concurrency)
    bar = tqdm(total=total, unit="upd", desc=f"{cfg.algorithm.name}", disable=not progress,
               dynamic_ncols=True, mininterval=0.5, file=sys.stderr)
    last = {"acc": math.nan}

    def on_update(version, now, tasks, arrivals, taus, weights, update_norm):
        rec.update(version, now, tasks, arrivals, taus, weights, update_norm)
        recent_losses.extend(a.train_loss for a in arrivals)
        bar.update(1)

    def on_eval(x, version, now):
        if model is None:
            return None
        loss, acc = evaluate(model, x, fed.test_x, fed.test_y, cfg.run.eval_batch)
        server_loss = float(np.mean(recent_losses)) if recent_losses else math.nan
        rec.eval(version, now, time.perf_counter() - wall0, loss, acc, server_loss)
        last["acc"] = acc
        bar.set_postfix(vtime=f"{now:.4g}", acc=f"{acc:.4f}", refresh=False)
        return loss

    sim = Simulation(cfg, rule, LazyExecutor(workload), x0, fed.sizes, fed.rates, fed.routing,
                     workload.steps, on_update, on_eval)
    outcome = sim.run()
    bar.close()
    wall = time.perf_counter() - wall0

    updates, evals = rec.updates_frame(), rec.evals_frame()
    recorder.write_parquet(updates, out / "updates.parquet")
    recorder.write_parquet(evals, out / "evals.parquet")
    recorder.write_parquet(recorder.clients_frame(outcome.stats, fed.sizes, fed.rates, fed.routing),
                           out / "clients.parquet")
    info = {
        "status": outcome.status,
        "reason": outcome.reason,
        "config": to_dict(cfg),
        "config_hash": config_hash(cfg),
        "seed": cfg.seed,
        "updates": outcome.version,
        "virtual_time": outcome.time,
        "wall_time": wall,
        "updates_per_second": outcome.version / wall if wall > 0 else None,
        "final_test_acc": last["acc"] if model is not None else None,
        "device": str(device),
        "started": started.isoformat(),
        "host": platform.node(),
        "commit": _commit(),
        "versions": {"afl": afl.__version__, "python": platform.python_version(),
                     "torch": torch.__version__, "numpy": np.__version__, "pandas": pd.__version__},
    }
    recorder.write_json(info, out / "run.json")
    return info
