"""`pulse bench` (`make bench`): the speed and cost of every hot path, each figure measured in the same run as
what it is compared with. Prints a table and writes .pulse/bench.json. One thread throughout (BLAS and
onnxruntime), as a 1,769 MB Lambda has one vCPU. Tests never assert these numbers; this prints them.
"""

import os
import sys

# BLAS reads its thread count when NumPy loads: before any module of the bench imports NumPy. If NumPy came first
# (something imported it before this package), `pulse bench` starts again in a fresh interpreter (run.main).
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
BLAS_LOADED_UNPINNED = "numpy" in sys.modules and any(os.environ.get(name) != "1" for name in BLAS_THREAD_VARIABLES)
for _variable in BLAS_THREAD_VARIABLES:
    os.environ[_variable] = "1"  # even if set otherwise: the bench's figures are one thread's

from pulse_dev.bench.measure import DIM, QUICK, BenchSizes  # noqa: E402
from pulse_dev.bench.run import main, run  # noqa: E402

__all__ = ["DIM", "QUICK", "BenchSizes", "main", "run"]
