import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import SLURM_PARTITION

from afl.data import mnist


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """The offline dataset root: $AFL_SHARED_DATA, else <repo>/../shared/data.

    A missing root fails the test (data tests must run in CI) unless AFL_ALLOW_SKIP=1.
    """
    env = os.environ.get("AFL_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not root.is_dir():
        message = f"shared data root {root} not found: set AFL_SHARED_DATA"
        if os.environ.get("AFL_ALLOW_SKIP") == "1":
            pytest.skip(message)
        pytest.fail(message)
    return root


@pytest.fixture
def copy_mnist(shared_data_root):
    """``copy_mnist(dest_root, decompress=False)``: copy the four MNIST files of the shared root into
    ``dest_root/MNIST/raw`` (optionally decompressed) and return that folder."""
    def copy(dest_root: Path, decompress: bool = False) -> Path:
        raw = dest_root / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for name in mnist.MD5:
            src = shared_data_root / "MNIST" / "raw" / name
            if decompress:
                (raw / name.removesuffix(".gz")).write_bytes(gzip.decompress(src.read_bytes()))
            else:
                shutil.copyfile(src, raw / name)
        return raw
    return copy


@pytest.fixture(scope="module")
def slurm_cluster() -> str:
    """A SLURM cluster that answers (e.g. `bash cluster/local-slurm.sh up`); its test partition's name.

    Use it for a whole module with ``pytestmark = pytest.mark.usefixtures("slurm_cluster")``: the
    module's tests are skipped when no cluster answers, or fail when AFL_REQUIRE_SLURM=1 (CI).
    """
    problem = None
    if shutil.which("sinfo") is None:
        problem = "sinfo not on PATH"
    else:
        try:
            out = subprocess.run(
                ["sinfo", "-h", "-p", SLURM_PARTITION, "-o", "%a"],
                capture_output=True, text=True, timeout=20,
            )
            if out.returncode != 0 or out.stdout.strip() != "up":
                problem = (f"partition {SLURM_PARTITION!r} not up: rc={out.returncode} {out.stdout.strip()!r} "
                           f"{out.stderr.strip()!r}")
        except subprocess.TimeoutExpired:
            problem = "sinfo did not answer within 20 s"
    if problem is None:
        return SLURM_PARTITION
    msg = f"no SLURM cluster ({problem}); start one with `bash cluster/local-slurm.sh up`"
    if os.environ.get("AFL_REQUIRE_SLURM") == "1":
        pytest.fail(f"AFL_REQUIRE_SLURM=1 but {msg}", pytrace=False)
    pytest.skip(msg)
