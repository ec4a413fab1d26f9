"""1. The encoder: int8 vs fp32 ONNX vs PyTorch, at batch 1 and the ingest batch, cold start."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from pulse_dev.bench.measure import BenchSizes, behaviour_texts, seconds_of, summary, timings_ms
from pulse_dev.local.project import project_root

if TYPE_CHECKING:
    pass


def bench_encoder(sizes: BenchSizes, batch: int) -> dict[str, Any]:
    from pulse_dev.encoder_build import DEFAULT_FP32_OUT

    texts = behaviour_texts(sizes.encoder_texts)
    models = {"int8": "model.int8.onnx"}
    fp32 = project_root() / DEFAULT_FP32_OUT  # where make encoder keeps it
    if fp32.is_file():
        models["fp32"] = str(fp32)
    result: dict[str, Any] = {"texts": len(texts), "ingest_batch": batch}
    for name, model_file in models.items():
        result[name] = encoder_figures(model_file, texts, batch)
    if "fp32" in result:
        result["int8_over_fp32_batch1"] = round(result["int8"]["batch1_texts_per_s"]
                                                / result["fp32"]["batch1_texts_per_s"], 2)
        result[f"int8_over_fp32_batch{batch}"] = round(result["int8"][f"batch{batch}_texts_per_s"]
                                                       / result["fp32"][f"batch{batch}_texts_per_s"], 2)
    result["pytorch"] = bench_pytorch(texts)
    if result["pytorch"].get("batch1_texts_per_s"):
        result["int8_over_pytorch_batch1"] = round(result["int8"]["batch1_texts_per_s"]
                                                   / result["pytorch"]["batch1_texts_per_s"], 2)
    return result


def encoder_figures(model_file: str, texts: Sequence[str], batch: int) -> dict[str, Any]:
    from pulse_encoder import Encoder

    cold = cold_start_encoder(model_file)
    single, batched = Encoder(model_file=model_file), Encoder(model_file=model_file, batch_size=batch)
    single.encode(["warm up"])
    latencies = np.array([timings_ms(partial(single.encode, [text]), 1, warmup=0)[0] for text in texts])
    seconds = min(seconds_of(lambda: batched.encode(texts)) for _ in range(2))
    return {"batch1_texts_per_s": round(1000 / float(np.mean(latencies)), 1),
            f"batch{batch}_texts_per_s": round(len(texts) / seconds, 1),
            **{f"batch1_{key}": value for key, value in summary(latencies).items()}, **cold}


def cold_start_encoder(model_file: str) -> dict[str, float]:
    """Session creation + tokenizer load, and resident memory after it, in a fresh process."""
    code = ("import time, json; from pulse_dev.bench.measure import resident_mb; before = resident_mb()\n"
            "from pulse_encoder import Encoder; imported = time.perf_counter()\n"
            f"encoder = Encoder(model_file={model_file!r}); loaded = time.perf_counter()\n"
            "encoder.encode(['warm up']); "
            "print(json.dumps({'cold_start_ms': round((loaded - imported) * 1000, 1), "
            "'rss_after_load_mb': round(resident_mb(), 1), 'rss_python_mb': round(before, 1)}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def bench_pytorch(texts: Sequence[str]) -> dict[str, Any]:
    """The PyTorch reference (all-MiniLM-L6-v2 fp32 with mean pooling, as sentence-transformers runs it)."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        return {"skipped": "torch/transformers not installed (pip install -e '.[build]')"}
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from pulse_dev.encoder_build import source_model_dir

        source = source_model_dir()
    except Exception as error:  # noqa: BLE001 - the reference is optional
        return {"skipped": f"PyTorch reference unavailable: {error}"}
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source).eval()

    def encode(text: str) -> None:
        with torch.inference_mode():
            tokens = tokenizer([text], return_tensors="pt", truncation=True, max_length=256)
            hidden = model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1)
            torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)

    latencies = np.array([timings_ms(partial(encode, text), 1, warmup=0)[0] for text in texts])
    return {"batch1_texts_per_s": round(1000 / float(np.mean(latencies)), 1),
            **{f"batch1_{key}": value for key, value in summary(latencies).items()}}

