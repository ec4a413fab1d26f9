"""moto's server for the local stack (`python -m pulse_dev.local.moto_process HOST PORT`). It binds the port itself
(PORT 0: any free one) and writes the bound port, or why it could not bind, as the first line on stdout; nothing
else goes there. Three fixes that a 100,000-record replay and the soak's 300 events/s need:

- one request at a time: moto's threaded server lets a PutRecords and a GetRecords on the same shard race (its
  in-memory shard is not thread-safe: "OrderedDict mutated during iteration"); a real endpoint serializes per
  shard, and moto's work holds the GIL anyway;
- constant-time shard reads and appends: moto finds a shard's last sequence number by listing every key on each
  put, and scans from the first record on each GetRecords, so a replay slows down quadratically. Its sequence
  numbers are consecutive integers per shard, which allows direct lookups with the same results;
- DynamoDB answers dumped as JSON directly: moto's model-driven serializer walks every returned item shape by
  shape (a BatchGetItem of 100 users took 125 ms, 35 ms dumped), which held the local ingest under 300 events/s.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


def _patch_kinesis_shard() -> None:
    from moto.kinesis.models import Record, Shard

    def get_min_sequence_number(self: Shard) -> int:
        return next(iter(self.records)) if self.records else 0

    def get_max_sequence_number(self: Shard) -> int:
        return next(reversed(self.records)) if self.records else 0

    def get_records(self: Shard, last_sequence_id: str, limit: int | None) -> tuple[list[Record], int, int]:
        last = int(last_sequence_id)
        results: list[Record] = []
        if self.records:
            newest = next(reversed(self.records))
            key = max(last + 1, next(iter(self.records)))
            while key <= newest and (limit is None or len(results) < limit):
                record = self.records.get(key)  # gaps only after a reshard
                if record is not None:
                    results.append(record)
                key += 1
            if results:
                last = results[-1].sequence_number
                behind = self.records[newest].created_at - results[-1].created_at
                return results, last, int(behind * 1000)
        return results, last, 0

    # Replacing moto's methods is the point here (see the module doc).
    Shard.get_min_sequence_number = get_min_sequence_number  # type: ignore[method-assign]
    Shard.get_max_sequence_number = get_max_sequence_number  # type: ignore[method-assign]
    Shard.get_records = get_records  # type: ignore[method-assign]


def _patch_dynamodb_responses() -> None:
    from moto.core.responses import ActionResult
    from moto.dynamodb.models.utilities import dynamo_json_dump
    from moto.dynamodb.responses import DynamoHandler

    class JsonResult(ActionResult):
        """DynamoDB's JSON protocol is the result as it is: dumped directly (binary values base64-encoded), as
        moto did before its model-driven serializer, which walks the item shape by shape."""

        def execute_result(self, context: Any) -> tuple[int, dict[str, str], str]:
            return 200, {"Content-Type": "application/x-amz-json-1.0"}, dynamo_json_dump(self.result)

    def dumped(action: Callable[[DynamoHandler], ActionResult]) -> Callable[[DynamoHandler], ActionResult]:
        def run(handler: DynamoHandler) -> ActionResult:
            return JsonResult(action(handler).result)

        return run

    for name in ("get_item", "put_item", "batch_get_item"):  # the ingest's and the API's calls, per event
        setattr(DynamoHandler, name, dumped(getattr(DynamoHandler, name)))


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per AWS call
    _patch_kinesis_shard()
    _patch_dynamodb_responses()
    try:
        listener = socket.create_server((host, port))
    except OSError as error:
        print(f"cannot listen on {host}:{port} ({error.strerror or error})", flush=True)
        sys.exit(1)
    bound = listener.getsockname()[1]
    os.environ.setdefault("MOTO_PORT", str(bound))  # moto writes it into queue URLs
    server = make_server(host, bound, DomainDispatcherApplication(create_backend_app), threaded=False,
                         fd=listener.fileno())
    print(bound, flush=True)
    # The parent reads one line: stdout goes nowhere from now on, so no write can fill its pipe.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    server.serve_forever()


if __name__ == "__main__":
    main()
