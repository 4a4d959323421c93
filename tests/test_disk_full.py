"""A full disk or an exceeded quota at run time (issue 24): every kind of write (a checkpoint, a
table, run.json, a figure) that fails with ENOSPC ends the run with one line naming the file and
the fix, leaves no temporary file, keeps the last good checkpoint, and a rerun once space is back
gives the uninterrupted run's tables."""

import errno
import os
from pathlib import Path

import pytest

from afl import atomic
from afl.cli import main

from helpers import TINY, assert_same_tables, write_yaml


def full_disk_at(monkeypatch, name: str, nth: int = 1):
    """Make the ``nth`` write of a file called ``name`` find the disk full after half its bytes."""
    write, seen = atomic._write, []

    def failing(tmp: Path, data: bytes) -> None:
        if tmp.name.startswith(f".{name}.tmp-"):
            seen.append(tmp)
            if len(seen) == nth:
                with open(tmp, "wb") as fh:
                    fh.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
        write(tmp, data)

    monkeypatch.setattr(atomic, "_write", failing)


CONFIG = {**TINY, "run": {"rounds": 12, "eval_every": 2, "checkpoint_every": 4}}


@pytest.mark.parametrize("name, nth", [("checkpoint.pt", 2), ("updates.parquet", 1), ("clients.parquet", 1),
                                       ("run.json", 1)])
def test_a_full_disk_is_one_line_leaves_no_temporary_file_and_the_rerun_resumes(tmp_path, capsys, monkeypatch,
                                                                                name, nth):
    config = write_yaml(tmp_path / "config.yaml", CONFIG)
    assert main(["train", str(config), "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    out = tmp_path / "cut"
    with monkeypatch.context() as patch:
        full_disk_at(patch, name, nth)
        code = main(["train", str(config), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == (f"afl: error: {out / name}: no space left on device while writing it; fix: free space (or raise "
                      "the quota) there, then run again: a run resumes from its last checkpoint")
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]
    if name != "checkpoint.pt" or nth > 1:
        assert (out / "checkpoint.pt").is_file()  # the last good checkpoint is kept
    assert main(["train", str(config), "--out", str(out), "--quiet"]) == 0
    assert_same_tables(tmp_path / "whole", out)


def test_a_figure_on_a_full_disk_is_one_line_and_keeps_the_previous_one(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from afl import figures

    fig, _ = plt.subplots()
    png = tmp_path / "f.png"
    figures.save(fig, png)
    before = png.read_bytes()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    full_disk_at(monkeypatch, "f.png")
    with pytest.raises(atomic.DiskFull, match=r"f\.png: no space left on device while writing it; fix: "):
        figures.save(fig, png)
    assert png.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]
