"""Latency and distribution figures, one definition for every report (eval, soak, bench)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray


def percentile(values: Sequence[float] | NDArray[Any], q: float, digits: int = 3) -> float | None:
    """The q-th percentile (linear interpolation, NumPy's default), rounded; None for no values."""
    return round(float(np.percentile(values, q)), digits) if len(values) else None
