"""The metric recorder (``afl.run.recorder``, SPEC section 4): rows, frames, server loss, state, atomic writes."""

import io
import json
import math
import os
import platform
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from afl import atomic
from afl.run import recorder
from afl.rules import Arrival
from afl.sim.simulator import ClientStats
from afl.sim.tasks import Task

RESULTS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "results.md"


def documented_columns(table: str) -> list[str]:
    """The columns docs/results.md lists for ``table`` (parenthesised notes dropped)."""
    row = next(line for line in RESULTS_PAGE.read_text().splitlines() if line.startswith(f"| `{table}` |"))
    columns = row.split(" | ")[2]
    while re.search(r"\([^()]*\)", columns):
        columns = re.sub(r"\([^()]*\)", "", columns)
    return re.findall(r"`([^`]+)`", columns)


def task(client, base_version, dispatch, start, duration) -> Task:
    return Task(id=0, client=client, index=0, base_version=base_version, base=torch.zeros(1),
                dispatch_time=dispatch, duration=duration, start_time=start)


def arrival(client, loss) -> Arrival:
    return Arrival(client=client, base_version=0, base=torch.zeros(1), vector=torch.zeros(1), num_samples=1,
                   train_loss=loss)


def filled() -> recorder.Recorder:
    """Two server updates (two results, then one) and two evaluations."""
    rec = recorder.Recorder()
    rec.update(1, 2.5, [task(3, 0, 0.0, 0.5, 2.0), task(1, 0, 0.0, 0.0, 2.5)],
               [arrival(3, 4.0), arrival(1, 3.0)], [0, 0], np.array([0.25, 0.75]), 1.5)
    rec.update(2, 4.0, [task(0, 0, 1.0, 1.0, 3.0)], [arrival(0, 1.0)], [1], [np.float64(0.5)], 0.125)
    rec.eval(0, 0.0, 0.01, 2.3, 0.1, float("nan"))
    rec.eval(2, 4.0, 0.02, 1.2, 0.6, rec.server_loss(2), 0.75)
    rec.sample([{"version": 2, "time": 4.0, "mode": "with_replacement", "m": 2, "n": 4, "draws": 100,
                 "sigma2": 3.0, "variance": 1.4, "stderr": 0.1, "theory": 1.5}])
    return rec


def test_update_rows_become_the_documented_updates_frame():
    u = filled().updates_frame()
    assert list(u.columns) == documented_columns("updates.parquet") == list(recorder.UPDATE_COLUMNS)
    expected = pd.DataFrame({
        "version": [1, 1, 2], "time": [2.5, 2.5, 4.0], "client": [3, 1, 0], "base_version": [0, 0, 0],
        "staleness": [0, 0, 1], "weight": [0.25, 0.75, 0.5], "train_loss": [4.0, 3.0, 1.0],
        "dispatch_time": [0.0, 0.0, 1.0], "start_time": [0.5, 0.0, 1.0], "duration": [2.0, 2.5, 3.0],
        "update_norm": [1.5, 1.5, 0.125]})  # one norm per update, on each of its rows
    pd.testing.assert_frame_equal(u, expected, check_exact=True)
    assert {c: str(u[c].dtype) for c in ("version", "client", "base_version", "staleness")} == dict.fromkeys(
        ("version", "client", "base_version", "staleness"), "int64")


def test_eval_rows_become_the_documented_evals_frame():
    e = filled().evals_frame()
    assert list(e.columns) == documented_columns("evals.parquet") == list(recorder.EVAL_COLUMNS)
    expected = pd.DataFrame({"version": [0, 2], "time": [0.0, 4.0], "wall_time": [0.01, 0.02],
                             "test_loss": [2.3, 1.2], "test_acc": [0.1, 0.6],
                             "server_loss": [float("nan"), 2.0],  # mean(3.0, 1.0): the last 2 results
                             "grad_norm_sq": [float("nan"), 0.75]})  # NaN: not measured
    pd.testing.assert_frame_equal(e, expected, check_exact=True)



def test_sampling_rows_become_the_documented_sampling_frame():
    f = filled().sampling_frame()
    assert list(f.columns) == documented_columns("sampling.parquet") == list(recorder.SAMPLING_COLUMNS)
    assert f.to_dict("records") == [{"version": 2, "time": 4.0, "mode": "with_replacement", "m": 2, "n": 4,
                                     "draws": 100, "sigma2": 3.0, "variance": 1.4, "stderr": 0.1, "theory": 1.5}]
    empty = recorder.Recorder().sampling_frame()
    assert len(empty) == 0 and str(empty["variance"].dtype) == "float64" and str(empty["m"].dtype) == "int64"

def test_empty_frames_have_the_columns_and_types():
    rec = recorder.Recorder()
    assert list(rec.updates_frame().columns) == list(recorder.UPDATE_COLUMNS) and rec.updates_frame().empty
    assert rec.updates_frame()["staleness"].dtype == np.int64
    assert list(rec.evals_frame().columns) == list(recorder.EVAL_COLUMNS) and rec.evals_frame().empty


@pytest.mark.parametrize("m, expected", [
    (1, 1.0),  # the last result's loss
    (2, 2.0),  # (3 + 1) / 2
    (3, 8 / 3),  # (4 + 3 + 1) / 3
    (10, 8 / 3),  # fewer results than m: all of them
])
def test_server_loss_is_the_mean_train_loss_of_the_last_m_results(m, expected):
    assert filled().server_loss(m) == pytest.approx(expected, rel=1e-15)


def test_server_loss_before_any_result_is_nan():
    assert math.isnan(recorder.Recorder().server_loss(5))


def test_state_dict_round_trip_through_a_weights_only_load():
    rec = filled()
    buffer = io.BytesIO()
    torch.save(rec.state_dict(), buffer)  # as a checkpoint holds it
    buffer.seek(0)
    back = recorder.Recorder()
    back.load_state_dict(torch.load(buffer, weights_only=True))
    pd.testing.assert_frame_equal(back.updates_frame(), rec.updates_frame(), check_exact=True)
    pd.testing.assert_frame_equal(back.evals_frame(), rec.evals_frame(), check_exact=True)
    # The restored recorder goes on recording: its rows follow the saved ones.
    back.update(3, 5.0, [task(2, 2, 4.0, 4.0, 1.0)], [arrival(2, 7.0)], [0], [1.0], 0.5)
    assert back.updates_frame().version.tolist() == [1, 1, 2, 3]
    assert back.server_loss(2) == 4.0  # (1 + 7) / 2


def test_loaded_state_is_a_copy():
    rec = filled()
    state = rec.state_dict()
    back = recorder.Recorder()
    back.load_state_dict(state)
    rec.update(3, 5.0, [task(2, 2, 4.0, 4.0, 1.0)], [arrival(2, 7.0)], [0], [1.0], 0.5)
    assert len(back.updates_frame()) == 3 and len(rec.updates_frame()) == 4


def test_clients_frame():
    stats = ClientStats(np.array([2, 0, 1]), np.array([3.0, 0.0, 4.0]), np.array([5.0, 0.0, 1.5]),
                        np.array([1, 0, 0]), np.array([0, 2, 0]), np.array([0.5, 0.75, 0.0]), np.array([0, 0, 3]),
                        np.array([0, 4, 0]), np.array([9.0, 3.5, 9.0]))
    frame = recorder.clients_frame(stats, np.array([10, 20, 30]), np.array([1.0, 0.2, 0.5]),
                                   np.array([0.5, 0.25, 0.25]))
    assert list(frame.columns) == documented_columns("clients.parquet")
    expected = pd.DataFrame({"client": [0, 1, 2], "tasks": [2, 0, 1],
                             "mean_staleness": [1.5, float("nan"), 4.0],  # 3/2, no task, 4/1
                             "predicted_staleness": [float("nan")] * 3,  # no prediction given
                             "held": [0, 0, 3], "discarded": [1, 0, 0], "cancelled": [0, 2, 0],
                             "busy_time": [5.0, 0.0, 1.5], "wasted_time": [0.5, 0.75, 0.0], "rate": [1.0, 0.2, 0.5],
                             "num_samples": [10, 20, 30], "routing_p": [0.5, 0.25, 0.25],
                             "online_time": [9.0, 3.5, 9.0], "dropped_tasks": [0, 4, 0]})
    pd.testing.assert_frame_equal(frame, expected, check_exact=True, check_dtype=False)
    predicted = recorder.clients_frame(stats, np.array([10, 20, 30]), np.ones(3), np.ones(3) / 3, [0.5, 1.0, 2.0])
    assert predicted.predicted_staleness.tolist() == [0.5, 1.0, 2.0]


# ----------------------------------------------------------------------------- atomic writes


def leftovers(folder: Path, keep: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


def test_write_parquet_and_json_leave_only_the_file(tmp_path):
    frame = filled().updates_frame()
    atomic.write_parquet(frame, tmp_path / "updates.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "updates.parquet"), frame, check_exact=True)
    assert leftovers(tmp_path, "updates.parquet") == []
    (tmp_path / "updates.parquet").unlink()

    atomic.write_json({"status": "completed", "path": tmp_path, "n": 3}, tmp_path / "run.json")
    assert json.loads((tmp_path / "run.json").read_text()) == {"n": 3, "path": str(tmp_path), "status": "completed"}
    assert leftovers(tmp_path, "run.json") == []
    # Writing again replaces the file whole.
    atomic.write_json({"status": "failed"}, tmp_path / "run.json")
    assert json.loads((tmp_path / "run.json").read_text()) == {"status": "failed"}
    assert leftovers(tmp_path, "run.json") == []


class Crash(BaseException):
    """A process death in the middle of a write: nothing after it runs."""


def crash(monkeypatch, where: str, folder: Path, owner, method: str) -> None:
    """Make the next atomic write in ``folder`` die: while ``owner.method`` writes the temporary file
    (which is left cut to half), at its fsync, or at the rename."""
    if where == "writing":
        original = getattr(owner, method)

        def write(*args, **kwargs):
            original(*args, **kwargs)
            (tmp,) = [p for p in folder.iterdir() if ".tmp-" in p.name]
            tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
            raise Crash

        monkeypatch.setattr(owner, method, write)
        return

    def die(*args, **kwargs):
        raise Crash

    monkeypatch.setattr(atomic.os, "fsync" if where == "fsync" else "replace", die)


FRAME = filled().evals_frame()
FILES = {  # name: (write, read, the old content, the new content, what writes the temporary file)
    "evals.parquet": (atomic.write_parquet, pd.read_parquet, FRAME, FRAME.assign(test_acc=[0.9, 0.95]),
                      (atomic, "_write")),
    "run.json": (atomic.write_json, lambda path: json.loads(path.read_text()),
                 {"status": "completed", "updates": 10}, {"status": "failed", "updates": 12},
                 (atomic, "_write")),
}


def assert_same(a, b) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    else:
        assert a == b


@pytest.mark.parametrize("where", ["writing", "fsync", "rename"])
@pytest.mark.parametrize("name", list(FILES))
def test_a_crash_mid_write_leaves_the_old_file(tmp_path, monkeypatch, name, where):
    write, read, old, new, (owner, method) = FILES[name]
    path = tmp_path / name
    write(old, path)
    crash(monkeypatch, where, tmp_path, owner, method)
    with pytest.raises(Crash):
        write(new, path)
    monkeypatch.undo()
    assert_same(read(path), old)
    # The crash left at most the temporary file, which no reader looks for; the next write succeeds.
    assert all(n.startswith(f".{name}.tmp-") for n in leftovers(tmp_path, name))
    write(new, path)
    assert_same(read(path), new)


def test_temporary_name_is_hidden_and_per_process(tmp_path):
    tmp = atomic.tmp_name(tmp_path / "updates.parquet")
    assert tmp.parent == tmp_path and tmp.name == f".updates.parquet.tmp-{os.getpid()}"


# ----------------------------------------------------------------------------- a real run's records


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A short afl run through ``afl train`` (Synthetic, 6 clients, 2 in flight): its output folder,
    every server update's ``(x_t, x_{t+1})`` as the rule computed them (``afl.rules.make`` wrapped),
    and the float-path variables set for it (values equivalent to the defaults, so nothing changes,
    but each its own, unless ``AFL_PORTABLE_FLOAT`` already set them)."""
    import afl
    from afl import rules
    from afl.config import load_config
    from afl.run.train import train

    out = tmp_path_factory.mktemp("run")
    models = []
    make = rules.make

    class Recording:
        def __init__(self, aggregator):
            self.aggregator = aggregator

        def __getattr__(self, name):
            return getattr(self.aggregator, name)

        def aggregate(self, x, arrivals, taus):
            x_new, weights = self.aggregator.aggregate(x, arrivals, taus)
            models.append((x.detach().clone(), x_new.detach().clone()))
            return x_new, weights

    def recording_make(algorithm, clients):
        return Recording(make(algorithm, clients))

    cfg = load_config({"seed": 10, "data": {"name": "synthetic", "num_clients": 6},
                       "algorithm": {"name": "afl", "concurrency": 2}, "client": {"batch_size": 16},
                       "run": {"rounds": 8, "eval_every": 100, "device": "cpu"}})
    env = {} if afl.PORTABLE else {"MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "ALL",
                                   "ATEN_CPU_CAPABILITY": torch.backends.cpu.get_cpu_capability().lower()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rules, "make", recording_make)
        for key, value in env.items():
            mp.setenv(key, value)
        train(cfg, out, progress=False)
        env = {key: os.environ.get(key) for key in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    return out, models, env


def test_update_norm_of_a_real_run_is_the_distance_between_consecutive_models(real_run):
    out, models, _ = real_run
    updates = pd.read_parquet(out / "updates.parquet")
    assert updates.version.unique().tolist() == list(range(1, len(models) + 1)) and len(models) == 8
    for (x, _), (_, x_prev_new) in zip(models[1:], models[:-1]):  # one update starts from the last one's model
        torch.testing.assert_close(x, x_prev_new, rtol=0, atol=0)
    expected = [math.sqrt(((x_new.double() - x.double()) ** 2).sum().item()) for x, x_new in models]
    assert min(expected) > 0
    for version, rows in updates.groupby("version"):
        assert len(rows) == 2  # afl: m = 2 results per update, each row with the update's norm
        assert rows.update_norm.tolist() == pytest.approx([expected[version - 1]] * 2, rel=1e-5, abs=0)
    assert updates.staleness.max() > 0  # some results were stale: a norm from their own base would differ


def test_run_json_records_the_float_paths_of_this_machine(real_run):
    import afl

    out, _, env = real_run
    paths = json.loads((out / "run.json").read_text())["float_paths"]
    assert set(paths) == {"cpu", "aten_capability", "torch_threads", "portable",
                          "MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"}
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:  # not Linux
        models = []
    assert paths["cpu"] == (models[0] if models else platform.processor())
    assert paths["aten_capability"] == torch.backends.cpu.get_cpu_capability()
    assert paths["torch_threads"] == torch.get_num_threads()
    assert paths["portable"] is afl.PORTABLE
    assert {k: paths[k] for k in env} == env and len(set(env.values())) == 3
