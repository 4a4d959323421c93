"""afl: asynchronous federated learning in deterministic virtual time.

``AFL_PORTABLE_FLOAT=1`` in the environment (docs/reproducibility.md, promise 3) pins the
float code paths that differ between CPUs and between batch shapes before torch loads: MKL's
conditional numerical reproducibility on its compatible path, ATen's portable (non-AVX) kernels
and oneDNN's SSE4.1 kernels. Results then do not depend on how pending tasks are batched
(tested bitwise) nor, by construction, on which x86 CPU runs them at the same thread count, at
the cost measured by ``bench/training_throughput.py --portable``.
"""

import os
import sys

__version__ = "0.1.0"

PORTABLE_ENV = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}
PORTABLE = os.environ.get("AFL_PORTABLE_FLOAT", "") not in ("", "0")

if PORTABLE:
    pinned = all(os.environ.get(k) == v for k, v in PORTABLE_ENV.items())
    if "torch" in sys.modules and not pinned:  # MKL, ATen and oneDNN read these once, as torch starts
        raise ImportError("AFL_PORTABLE_FLOAT=1 must take effect before torch loads; "
                          "fix: import afl before torch, or export the variables of afl.PORTABLE_ENV yourself")
    os.environ.update(PORTABLE_ENV)
