"""The SAM build is valid and runnable: `sam validate --lint`, `sam build`, then the *built* functions run
with only their built code and layers on the path (as /var/task and /opt/python) against moto.

The closest check to `sam local invoke` without Docker: it catches missing dependencies, wrong handler
paths and layer layout mistakes.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import EVENTS, dead_letters, table_items
from tests.paths import REPO_ROOT
from tests.scenarios import catalog_lines

ROOT = REPO_ROOT
SAM = ROOT / ".venv" / "sam-cli" / "bin" / "sam"
BUILD = ROOT / ".aws-sam" / "build"
LAMBDA_LIMIT_BYTES = 262_144_000
# What Lambda's python3.13 runtime provides besides the standard library: boto3/botocore at the version it
# ships (the Makefile's LAMBDA_BOTO3; README, "Platform") with what they need, installed apart by `make install`.
LAMBDA_RUNTIME_SDK = ROOT / ".venv" / "lambda-runtime-sdk"
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3")

pytestmark = pytest.mark.slow


def sam(*arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "SAM_CLI_TELEMETRY": "0",
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(SAM), *arguments], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=900)


def test_template_passes_sam_validate_lint():
    result = sam("validate", "--lint")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def built():
    result = sam("build", "--cached")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return BUILD


def makefile_value(name: str) -> str:
    line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith(f"{name} :="))
    return line.split(":=", 1)[1].strip()


@pytest.fixture(scope="module")
def lambda_runtime(tmp_path_factory) -> Path:
    """A folder with only what the Lambda runtime adds to the standard library: its boto3, botocore and their
    needs, never the test environment's (newer) ones."""
    folder = tmp_path_factory.mktemp("lambda-runtime")
    for name in RUNTIME_PACKAGES:
        (folder / name).symlink_to(LAMBDA_RUNTIME_SDK / name)
    return folder


def test_built_functions_run_on_the_boto3_of_lambdas_python313_runtime(lambda_runtime):
    script = "import boto3, botocore, sys; print(boto3.__version__, botocore.__version__, sys.version_info[:2])"
    result = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(lambda_runtime)}, check=True)
    expected = makefile_value("LAMBDA_BOTO3")
    assert result.stdout.split()[:2] == [expected, expected]
    assert "(3, 13)" in result.stdout  # the tests run on the python3.13 runtime's Python


def run_built(function: str, layers: list[str], event_file: Path, runtime: Path, environment: dict) -> dict:
    """Invoke the built handler in a fresh interpreter that sees no site-packages at all."""
    path = [BUILD / function, *(BUILD / layer / "python" for layer in layers), runtime]
    script = (
        "import json, sys, importlib\n"
        "app = importlib.import_module('app')\n"
        "class Context:\n"
        "    function_name = 'built'; memory_limit_in_mb = 1024; aws_request_id = 'local'\n"
        "    invoked_function_arn = 'arn:aws:lambda:us-east-1:123456789012:function:built'\n"
        "    def get_remaining_time_in_millis(self): return 60000\n"
        f"response = app.lambda_handler(json.load(open({str(event_file)!r})), Context())\n"
        "modules = {name: getattr(sys.modules.get(name), '__file__', None) for name in\n"
        "           ('pulse', 'pulse_encoder', 'onnxruntime', 'tokenizers', 'numpy', 'pynamodb',\n"
        "            'aws_lambda_powertools', 'boto3')}\n"
        "print(json.dumps({'response': response, 'modules': modules}))\n"
    )
    # -B: the run must not write __pycache__ into the built layers (sam deploy would ship it).
    result = subprocess.run([sys.executable, "-S", "-B", "-c", script], capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(map(str, path)),
                                 **environment})
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def invoke_built(stack, runtime: Path, logical_id: str, event_file: str | Path, **overrides: str) -> dict:
    """Run a built function with its template environment (plus overrides) against the moto stack; check where
    imports came from."""
    function = stack.function(logical_id)
    environment = {**function.environment, **overrides, "POWERTOOLS_TRACE_DISABLED": "true",
                   "POWERTOOLS_METRICS_DISABLED": "true",
                   **{key: os.environ[key] for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                                       "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
                                                       "AWS_DEFAULT_REGION")}}
    outcome = run_built(logical_id, function.layers, EVENTS / event_file, runtime, environment)
    for name, location in outcome["modules"].items():
        if location is not None:
            assert str(BUILD) in location or str(runtime) in location, f"{name} came from {location}"
    assert outcome["modules"]["pulse"] is not None and outcome["modules"]["aws_lambda_powertools"] is not None
    return outcome["response"]


def test_the_built_ingest_function_runs_with_only_its_layers(built, lambda_runtime, stack):
    response = invoke_built(stack, lambda_runtime, "IngestFunction", "ingest-poison-batch.json")
    assert response == {"batchItemFailures": []}
    assert int(table_items(stack)["305"]["event_count"]["N"]) == 2
    assert len(dead_letters(stack)) == 8


def test_the_built_catalogue_and_api_functions_run_with_only_their_layers(built, lambda_runtime, stack, tmp_path):
    bucket = stack.name_of("AWS::S3::Bucket")
    stack.client("s3").put_object(Bucket=bucket, Key="incoming/catalog.jsonl", Body="\n".join(catalog_lines()))
    published = invoke_built(stack, lambda_runtime, "CatalogFunction", "catalog-s3-put.json")
    assert published["results"][0]["status"] == "published"
    # As deployed with the default parameters (IAM): the sample is a backend's signed request.
    response = invoke_built(stack, lambda_runtime, "ApiFunction", "api-recommendations.json", PULSE_API_AUTH="iam")
    assert response["statusCode"] == 200
    answer = json.loads(response["body"])
    assert answer["strategy"] == "popular" and len(answer["items"]) == 5
    unsigned = json.loads((EVENTS / "api-recommendations.json").read_text())
    del unsigned["requestContext"]["authorizer"]  # a route left without its authorizer must not become open
    (tmp_path / "unsigned.json").write_text(json.dumps(unsigned))
    assert invoke_built(stack, lambda_runtime, "ApiFunction", tmp_path / "unsigned.json",
                        PULSE_API_AUTH="iam")["statusCode"] == 401


def test_the_built_training_function_runs_with_only_its_layers(built, lambda_runtime, stack):
    import gzip

    bucket = stack.name_of("AWS::S3::Bucket")
    s3 = stack.client("s3")
    s3.put_object(Bucket=bucket, Key="incoming/catalog.jsonl", Body="\n".join(catalog_lines()))
    invoke_built(stack, lambda_runtime, "CatalogFunction", "catalog-s3-put.json")
    day = time.strftime("%Y-%m-%d", time.gmtime())
    ratings = [json.dumps({"event_id": f"t{user}-{i}", "user_id": f"u{user}", "type": "rate", "value": 5,
                           "item_id": f"m{(user % 4) * 8 + i + 1}", "ts": time.time() - 3600 + i})
               for user in range(20) for i in range(5)]
    s3.put_object(Bucket=bucket, Key=f"archive/dt={day}/part.gz", Body=gzip.compress("\n".join(ratings).encode()))
    function = stack.function("TrainFunction")
    assert function.layers == ["CoreLayer", "TrainingLayer"]  # no encoder layer: trains from stored vectors
    response = invoke_built(stack, lambda_runtime, "TrainFunction", "train-schedule.json")
    assert (response["decision"], response["version"], response["events"], response["users"]) == \
        ("refused", None, 100, 20)
    assert response["reason"].startswith("not enough data: 100 events < 1000; 20 users < 50")
    report = json.loads(s3.get_object(Bucket=bucket, Key=response["report"])["Body"].read())
    assert report["decision"] == "refused" and report["data"]["events"] == 100
    forced = invoke_built(stack, lambda_runtime, "TrainFunction", "train-forced.json")
    assert forced["decision"] == "published" and forced["version"].startswith("t-") and "forced" in forced["reason"]


def test_each_function_with_its_layers_fits_lambdas_unzipped_limit(built, stack):
    from pulse_dev.layer_size import unzipped_size

    sizes = {}
    for logical_id, spec in stack.template["Resources"].items():
        if spec["Type"] == "AWS::Serverless::Function":
            function = stack.function(logical_id)
            parts = [logical_id, *function.layers]
            sizes[logical_id] = {part: unzipped_size(built / part) for part in parts}
    for logical_id, parts in sizes.items():
        total = sum(parts.values())
        print(f"\n{logical_id}: " + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in parts.items()) +
              f" = {total / 1e6:.1f} MB of {LAMBDA_LIMIT_BYTES / 1e6:.1f} MB")
        assert total < LAMBDA_LIMIT_BYTES, logical_id
    assert (BUILD / "EncoderLayer" / "python" / "pulse_encoder" / "model" / "model.int8.onnx").is_file()
    assert not list((BUILD / "EncoderLayer").rglob("torch")), "torch must not reach the Lambda layer"


def test_the_built_layers_hold_no_module_the_handlers_cannot_import(built):
    from pulse_dev.reachable import reachable_modules, shipped_modules

    layers = {"CoreLayer": "pulse", "EncoderLayer": "pulse_encoder"}
    roots = [built / layer / "python" for layer in layers]
    handlers = sorted(built.glob("*Function/app.py"))
    assert len(handlers) == 4
    reached = reachable_modules(handlers, roots)
    for layer, package in layers.items():
        shipped = shipped_modules(built / layer / "python", [package])
        assert shipped, f"{layer} ships no {package}"
        assert shipped - reached == set(), f"{layer} ships modules no handler can import"
    assert not list(built.rglob("pulse_dev")), "the developer package must not reach a layer or function"


def test_every_package_a_layer_ships_is_imported_by_a_function_and_none_is_boto(built, stack):
    """A layer is only what its functions import: a package that arrives unused (a new dependency's
    dependency, a tool) fails here, as does boto3/botocore, which only the runtime may provide."""
    from pulse_dev.reachable import reachable_modules, shipped_packages

    layers = sorted({layer for logical_id, spec in stack.template["Resources"].items()
                     if spec["Type"] == "AWS::Serverless::Function" for layer in stack.function(logical_id).layers})
    assert layers == ["CoreLayer", "EncoderLayer", "TrainingLayer"]
    roots = [built / layer / "python" for layer in layers]
    reached = {name.split(".")[0] for name in reachable_modules(sorted(built.glob("*Function/app.py")), roots)}
    for layer, root in zip(layers, roots, strict=True):
        shipped = shipped_packages(root)
        assert not {name for name in shipped if name.startswith("boto")}, f"{layer} ships boto3/botocore"
        assert shipped - reached == set(), f"{layer} ships packages no function imports"
    core = shipped_packages(built / "CoreLayer" / "python")
    assert {"pulse", "pydantic", "pynamodb", "aws_lambda_powertools"} <= core
