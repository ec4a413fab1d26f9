"""The encoder runtime (pulse_encoder) on the built int8 model, checked against the fp32 build output."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from pulse_dev import encoder_build as build
from pulse_dev import layer_size
from pulse_encoder import (
    DEFAULT_MODEL_DIR,
    EmptyTextError,
    Encoder,
    EncoderNotBuiltError,
    load_encoder,
)
from pulse_encoder.encoder import load_tokenizer
from tests.paths import REPO_ROOT

FP32_MODEL = REPO_ROOT / ".pulse" / "build" / "model.fp32.onnx"
FIDELITY_REPORT = REPO_ROOT / ".pulse" / "build" / "fidelity.json"
BEHAVIOUR_TEXTS = REPO_ROOT / "tests" / "fixtures" / "behaviour_texts.txt"
NEIGHBOURS = 10


@pytest.fixture(scope="session", autouse=True)
def built_model():
    missing = [path for path in (DEFAULT_MODEL_DIR / "manifest.json", DEFAULT_MODEL_DIR / "model.int8.onnx",
                                 FP32_MODEL) if not path.is_file()]
    if missing:
        pytest.fail(f"encoder not built ({', '.join(map(str, missing))} missing): run make encoder")
    return json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())


@pytest.fixture(scope="module")
def int8():
    return Encoder()


@pytest.fixture(scope="module")
def fp32():
    return Encoder(model_file=str(FP32_MODEL), batch_size=32)


@pytest.fixture(scope="module")
def texts():
    return [line for line in BEHAVIOUR_TEXTS.read_text(encoding="utf-8").splitlines() if line.strip()]


def cosines(a, b):
    return np.einsum("nd,nd->n", a, b)


def nearest_neighbours(embeddings, k):
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1)[:, :k]


def test_the_fixture_texts_are_many_distinct_and_some_longer_than_the_token_limit(texts):
    assert len(texts) >= 240
    assert len(set(texts)) == len(texts)
    untruncated = load_tokenizer(DEFAULT_MODEL_DIR / "tokenizer.json", max_tokens=512)
    assert sum(len(untruncated.encode(text).ids) > 300 for text in texts) >= 3


def test_embeddings_are_float32_unit_rows_of_the_manifest_dimension(int8, texts, built_model):
    embeddings = int8.encode(texts[:20])
    assert (int8.dim, int8.max_tokens) == (built_model["dim"], built_model["max_tokens"]) == (384, 256)
    assert embeddings.shape == (20, 384)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_no_texts_give_an_empty_matrix(int8):
    embeddings = int8.encode([])
    assert embeddings.shape == (0, 384)
    assert embeddings.dtype == np.float32


@pytest.mark.parametrize("encoder_name", ["int8", "fp32"])
def test_a_text_gets_the_same_vector_whatever_it_is_encoded_with(encoder_name, request, texts):
    encoder = request.getfixturevalue(encoder_name)
    alone = np.concatenate([encoder.encode([text]) for text in texts])
    shuffled = np.random.default_rng(7).permutation(len(texts))
    together = encoder.encode(texts)
    in_other_order = encoder.encode([texts[i] for i in shuffled])
    assert cosines(together, alone).min() > 0.9999
    assert cosines(in_other_order, alone[shuffled]).min() > 0.9999


def test_fp32_batches_of_any_size_match_single_texts(fp32, texts):
    alone = np.concatenate([fp32.encode([text]) for text in texts[:60]])
    for batch_size in (2, 7, 64):
        batched = Encoder(model_file=str(FP32_MODEL), batch_size=batch_size).encode(texts[:60])
        assert cosines(batched, alone).min() > 0.9999, batch_size


def test_int8_batches_stay_close_to_single_texts(int8, texts):
    """Opt-in bulk batching: int8 activation scales are shared by a call, so vectors move a little."""
    batched = Encoder(batch_size=32).encode(texts)
    assert cosines(batched, int8.encode(texts)).min() > 0.97


@pytest.mark.parametrize("bad, index", [([""], 0), (["ok", "   \n\t"], 1), (["a", "b", "c", " "], 3)])
def test_an_empty_or_blank_text_is_refused_by_index(int8, bad, index):
    with pytest.raises(EmptyTextError, match=f"text at index {index} is empty"):
        int8.encode(bad)


@pytest.mark.parametrize("bad", [["ok", None], ["ok", b"bytes"], ["ok", 3]])
def test_a_text_that_is_not_a_str_is_refused_by_index(int8, bad):
    with pytest.raises(TypeError, match="text at index 1"):
        int8.encode(bad)


def test_a_single_str_is_refused_rather_than_encoded_letter_by_letter(int8):
    with pytest.raises(TypeError, match="sequence of str"):
        int8.encode("Toy Story (1995)")


def test_a_long_text_is_truncated_to_its_first_max_tokens(int8, texts):
    long_text = max(texts, key=len)
    encoding = int8.tokenizer.encode(long_text)
    assert len(encoding.ids) == int8.max_tokens
    # The last real token sits before [SEP]; its end offset bounds the text the model actually saw.
    seen_text = long_text[: encoding.offsets[-2][1]]
    assert len(seen_text) < len(long_text)
    assert int8.tokenizer.encode(seen_text).ids == encoding.ids
    assert cosines(int8.encode([long_text]), int8.encode([seen_text]))[0] > 0.9999


def test_max_tokens_can_be_lowered(texts):
    short_window = Encoder(max_tokens=16)
    assert short_window.max_tokens == 16
    assert len(short_window.tokenizer.encode(max(texts, key=len)).ids) == 16
    assert short_window.encode([max(texts, key=len)]).shape == (1, 384)


def test_fingerprint_and_checksums_describe_the_shipped_files(int8, built_model):
    model_bytes = (DEFAULT_MODEL_DIR / "model.int8.onnx").read_bytes()
    model_sha256 = hashlib.sha256(model_bytes).hexdigest()
    assert int8.fingerprint == built_model["fingerprint"]
    assert built_model["model_sha256"] == model_sha256
    assert (DEFAULT_MODEL_DIR / "model.int8.onnx.sha256").read_text() == f"{model_sha256}  model.int8.onnx\n"
    assert built_model["fp32_sha256"] == hashlib.sha256(FP32_MODEL.read_bytes()).hexdigest()
    settings = {key: built_model[key] for key in ("dim", "max_tokens", "pooling", "normalize")}
    assert build.fingerprint(DEFAULT_MODEL_DIR / "model.int8.onnx", DEFAULT_MODEL_DIR / "tokenizer.json",
                             settings) == int8.fingerprint
    assert not list(DEFAULT_MODEL_DIR.glob("*fp32*")), "the fp32 model must stay out of the Lambda layer"


def test_session_uses_the_requested_threads():
    options = Encoder(intra_op_threads=2).session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)


def test_load_encoder_is_cached_and_takes_threads_from_the_environment(monkeypatch):
    monkeypatch.setenv("PULSE_ENCODER_THREADS", "2")
    encoder = load_encoder()
    assert encoder.session.get_session_options().intra_op_num_threads == 2
    assert load_encoder() is encoder
    assert load_encoder(DEFAULT_MODEL_DIR, intra_op_threads=2) is encoder
    monkeypatch.setenv("PULSE_ENCODER_THREADS", "none")
    with pytest.raises(ValueError, match="PULSE_ENCODER_THREADS"):
        load_encoder()


def test_a_missing_model_says_how_to_build_it(tmp_path):
    with pytest.raises(EncoderNotBuiltError, match="make encoder"):
        Encoder(tmp_path)


@pytest.mark.slow
def test_the_runtime_package_never_imports_torch():
    script = ("import sys, pulse_encoder, pulse_dev.encoder_build, pulse_dev.layer_size\n"
              "pulse_encoder.Encoder().encode(['x'])\n"
              "loaded = [name for name in ('torch', 'transformers', 'onnx') if name in sys.modules]\n"
              "sys.exit(f'imported {loaded}' if loaded else 0)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_int8_is_faithful_to_fp32_on_the_behaviour_texts(int8, fp32, texts):
    quantized = int8.encode(texts)
    reference = fp32.encode(texts)
    similarity = cosines(quantized, reference)
    overlaps = [len(set(a) & set(b)) for a, b in
                zip(nearest_neighbours(quantized, NEIGHBOURS), nearest_neighbours(reference, NEIGHBOURS), strict=True)]
    figures = {
        "texts": len(texts),
        "mean_cosine": round(float(similarity.mean()), 5),
        "min_cosine": round(float(similarity.min()), 5),
        "least_faithful_text": texts[int(similarity.argmin())],
        f"mean_top{NEIGHBOURS}_overlap": round(float(np.mean(overlaps)), 3),
        f"min_top{NEIGHBOURS}_overlap": int(min(overlaps)),
    }
    FIDELITY_REPORT.parent.mkdir(parents=True, exist_ok=True)
    FIDELITY_REPORT.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    print(f"\nint8 vs fp32 fidelity: {json.dumps(figures, ensure_ascii=False)}")
    assert figures["mean_cosine"] >= 0.98
    assert figures[f"mean_top{NEIGHBOURS}_overlap"] >= 0.8 * NEIGHBOURS


def test_unzipped_size_adds_up_every_file_under_a_folder(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "a.bin").write_bytes(b"x" * 1000)
    (tmp_path / "pkg" / "sub" / "b.bin").write_bytes(b"y" * 2345)
    (tmp_path / "top.py").write_bytes(b"z" * 7)
    (tmp_path / "empty").mkdir()
    assert layer_size.unzipped_size(tmp_path) == 3352
    assert layer_size.unzipped_size(tmp_path / "pkg") == 3345
    assert layer_size.unzipped_size(tmp_path / "top.py") == 7


def test_layer_size_groups_packages_and_fails_over_the_limit(tmp_path, monkeypatch, capsys):
    layer = tmp_path / "EncoderLayer" / "python"
    (layer / "numpy").mkdir(parents=True)
    (layer / "numpy" / "core.so").write_bytes(b"n" * 3000)
    (layer / "numpy.libs").mkdir()
    (layer / "numpy.libs" / "blas.so").write_bytes(b"b" * 1000)
    (layer / "numpy-2.4.6.dist-info").mkdir()
    (layer / "numpy-2.4.6.dist-info" / "RECORD").write_bytes(b"r" * 100)
    (layer / "six.py").write_bytes(b"s" * 10)
    assert layer_size.package_sizes(tmp_path / "EncoderLayer") == {"numpy": 4100, "six": 10}

    assert layer_size.main([str(tmp_path / "EncoderLayer")]) == 0
    monkeypatch.setattr(layer_size, "LAMBDA_UNZIPPED_LIMIT", 4000)
    assert layer_size.main([str(tmp_path / "EncoderLayer")]) == 1
    output = capsys.readouterr()
    assert "numpy" in output.out and "over Lambda's unzipped limit" in output.err
