"""Run the template's functions in-process, as Lambda would: same handler path, same environment."""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulse_dev.local.template import TemplateResolver

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContext:
    """The attributes Powertools and handlers read from Lambda's context object."""

    function_name: str
    memory_limit_in_mb: int = 1024
    timeout_seconds: float = 60.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return int(self.timeout_seconds * 1000)


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    code_dir: Path
    module: str
    attribute: str
    environment: dict[str, str]
    memory: int
    timeout: float
    events: dict[str, dict[str, Any]]
    layers: list[str]  # logical ids of the template's layers, in order


def function_spec(template: dict[str, Any], logical_id: str, root: Path, resolver: TemplateResolver) -> FunctionSpec:
    globals_ = (template.get("Globals") or {}).get("Function") or {}
    properties = template["Resources"][logical_id]["Properties"]
    environment = {**((globals_.get("Environment") or {}).get("Variables") or {}),
                   **((properties.get("Environment") or {}).get("Variables") or {})}
    module, attribute = properties.get("Handler", globals_.get("Handler")).rsplit(".", 1)
    return FunctionSpec(
        logical_id=logical_id,
        code_dir=root / properties["CodeUri"],
        module=module,
        attribute=attribute,
        environment={key: str(resolver.value(value)) for key, value in environment.items()},
        memory=int(resolver.value(properties.get("MemorySize", globals_.get("MemorySize", 128)))),
        timeout=float(resolver.value(properties.get("Timeout", globals_.get("Timeout", 3)))),
        events={name: {"Type": event["Type"], **resolver.value(event.get("Properties") or {})}
                for name, event in (properties.get("Events") or {}).items()},
        layers=[layer["Ref"] for layer in properties.get("Layers", []) if isinstance(layer, dict) and "Ref" in layer],
    )


@contextmanager
def function_environment(spec: FunctionSpec, extra: dict[str, str] | None = None) -> Iterator[None]:
    """Set the function's environment variables for the duration (restored afterwards)."""
    wanted = {**spec.environment, "AWS_LAMBDA_FUNCTION_NAME": spec.logical_id, **(extra or {})}
    previous = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_handler(spec: FunctionSpec) -> Handler:
    """Import the handler file under a unique module name (every function's file is called app.py)."""
    return import_handler(spec.code_dir / f"{spec.module.replace('.', '/')}.py", spec.attribute,
                          f"pulse_function_{spec.logical_id}")


def import_handler(path: Path, attribute: str, name: str) -> Handler:
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise FileNotFoundError(f"{name}: handler file {path} not found")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)  # its cold start: a bad setting fails here, naming its variable
    except BaseException:
        del sys.modules[name]  # as a failed import: the next invocation starts cold again
        raise
    handler: Handler = getattr(module, attribute)
    return handler
