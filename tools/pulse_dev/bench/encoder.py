"""1. The encoder: int8 vs fp32 ONNX vs PyTorch, at batch 1 and the ingest batch, cold start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from pulse_dev.bench.measure import BenchSizes, behaviour_texts, seconds_of, summary, timings_ms
from pulse_dev.local.project import project_root

# The encoder build's virtualenv (Python 3.11, torch 2.13.0; the Makefile's BUILD_VENV), relative to the project.
BUILD_PYTHON = Path(".venv") / "encoder-build" / "bin" / "python"

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
    """The PyTorch reference (pulse_dev.torch_reference), run in the encoder build's virtualenv, where torch is."""
    root = project_root()
    python = root / BUILD_PYTHON
    if not python.is_file():
        return {"skipped": f"no PyTorch: {BUILD_PYTHON} is missing (make encoder creates it)"}
    path = os.pathsep.join(str(root / part) for part in ("layers/encoder", "tools"))
    environment = {**os.environ, "PYTHONPATH": path}
    try:
        out = subprocess.run([str(python), "-m", "pulse_dev.torch_reference"], input=json.dumps(list(texts)),
                             capture_output=True, text=True, check=True, env=environment, timeout=600)
    except (subprocess.SubprocessError, OSError) as error:  # the reference is optional
        return {"skipped": f"PyTorch reference failed: {getattr(error, 'stderr', '') or error}"[:500]}
    latencies = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"batch1_texts_per_s": round(1000 / float(np.mean(latencies)), 1),
            **{f"batch1_{key}": value for key, value in summary(latencies).items()}}
