"""`pulse local up`: the whole stack on this machine — AWS APIs (moto), the template's resources, the stream
poller playing the event source mapping, S3 uploads under incoming/ triggering the catalogue function, and the
real API handler served over HTTP. Writes .pulse/local.json (contract 3)."""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulse_dev.local.api_server import serve_api
from pulse_dev.local.archiver import Archiver
from pulse_dev.local.gateway_auth import ISSUER_PATH, JwtAuthorizer, LocalIssuer, SigV4Authorizer
from pulse_dev.local.project import project_root
from pulse_dev.local.stack import LOCAL_CREDENTIALS, LocalStack
from pulse_dev.local.template import PSEUDO_PARAMETERS, TemplateResolver

log = logging.getLogger(__name__)


@dataclass
class LocalRuntime:
    host: str = "127.0.0.1"
    aws_port: int = 4566
    api_port: int = 3000
    parameters: dict[str, str] = field(default_factory=dict)
    log_level: str = "WARNING"
    root: Path = field(default_factory=project_root)
    _producer: Any = field(default=None, init=False, repr=False)
    archive_interval_seconds: float = 5.0  # Firehose buffers 60 s on AWS; locally the archive catches up faster
    # The training function's schedule, in wall-clock seconds: None plays the template's (rate(1 day)), 0 never.
    train_every_seconds: float | None = None
    # Play a JWT issuer too (JwtIssuer = its URL on the API's port; tokens from `pulse local token`).
    local_issuer: bool = False
    issuer_key: Path | None = None  # default: .pulse/local-issuer.pem under root

    def start(self) -> LocalRuntime:
        # Requests that record no metric (e.g. /health) make Powertools warn; CloudWatch would just log it.
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        # New catalogue versions show up within 2 s locally (30 s by default when deployed).
        parameters = {"CatalogCheckSeconds": "2", **self.parameters}
        # The API's port first: a port in use fails before anything else started, and the issuer's URL is on it.
        self.api_server = serve_api(lambda event: self.stack.invoke("ApiFunction", event), self.host, self.api_port)
        self.api_port = self.api_server.server_address[1]
        self.issuer = None
        if self.local_issuer:
            self.issuer = LocalIssuer(f"{self.api_url}{ISSUER_PATH}",
                                      self.issuer_key or self.root / ".pulse" / "local-issuer.pem")
            parameters["JwtIssuer"] = self.issuer.url
        self.stack = LocalStack(root=self.root, host=self.host, port=self.aws_port, parameters=parameters)
        try:
            self.stack.start()
        except BaseException:
            self.api_server.shutdown()
            self.api_server.server_close()
            raise
        self._stop = threading.Event()
        self.pollers = self.stack.stream_pollers(log_level=self.log_level)
        self._threads = [threading.Thread(target=poller.run, args=(self._stop,), name="pulse-poller", daemon=True)
                         for poller in self.pollers]
        self._threads.append(threading.Thread(target=self._watch_incoming, name="pulse-s3", daemon=True))
        self.archiver = Archiver(self.stack.client("kinesis"), self.stack.client("s3"),
                                 self.stack.name_of("AWS::Kinesis::Stream"), self.stack.name_of("AWS::S3::Bucket"),
                                 interval_seconds=self.archive_interval_seconds)
        self._threads.append(threading.Thread(target=self.archiver.run, args=(self._stop,), name="pulse-archive",
                                              daemon=True))
        if self.train_every_seconds is None:
            self.train_every_seconds = schedule_seconds(self.stack.function("TrainFunction").events)
        if self.train_every_seconds:
            self._threads.append(threading.Thread(target=self._train_on_schedule, name="pulse-train", daemon=True))
        for thread in self._threads:
            thread.start()
        self.api_server.issuer = self.issuer
        self.api_server.authorizer = self._authorizer()
        return self

    @property
    def api_auth(self) -> str:
        """jwt, iam or none: what the template's conditions give for these parameters."""
        resolver = TemplateResolver(self.stack.template, self.stack.parameters)
        return "jwt" if resolver.condition("UseJwt") else "iam" if resolver.condition("UseIam") else "none"

    def _authorizer(self) -> JwtAuthorizer | SigV4Authorizer | None:
        parameters = TemplateResolver(self.stack.template, self.stack.parameters).parameters
        if self.api_auth == "jwt":
            audiences = [part.strip() for part in parameters["JwtAudience"].split(",") if part.strip()]
            if self.issuer is None:
                return JwtAuthorizer(parameters["JwtIssuer"], audiences)
            local_issuer = self.issuer
            return JwtAuthorizer(parameters["JwtIssuer"], audiences, keys=lambda issuer: local_issuer.jwks())
        if self.api_auth == "iam":
            return SigV4Authorizer(LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"], LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
        return None

    def stop(self) -> None:
        self._stop.set()
        self.api_server.shutdown()
        self.api_server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self.stack.stop()

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    def describe(self) -> dict[str, str | None]:
        return {**self.stack.describe(), "api_url": self.api_url, "api_auth": self.api_auth,
                "jwt_issuer": self.issuer.url if self.issuer else None,
                "jwt_issuer_key": str(self.issuer.key_path) if self.issuer else None,
                "jwt_admin_scope": self.stack.parameters.get("AdminScope", "pulse/admin") if self.issuer else None}

    def write_description(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.describe(), indent=2) + "\n")

    def put_events(self, events: Iterable[dict[str, Any]]) -> int:
        """PutRecords in chunks of 500 (partition key = user_id), re-putting entries Kinesis refused."""
        kinesis = self._kinesis()
        stream = self.stack.name_of("AWS::Kinesis::Stream")
        batch: list[dict[str, Any]] = []
        sent = 0
        for event in events:
            batch.append({"PartitionKey": event["user_id"], "Data": json.dumps(event).encode()})
            if len(batch) == 500:
                sent += _put_all(kinesis, stream, batch)
                batch = []
        return sent + (_put_all(kinesis, stream, batch) if batch else 0)

    def put_records(self, records: Iterable[tuple[str, bytes]]) -> int:
        """PutRecords of raw (partition key, data) pairs — any bytes, not only JSON — in chunks of 500, re-putting
        entries Kinesis refused."""
        kinesis = self._kinesis()
        stream = self.stack.name_of("AWS::Kinesis::Stream")
        entries = [{"PartitionKey": key, "Data": data} for key, data in records]
        return sum(_put_all(kinesis, stream, entries[start:start + 500]) for start in range(0, len(entries), 500))

    def _kinesis(self) -> Any:
        """One producer client (creating a boto3 client costs ~0.1 s of CPU; boto3 clients are thread-safe)."""
        if self._producer is None:
            self._producer = self.stack.client("kinesis")
        return self._producer

    def wait_until_ingested(self, timeout: float = 600.0) -> None:
        """Until every record put so far has been delivered to (and handled by) the ingest function."""
        marks = [poller.polls_started for poller in self.pollers]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(poller.caught_up_since(mark) for poller, mark in zip(self.pollers, marks, strict=True)):
                return
            time.sleep(0.05)
        raise TimeoutError(f"the ingest function did not catch up within {timeout} s")

    def train_now(self) -> dict[str, Any]:
        """What the schedule does: the archive brought up to date, then the training function invoked."""
        self.archiver.drain()
        event = {"version": "0", "detail-type": "Scheduled Event", "source": "aws.events",
                 "region": PSEUDO_PARAMETERS["AWS::Region"], "detail": {}}
        answer: dict[str, Any] = self.stack.invoke("TrainFunction", event)
        return answer

    def _train_on_schedule(self) -> None:
        while not self._stop.wait(self.train_every_seconds):
            try:
                result = self.train_now()
                log.info("scheduled training: %s (%s)", result["decision"], result["reason"])
            except Exception:  # noqa: BLE001 - the next run tries again; the error is logged
                log.exception("scheduled training failed")

    def _watch_incoming(self) -> None:
        """Plays the bucket's "Object Created" notification for the catalogue function (JSONL under incoming/)."""
        s3 = self.stack.client("s3")
        bucket = self.stack.name_of("AWS::S3::Bucket")
        seen: dict[str, str] = {}
        while not self._stop.wait(1.0):
            try:
                listing = s3.list_objects_v2(Bucket=bucket, Prefix="incoming/").get("Contents", [])
                for obj in listing:
                    if obj["Key"].endswith(".jsonl") and seen.get(obj["Key"]) != obj["ETag"]:
                        seen[obj["Key"]] = obj["ETag"]
                        event = {"version": "0", "detail-type": "Object Created", "source": "aws.s3",
                                 "region": PSEUDO_PARAMETERS["AWS::Region"],
                                 "detail": {"bucket": {"name": bucket}, "object": {"key": obj["Key"]}}}
                        result = self.stack.invoke("CatalogFunction", event)
                        log.warning("catalogue function: %s", json.dumps(result["results"]))
            except Exception:  # noqa: BLE001 - keep watching; the error is logged
                log.exception("incoming/ watcher error")


def schedule_seconds(events: dict[str, dict[str, Any]]) -> float:
    """rate(N unit) of the function's Schedule event in seconds (0: no schedule)."""
    units = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}
    for event in events.values():
        if event["Type"] == "Schedule":
            amount, unit = str(event["Schedule"]).removeprefix("rate(").removesuffix(")").split()
            return float(amount) * units[unit.rstrip("s")]
    return 0.0


def _put_all(kinesis: Any, stream: str, records: list[dict[str, Any]]) -> int:
    pending = records
    for attempt in range(8):
        response = kinesis.put_records(StreamName=stream, Records=pending)
        pending = [record for record, result in zip(pending, response["Records"], strict=True) if "ErrorCode" in result]
        if not pending:
            return len(records)
        time.sleep(0.05 * 2**attempt)
    raise RuntimeError(f"{len(pending)} records still refused by Kinesis after retries")
