"""A server rule from outside afl (examples/custom_rule): by import path and by entry point, through
``afl validate`` and ``afl train``, with afl's own checks, tables and resume (issue 24)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from afl.cli import main
from afl.config import load_config
from afl.run.train import train

from helpers import assert_same_tables, train_killed_after

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "custom_rule"
CONFIG = EXAMPLE / "config.yaml"


def afl(*args, pythonpath=(EXAMPLE,)):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    return subprocess.run([sys.executable, "-m", "afl.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=300)


def test_the_trimmed_mean_by_hand(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from my_afl_rules.rules import TrimmedMean

    from afl.rules import Arrival

    values = [[1.0, 10.0], [2.0, -5.0], [3.0, 0.0], [100.0, 1.0], [4.0, 2.0]]
    arrivals = [Arrival(i, 0, torch.zeros(2), torch.tensor(v), 1, 0.0) for i, v in enumerate(values)]
    x, w = TrimmedMean(0.2).aggregate(torch.zeros(2), arrivals, [0] * 5)
    # floor(0.2 * 5) = 1 a side: coordinate 0 keeps 2, 3, 4 -> 3; coordinate 1 keeps 0, 1, 2 -> 1.
    assert x.tolist() == [3.0, 1.0] and w.tolist() == [0.2] * 5


def test_the_example_rule_validates_and_trains_by_import_path(tmp_path):
    checked = afl("validate", str(CONFIG))
    assert checked.returncode == 0 and checked.stdout.startswith("ok: "), checked.stderr
    ran = afl("train", str(CONFIG), "--out", str(tmp_path / "trimmed"), "--quiet")
    assert ran.returncode == 0, ran.stderr
    sfl = afl("train", str(CONFIG), "--out", str(tmp_path / "sfl"), "--quiet", "--set", "algorithm.name=sfl")
    assert sfl.returncode == 0, sfl.stderr
    trimmed = pd.read_parquet(tmp_path / "trimmed" / "evals.parquet")["test_acc"].iloc[-1]
    mean = pd.read_parquet(tmp_path / "sfl" / "evals.parquet")["test_acc"].iloc[-1]
    # IID clients: trimming a fifth at each end costs little against the plain mean (both about 0.8).
    assert trimmed > 0.7 and abs(trimmed - mean) < 0.03, (trimmed, mean)
    updates = pd.read_parquet(tmp_path / "trimmed" / "updates.parquet")
    assert (updates.groupby("version").size() == 5).all() and (updates["weight"] == 0.2).all()


def test_an_installed_entry_point_names_the_same_rule(tmp_path):
    """A distribution's entry point in the group afl.rules (as `pip install ./examples/custom_rule`
    registers it): `algorithm.name: trimmed_mean` runs the same rule, bit for bit."""
    site = tmp_path / "site"
    info = site / "my_afl_rules-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-afl-rules\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[afl.rules]\ntrimmed_mean = my_afl_rules.rules:TRIMMED_MEAN\n")
    by_name = afl("train", str(CONFIG), "--out", str(tmp_path / "name"), "--quiet", "--set",
                  "algorithm.name=trimmed_mean", pythonpath=(EXAMPLE, site))
    assert by_name.returncode == 0, by_name.stderr
    by_path = afl("train", str(CONFIG), "--out", str(tmp_path / "path"), "--quiet")
    assert by_path.returncode == 0, by_path.stderr
    for table in ("updates.parquet", "clients.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "name" / table),
                                      pd.read_parquet(tmp_path / "path" / table), check_exact=True)
    missing = afl("validate", str(CONFIG), "--set", "algorithm.name=trimmed_mean")  # not installed here
    assert missing.returncode == 2 and "nor an import path" in missing.stderr


def test_a_run_of_the_example_rule_resumes_to_the_uninterrupted_tables(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    overrides = ["run.checkpoint_every=5", "run.rounds=20"]
    train(load_config(CONFIG, overrides), tmp_path / "whole", progress=False)
    train_killed_after(load_config(CONFIG, overrides), tmp_path / "cut", 2, monkeypatch)
    train(load_config(CONFIG, overrides), tmp_path / "cut", progress=False)
    assert_same_tables(tmp_path / "whole", tmp_path / "cut")


@pytest.mark.parametrize("name, words", [
    ("no_such_pkg.rules:X", "cannot import no_such_pkg.rules for no_such_pkg.rules:X"),
    ("my_afl_rules.rules:NOPE", "my_afl_rules.rules has no NOPE"),
    ("my_afl_rules.rules:TRIM", "is a float, not an afl.rules.Rule"),
    ("trimmed_men", "nor an import path"),
])
def test_a_bad_rule_name_is_one_line_naming_the_key(capsys, monkeypatch, name, words):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    code = main(["validate", str(CONFIG), "--set", f"algorithm.name={name}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("afl: error: algorithm.name: ") and words in err[0], err
    assert "fix: " in err[0]


def test_the_example_rule_s_own_check_runs(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    code = main(["validate", str(CONFIG), "--set", "algorithm.concurrency=4"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("afl: error: algorithm.concurrency: a trimmed mean of 4 results trims nothing")


# ----------------------------------------------------------------------------- models


def test_a_model_from_outside_afl_trains_by_import_path_and_entry_point(tmp_path):
    """examples/custom_rule's wide_mlp (one hidden layer of 64): by import path, initialised like mlp
    from the run's INIT stream (so the same bits by entry point), and trained in afl's batches."""
    site = tmp_path / "site"
    info = site / "my_afl_rules-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-afl-rules\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[afl.models]\nwide_mlp = my_afl_rules.models:wide_mlp\n")
    runs = {}
    for how, name in (("path", "my_afl_rules.models:wide_mlp"), ("entry", "wide_mlp")):
        done = afl("train", str(CONFIG), "--out", str(tmp_path / how), "--quiet", "--set", f"model.name={name}",
                   "--set", "algorithm.name=sfl", pythonpath=(EXAMPLE, site))
        assert done.returncode == 0, done.stderr
        runs[how] = pd.read_parquet(tmp_path / how / "evals.parquet")
    pd.testing.assert_frame_equal(runs["path"].drop(columns="wall_time"), runs["entry"].drop(columns="wall_time"),
                                  check_exact=True)
    assert runs["path"]["test_acc"].iloc[-1] > 0.7  # IID Synthetic(1,1): it learns


def test_the_factory_s_model_is_initialised_from_the_generator(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from afl.learning import models

    a, b, c = (models.build("my_afl_rules.models:wide_mlp", 10, (60,), torch.Generator().manual_seed(s))
               for s in (1, 1, 2))
    flat = [torch.cat([p.reshape(-1) for p in m.parameters()]) for m in (a, b, c)]
    assert torch.equal(flat[0], flat[1]) and not torch.equal(flat[0], flat[2])
    assert [tuple(p.shape) for p in a.parameters()] == [(64, 60), (64,), (10, 64), (10,)]


@pytest.mark.parametrize("name, words", [
    ("my_afl_rules.models:with_dropout", "batched training has no rule for Dropout"),
    ("my_afl_rules.models:nothing", "my_afl_rules.models has no nothing"),
    ("my_afl_rules.rules:TRIM", "is a float, not a model factory"),
    ("my_afl_rules.rules:TrimmedMean", "raised TypeError"),
    ("builtins:print", "returned a NoneType, not a torch.nn.Module"),
])
def test_a_model_afl_cannot_train_is_one_line_before_any_task(tmp_path, name, words):
    done = afl("train", str(CONFIG), "--out", str(tmp_path / "out"), "--quiet", "--set", f"model.name={name}")
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1 and err[0].startswith("afl: error: model.name: ") and words in err[0], err
    assert not (tmp_path / "out" / "updates.parquet").exists()


# ----------------------------------------------------------------------------- datasets

BLOBS = {"data": {"name": "my_afl_rules.data:blobs", "num_clients": 8, "partition": "iid"},
         "client": {"lr": 0.05, "epochs": 1, "batch_size": 16}, "algorithm": {"name": "fedbuff", "concurrency": 4},
         "run": {"rounds": 20, "eval_every": 5}}

BAD_PROVIDERS = '''
import torch
from afl.data import Dataset

NOT_CALLABLE = 3


def raises(root, seed):
    raise RuntimeError("no blobs today")


def not_a_dataset(root, seed):
    return {"x": 1}


def float64(root, seed):
    x = torch.zeros(10, 2, dtype=torch.float64)
    return Dataset("d", x, torch.zeros(10, dtype=torch.int64), x, torch.zeros(10, dtype=torch.int64), 2)


def label_too_large(root, seed):
    x = torch.zeros(10, 2)
    return Dataset("d", x, torch.full((10,), 2), x, torch.zeros(10, dtype=torch.int64), 2)
'''


def test_a_dataset_from_outside_afl_trains_by_import_path_and_entry_point(tmp_path, monkeypatch):
    """examples/custom_rule's blobs (four Gaussian classes in the plane, generated from the seed):
    partitioned by afl (IID here), trained with afl's default model for it (mlp) to about the Bayes
    accuracy; by entry point, the same bits."""
    import yaml

    site = tmp_path / "site"
    info = site / "my_afl_rules-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-afl-rules\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[afl.datasets]\nblobs = my_afl_rules.data:blobs\n")
    config = tmp_path / "blobs.yaml"
    config.write_text(yaml.safe_dump(BLOBS))
    for how, name in (("path", "my_afl_rules.data:blobs"), ("entry", "blobs")):
        done = afl("train", str(config), "--out", str(tmp_path / how), "--quiet", "--set", f"data.name={name}",
                   pythonpath=(EXAMPLE, site))
        assert done.returncode == 0, done.stderr
    evals = [pd.read_parquet(tmp_path / how / "evals.parquet").drop(columns="wall_time") for how in ("path", "entry")]
    pd.testing.assert_frame_equal(*evals, check_exact=True)
    assert evals[0]["test_acc"].iloc[-1] > 0.93  # the Bayes accuracy is about 0.95


@pytest.mark.parametrize("provider, words", [
    ("NOT_CALLABLE", "is a int, not a dataset provider"),
    ("raises", "raised RuntimeError: no blobs today"),
    ("not_a_dataset", "returned a dict, not an afl.data.Dataset"),
    ("float64", "train_x is not a float32 tensor"),
    ("label_too_large", "train_y has labels outside 0..1"),
])
def test_a_bad_dataset_provider_is_one_line(tmp_path, capsys, monkeypatch, provider, words):
    (tmp_path / "bad_data.py").write_text(BAD_PROVIDERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**BLOBS, "data": {**BLOBS["data"], "name": f"bad_data:{provider}"}}))
    code = main(["train", str(config), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("afl: error: data.name: ") and words in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key, name, words", [
    ("model.name", "no_such_pkg.models:wide_mlp", "cannot find module no_such_pkg.models"),
    ("model.name", "my_afl_rules.nope:wide_mlp", "cannot find module my_afl_rules.nope"),
    ("data.name", "my_afl_rules.data.deeper:blobs", "cannot find module my_afl_rules.data.deeper"),
    ("data.name", "'my_afl_rules.data:'", "nor an object after the colon"),
])
def test_a_model_or_dataset_path_that_cannot_be_found_is_one_line_at_validation(key, name, words):
    """Before any job: `afl validate` (and so the workflow's planning) finds the module on this node."""
    done = afl("validate", str(CONFIG), "--set", f"{key}={name}")
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1 and err[0].startswith(f"afl: error: {key}: ") and words in err[0], err


def test_validation_finds_a_model_and_a_dataset_without_importing_them():
    """The login node checks that a model's and a dataset's module exist, but runs none of their code
    (nor torch); a rule is imported, since its own check is part of validation."""
    script = ("import sys; from afl.config import load_config, read_yaml, apply_overrides; "
              f"raw = apply_overrides(read_yaml({str(CONFIG)!r}), ['model.name=my_afl_rules.models:wide_mlp', "
              "'data.name=my_afl_rules.data:blobs']); load_config(raw); "
              "print(sorted(m for m in sys.modules if m.startswith('my_afl_rules') or m == 'torch'))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(EXAMPLE)}, timeout=120)
    assert done.returncode == 0, done.stderr
    imported = eval(done.stdout.strip())
    assert "my_afl_rules.models" not in imported and "my_afl_rules.data" not in imported, imported
    assert "my_afl_rules.rules" in imported  # the config's algorithm.name, checked by its own code
