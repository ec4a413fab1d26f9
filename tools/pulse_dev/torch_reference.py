"""The PyTorch reference of `make bench`: all-MiniLM-L6-v2 in fp32 with mean pooling, as sentence-transformers
runs it, one text per call on one thread.

torch exists only in the encoder build's virtualenv (Python 3.11, `.venv/encoder-build`), so the bench runs this
module there, with only the standard library, torch, transformers and the model package imported:

    PYTHONPATH=layers/encoder:tools .venv/encoder-build/bin/python -m pulse_dev.torch_reference < texts.json

reads a JSON list of texts and prints the latency of each, in milliseconds, as a JSON list.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence


def latencies_ms(texts: Sequence[str]) -> list[float]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from pulse_dev.encoder_build import source_model_dir

    torch.set_num_threads(1)
    source = source_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source).eval()

    def encode(text: str) -> None:
        with torch.inference_mode():
            tokens = tokenizer([text], return_tensors="pt", truncation=True, max_length=256)
            hidden = model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1)
            torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)

    latencies = []
    for text in texts:
        start = time.perf_counter()
        encode(text)
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def main() -> int:
    print(json.dumps(latencies_ms(json.load(sys.stdin))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
