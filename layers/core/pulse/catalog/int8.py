"""Rows quantized to int8 with a scale each: what a version publishes for the API's int8 scan
(pulse.serving.int8_scan), 384 bytes an item at 384 dimensions, plus the scale."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

ZERO_POINT = 128  # codes are uint8: value / scale + 128, so -127..127 maps to 1..255
QUANTIZE_CHUNK_ROWS = 32_768  # rows quantized at a time: the temporaries stay a few tens of MB


def quantize_rows(matrix: NDArray[Any]) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """uint8 codes (value / scale + 128) and the per-row scales; a zero row gets scale 1 and codes 128.
    float32 throughout, a chunk at a time: ~0.1 s per 100k rows of 384."""
    codes = np.empty(matrix.shape, dtype=np.uint8)
    scales = np.empty(matrix.shape[0], dtype=np.float32)
    for start in range(0, matrix.shape[0], QUANTIZE_CHUNK_ROWS):
        rows = np.asarray(matrix[start:start + QUANTIZE_CHUNK_ROWS], dtype=np.float32)
        peak = np.maximum(rows.max(axis=1), -rows.min(axis=1)) if rows.shape[1] else np.zeros(len(rows), np.float32)
        scale = np.where(peak > 0, peak / np.float32(127), np.float32(1)).astype(np.float32)
        scales[start:start + len(rows)] = scale
        scaled = rows * (np.float32(1) / scale)[:, None]
        np.rint(scaled, out=scaled)
        np.clip(scaled, -127, 127, out=scaled)
        scaled += ZERO_POINT
        codes[start:start + len(rows)] = scaled
    return codes, scales


def quantize_query(query: NDArray[Any]) -> tuple[NDArray[np.int8], float]:
    peak = float(np.abs(query).max()) if query.size else 0.0
    scale = peak / 127.0 if peak > 0 else 1.0
    return np.rint(np.asarray(query, dtype=np.float64) / scale).clip(-127, 127).astype(np.int8), scale
