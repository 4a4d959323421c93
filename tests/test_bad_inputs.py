"""Bad inputs beyond the config's keys: files, folders, data; divergence and failure statuses.

Every bad input is answered by ``afl`` with one line naming the key or file and the fix,
exit status 2, and nothing written. Config-key cases live in tests/test_config.py.
"""

import copy
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from afl.run import checkpoint
from afl.cli import main
from afl.config import config_hash, load_config, to_dict
from afl.learning import workloads
from afl.errors import ConfigError
from afl.run.train import train



def small(data_root, **sections) -> dict:
    raw = {"data": {"name": "mnist", "root": str(data_root), "num_clients": 4, "train_subset": 800,
                    "test_subset": 200},
           "model": {"name": "logreg"}, "algorithm": {"name": "fedasync", "concurrency": 2},
           "run": {"updates": 6, "eval_every": 3}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def run_cli(tmp_path, capsys, raw, out=None, *extra):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = out or tmp_path / "out"
    code = main(["train", str(config), "--out", str(out), "--quiet", *extra])
    return code, capsys.readouterr().err.strip().splitlines(), out


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, words", [(_truncate, "MD5"), (_flip_a_byte, "MD5")])
def test_damaged_dataset_file_is_refused_by_checksum(tmp_path, copy_mnist, capsys, damage, words):
    root = copy_mnist(tmp_path / "data").parents[1]
    damage(next((root / "MNIST" / "raw").glob("train-labels*")))
    code, err, out = run_cli(tmp_path, capsys, small(root))
    assert code == 2 and len(err) == 1, err
    assert "train-labels" in err[0] and words in err[0] and "fix:" in err[0] and "afl data download" in err[0]
    assert not out.exists()


def test_missing_dataset_file(tmp_path, copy_mnist, capsys):
    root = copy_mnist(tmp_path / "data").parents[1]
    next((root / "MNIST" / "raw").glob("t10k-images*")).unlink()
    code, err, out = run_cli(tmp_path, capsys, small(root))
    assert code == 2 and len(err) == 1 and "t10k-images" in err[0] and "fix:" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("content, words", [
    (None, "cannot read"),
    ("rate\n1.0\n", "header with columns client,rate"),
    ("client,rate\n0,1.0\n1,fast\n2,1\n3,1\n", "line 3 is not 'client,rate' numbers"),
    ("client,rate\n0,1.0\n1,1.0\n2,0\n3,1\n", "line 4: client must be in 0..3 and rate > 0"),
    ("client,rate\n0,1.0\n1,1.0\n", "no rate for client 2"),
    ("", "header with columns client,rate"),
])
def test_bad_trace_csv_names_the_file_line_and_fix(tmp_path, shared_data_root, capsys, content, words):
    trace = tmp_path / "rates.csv"
    if content is not None:
        trace.write_text(content)
    raw = small(shared_data_root, timing={"rates": {"kind": "trace", "path": str(trace)}})
    code, err, out = run_cli(tmp_path, capsys, raw)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("afl: error: timing.rates.path:") and words in err[0] and "fix:" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("content, words", [
    (None, "cannot read"),
    ("{not json", "is not JSON"),
    ('{"q": 1}', "holds no list of probabilities"),
    ('{"p": [0.5, 0.5]}', "has 2 entries for 4 clients"),
    ('{"p": [0.4, 0.4, 0.4, 0.4]}', "sums to 1.6, not 1"),
])
def test_bad_routing_file(tmp_path, shared_data_root, capsys, content, words):
    routing = tmp_path / "p.json"
    if content is not None:
        routing.write_text(content)
    raw = small(shared_data_root, algorithm={"name": "asyncsgd", "concurrency": 2, "routing": str(routing)})
    code, err, out = run_cli(tmp_path, capsys, raw)
    assert code == 2 and len(err) == 1 and words in err[0] and "fix:" in err[0], err
    assert not out.exists()


def test_output_folder_under_a_file_or_a_file_itself(tmp_path, shared_data_root, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out in (blocker, blocker / "run"):
        code, err, _ = run_cli(tmp_path, capsys, small(shared_data_root), out)
        assert code == 2 and len(err) == 1, err
        assert err[0] == f"afl: error: --out {out}: {blocker} is a file, not a folder; fix: choose another --out"
    assert blocker.read_text() == "x"


def test_missing_config_file(tmp_path, capsys):
    code = main(["train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nope.yaml" in err[0] and "fix:" in err[0], err
    assert not (tmp_path / "out").exists()


def test_divergence_stops_with_its_update_and_keeps_the_tables(tmp_path, shared_data_root):
    raw = small(shared_data_root, client={"lr": 1e30}, run={"updates": 40, "eval_every": 2})
    info = train(load_config(raw), tmp_path, progress=False)
    assert info["status"] == "diverged"
    updates = pd.read_parquet(tmp_path / "updates.parquet")
    assert f"at update {info['updates']}" in info["reason"] and info["updates"] < 40
    assert updates.version.max() == info["updates"]
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "diverged"
    again = train(load_config(raw), tmp_path, progress=False)  # final: not run again
    assert again.get("skipped") and again["status"] == "diverged"


def test_a_crash_mid_run_records_failed_and_keeps_the_checkpoint(tmp_path, shared_data_root, monkeypatch):
    raw = small(shared_data_root, run={"updates": 12, "eval_every": 3, "checkpoint_every": 2})
    cfg = load_config(raw)
    real, calls = workloads.TrainingWorkload.__call__, []

    def flaky(self, tasks):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("CUDA error: out of memory")
        return real(self, tasks)

    monkeypatch.setattr(workloads.TrainingWorkload, "__call__", flaky)
    with pytest.raises(RuntimeError):
        train(cfg, tmp_path, progress=False)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == "failed" and "out of memory" in info["reason"]
    assert info["config_hash"] == config_hash(cfg)
    assert checkpoint.load(tmp_path)["simulation"]["version"] >= 2
    monkeypatch.setattr(workloads.TrainingWorkload, "__call__", real)
    assert train(cfg, tmp_path, progress=False)["resumed"]  # a failed run is retried from its checkpoint


# -- property tests of the config loader ----------------------------------------------------------

VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 20), st.floats(-2, 2), st.just(float("nan")),
                   st.sampled_from(["", "mnist", "afl", "groups", "x"]), st.lists(st.floats(0, 1), max_size=3))
KEY_NAMES = ["seed", "data.num_clients", "data.alpha", "data.partition", "client.lr", "client.epochs",
             "client.momentum", "algorithm.name", "algorithm.concurrency", "algorithm.buffer_size",
             "algorithm.routing", "algorithm.staleness.a", "timing.distribution", "timing.rates.kind",
             "run.updates", "run.eval_every", "run.checkpoint_every", "no.such", "client.nope"]
KEYS = st.sampled_from(KEY_NAMES)


# A valid config in which breaking one key can break only that key: one task in flight (no client
# count is below it) and a list of speed groups present (timing.rates.kind: groups has its groups).
BASE = {"algorithm": {"concurrency": 1},
        "timing": {"rates": {"groups": [{"fraction": 0.5, "rate": 1.0}, {"fraction": 0.5, "rate": 0.2}]}}}


def _with(key: str, value) -> dict:
    """``BASE`` with the dotted ``key`` set to ``value``."""
    raw = copy.deepcopy(BASE)
    *path, last = key.split(".")
    node = raw
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value
    return raw


def _is_negative_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value < 0


def _check_one_broken_key(key: str, value) -> None:
    """Break one key of a valid config: it loads (and round-trips), or the one-line error names that key."""
    try:
        cfg = load_config(_with(key, value))
    except ConfigError as exc:
        text = str(exc)
        assert "\n" not in text and "; fix: " in text
        if key == "no.such":  # an unknown section is named where the path first goes wrong
            assert text.startswith("no: unknown key;"), text
        elif key == "algorithm.staleness.a" and _is_negative_number(value):
            # The staleness function's own range check (polynomial: a >= 0) names its section, then a.
            assert text.startswith("algorithm.staleness: staleness 'polynomial': a must be >= 0, got "), text
        else:
            assert text.split(":")[0] == key, (key, value, text)
        return
    again = load_config(to_dict(cfg))  # what run.json records reloads to the same config
    assert again == cfg and config_hash(again) == config_hash(cfg)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(KEYS, VALUES)
def test_one_broken_key_loads_or_is_one_config_error_naming_that_key(key, value):
    _check_one_broken_key(key, value)


# Each kind of value VALUES draws, at its edges, for every key (deterministic, unlike the draws above).
EDGE_VALUES = [None, True, False, -3, -1, 0, 1, 2, 20, -2.0, -0.5, 0.0, 0.5, 1.0, 2.0, float("nan"), "", "mnist",
               "afl", "groups", "x", [], [0.5], [1.0, 0.0, 0.0]]


def test_every_key_at_every_edge_value_is_named_when_broken():
    assert load_config(BASE)
    for key in KEY_NAMES:
        for value in EDGE_VALUES:
            _check_one_broken_key(key, value)


@pytest.mark.parametrize("text, words", [
    ("client: {lr: .inf}\n", "client.lr: must be a finite number, got inf; fix: set client.lr to a finite number"),
    ("client:\n  lr: -.inf\n", "client.lr: must be a finite number, got -inf"),
    ("algorithm: {name: fedasync, mixing: .nan}\n", "algorithm.mixing: must be a finite number, got nan"),
    ("client: {lr: 1e999}\n", "client.lr: must be a finite number, got inf"),  # a YAML 1.1 string: 1e999
    ("timing: {rates: {kind: groups, groups: [{fraction: .inf, rate: 1}]}}\n",
     "timing.rates.groups[0].fraction: must be a finite number"),
    ("- a\n", "the top level must be a mapping of sections"),
    ("[]\n", "the top level must be a mapping of sections"),
    ("3\n", "the top level must be a mapping of sections"),
    ("just words\n", "the top level must be a mapping of sections"),
    ("seed: 1\nseed: 2\n", "seed: written twice in one mapping (lines 1 and 2); fix: keep one of them"),
    ("client:\n  lr: 0.1\n  momentum: 0.5\n  lr: 0.2\n", "lr: written twice in one mapping (lines 2 and 4)"),
])
@pytest.mark.parametrize("command", ["validate", "train"])
def test_config_file_holes_are_one_line_errors_and_write_nothing(tmp_path, capsys, text, words, command):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    out = tmp_path / "out"
    code = main([command, str(config)] + (["--out", str(out)] if command == "train" else []))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("afl: error: ") and words in err[0] and "fix: " in err[0], err
    assert not out.exists()


def test_yaml11_exponent_without_dot_still_reads_as_a_number(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("client: {lr: 1e-3, lr_alpha: 2E-2}\n")
    assert yaml.safe_load(config.read_text())["client"]["lr"] == "1e-3"  # PyYAML's reading: a string
    cfg = load_config(config)
    assert cfg.client.lr == 0.001 and cfg.client.lr_alpha == 0.02
    assert main(["validate", str(config)]) == 0 and capsys.readouterr().out.startswith("ok: ")


def test_a_config_that_is_not_a_mapping_is_refused_by_the_loader_too():
    with pytest.raises(ConfigError, match=r"^config: the top level must be a mapping of sections, got list"):
        load_config(["a"])
