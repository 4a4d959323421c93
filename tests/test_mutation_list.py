"""tools/mutation.py (issue 25) stays runnable: every mutant's snippet occurs exactly once in its
file and its tests exist, so a change that moves the code it mutates fails here, in CI, rather
than when someone next runs the (slow, on-demand) mutation check."""

import subprocess
import sys

from helpers import REPO


def test_every_mutant_still_applies():
    result = subprocess.run([sys.executable, str(REPO / "tools" / "mutation.py"), "--list"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert result.stdout.rstrip().endswith(" mutants, 0 stale")
