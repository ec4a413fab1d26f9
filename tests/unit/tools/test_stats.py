import numpy as np

from pulse_dev.stats import percentile


def test_percentiles_interpolate_round_and_are_none_without_values():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(np.arange(101, dtype=float), 99) == 99.0
    assert percentile([0.12345, 0.2], 0, digits=2) == 0.12
    assert percentile([], 50) is None and percentile(np.array([]), 99) is None
