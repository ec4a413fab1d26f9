"""`pulse soak`: a sustained, realistic load on the local stack, then a reconciliation of everything that was sent.

The MovieLens-100K catalogue is published, then records are put on the stream on a fixed schedule (a chunk every
100 ms; default 300 records/s for 2 minutes) from thousands of users — heavy and light ones (Zipf-like activity)
on popular and obscure movies. The mix: item events of every type (view with or without dwell, click, like, rate
with stars, add_to_cart, purchase, dislike, skip), "search" events with query texts, ~5% late events (ts minutes to
hours in the past), ~1% poison records of a dozen kinds and ~2% producer duplicates (a record sent seconds
earlier, re-sent byte for byte). Meanwhile worker threads query the HTTP API at a fixed rate.

Then, once the ingest function has caught up and the archive is flushed, the soak checks that
- each user's event_count in DynamoDB equals the distinct valid events sent for them (nothing lost, nothing
  counted twice);
- every poison record is in the dead-letter queue, byte for byte, with a reason;
- the archive holds every accepted event (read back through pulse.events.archive.read_archive);
- the API answered every request, none with a 5xx; with its p50/p99 latency under load;
- a deletion sticks: the heaviest users so far are deleted (DELETE /users/{id}) halfway through, their events
  dated before the deletion are put on the stream again after the sending, and each of them ends with exactly the
  events dated after their deletion (a fresh profile), nothing older.
The report is printed and written as JSON (--out); the exit code is 1 when any check fails. Whether the stack kept
up is reported beside (the sender's schedule, the ingest's backlog and how long it took to drain after the last put):
locally, each distinct user of a batch costs the ingest a GetItem and a PutItem on moto's one-request-at-a-time server.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import itertools
import json
import random
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pulse.events.behaviour import MAX_RECORD_BYTES, MAX_TEXT_LENGTH
from pulse_dev.local.project import project_root
from pulse_dev.local.reconcile import (
    MAX_DRAIN_SECONDS,
    RawIdScan,
    Record,
    archive_coverage,
    checks,
    compare_counts,
    deletion_summary,
    event_ts,
    expected_event_counts,
    match_dead_letters,
    scanning_logs,
    sustained,
    traffic_summary,
)
from pulse_dev.stats import percentile

DEFAULT_OUT = Path(".pulse/soak.json")
BEHAVIOUR_TEXTS = Path("tests") / "fixtures" / "behaviour_texts.txt"  # in the project folder
TICK_SECONDS = 0.1  # one PutRecords chunk per tick
# Item event types and their shares (of item events).
ITEM_TYPES = {"view": 42, "click": 22, "like": 8, "rate": 12, "add_to_cart": 5, "purchase": 3, "dislike": 4, "skip": 4}
POISON_KINDS = ("invalid_json", "not_utf8", "compressed", "missing_field", "unknown_type", "oversize_text", "bad_ts",
                "unknown_item", "missing_value", "not_object", "bad_id", "oversize_record")
# Poison whose payload is a valid event by the contract: the ingest rejects it (item not in the catalogue) but the
# archive, which keeps every record, reads it back as an event (reported as contract_valid_poison).
# A duplicate re-sends one of the last records sent before the current chunk (seconds earlier, as a producer's
# retry): far inside the per-user de-duplication window (DedupWindow, 512 event ids) even for the busiest user.
DUPLICATE_HORIZON = 2000
LATE_SECONDS = (300.0, 6 * 3600.0)
DEVICES = ("ios", "android", "web", "tv")


@dataclass(frozen=True)
class SoakOptions:
    rate: float = 300.0  # records per second put on the stream
    seconds: float = 120.0
    users: int = 3000
    api_rps: float = 10.0  # the local API is one container: it serves one request at a time
    out: Path = DEFAULT_OUT
    text_share: float = 0.15  # of valid events: searches (the encoder's ~4-5 ms each)
    poison_share: float = 0.01
    duplicate_share: float = 0.02
    late_share: float = 0.05
    deletions: int = 5  # users deleted halfway through, their old events delivered again afterwards
    seed: int = 0
    progress: bool = True
    parameters: dict[str, str] = field(default_factory=dict)  # template parameter overrides




# --- The traffic -------------------------------------------------------------------------------------------------


class Traffic:
    """Deterministic (seeded) records for the soak; `sent` is the ledger of everything handed out, in order."""

    def __init__(self, options: SoakOptions, item_weights: Mapping[str, float], queries: Sequence[str]):
        self.options = options
        self.rng = random.Random(options.seed)
        self.users = [f"soak-{number:05d}" for number in range(options.users)]
        self.user_weights = list(itertools.accumulate(zipf_weights(options.users)))
        self.items = sorted(item_weights)
        self.item_weights = list(itertools.accumulate(item_weights[item] for item in self.items))
        self.queries = list(queries)
        self.sent: list[Record] = []
        self._recent: deque[Record] = deque(maxlen=DUPLICATE_HORIZON)
        self._serial = itertools.count()

    def user(self, rng: random.Random | None = None) -> str:
        return (rng or self.rng).choices(self.users, cum_weights=self.user_weights)[0]

    def next_chunk(self, count: int, now: float) -> list[Record]:
        options, rng = self.options, self.rng
        chunk = []
        for _ in range(count):
            draw = rng.random()
            if draw < options.poison_share:
                record = self.poison(now)
            elif draw < options.poison_share + options.duplicate_share and self._recent:
                original = rng.choice(self._recent)
                record = Record(original.partition_key, original.data, "duplicate", original.user_id,
                                original.event_id, original.detail, original.late)
            else:
                record = self.event(now)
            chunk.append(record)
        self._recent.extend(record for record in chunk if record.kind == "event")
        self.sent.extend(chunk)
        return chunk

    def event(self, now: float) -> Record:
        rng = self.rng
        late = rng.random() < self.options.late_share
        event = self._event_dict(now - rng.uniform(*LATE_SECONDS) if late else now)
        return Record(event["user_id"], json.dumps(event, ensure_ascii=False).encode(), "event", event["user_id"],
                      event["event_id"], event["type"], late)

    def poison(self, now: float) -> Record:
        serial = next(self._serial)
        kind = POISON_KINDS[serial % len(POISON_KINDS)]  # round robin: every kind shows up, even in short runs
        event = self._event_dict(now, search=kind in ("not_utf8", "oversize_text"))
        event["event_id"] = f"poison-{serial}"
        return Record(event["user_id"], poison_payload(kind, event, self.rng), "poison", event["user_id"],
                      event["event_id"], kind)

    def _event_dict(self, ts: float, *, search: bool | None = None) -> dict[str, Any]:
        rng = self.rng
        event: dict[str, Any] = {"event_id": f"{rng.getrandbits(128):032x}", "user_id": self.user()}
        if search if search is not None else rng.random() < self.options.text_share:
            event.update(type="search", text=rng.choice(self.queries))
        else:
            event["type"] = rng.choices(list(ITEM_TYPES), weights=list(ITEM_TYPES.values()))[0]
            event["item_id"] = rng.choices(self.items, cum_weights=self.item_weights)[0]
            if event["type"] == "rate":
                event["value"] = rng.choice((1, 2, 3, 3, 4, 4, 4, 5, 5, 3.5, 4.5))
            elif event["type"] == "view" and rng.random() < 0.4:
                event["value"] = round(rng.expovariate(1 / 20), 1)  # dwell seconds
        # Producers differ: epoch seconds or ISO-8601 (with Z or an offset); some add fields of their own.
        style = rng.random()
        if style < 0.1:
            event["ts"] = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
        elif style < 0.15:
            event["ts"] = dt.datetime.fromtimestamp(ts, dt.timezone(dt.timedelta(hours=2))).isoformat()
        else:
            event["ts"] = round(ts, 3)
        if rng.random() < 0.5:
            event["device"] = rng.choice(DEVICES)
        return event


def zipf_weights(count: int, exponent: float = 0.8) -> list[float]:
    """Activity by rank: a few heavy users, a long tail of occasional ones."""
    return [1.0 / (rank ** exponent) for rank in range(1, count + 1)]


def poison_payload(kind: str, event: dict[str, Any], rng: random.Random) -> bytes:
    """The bytes of one poison record of `kind`, built from a valid event (its event_id makes the bytes unique)."""
    text = json.dumps(event)
    if kind == "invalid_json":
        variants = (text[:-1], text.replace('"', "'"), text[:-1] + ", }", text.replace(":", " =", 1))
        return rng.choice(variants).encode()
    if kind == "not_utf8":
        event["text"] = rng.choice(("café crème", "Amélie", "Léon", "señor de los anillos", "Götterdämmerung"))
        return json.dumps(event, ensure_ascii=False).encode("latin-1")  # a producer that does not speak UTF-8
    if kind == "compressed":
        return gzip.compress(text.encode(), mtime=0)  # gzip bytes put as they are
    if kind == "missing_field":
        missing = rng.choice(("event_id", "user_id", "type", "ts", "item_id"))
        return json.dumps({key: value for key, value in event.items() if key != missing}).encode()
    if kind == "unknown_type":
        return json.dumps({**event, "type": rng.choice(("hover", "share", "VIEW", "wishlist", "watch"))}).encode()
    if kind == "oversize_text":
        length = rng.randint(MAX_TEXT_LENGTH + 1, 2 * MAX_TEXT_LENGTH)
        return json.dumps({**event, "text": ((event["text"] + " ") * length)[:length]}).encode()
    if kind == "bad_ts":
        ts = event["ts"] if isinstance(event["ts"], float) else time.time()
        bad = rng.choice((ts * 1000, -ts, "yesterday", dt.datetime.fromtimestamp(ts).isoformat(), True, [ts]))
        return json.dumps({**event, "ts": bad}).encode()
    if kind == "unknown_item":
        return json.dumps({**event, "item_id": f"tt{rng.randint(10**6, 10**7 - 1)}"}).encode()
    if kind == "missing_value":
        return json.dumps({**{k: v for k, v in event.items() if k != "value"}, "type": "rate"}).encode()
    if kind == "not_object":
        return json.dumps(rng.choice(([event, event], event["event_id"], None))).encode()
    if kind == "bad_id":
        bad = rng.choice((event["user_id"] + " ", int(event["user_id"].split("-")[-1]), "u" * 200, ""))
        return json.dumps({**event, "user_id": bad}).encode()
    if kind == "oversize_record":
        padding = MAX_RECORD_BYTES + rng.randint(1, 4096)
        return json.dumps({**event, "context": {"trace": "x" * padding}}).encode()
    raise ValueError(f"unknown poison kind {kind!r}")


def search_queries(movies: Sequence[Any], fixture: Path | None = None) -> list[str]:
    """What people type into a search box: titles, genres, 'movies like ...', decades, and the fixture's
    behaviour texts (title, year and genres) when the repository's tests are there."""
    queries: set[str] = set()
    genres = sorted({genre for movie in movies for genre in movie.genres})
    for movie in movies:
        queries.add(movie.title)
        if movie.genres:
            queries.add(f"{movie.genres[0].lower()} movies like {movie.title}")
    for genre in genres:
        queries.update({f"best {genre.lower()} films", f"{genre.lower()} movie"})
        for decade in (1950, 1960, 1970, 1980, 1990):
            queries.add(f"{genre.lower()} from the {decade % 100}s")
    fixture = fixture or project_root() / BEHAVIOUR_TEXTS
    if fixture.is_file():
        queries.update(line.strip() for line in fixture.read_text().splitlines() if line.strip())
    return sorted(queries)


# --- The API under load ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiCall:
    endpoint: str  # "recommendations" or "profile"
    status: int  # 0: no answer (connection error, timeout)
    milliseconds: float


class ApiLoad:
    """GET /users/{id}/recommendations?k=10 (4 in 5) and /users/{id}/profile at a fixed rate from worker threads.
    Latency counts from each request's scheduled moment, so a slow API cannot hide in the request queue."""

    def __init__(self, base_url: str, rps: float, pick_user: Callable[[random.Random], str], seed: int,
                 workers: int = 8):
        self.base_url, self.rps, self.pick_user = base_url, rps, pick_user
        self.rng = random.Random(seed + 1)
        self.calls: list[ApiCall] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="soak-api")
        self._dispatcher = threading.Thread(target=self._dispatch, name="soak-api-dispatch", daemon=True)

    def start(self) -> ApiLoad:
        if self.rps > 0:
            self._dispatcher.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._dispatcher.is_alive():
            self._dispatcher.join()
        self._pool.shutdown(wait=True)

    def _dispatch(self) -> None:
        started = time.perf_counter()
        for number in itertools.count():
            scheduled = started + number / self.rps
            if self._stop.wait(max(0.0, scheduled - time.perf_counter())):
                return
            user = urllib.parse.quote(self.pick_user(self.rng))
            if self.rng.random() < 0.8:
                endpoint, path = "recommendations", f"/users/{user}/recommendations?k=10"
            else:
                endpoint, path = "profile", f"/users/{user}/profile"
            self._pool.submit(self._call, endpoint, self.base_url + path, scheduled)

    def _call(self, endpoint: str, url: str, scheduled: float) -> None:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            error.read()
            status = error.code
        except (urllib.error.URLError, OSError):
            status = 0
        self.calls.append(ApiCall(endpoint, status, (time.perf_counter() - scheduled) * 1000))


def api_summary(calls: Sequence[ApiCall], seconds: float, target_rps: float) -> dict[str, Any]:
    statuses = Counter(call.status for call in calls)
    summary: dict[str, Any] = {
        "target_rps": target_rps, "requests": len(calls), "achieved_rps": round(len(calls) / max(seconds, 1e-9), 1),
        "status_counts": {str(status): count for status, count in sorted(statuses.items())},
        "server_errors_5xx": sum(count for status, count in statuses.items() if status >= 500),
        "no_answer": statuses.get(0, 0),
        **latency_summary([call.milliseconds for call in calls if call.status]),
    }
    for endpoint in sorted({call.endpoint for call in calls}):
        theirs = [call for call in calls if call.endpoint == endpoint]
        summary.setdefault("by_endpoint", {})[endpoint] = {
            "requests": len(theirs), **latency_summary([call.milliseconds for call in theirs if call.status])}
    return summary


def latency_summary(milliseconds: Sequence[float]) -> dict[str, float | None]:
    return {**{f"p{q}_ms": percentile(milliseconds, q, digits=1) for q in (50, 90, 99)},
            "max_ms": round(max(milliseconds), 1) if milliseconds else None}


# --- The run -----------------------------------------------------------------------------------------------------


def run_soak(options: SoakOptions) -> dict[str, Any]:
    from pulse.catalog.store import S3CatalogRepository
    from pulse_dev.local.client import Api, Progress, publish, wait_until_serving
    from pulse_dev.local.runtime import LocalRuntime
    from pulse_dev.movielens import load_movies, load_ratings

    started = time.perf_counter()
    movies = load_movies()
    ratings = load_ratings()
    # The functions log at INFO, as deployed; every line is scanned for raw user ids, only errors are shown.
    scan = RawIdScan(sys.stdout)
    stop_scanning = scanning_logs(scan)
    try:
        runtime = LocalRuntime(aws_port=0, api_port=0, parameters=options.parameters, log_level="INFO").start()
    except BaseException:
        stop_scanning()
        raise
    try:
        version = publish(runtime, {movie.item_id: movie for movie in movies}, ratings,
                          Progress(enabled=options.progress))["version"]
        wait_until_serving(Api(runtime.api_url), version)
        catalogue = S3CatalogRepository(runtime.stack.name_of("AWS::S3::Bucket")).load(version, None)
        popularity = Counter(rating.item_id for rating in ratings)
        traffic = Traffic(options, {item: popularity[item] + 1.0 for item in catalogue.item_ids},
                          search_queries(movies))
        first_day = dt.datetime.now(dt.UTC).date()
        sending, api = send(runtime, traffic, options)
        report: dict[str, Any] = {"options": {**asdict(options), "out": str(options.out)},
                                  "catalogue": {"version": version, "items": len(catalogue.item_ids)},
                                  "events": traffic_summary(traffic.sent), "sending": sending, "api": api}
        deleted = sending.pop("deleted_users")
        forgotten = deletion_times(runtime, deleted)
        redelivered = runtime.put_records((record.partition_key, record.data) for record in traffic.sent
                                          if record.user_id in forgotten and record.kind == "event"
                                          and event_ts(record) <= forgotten[record.user_id])
        report.update(reconcile(runtime, traffic.sent, first_day, options, forgotten))
        report["deletions"] = deletion_summary(traffic.sent, forgotten, deleted, report.pop("stored_counts"),
                                               redelivered)
        report["ingest"].update(sending.pop("ingest"))
    finally:
        runtime.stop()
        stop_scanning()
    report["logs"] = scan.summary()
    report["checks"] = checks(report)
    report["passed"] = all(report["checks"].values())
    report["sustained"] = sustained(report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def send(runtime: Any, traffic: Traffic, options: SoakOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """Put a chunk every TICK_SECONDS on a fixed schedule while the API is queried; -> (sending, api) reports."""
    from tqdm import tqdm

    ticks = max(1, round(options.seconds / TICK_SECONDS))
    planned = round(options.rate * ticks * TICK_SECONDS)
    poller = runtime.pollers[0]
    delivered_before = poller.stats.records
    api = ApiLoad(runtime.api_url, options.api_rps, traffic.user, options.seed)
    max_lag, max_backlog, sent, put_seconds = 0.0, 0, 0, 0.0
    deleted: list[str] = []
    bar = tqdm(total=planned, desc="soak: sending", unit="ev", disable=not options.progress)
    started = time.perf_counter()
    api.start()
    try:
        for tick in range(ticks):
            scheduled = started + tick * TICK_SECONDS
            time.sleep(max(0.0, scheduled - time.perf_counter()))
            max_lag = max(max_lag, time.perf_counter() - scheduled)
            due = round(options.rate * (tick + 1) * TICK_SECONDS) - sent
            chunk = traffic.next_chunk(due, time.time())
            put_started = time.perf_counter()
            runtime.put_records((record.partition_key, record.data) for record in chunk)
            put_seconds += time.perf_counter() - put_started
            sent += len(chunk)
            if tick == ticks // 2:
                deleted = delete_users(runtime.api_url, traffic.sent, options.deletions)
            backlog = max(0, sent - (poller.stats.records - delivered_before))  # approximate: retries count too
            max_backlog = max(max_backlog, backlog)
            bar.update(len(chunk))
            if tick % 10 == 9:
                elapsed = time.perf_counter() - started
                bar.set_postfix_str(f"{sent / elapsed:.0f} ev/s, ingest backlog {backlog}, "
                                    f"{len(api.calls)} API calls")
        finished = time.perf_counter()
    finally:
        api.stop()
        bar.close()
    # The schedule ends one tick after the last chunk: on time, the achieved rate is exactly the target.
    elapsed = max(finished - started, ticks * TICK_SECONDS)
    achieved = sent / elapsed
    sending = {"target_rate": options.rate, "planned_seconds": options.seconds, "records": sent,
               "seconds": round(elapsed, 2), "achieved_rate": round(achieved, 1),
               "max_schedule_lag_seconds": round(max_lag, 3), "put_seconds": round(put_seconds, 2),
               "kept_schedule": achieved >= 0.98 * options.rate, "deleted_users": deleted,
               "ingest": {"backlog_max_records": max_backlog,
                          "backlog_at_end_records": max(0, sent - (poller.stats.records - delivered_before))}}
    return sending, api_summary(api.calls, elapsed, options.api_rps)


def delete_users(api_url: str, sent: Sequence[Record], count: int) -> list[str]:
    """DELETE /users/{id} for the `count` users with the most events so far (some perhaps still on the stream)."""
    heaviest = [user for user, _ in Counter(r.user_id for r in sent if r.kind == "event").most_common(count)]
    for user in heaviest:
        request = urllib.request.Request(f"{api_url}/users/{urllib.parse.quote(user)}", method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()  # an error status raises
    return heaviest


def deletion_times(runtime: Any, users: Sequence[str]) -> dict[str, float]:
    """The deletion time in each deleted user's tombstone (absent: no tombstone)."""
    dynamodb, table = runtime.stack.client("dynamodb"), runtime.stack.name_of("AWS::DynamoDB::Table")
    times = {}
    for user in users:
        item = dynamodb.get_item(TableName=table, Key={"user_id": {"S": user}}, ConsistentRead=True).get("Item", {})
        if "forgotten_at" in item:
            times[user] = float(item["forgotten_at"]["N"])
    return times


def reconcile(runtime: Any, sent: Sequence[Record], first_day: dt.date, options: SoakOptions,
              forgotten: Mapping[str, float]) -> dict[str, Any]:
    from tqdm import tqdm

    from pulse.events.archive import ArchiveReadStats, read_archive

    steps = tqdm(total=5, desc="soak: reconcile", unit="step", disable=not options.progress,
                 bar_format="{desc}: {n}/{total} {bar} {elapsed}")

    def step(label: str) -> None:
        steps.set_description(f"soak: reconcile ({label})")

    step("waiting for the ingest")
    drain_started = time.perf_counter()
    try:
        runtime.wait_until_ingested(timeout=max(120.0, options.seconds * 5))
        caught_up = True
    except TimeoutError:
        caught_up = False
    stats = runtime.pollers[0].stats
    ingest = {"caught_up": caught_up, "drain_seconds": round(time.perf_counter() - drain_started, 2),
              **asdict(stats)}
    steps.update(1)

    step("flushing the archive")
    runtime.archiver.drain()
    steps.update(1)

    step("DynamoDB event counts")
    stored = stored_event_counts(runtime.stack.client("dynamodb"), runtime.stack.name_of("AWS::DynamoDB::Table"))
    counts = compare_counts(expected_event_counts(sent, forgotten), stored)
    steps.update(1)

    step("dead-letter queue")
    messages = dead_letter_messages(runtime.stack.client("sqs"), runtime.stack.name_of("AWS::SQS::Queue"))
    letters = match_dead_letters([record for record in sent if record.kind == "poison"], messages)
    steps.update(1)

    step("archive")
    archive_stats = ArchiveReadStats()
    bucket = runtime.stack.name_of("AWS::S3::Bucket")
    archived = {(event.user_id, event.event_id)
                for event in read_archive(bucket, first_day, dt.datetime.now(dt.UTC).date(), stats=archive_stats)}
    archive = {"objects": archive_stats.objects, "lines": archive_stats.lines, "invalid_lines": archive_stats.invalid,
               "duplicate_lines": archive_stats.duplicates, "events": len(archived), **archive_coverage(sent, archived)}
    steps.update(1)
    steps.close()
    return {"ingest": ingest, "counts": counts, "dead_letters": letters, "archive": archive, "stored_counts": stored}


def stored_event_counts(dynamodb: Any, table: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    pages = dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True,
                                                     ProjectionExpression="user_id, event_count")
    for page in pages:
        for item in page["Items"]:
            counts[item["user_id"]["S"]] = int(item.get("event_count", {}).get("N", "0"))
    return counts


def dead_letter_messages(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message of the queue, read once (kept invisible meanwhile, not deleted)."""
    messages: dict[str, dict[str, Any]] = {}
    empty_reads = 0
    while empty_reads < 2:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                    VisibilityTimeout=900).get("Messages", [])
        empty_reads = 0 if batch else empty_reads + 1
        for message in batch:
            messages[message["MessageId"]] = json.loads(message["Body"])
    return list(messages.values())


# --- The terminal ------------------------------------------------------------------------------------------------


def format_report(report: dict[str, Any]) -> str:
    events, sending, ingest = report["events"], report["sending"], report["ingest"]
    counts, letters, archive, api = report["counts"], report["dead_letters"], report["archive"], report["api"]
    deletions, verdict = report["deletions"], report["checks"]

    def mark(*names: str) -> str:
        return "OK" if all(verdict[name] for name in names) else "FAILED"

    kept = "kept the schedule" if sending["kept_schedule"] else (
        f"FELL BEHIND the target {sending['target_rate']:g}/s (max lag {sending['max_schedule_lag_seconds']} s)")
    extras = ", ".join(f"{kind} {count}" for kind, count in archive["contract_valid_poison"].items()) or "none"
    lines = [
        f"\nSoak on the local stack: {sending['records']:,} records in {sending['seconds']} s = "
        f"{sending['achieved_rate']:g} records/s ({kept}), {events['users']:,} users",
        f"  sent {events['sent']:,} = accepted {events['accepted']:,} + rejected (poison) {events['rejected']:,} "
        f"+ duplicates {events['duplicates']:,}; of the accepted {events['text']:,} searches, {events['late']:,} late",
        f"  ingest: {'caught up' if ingest['caught_up'] else 'DID NOT CATCH UP'} {ingest['drain_seconds']} s after "
        f"the last put (backlog max ~{ingest['backlog_max_records']:,} records); {ingest['invocations']:,} "
        f"invocations, {ingest['function_errors']} function errors, {ingest['partial_failures']} partial failures",
        f"  DynamoDB: event_count {counts['events_stored']:,} over {counts['users_stored']:,} users, expected "
        f"{counts['events_expected']:,} over {counts['users_expected']:,}; mismatched users "
        f"{counts['mismatched_users']} (lost {counts['lost_users']}, double-counted {counts['double_counted_users']})"
        f"  {mark('nothing_lost', 'nothing_double_counted')}",
        f"  dead-letter queue: {letters['messages']:,} messages, {letters['matched']:,} of {letters['poison_sent']:,} "
        f"poison records matched byte for byte ({len(letters['matched_by_kind'])} kinds), missing "
        f"{letters['missing_poison']}, unexpected {letters['unmatched_messages']}, batch failures "
        f"{letters['failure_destination_batches']}  {mark('every_poison_in_dlq')}",
        f"  archive: {archive['archived_accepted']:,} of {archive['accepted']:,} accepted events, missing "
        f"{archive['missing']}; {archive['duplicate_lines']:,} duplicate and {archive['invalid_lines']:,} invalid "
        f"lines dropped on reading; poison that is an event by the contract: {extras}  {mark('archive_complete')}",
        f"  API: {api['requests']:,} requests ({api['achieved_rps']:g}/s), p50 {api['p50_ms']} ms, p99 "
        f"{api['p99_ms']} ms, max {api['max_ms']} ms; statuses {api['status_counts']}; 5xx "
        f"{api['server_errors_5xx']}, no answer {api['no_answer']}  {mark('api_no_5xx')}",
        f"  deletions: {deletions['users']} users deleted mid-run, {deletions['old_events_redelivered']:,} of their "
        f"old events delivered again afterwards; {deletions['events_before_deletion']:,} events dated before a "
        f"deletion ignored (not expected above), {deletions['fresh_profiles']} fresh profiles from later events, "
        f"resurrected {deletions['resurrected']}, mismatched {deletions['mismatched']}  {mark('deletions_stick')}",
        f"  logs: {report['logs']['lines_scanned']:,} lines at INFO and above, raw user ids in "
        f"{report['logs']['raw_user_ids']}  {mark('no_raw_user_ids_in_logs')}",
        f"  {'PASSED' if report['passed'] else 'FAILED: ' + ', '.join(n for n, ok in verdict.items() if not ok)}"
        f" in {report['seconds']} s",
    ]
    pace = report["sustained"]
    if pace["verdict"]:
        lines.append(f"  the stack sustained {pace['rate']:g} records/s")
    else:
        lines.append(f"  WARNING: the stack did NOT sustain {pace['rate']:g} records/s: ingest backlog up to "
                     f"~{pace['backlog_max_records']:,} records, drained {pace['drain_seconds']} s after the last put"
                     f" (kept up: within {MAX_DRAIN_SECONDS:g} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pulse soak", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=SoakOptions.rate, help="records per second (default 300)")
    parser.add_argument("--seconds", type=float, default=SoakOptions.seconds, help="sending time (default 120)")
    parser.add_argument("--users", type=int, default=SoakOptions.users, help="distinct users (default 3000)")
    parser.add_argument("--api-rps", type=float, default=SoakOptions.api_rps,
                        help="API requests per second during the sending (default 10; 0: none)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report (default .pulse/soak.json)")
    parser.add_argument("--text-share", type=float, default=SoakOptions.text_share,
                        help="share of search (text) events among valid events (default 0.15)")
    parser.add_argument("--poison-share", type=float, default=SoakOptions.poison_share, help="default 0.01")
    parser.add_argument("--duplicate-share", type=float, default=SoakOptions.duplicate_share, help="default 0.02")
    parser.add_argument("--late-share", type=float, default=SoakOptions.late_share, help="default 0.05")
    parser.add_argument("--deletions", type=int, default=SoakOptions.deletions,
                        help="users deleted halfway through, their old events delivered again afterwards (default 5)")
    parser.add_argument("--seed", type=int, default=SoakOptions.seed)
    parser.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE",
                        help="template parameter override (repeatable), e.g. --parameter IngestBatchSize=500")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.users <= 0 or args.api_rps < 0 or args.deletions < 0:
        parser.error("--rate, --seconds and --users must be positive, --api-rps and --deletions not negative")
    if any("=" not in parameter for parameter in args.parameter):
        parser.error("--parameter takes NAME=VALUE")
    options = SoakOptions(rate=args.rate, seconds=args.seconds, users=args.users, api_rps=args.api_rps, out=args.out,
                          text_share=args.text_share, poison_share=args.poison_share,
                          duplicate_share=args.duplicate_share, late_share=args.late_share,
                          deletions=args.deletions, seed=args.seed,
                          progress=not args.no_progress,
                          parameters=dict(parameter.split("=", 1) for parameter in args.parameter))
    report = run_soak(options)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    print(f"\nwritten: {options.out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
