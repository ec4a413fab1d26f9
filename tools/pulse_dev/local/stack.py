"""The embedded local stack: moto's server speaking the AWS APIs, the template's resources, the real handlers."""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from pulse_dev.local.functions import FunctionSpec, LambdaContext, function_spec, load_handler
from pulse_dev.local.poller import MappingSettings, StreamPoller, sqs_destination
from pulse_dev.local.project import project_root
from pulse_dev.local.template import ProvisionedResource, TemplateResolver, load_template, provision

log = logging.getLogger(__name__)
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "pulse-local", "AWS_SECRET_ACCESS_KEY": "pulse-local"}
ACTIVATED_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION")
LOCAL_ENVIRONMENT = {"POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true"}
# Where the local stack differs from a deployment's defaults: an open API unless JwtIssuer or OpenApi=false
# says otherwise (README, "Authorization").
LOCAL_PARAMETER_DEFAULTS = {"OpenApi": "true"}


@dataclass
class LocalStack:
    root: Path = field(default_factory=project_root)  # the project folder (template.yaml, functions/)
    host: str = "127.0.0.1"
    port: int = 4566
    region: str = "us-east-1"
    parameters: dict[str, str] = field(default_factory=dict)  # like sam deploy --parameter-overrides
    resources: dict[str, ProvisionedResource] = field(default_factory=dict)
    _server: Any = None
    _handlers: dict[str, Any] = field(default_factory=dict)
    _replaced_environment: dict[str, str | None] = field(default_factory=dict)  # restored by stop()
    _function_variables: dict[str, str] = field(default_factory=dict)  # set by use_function_environments

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LocalStack:
        # moto's server in its own process, as a real endpoint is: it does not compete for our GIL. It binds the
        # port (port 0: a free one) and tells which: no port is probed here and handed over, which races.
        command = [sys.executable, "-m", "pulse_dev.local.moto_process", self.host, str(self.port)]
        self._server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.port = _bound_port(self._server, f"{self.host}:{self.port}")
        self.activate()
        self.template = load_template(self.root / "template.yaml")
        self.parameters = {**LOCAL_PARAMETER_DEFAULTS, **self.parameters}
        unknown = set(self.parameters) - set(self.template.get("Parameters") or {})
        if unknown:
            raise ValueError(f"template.yaml has no parameters {sorted(unknown)}")
        self.resources = provision(self.template, self.session(), overrides=self.parameters)
        log.info("local AWS endpoint %s with %s", self.endpoint, ", ".join(sorted(self.resources)))
        return self

    def activate(self) -> None:
        """Point this process's AWS clients (boto3 and PynamoDB, through AWS_ENDPOINT_URL) at this stack, until
        restore_environment() or stop()."""
        endpoint = dict(zip(ACTIVATED_VARIABLES, (self.endpoint, self.region, self.region), strict=True))
        self._set_environment({**LOCAL_CREDENTIALS, **endpoint})

    @contextmanager
    def activated(self) -> Iterator[LocalStack]:
        """activate() for a while, with the functions' variables once its pollers run (they invoke the handlers
        in this process); every variable it sets has its previous value back on exit."""
        names = (*LOCAL_CREDENTIALS, *ACTIVATED_VARIABLES, *self._function_variables)
        previous = {name: os.environ.get(name) for name in names}
        recorded = dict(self._replaced_environment)
        self.activate()
        self._set_environment(self._function_variables)
        try:
            yield self
        finally:
            _restore(previous)
            self._replaced_environment.clear()  # what stop() restores is what it was before
            self._replaced_environment.update(recorded)

    def _set_environment(self, values: dict[str, str]) -> None:
        from pulse.wiring import reset_caches

        for name in values:
            self._replaced_environment.setdefault(name, os.environ.get(name))
        os.environ.update(values)
        reset_caches()

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._server is not None:
            self._server.terminate()
            try:
                self._server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._server.kill()
            self._server = None
        self.restore_environment()

    def restore_environment(self) -> None:
        """Take back every variable activate() and use_function_environments set (they leave with the stack)."""
        _restore(self._replaced_environment)
        self._replaced_environment.clear()

    def session(self) -> boto3.session.Session:
        return boto3.session.Session(region_name=self.region)

    def client(self, service: str) -> Any:
        return self.session().client(service, endpoint_url=self.endpoint)

    def name_of(self, resource_type: str) -> str:
        found = [r.name for r in self.resources.values() if r.type == resource_type]
        if len(found) != 1:
            raise LookupError(f"expected one {resource_type} in template.yaml, found {len(found)}")
        return found[0]

    def function(self, logical_id: str) -> FunctionSpec:
        resolver = TemplateResolver(self.template, overrides=self.parameters, resources=self.resources)
        return function_spec(self.template, logical_id, self.root, resolver)

    def functions(self) -> list[str]:
        return [logical_id for logical_id, spec in self.template["Resources"].items()
                if spec["Type"] == "AWS::Serverless::Function"]

    def use_function_environments(self, log_level: str | None = None) -> None:
        """All functions run in this one process: their (disjoint) variables are set once, together, with
        tracing off and metrics not printed (no X-Ray daemon, no CloudWatch here)."""
        merged: dict[str, str] = {}
        for logical_id in self.functions():
            merged.update(self.function(logical_id).environment)
        merged.update(LOCAL_ENVIRONMENT)
        if log_level:
            merged["POWERTOOLS_LOG_LEVEL"] = log_level
        self._function_variables = merged
        self._set_environment(merged)

    def handler(self, logical_id: str) -> Any:
        """The function's handler, imported once per stack (one container per function)."""
        if logical_id not in self._handlers:
            self._handlers[logical_id] = load_handler(self.function(logical_id))
        return self._handlers[logical_id]

    def invoke(self, logical_id: str, event: dict[str, Any], context: Any = None) -> Any:
        """Call the function as Lambda would: its handler, a context with its memory and timeout."""
        if context is None:
            function = self.function(logical_id)
            context = LambdaContext(logical_id, function.memory, function.timeout)
        try:
            return self.handler(logical_id)(event, context)
        finally:
            forget_unpublished_metrics()

    def stream_pollers(self, log_level: str | None = None) -> list[StreamPoller]:
        """One poller per Kinesis event source of the template's functions, with the mapping's settings."""
        self.use_function_environments(log_level)
        pollers = []
        for logical_id in self.functions():
            function = self.function(logical_id)
            for event in function.events.values():
                if event["Type"] == "Kinesis":
                    pollers.append(self._poller(function, event))
        return pollers

    def _poller(self, function: FunctionSpec, event: dict[str, Any]) -> StreamPoller:
        stream = self._resource_for_arn_ref(event["Stream"])
        destination = ((event.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        on_failure = None
        if destination is not None:
            on_failure = sqs_destination(self.client("sqs"), self._resource_for_arn_ref(destination).name)
        context = LambdaContext(function.logical_id, function.memory, function.timeout)
        return StreamPoller(self.client("kinesis"), stream.name,
                            lambda payload, context: self.invoke(function.logical_id, payload, context), context,
                            MappingSettings.from_event(event), on_failure)

    def _resource_for_arn_ref(self, reference: str) -> ProvisionedResource:
        for resource in self.resources.values():
            if reference in (resource.arn, resource.name):
                return resource
        raise LookupError(f"no provisioned resource for {reference!r}")

    def describe(self) -> dict[str, str]:
        """The content of .pulse/local.json (contract 3)."""
        return {
            "aws_endpoint": self.endpoint,
            "region": self.region,
            "stream": self.name_of("AWS::Kinesis::Stream"),
            "table": self.name_of("AWS::DynamoDB::Table"),
            "dlq": self.name_of("AWS::SQS::Queue"),
            "bucket": self.name_of("AWS::S3::Bucket"),
        }


def forget_unpublished_metrics() -> None:
    """With metrics disabled, Powertools keeps each invocation's values and prints them once 100 pile up; on
    Lambda every invocation starts clean, so do the same here."""
    from aws_lambda_powertools import Metrics

    Metrics().clear_metrics()


def _restore(previous: dict[str, str | None]) -> None:
    """Put variables back as they were (None: it was not set)."""
    from pulse.wiring import reset_caches

    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    reset_caches()


def _bound_port(process: subprocess.Popen[str], address: str, timeout: float = 60.0) -> int:
    """The port moto's server reports on its first line of output, once it listens."""
    output = process.stdout
    assert output is not None  # started with stdout=subprocess.PIPE
    ready, _, _ = select.select([output], [], [], timeout)
    line = output.readline().strip() if ready else ""
    output.close()
    if line.isdigit():
        return int(line)
    process.kill()
    process.wait()
    if not ready:
        raise TimeoutError(f"moto's server did not listen on {address} within {timeout:.0f} s")
    if line:  # "cannot listen on HOST:PORT (why)"
        raise RuntimeError(f"moto's server {line}; pick another port (another local stack?)")
    raise RuntimeError(f"moto's server exited with code {process.returncode} before it listened on {address}")
