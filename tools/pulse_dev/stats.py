"""Latency and distribution figures, one definition for every report (eval, soak, bench)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentile(values: Sequence[float] | np.ndarray, q: float, digits: int = 3) -> float | None:
    """The q-th percentile (linear interpolation, NumPy's default), rounded; None for no values."""
    return round(float(np.percentile(values, q)), digits) if len(values) else None
