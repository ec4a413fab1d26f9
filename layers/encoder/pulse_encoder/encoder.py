"""Sentence encoder runtime: all-MiniLM-L6-v2 as ONNX, mean pooling + L2 normalization in numpy.

Only numpy, onnxruntime and tokenizers are needed here: this module runs inside Lambda.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "model"
THREADS_ENV = "PULSE_ENCODER_THREADS"


class EmptyTextError(ValueError):
    """A text to encode is empty or whitespace only."""


class EncoderNotBuiltError(RuntimeError):
    """The model files are missing: the build step has not run."""


def load_tokenizer(tokenizer_path: Path, max_tokens: int) -> Tokenizer:
    """The model's tokenizer, truncating to max_tokens and padding to the longest text of a batch."""
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    # The shipped tokenizer.json pads everything to 128 tokens and truncates at 128: replace both.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    return tokenizer


def mean_pool_normalize(token_embeddings: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Mean of the real (unpadded) token embeddings of each text, scaled to unit length."""
    mask = attention_mask.astype(np.float32)
    # Masked sum over the sequence without materializing hidden * mask (einsum measured fastest here).
    summed = np.einsum("bs,bsd->bd", mask, token_embeddings)
    pooled = summed / mask.sum(axis=1, keepdims=True)
    norms = np.sqrt(np.einsum("bd,bd->b", pooled, pooled))[:, None]
    return pooled / np.maximum(norms, 1e-12)


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices of each batch, shortest texts first, each batch in increasing length.

    Sorting keeps texts of similar length together, so little compute goes to padding. A batch is also
    closed before it reaches batch_size if padding it to the next text would make over half of it padding:
    one 256-token text padding 31 short ones costs more than running it on its own.
    """
    order = np.argsort(lengths, kind="stable")
    batches, start, real_tokens = [], 0, 0
    for position, length in enumerate(lengths[order]):
        size = position - start
        if size == batch_size or 2 * (real_tokens + length) < (size + 1) * length:
            batches.append(order[start:position])
            start, real_tokens = position, 0
        real_tokens += length
    batches.append(order[start:])
    return batches


def check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of str, not a single str")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text at index {index} is {type(text).__name__}, not str")
        if not text.strip():
            raise EmptyTextError(f"text at index {index} is empty")


class Encoder:
    """Encodes texts into L2-normalized float32 vectors of size `dim`.

    batch_size is the number of texts per onnxruntime call. It is 1 by default because the int8 model
    quantizes its activations with one scale per call: batched, a text's vector would depend on the texts
    it happens to share the call with (cosine ~0.99 to its batch-1 vector). One text per call makes every
    vector a function of its text alone, bit for bit. Batching (texts grouped by length) is faster for bulk
    encoding (~1.4x with int8 on the test fixtures) and batch-invariant with the fp32 model.
    """

    def __init__(
        self,
        model_dir: Path | str | None = None,
        *,
        model_file: str = "model.int8.onnx",
        intra_op_threads: int = 1,
        max_tokens: int | None = None,
        batch_size: int = 1,
    ) -> None:
        model_dir = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
        manifest_path = model_dir / "manifest.json"
        # An absolute model_file (e.g. the fp32 build output) replaces model_dir for the model only.
        model_path = model_dir / model_file
        for required in (manifest_path, model_dir / "tokenizer.json", model_path):
            if not required.is_file():
                raise EncoderNotBuiltError(f"{required} is missing: run `make encoder` to build the encoder")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

        manifest = json.loads(manifest_path.read_text())
        self.dim: int = manifest["dim"]
        self.fingerprint: str = manifest["fingerprint"]
        self.max_tokens: int = max_tokens if max_tokens is not None else manifest["max_tokens"]
        self.batch_size = batch_size
        self.model_path = model_path
        self.tokenizer = load_tokenizer(model_dir / "tokenizer.json", self.max_tokens)

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Measured on the int8 model, 1 thread, batch 1, short texts: ENABLE_ALL ~3.2 ms vs EXTENDED ~3.4 and
        # BASIC ~3.3 (within this machine's noise, but ALL was never slower); session creation ~45 ms for each.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        input_names = {model_input.name for model_input in self.session.get_inputs()}
        self._feeds_token_type_ids = "token_type_ids" in input_names
        self._output_name = self.session.get_outputs()[0].name

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of texts, shape (len(texts), dim), float32, each row of unit length."""
        check_texts(texts)
        embeddings = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return embeddings
        # One tokenizer call pads every text to the longest one; each batch is then cut back to its own
        # longest text.
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        input_ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
        attention_mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
        lengths = attention_mask.sum(axis=1)
        for rows in length_sorted_batches(lengths, self.batch_size):
            width = int(lengths[rows[-1]])
            embeddings[rows] = self._embed(input_ids[rows, :width], attention_mask[rows, :width])
        return embeddings

    def _embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._feeds_token_type_ids:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        token_embeddings = self.session.run([self._output_name], feeds)[0]
        return mean_pool_normalize(token_embeddings, attention_mask)


def load_encoder(model_dir: Path | str | None = None, intra_op_threads: int | None = None) -> Encoder:
    """The process-wide Encoder for model_dir (one ONNX session per Lambda container).

    intra_op_threads defaults to the PULSE_ENCODER_THREADS environment variable, else 1.
    """
    if intra_op_threads is None:
        intra_op_threads = _threads_from_env()
    resolved_dir = Path(model_dir).resolve() if model_dir is not None else DEFAULT_MODEL_DIR
    return _cached_encoder(resolved_dir, intra_op_threads)


@functools.cache
def _cached_encoder(model_dir: Path, intra_op_threads: int) -> Encoder:
    return Encoder(model_dir, intra_op_threads=intra_op_threads)


def _threads_from_env() -> int:
    value = os.environ.get(THREADS_ENV, "1")
    try:
        threads = int(value)
    except ValueError:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}") from None
    if threads < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
    return threads
