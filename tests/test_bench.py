"""The benchmark scripts run (tiny sizes; no timing is asserted), and n = 100,000 clients fit in memory."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench(script, *args):
    result = subprocess.run([sys.executable, str(BENCH / script), *map(str, args)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_engine_overhead_prints_every_rule():
    out = bench("engine_overhead.py", "--clients", 200, "--concurrency", 20, "--results", 2000, "--repeats", 1)
    for rule in ("sfl", "afl", "fedasync", "fedbuff", "asyncsgd"):
        assert f"| {rule} |" in out


def test_engine_overhead_measures_a_baseline_revision_in_its_own_process():
    out = bench("engine_overhead.py", "--clients", 100, "--concurrency", 10, "--results", 500, "--repeats", 1,
                "--rules", "fedasync", "--baseline", "HEAD")
    assert "| fedasync | baseline HEAD | 500 |" in out and "| fedasync | this checkout | 500 |" in out


def test_baseline_names_a_missing_revision_in_one_line():
    result = subprocess.run([sys.executable, str(BENCH / "engine_overhead.py"), "--baseline", "no-such-rev"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    assert result.stderr.startswith("--baseline no-such-rev:") and "fix: name a commit" in result.stderr


def test_cell_time_runs_a_planned_cell_on_both_revisions():
    # The demo's cell, planned as the workflow plans it, trained by this checkout and by HEAD's
    # package in their own processes: the same server updates (the same cell, the same code).
    out = bench("cell_time.py", "--repeats", 1, "--baseline", "HEAD", "optimal_time:40")
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| optimal_time:40 |")]
    assert [row[1] for row in rows] == ["baseline HEAD", "this checkout"]
    assert rows[0][2] == rows[1][2] and int(rows[0][2]) > 0


def test_cell_time_names_a_missing_cell_in_one_line():
    result = subprocess.run([sys.executable, str(BENCH / "cell_time.py"), "optimal_time:100000", "no_such"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("cell optimal_time:100000: optimal_time has cells 0 to ")


def test_scale_memory_table_with_a_baseline(shared_data_root):
    out = bench("scale_memory.py", "--clients", 10, 300, "--modes", "engine", "--updates", 200, "--baseline", "HEAD",
                "--data-root", shared_data_root)
    for n in ("10", "300"):
        assert f"| engine | baseline HEAD | {n} |" in out and f"| engine | this checkout | {n} |" in out


def test_training_throughput_prints_ratios(shared_data_root):
    out = bench("training_throughput.py", "--data-root", shared_data_root, "--models", "logreg", "--repeats", 1,
                "--max-samples", 64, "--threads", 1)
    for implementation in ("seed-style", "lean loader", "sequential", "batched"):
        assert f"| logreg | {implementation} |" in out
    assert "| logreg | seed-style | " in out and "| 1.00x |" in out


def test_portable_float_compares_both_settings_in_child_processes(shared_data_root):
    out = bench("portable_float.py", "--data-root", shared_data_root, "--models", "logreg", "--rounds", 1,
                "--repeats", 1, "--max-samples", 64, "--threads", 1)
    assert "kernels: default " in out and ", portable DEFAULT" in out  # the children really ran each setting
    assert "| logreg | " in out and out.rstrip().endswith("x |")


def test_paper_experiment_runs_reduced(shared_data_root):
    out = bench("paper_experiment.py", "--data-root", shared_data_root, "--device", "cpu", "--rounds", 1,
                "--epochs", 1, "--train-subset", 1000, "--task-batches", 1, 3, "--repeats", 1,
                "--cells-per-device", 1, 2, "--sharing-rounds", 1)
    assert "final test accuracy" in out and "| 3 |" in out
    sharing = out[out.index("| cells per device |"):out.index("| tolerance")].strip().splitlines()
    assert len(sharing) == 4 and sharing[2].startswith("| 1 |") and sharing[3].startswith("| 2 |"), out
    assert sharing[2].endswith("| 1.00x |") and sharing[3].endswith("x |")
    one, two = (int(row.split("|")[3].replace(",", "")) for row in sharing[2:])
    assert 0 < one < two  # the samples the cells trained, counted from their clients tables
    # Part 4, docs/reproducibility.md's float tolerances on this device: three rows, each within its bound.
    tolerances = out[out.index("| tolerance"):].strip().splitlines()[2:]
    assert [row.split("|")[1].strip() for row in tolerances] == [
        "batched float32 vs task by task", "compiled vs eager", "bf16 vs float32"]
    assert all(row.endswith("| ok |") for row in tolerances), out


def test_hundred_thousand_clients_train_in_bounded_memory(shared_data_root):
    """m = 1,000 logistic regressions in flight among n = 100,000 clients: memory grows with
    m x model (31 KB each), not n x model (3.1 GB)."""
    out = bench("scale_memory.py", "--child", "training", 100_000, "--updates", 1500, "--data-root", shared_data_root)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["n"] == 100_000 and result["m"] == 1000 and result["updates"] == 1500
    assert result["above_start_mb"] < 400, result


def test_cross_device_times_afl_on_the_inputs_it_writes_for_the_peers(shared_data_root, tmp_path):
    out = bench("cross_device.py", "--clients", 1000, "--samples", 600, "--models", "mlp", "--repeats", 1,
                "--peers", "--inputs", tmp_path, "--data-root", shared_data_root)
    assert "| 1000 | 1 | mlp | afl (this checkout) |" in out and "| 1.00x |" in out
    assert "| 1000 | 1 | mlp | plain PyTorch loop (no framework) |" in out
    folder = tmp_path / "clients1000"
    data = np.load(folder / "data.npz")
    assert data["shards"].shape == (1000, 60) and data["cohorts"].shape == (1, 50)
    assert len(np.unique(data["shards"])) == 60000  # the partition covers MNIST once: IID, 60 each
    assert (folder / "init_mlp.pt").exists()
