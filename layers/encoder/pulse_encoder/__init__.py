"""Pulse encoder: turns behaviour texts into 384-d embeddings with an int8 ONNX all-MiniLM-L6-v2.

Importing this package needs only numpy, onnxruntime and tokenizers (never torch): it runs in Lambda.
"""

from pulse_encoder.encoder import (
    DEFAULT_MODEL_DIR,
    EmptyTextError,
    Encoder,
    EncoderNotBuiltError,
    load_encoder,
)

__all__ = ["DEFAULT_MODEL_DIR", "EmptyTextError", "Encoder", "EncoderNotBuiltError", "load_encoder"]
