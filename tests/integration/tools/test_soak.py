"""`pulse soak`: a short soak on the embedded local stack reconciles exactly; the reconciliation itself catches
losses, double counts, missing dead letters and archive gaps."""

import io
import json
import logging
import time

import pytest

from pulse.events.behaviour import InvalidEventError, decode_record_data, parse_event
from pulse.events.dead_letters import DeadLetter
from pulse.events.stream import StreamRecord
from pulse_dev.local.reconcile import (
    RawIdScan,
    archive_coverage,
    compare_counts,
    deletion_summary,
    event_ts,
    expected_event_counts,
    match_dead_letters,
    scanning_logs,
)
from pulse_dev.local.soak import POISON_KINDS, SoakOptions, Traffic, main

CATALOGUE = {"1": 5.0, "2": 1.0, "3": 1.0}


def traffic(**options) -> Traffic:
    return Traffic(SoakOptions(users=20, **options), CATALOGUE, ["space adventure", "Toy Story"])


def dead_letter(record, reason="record data is not valid JSON"):
    stream_record = StreamRecord("shardId-000000000000", "1", record.partition_key, record.data)
    return DeadLetter(reason, stream_record).message(time.time())


def test_valid_events_parse_duplicates_repeat_earlier_bytes_and_every_poison_kind_is_refused():
    soak = traffic(poison_share=0.05, duplicate_share=0.05)
    for _ in range(40):
        soak.next_chunk(25, time.time())
    first_sent = {}
    for index, record in enumerate(soak.sent):
        if record.kind == "event":
            event = parse_event(decode_record_data(record.data))
            assert (event.user_id, event.event_id) == (record.user_id, record.event_id)
            assert event.item_id in CATALOGUE or event.text
            first_sent.setdefault(record.data, index)
        elif record.kind == "duplicate":
            assert first_sent[record.data] < index  # the same bytes, sent earlier
    poison = [soak.poison(time.time()) for _ in range(3 * len(POISON_KINDS))]
    assert {record.detail for record in poison} == set(POISON_KINDS)
    for record in poison:
        if record.detail == "unknown_item":
            event = parse_event(decode_record_data(record.data))  # valid by the contract...
            assert event.item_id not in CATALOGUE and event.text is None  # ...but nothing to embed
        else:
            with pytest.raises(InvalidEventError):
                parse_event(decode_record_data(record.data))


def test_the_reconciliation_catches_losses_double_counts_missing_letters_and_archive_gaps():
    soak = traffic(poison_share=0.1, duplicate_share=0.1)
    sent = soak.next_chunk(300, time.time())
    expected = expected_event_counts(sent)
    assert sum(expected.values()) == sum(record.kind == "event" for record in sent)
    lost_user, doubled_user = sorted(expected)[:2]
    stored = {**expected, lost_user: expected[lost_user] - 1, doubled_user: expected[doubled_user] + 2}
    counts = compare_counts(expected, stored)
    assert (counts["lost_users"], counts["lost_events"]) == (1, 1)
    assert (counts["double_counted_users"], counts["double_counted_events"]) == (1, 2)
    assert compare_counts(expected, dict(expected))["mismatched_users"] == 0

    poison = [record for record in sent if record.kind == "poison"]
    letters = [dead_letter(record) for record in poison]
    assert match_dead_letters(poison, letters)["matched"] == len(poison)
    altered = {**letters[1], "data_base64": "AAAA"}
    report = match_dead_letters(poison, [*letters[2:], altered, {"KinesisBatchInfo": {}}])
    assert report["missing_poison"] == 1 and report["payload_altered"] == 1
    assert report["failure_destination_batches"] == 1

    deleted = sorted(expected)[2:4]
    forgotten = {user: sorted(event_ts(r) for r in sent if r.user_id == user and r.kind == "event")[0]
                 for user in deleted}  # each deleted after their first event: the later ones count
    after = expected_event_counts(sent, forgotten)
    assert [after[user] for user in deleted] == [expected[user] - 1 for user in deleted]
    stuck = deletion_summary(sent, forgotten, deleted, {**expected, **{user: after[user] for user in deleted}}, 9)
    assert (stuck["users"], stuck["mismatched"], stuck["resurrected"], stuck["old_events_redelivered"]) == (2, 0, 0, 9)
    assert stuck["events_before_deletion"] == 2
    back = deletion_summary(sent, forgotten, deleted, expected, 9)  # the old events were applied again
    assert back["resurrected"] == back["mismatched"] == 2
    assert deletion_summary(sent, {}, deleted, dict(after), 0)["without_tombstone"] == 2

    accepted = {(record.user_id, record.event_id) for record in sent if record.kind == "event"}
    assert archive_coverage(sent, accepted)["missing"] == 0
    gap = archive_coverage(sent, accepted - {min(accepted)} | {("someone", "else")})
    assert gap["missing"] == 1 and gap["unexpected"] == 1


@pytest.mark.slow
def test_a_short_soak_on_the_local_stack_loses_nothing_and_counts_nothing_twice(tmp_path):
    out = tmp_path / "soak.json"
    code = main(["--rate", "40", "--seconds", "6", "--users", "100", "--api-rps", "4", "--poison-share", "0.05",
                 "--duplicate-share", "0.05", "--late-share", "0.1", "--no-progress", "--out", str(out)])
    report = json.loads(out.read_text())
    assert code == 0, report["checks"]
    events, counts, letters, archive, api = (report[name] for name in
                                             ("events", "counts", "dead_letters", "archive", "api"))
    assert events["sent"] == 240
    assert events["sent"] == events["accepted"] + events["rejected"] + events["duplicates"]
    assert events["rejected"] > 0 and events["duplicates"] > 0 and events["late"] > 0 and events["text"] > 0
    assert counts["lost_users"] == counts["double_counted_users"] == 0
    ignored = report["deletions"]["events_before_deletion"]  # of the users deleted mid-run
    assert counts["events_stored"] == counts["events_expected"] == events["accepted"] - ignored > 0
    assert letters["messages"] == letters["matched"] == letters["poison_sent"] == events["rejected"]
    assert letters["failure_destination_batches"] == letters["payload_altered"] == letters["without_reason"] == 0
    assert archive["missing"] == 0 and archive["archived_accepted"] == events["accepted"]
    assert archive["duplicate_lines"] >= events["duplicates"]
    assert api["requests"] > 0 and api["server_errors_5xx"] == 0 and api["no_answer"] == 0
    assert api["p50_ms"] is not None and api["p99_ms"] >= api["p50_ms"]
    deletions = report["deletions"]
    assert deletions["users"] == 5 and deletions["old_events_redelivered"] > 0
    assert deletions["resurrected"] == deletions["mismatched"] == deletions["without_tombstone"] == 0
    assert report["checks"]["deletions_stick"]
    assert report["logs"]["lines_scanned"] > 0 and report["logs"]["raw_user_ids"] == 0, report["logs"]["examples"]
    assert report["ingest"]["caught_up"] and report["passed"]


def test_the_log_scan_catches_a_raw_user_id_and_passes_errors_through():
    console = io.StringIO()
    scan = RawIdScan(console)
    undo = scanning_logs(scan)
    try:
        logging.getLogger("pulse.soak-test").warning("applied events of %s", "soak-00042")
        logging.getLogger("pulse.soak-test").info("applied events", extra={"user": "u:0123456789abcdef"})
        print('{"level":"ERROR","message":"boom"}')
    finally:
        undo()
    summary = scan.summary()
    assert summary["lines_scanned"] >= 3 and summary["raw_user_ids"] >= 1  # a record may reach two handlers
    assert all("soak-00042" in line for line in summary["examples"])  # the reference alone is no leak
    assert console.getvalue() == '{"level":"ERROR","message":"boom"}\n'
