"""Checkpoint and resume: a run killed anywhere and resumed writes exactly the uninterrupted tables."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, Killed, assert_same_tables, train_killed_after

from afl.run import checkpoint
from afl.config import load_config
from afl.errors import AflError
from afl.run.train import train

RULES = {
    "sfl": {"algorithm": {"name": "sfl", "concurrency": 3}},
    "afl": {"algorithm": {"name": "afl", "concurrency": 3}, "client": {"lr_rule": "delay_aware"}},
    "fedasync": {"algorithm": {"name": "fedasync", "concurrency": 4, "selection": "with_replacement"}},
    "fedbuff": {"algorithm": {"name": "fedbuff", "concurrency": 4, "buffer_size": 2},
                "client": {"optimizer": "adam", "lr": 0.01, "schedule": "cosine"}},
    "asyncsgd": {"algorithm": {"name": "asyncsgd", "concurrency": 4, "server_lr": 0.05,
                               "step_rule": "delay_adaptive", "routing": [0.3, 0.3, 0.1, 0.1, 0.1, 0.1]},
                 "client": {"epochs": None}},
    # Rules that refuse work: discarded on arrival, stopped in flight (afl.sim.simulator).
    "rennala": {"algorithm": {"name": "rennala", "concurrency": 6, "buffer_size": 2, "server_lr": 0.05},
                "client": {"epochs": None}},
    "ringmaster": {"algorithm": {"name": "ringmaster", "concurrency": 6, "max_delay": 2, "stop_stale": True,
                                 "server_lr": 0.05}, "client": {"epochs": None}},
    "msync": {"algorithm": {"name": "msync", "concurrency": 6, "buffer_size": 4, "server_lr": 0.05},
              "client": {"epochs": None}},
    "ringleader": {"algorithm": {"name": "ringleader", "concurrency": 6, "server_lr": 0.05},
                   "client": {"epochs": None}},
    "mindflayer": {"algorithm": {"name": "mindflayer", "concurrency": 6, "buffer_size": 4, "time_limit": 1.5,
                                 "server_lr": 0.05}, "client": {"epochs": None}},
    # A rule with state between updates (its moments, afl.rules.fadas).
    "fadas": {"algorithm": {"name": "fadas", "concurrency": 4, "buffer_size": 2, "server_lr": 0.01,
                            "step_rule": "delay_adaptive", "tau_c": 1}},
}


def raw_config(data_root, rule, **run):
    raw = {"data": {"name": "mnist", "root": str(data_root), "num_clients": 6, "partition": "dirichlet",
                    "alpha": 0.5, "train_subset": 1200, "test_subset": 300},
           "model": {"name": "logreg"},
           "client": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.5, "epochs": 1, "batch_size": 32},
           "timing": {"rates": {"kind": "groups", "groups": [{"fraction": 0.5, "rate": 1.0},
                                                            {"fraction": 0.5, "rate": 0.2}]}},
           "run": {"updates": 24, "eval_every": 5, "checkpoint_every": 3, **run}}
    for section, values in RULES[rule].items():
        raw.setdefault(section, {}).update(values)
    return raw


@pytest.mark.parametrize("rule", list(RULES))
def test_killed_after_any_checkpoint_resumes_to_the_uninterrupted_tables(tmp_path, shared_data_root,
                                                                          monkeypatch, rule):
    cfg = load_config(raw_config(shared_data_root, rule))
    train(cfg, tmp_path / "whole", progress=False)
    for kill_after in (1, 4, 7):
        out = tmp_path / f"killed-{kill_after}"
        train_killed_after(cfg, out, kill_after, monkeypatch)
        assert (out / checkpoint.NAME).exists() and not (out / "run.json").exists()
        info = train(cfg, out, progress=False)
        assert info["resumed"] and info["status"] == "completed"
        assert_same_tables(tmp_path / "whole", out)
        assert not (out / checkpoint.NAME).exists()  # a finished run leaves no checkpoint


def test_restored_state_continues_with_the_same_events_as_a_time_budget_run(tmp_path, shared_data_root,
                                                                              monkeypatch):
    """A virtual-time budget and queued clients (FIFO) survive a checkpoint too."""
    raw = raw_config(shared_data_root, "fedasync", updates=None, time=40.0)
    raw["data"]["num_clients"] = 3
    cfg = load_config(raw)
    train(cfg, tmp_path / "whole", progress=False)
    save = checkpoint.save

    def save_then_die(state, folder):
        save(state, folder)
        if state["simulation"]["version"] >= 12:
            raise Killed

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "killed", progress=False)
    saved = checkpoint.load(tmp_path / "killed")["simulation"]
    assert any(sum(t["client"] == c for t in saved["queued"]) > 1 for c in range(3))  # a FIFO queue
    monkeypatch.setattr(checkpoint, "save", save)
    train(cfg, tmp_path / "killed", progress=False)
    assert_same_tables(tmp_path / "whole", tmp_path / "killed")


# -- real SIGKILLs in a subprocess ---------------------------------------------------------------

CHILD = """
import io, os, sys, time
import torch
from afl.run import checkpoint
from afl.cli import main

hold = os.environ.get("HOLD_WRITE_AT")
if hold:
    from afl import atomic

    real_save, real_write, version = torch.save, atomic._write, [0]

    def save(state, f):
        version[0] = state["simulation"]["version"]
        real_save(state, f)

    def slow_write(tmp, data):
        # Writes half the checkpoint's file, says so, then waits to be killed mid-write.
        if not tmp.name.startswith(".checkpoint.pt.tmp-"):
            return real_write(tmp, data)
        with open(tmp, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            if version[0] >= int(hold):
                open(os.environ["MARKER"], "w").close()
                time.sleep(600)
            fh.write(data[len(data) // 2:])

    torch.save, atomic._write = save, slow_write
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def children():
    """Started child processes, killed at teardown whatever happened."""
    started = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _child(children, config: Path, out: Path, tmp_path: Path, **env) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    children.append(subprocess.Popen([sys.executable, str(script), "train", str(config), "--out", str(out), "--quiet"],
                            cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True))
    return children[-1]


def _saved_version(out: Path) -> int:
    """The version in the checkpoint, read without ``checkpoint.load``'s cleanup (the child is writing)."""
    return torch.load(out / checkpoint.NAME, weights_only=True)["simulation"]["version"]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path.name} appeared: {proc.stdout.read()}"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


@pytest.mark.slow
def test_sigkill_at_random_points_and_mid_write_then_resume_matches(tmp_path, shared_data_root, children):
    import yaml

    raw = raw_config(shared_data_root, "afl", updates=100, checkpoint_every=1, eval_every=10)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    # The uninterrupted run in a child too: this process's float paths may differ from a fresh one's
    # (MKL reads MKL_CBWR once, at whatever test first used it).
    whole = _child(children, config, tmp_path / "whole", tmp_path)
    assert whole.wait() == 0, whole.stdout.read()
    out = tmp_path / "killed"

    # 1. Killed in the middle of a checkpoint write: half a temporary file, the previous checkpoint whole.
    marker = tmp_path / "writing"
    proc = _child(children, config, out, tmp_path, HOLD_WRITE_AT="10", MARKER=str(marker))
    _wait_for(marker, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = list(out.glob(".checkpoint.pt.tmp-*"))
    assert leftovers and (out / checkpoint.NAME).exists()
    assert _saved_version(out) == 9

    # 2. Killed at random moments while it checkpoints after every update: after a random number of
    # further checkpoints (1-5), then a random fraction of an update. Counted in updates, not in
    # seconds: on a fast CPU 0.2 s of sleep could see the run finish (CI saw it), and then there is
    # nothing to kill.
    rng = random.Random(20261121)
    versions = []
    for _ in range(4):
        goal = _saved_version(out) + rng.randint(1, 5)
        proc = _child(children, config, out, tmp_path)
        deadline = time.monotonic() + 300
        while _saved_version(out) < goal:  # it resumed and made progress
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.005))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        versions.append(_saved_version(out))
    assert versions == sorted(versions) and versions[-1] < 100, versions
    assert not leftovers[0].exists()  # the resumed run cleared the interrupted write

    # 3. The last resume runs to the end: every table equals the uninterrupted run's.
    proc = _child(children, config, out, tmp_path)
    assert proc.wait() == 0, proc.stdout.read()
    assert_same_tables(tmp_path / "whole", out)


def test_corrupt_checkpoint_is_one_line_error_and_restart_discards_it(tmp_path, shared_data_root):
    cfg = load_config(raw_config(shared_data_root, "fedasync"))
    out = tmp_path / "run"
    out.mkdir()
    (out / checkpoint.NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(AflError, match=r"checkpoint\.pt: unreadable checkpoint .*fix: rerun with --restart"):
        train(cfg, out, progress=False)
    info = train(cfg, out, progress=False, restart=True)
    assert info["status"] == "completed" and not info["resumed"]


def test_checkpoint_of_another_config_is_refused(tmp_path, shared_data_root, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(checkpoint, "remove", lambda folder: None)
    train(load_config(raw_config(shared_data_root, "fedasync")), out, progress=False)
    other = load_config(raw_config(shared_data_root, "fedasync", updates=30))
    with pytest.raises(AflError, match="holds a checkpoint of another config.*--restart"):
        train(other, out, progress=False)


def test_checkpoint_holds_no_code(tmp_path, shared_data_root, monkeypatch):
    """weights_only loading: a pickle that would run code is refused, not executed."""

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    out = tmp_path / "run"
    out.mkdir()
    torch.save({"config_hash": "x", "payload": Evil()}, out / checkpoint.NAME)
    with pytest.raises(AflError, match="unreadable checkpoint"):
        checkpoint.load(out)
    assert not (tmp_path / "pwned").exists()


def test_completed_run_is_not_run_again(tmp_path, shared_data_root, capsys):
    from afl.cli import main

    import yaml

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw_config(shared_data_root, "fedasync")))
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out), "--quiet"]) == 0
    stamp = (out / "updates.parquet").stat().st_mtime_ns
    assert main(["train", str(config), "--out", str(out), "--quiet"]) == 0
    assert "already completed" in capsys.readouterr().out
    assert (out / "updates.parquet").stat().st_mtime_ns == stamp
    assert main(["train", str(config), "--out", str(out), "--quiet", "--restart"]) == 0
    assert (out / "updates.parquet").stat().st_mtime_ns != stamp


def test_checkpoint_asked_from_another_thread_is_written_at_once_and_resumes_exactly(
        tmp_path, shared_data_root, monkeypatch):
    """What ``afl.cluster.task`` does on SLURM's USR2: ask the running simulation for a checkpoint now."""
    import shutil
    import threading

    cfg = load_config(raw_config(shared_data_root, "fedbuff", updates=150, checkpoint_every=None,
                                 checkpoint_minutes=60.0))
    train(cfg, tmp_path / "whole", progress=False)
    save, saved_versions = checkpoint.save, []

    def save_and_keep(state, folder):
        save(state, folder)
        saved_versions.append(state["simulation"]["version"])
        shutil.copy(folder / checkpoint.NAME, tmp_path / "asked.pt")

    monkeypatch.setattr(checkpoint, "save", save_and_keep)
    request = checkpoint.Request()
    worker = threading.Thread(target=train, args=(cfg, tmp_path / "run"), kwargs={"progress": False,
                                                                                  "request": request})
    worker.start()
    while not (tmp_path / "run").exists():  # created once data and model are ready
        time.sleep(0.01)
    time.sleep(0.3)  # into the run
    assert request.ask(timeout=60)
    worker.join()
    assert len(saved_versions) == 1 and 0 < saved_versions[0] < 150, saved_versions
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(tmp_path / "asked.pt", resumed / checkpoint.NAME)
    monkeypatch.setattr(checkpoint, "save", save)
    assert train(cfg, resumed, progress=False)["resumed"]
    assert_same_tables(tmp_path / "whole", resumed)
