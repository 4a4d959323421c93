"""The command line as a user runs it: exit codes, one-line errors, the four outputs."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from helpers import REPO



def afl(*args, env=None):
    return subprocess.run([sys.executable, "-m", "afl.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=600)


def test_validate_accepts_every_shipped_config():
    for path in sorted((REPO / "config" / "runs").glob("*.yaml")):
        result = afl("validate", str(path))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("ok:")


def test_bad_config_is_one_line_exit_2_and_nothing_written(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("data: {name: mnist}\nalgorithm: {name: fedbuff, concurency: 4}\n")
    out = tmp_path / "out"
    result = afl("train", str(cfg), "--out", str(out))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["afl: error: algorithm.concurency: unknown key; fix: did you mean "
                     "'algorithm.concurrency'?"]
    assert not out.exists()


def test_bad_override_and_bad_yaml(tmp_path):
    result = afl("validate", str(REPO / "config/runs/mnist-small.yaml"), "--set", "client.lr=-1")
    assert result.returncode == 2 and "client.lr: must be > 0" in result.stderr
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("data: [unclosed\n")
    result = afl("validate", str(cfg))
    assert result.returncode == 2 and "not valid YAML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("item", "message"), [
    ("array_parallelism=0", "slurm.array_parallelism: 0 is less than the minimum of 1"),
    ("mem_gb=lots", "slurm.mem_gb: 'lots' is not of type 'number'"),
    ("gpu=1", "slurm.gpu: unknown key"),
])
def test_a_bad_slurm_value_is_one_line_before_anything_is_submitted(tmp_path, item, message):
    result = afl("launch", str(REPO / "config/runs/mnist-small.yaml"), "--out", str(tmp_path / "o"),
                 "--executor", "slurm", "--slurm", item)
    assert result.returncode == 2 and result.stderr.startswith(f"afl: error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_missing_dataset_names_the_folder_and_the_fix(tmp_path):
    result = afl("train", str(REPO / "config/runs/mnist-small.yaml"), "--out", str(tmp_path / "o"),
                 "--set", f"data.root={tmp_path / 'nowhere'}")
    assert result.returncode == 2
    assert "afl data download" in result.stderr and str(tmp_path / "nowhere") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_train_writes_the_four_outputs_with_a_progress_bar(tmp_path, shared_data_root):
    out = tmp_path / "run"
    result = afl("train", str(REPO / "config/runs/mnist-small.yaml"), "--out", str(out),
                 "--set", f"data.root={shared_data_root}", "--set", "run.rounds=4", "--set", "run.eval_every=2")
    assert result.returncode == 0, result.stderr
    assert "upd" in result.stderr and "acc=" in result.stderr  # the tqdm bar
    assert "completed: 4 updates" in result.stdout
    updates = pd.read_parquet(out / "updates.parquet")
    assert {"version", "time", "client", "base_version", "staleness", "weight", "train_loss"} <= set(updates)
    evals = pd.read_parquet(out / "evals.parquet")
    assert list(evals.columns[:6]) == ["version", "time", "wall_time", "test_loss", "test_acc", "server_loss"]
    assert evals.version.tolist() == [0, 2, 4]
    clients = pd.read_parquet(out / "clients.parquet")
    assert {"client", "tasks", "mean_staleness", "busy_time"} <= set(clients) and len(clients) == 10
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "completed" and info["config"]["algorithm"]["name"] == "afl"
    assert {"config_hash", "seed", "versions", "commit", "wall_time"} <= set(info)
    assert not list(out.glob(".*tmp*"))  # no temporary files left behind


@pytest.mark.parametrize("argv", [["nope"], ["train", "x.yaml", "--out", "o", "--bogus"], ["queue", "predict"]])
def test_usage_errors_are_one_line_with_the_fix(argv, capsys):
    from afl.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "error:" in err[0] and "fix: see `afl" in err[0], err


def test_progress_bar_moves_during_local_training(tmp_path, shared_data_root, capsys, monkeypatch):
    """The bar shows the local steps of the batch in training and redraws its clock meanwhile,
    instead of sitting at 0 updates with the clock frozen until the first batch is trained."""
    import afl.run.train
    from afl.config import load_config

    monkeypatch.setattr(afl.run.train, "PROGRESS_SECONDS", 0.0)  # redraw on every local step
    cfg = load_config({"data": {"name": "mnist", "root": str(shared_data_root), "num_clients": 3,
                                "train_subset": 900, "test_subset": 100},
                       "model": {"name": "cnn"}, "algorithm": {"name": "fedbuff", "concurrency": 3},
                       "client": {"epochs": 1, "batch_size": 64}, "run": {"updates": 2}})
    afl.run.train.train(cfg, tmp_path / "run", progress=True)
    err = capsys.readouterr().err
    before_first_update = err[:err.index("1/2 [")]
    redraws = [(int(d), int(n)) for d, n in re.findall(r"local=(\d+)/(\d+) steps", before_first_update)]
    planned = redraws[-1][1]
    # The first batch's task-steps, shown as they are done, while the bar still reads 0 updates.
    assert planned > 5 and [d for d, _ in redraws] == sorted({d for d, _ in redraws}), redraws
    assert len([d for d, n in redraws if d < n]) >= 4 and redraws[-1] == (planned, planned), redraws
