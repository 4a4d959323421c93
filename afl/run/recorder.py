"""What a run records, written atomically (``afl.atomic``).

``updates.parquet``: one row per result applied in a server update. ``evals.parquet``:
one row per evaluation of the global model. ``clients.parquet``: one row per client.
``sampling.parquet``: one row per evaluation and selection mode of the sampling probe
(``afl.run.probes``; no rows when it is off).
``run.json``: the resolved config, its hash, seed, versions, commit, wall time, status.
Every file is written to a temporary name, fsynced and renamed into place, so a reader
never sees a partial file.
"""

import bisect

import numpy as np
import pandas as pd


UPDATE_COLUMNS = ("version", "time", "client", "base_version", "staleness", "weight", "train_loss",
                  "dispatch_time", "start_time", "duration", "update_norm")
EVAL_COLUMNS = ("version", "time", "wall_time", "test_loss", "test_acc", "server_loss", "grad_norm_sq")
SAMPLING_COLUMNS = ("version", "time", "mode", "m", "n", "draws", "sigma2", "variance", "stderr", "theory")


class Recorder:
    """Metric rows, kept as columns in memory until written."""

    def __init__(self):
        self.updates = {c: [] for c in UPDATE_COLUMNS}
        self.evals = {c: [] for c in EVAL_COLUMNS}
        self.sampling = {c: [] for c in SAMPLING_COLUMNS}

    def update(self, version, time, tasks, arrivals, taus, weights, update_norm) -> None:
        u = self.updates
        for t, a, tau, w in zip(tasks, arrivals, taus, weights):
            u["version"].append(version)
            u["time"].append(time)
            u["client"].append(t.client)
            u["base_version"].append(t.base_version)
            u["staleness"].append(tau)
            u["weight"].append(float(w))
            u["train_loss"].append(a.train_loss)
            u["dispatch_time"].append(t.dispatch_time)
            u["start_time"].append(t.start_time)
            u["duration"].append(t.duration)
            u["update_norm"].append(update_norm)

    def eval(self, version, time, wall_time, test_loss, test_acc, server_loss, grad_norm_sq=float("nan")) -> None:
        for c, v in zip(EVAL_COLUMNS, (version, time, wall_time, test_loss, test_acc, server_loss, grad_norm_sq)):
            self.evals[c].append(v)

    def sample(self, rows: list[dict]) -> None:
        """Rows of the sampling probe (``afl.run.probes``)."""
        for row in rows:
            for c in SAMPLING_COLUMNS:
                self.sampling[c].append(row[c])

    def applied_since(self, version: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(versions, clients, weights)`` of the results applied in the updates after ``version``
        (the sampling probe's ``afl_rule`` mode, ``afl.run.probes``)."""
        u = self.updates
        start = bisect.bisect_right(u["version"], version)
        return (np.array(u["version"][start:], dtype=np.int64), np.array(u["client"][start:], dtype=np.int64),
                np.array(u["weight"][start:], dtype=float))

    def server_loss(self, m: int) -> float:
        """The first seed's "server loss": mean local training loss of the last ``m`` applied results."""
        recent = self.updates["train_loss"][-m:]
        return float(np.mean(recent)) if recent else float("nan")

    def state_dict(self) -> dict:
        return {"updates": self.updates, "evals": self.evals, "sampling": self.sampling}

    def load_state_dict(self, state: dict) -> None:
        self.updates = {c: list(state["updates"][c]) for c in UPDATE_COLUMNS}
        self.evals = {c: list(state["evals"][c]) for c in EVAL_COLUMNS}
        self.sampling = {c: list(state["sampling"][c]) for c in SAMPLING_COLUMNS}

    def updates_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.updates, columns=list(UPDATE_COLUMNS)).astype(
            {"version": "int64", "client": "int64", "base_version": "int64", "staleness": "int64"})

    def evals_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.evals, columns=list(EVAL_COLUMNS)).astype({"version": "int64", "grad_norm_sq": "float64"})

    def sampling_frame(self) -> pd.DataFrame:
        types = {"version": "int64", "time": "float64", "mode": "str", "m": "int64", "n": "int64", "draws": "int64",
                 "sigma2": "float64", "variance": "float64", "stderr": "float64", "theory": "float64"}
        return pd.DataFrame(self.sampling, columns=list(SAMPLING_COLUMNS)).astype(types)


def clients_frame(stats, sizes: np.ndarray, rates: np.ndarray, routing: np.ndarray,
                  predicted_staleness: np.ndarray | None = None) -> pd.DataFrame:
    """Per client: tasks applied, mean staleness of its applied results, results held by the rule for
    later updates, results discarded and tasks stopped by the rule, busy time and the part of it
    wasted on those (and on tasks lost when it went offline), its setting, its time online and
    its tasks lost offline (``timing.availability``).

    ``predicted_staleness``: the closed Jackson network's ``E[tau_i]`` (``afl.queueing.network``),
    NaN where the run is not in that setting (see ``afl.queueing.model.jackson_reasons``).
    """
    tasks = stats.tasks
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_staleness = np.where(tasks > 0, stats.staleness_sum / np.maximum(tasks, 1), np.nan)
    if predicted_staleness is None:
        predicted_staleness = np.full(len(tasks), np.nan)
    return pd.DataFrame({"client": np.arange(len(tasks)), "tasks": tasks, "mean_staleness": mean_staleness,
                         "predicted_staleness": np.asarray(predicted_staleness, dtype=float),
                         "held": stats.held, "discarded": stats.discarded, "cancelled": stats.cancelled,
                         "busy_time": stats.busy_time, "wasted_time": stats.wasted_time, "rate": rates, "num_samples": sizes,
                         "routing_p": routing, "online_time": stats.online_time, "dropped_tasks": stats.dropped})
