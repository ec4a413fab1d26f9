"""`pulse bench` (`make bench`): the speed and cost of every hot path, each figure measured in the same run as
what it is compared with. Prints a table and writes .pulse/bench.json. One thread throughout (BLAS and
onnxruntime), as a 1,769 MB Lambda has one vCPU. Tests never assert these numbers; this prints them.
"""

import os

# BLAS reads its thread count when NumPy loads: before any module of the bench imports NumPy.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

from pulse_dev.bench.measure import DIM, QUICK, BenchSizes  # noqa: E402
from pulse_dev.bench.run import main, run  # noqa: E402

__all__ = ["DIM", "QUICK", "BenchSizes", "main", "run"]
