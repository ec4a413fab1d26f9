"""The catalogue as int8 codes for the scan: 384 bytes an item instead of 1,536 at 384 dimensions.

Scoring a catalogue is one matrix-vector product bound by memory bandwidth, so reading a quarter of the bytes is
what makes it faster. Each row is stored as round(row / scale) with its own scale (its largest magnitude / 127),
offset by 128 into uint8; the query likewise. onnxruntime's MatMulInteger (u8 x s8 into int32, MLAS) scores all
rows; the best `shortlist_size(k)` are then rescored exactly in float32, so the answer's scores and order are
the float32 ones whenever the true top k reach the shortlist (recall measured by `make bench` and the tests).

No onnxruntime (a function without the encoder layer): no kernel, and callers score in float32 as before.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from pulse.catalog.int8 import ZERO_POINT, quantize_query, quantize_rows

if TYPE_CHECKING:
    from pulse.catalog.version import CatalogVersion

log = logging.getLogger(__name__)

SHORTLIST_MIN, SHORTLIST_PER_K = 100, 10


def shortlist_size(k: int) -> int:
    """Candidates rescored exactly: 10 per result asked, at least 100 (rows of 1.5 KB: microseconds each)."""
    return max(SHORTLIST_MIN, SHORTLIST_PER_K * k)


@dataclass(frozen=True, eq=False)
class Int8Scan:
    """A version's rows as int8 codes, scored by an integer kernel; approximate scores for the shortlist."""

    codes: NDArray[np.uint8]  # (n, dim) C-contiguous
    scales: NDArray[np.float32]  # (n,)
    kernel: IntegerMatVec

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.scales.nbytes)

    def scores(self, query: NDArray[Any]) -> NDArray[np.float32]:
        """Approximate query . row for every row (float32, a new array the caller may change)."""
        quantized, query_scale = quantize_query(query)
        products = self.kernel(self.codes, quantized)
        approximate = products.astype(np.float32)
        approximate *= self.scales
        approximate *= np.float32(query_scale)
        return approximate


class IntegerMatVec:
    """codes (n, d) uint8 with zero point 128, times an int8 vector (d,): int32 (n,), by onnxruntime."""

    def __init__(self, dim: int, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.dim = dim
        self._session = ort.InferenceSession(matmul_integer_model(dim), options, providers=["CPUExecutionProvider"])
        self._zero_point = np.array(ZERO_POINT, dtype=np.uint8)

    def __call__(self, codes: NDArray[np.uint8], query: NDArray[np.int8]) -> NDArray[np.int32]:
        outputs = self._session.run(None, {"codes": codes, "query": query.reshape(self.dim, 1),
                                           "zero_point": self._zero_point})
        products: NDArray[np.int32] = outputs[0].reshape(-1)
        return products


def integer_kernel(dim: int) -> IntegerMatVec | None:
    """The kernel for this dimensionality, one per process; None without onnxruntime."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    return _kernel(dim)


@lru_cache(maxsize=4)
def _kernel(dim: int) -> IntegerMatVec:
    return IntegerMatVec(dim)


def prepare_for_serving(version: CatalogVersion) -> CatalogVersion:
    """The version as the API serves it: int8 codes in memory for the scan (388 bytes an item at 384
    dimensions), the float32 rows memory-mapped from an unlinked temporary file: page cache the kernel can drop,
    of which a request reads its shortlist and the user's history. Called once per version, before it serves."""
    kernel = integer_kernel(version.dim) if len(version) and version.scan is None else None
    codes_and_scales = version.quantized
    object.__setattr__(version, "quantized", None)  # held once: by the scan, or not at all
    if kernel is None:
        return version
    codes, scales = codes_and_scales or quantize_rows(version.embeddings)
    object.__setattr__(version, "scan", Int8Scan(codes, scales, kernel))
    if version.embeddings.flags.writeable:  # in memory, not already mapped by the repository
        mapped = memory_mapped(version.embeddings)
        if mapped is not None:
            object.__setattr__(version, "embeddings", mapped)
    return version


def memory_mapped(matrix: NDArray[Any], directory: str | None = None) -> NDArray[Any] | None:
    """`matrix` read-only from a temporary file that is already unlinked (its space returns when the mapping goes);
    None when the local disk (Lambda's /tmp: 512 MB unless EphemeralStorage says more) lacks the room."""
    folder = directory or tempfile.gettempdir()
    if shutil.disk_usage(folder).free < matrix.nbytes + (64 << 20):
        log.warning("keeping the float32 rows in memory: %s has no room for %d MB", folder, matrix.nbytes >> 20)
        return None
    with tempfile.NamedTemporaryFile(dir=folder, prefix="pulse-rows-", suffix=".npy") as file:
        np.save(file, matrix)
        file.flush()
        mapped: NDArray[Any] = np.asarray(np.load(file.name, mmap_mode="r"))
    return mapped


# The one-node ONNX model, written as protobuf directly: the onnx package is a build tool, not a runtime one.
_UINT8, _INT8, _INT32 = 2, 3, 6  # onnx.TensorProto.DataType


def matmul_integer_model(dim: int) -> bytes:
    """ModelProto: Y[n, 1] int32 = MatMulInteger(codes[n, dim] uint8, query[dim, 1] int8, zero_point uint8)."""
    node = (_string(1, "codes") + _string(1, "query") + _string(1, "zero_point") + _string(2, "scores")
            + _string(4, "MatMulInteger"))
    graph = (_message(1, node) + _string(2, "int8_scan")
             + _message(11, _value_info("codes", _UINT8, ["n", dim]))
             + _message(11, _value_info("query", _INT8, [dim, 1]))
             + _message(11, _value_info("zero_point", _UINT8, []))
             + _message(12, _value_info("scores", _INT32, ["n", 1])))
    opset = _string(1, "") + _varint_field(2, 17)
    return _varint_field(1, 9) + _message(8, opset) + _message(7, graph)  # ir_version 9, opset 17


def _value_info(name: str, elem_type: int, shape: list[int | str]) -> bytes:
    dims = b"".join(_message(1, _string(2, size) if isinstance(size, str) else _varint_field(1, size))
                    for size in shape)
    tensor = _varint_field(1, elem_type) + _message(2, dims)
    return _string(1, name) + _message(2, _message(1, tensor))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _message(number: int, body: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(body)) + body


def _string(number: int, text: str) -> bytes:
    return _message(number, text.encode())
