import os
from pathlib import Path

import pytest


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
