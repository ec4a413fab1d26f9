"""`pulse local up` (contract 3) and the MovieLens evaluation, end to end on the embedded stack."""

import json
import time
import urllib.error
import urllib.request

import boto3
import pytest

from pulse_dev.local.client import Progress
from pulse_dev.local.evaluate import EvalOptions, run_evaluation
from pulse_dev.local.template import PLAYED_LOCALLY, PROVISIONED, load_template
from tests.integration.conftest import http_get as get
from tests.integration.conftest import running_runtime, wait_for
from tests.paths import REPO_ROOT
from tests.scenarios import catalog_lines


def post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_every_resource_type_of_the_template_is_created_or_played_locally():
    template = load_template(REPO_ROOT / "template.yaml")
    unknown = {spec["Type"] for spec in template["Resources"].values()} - PROVISIONED - PLAYED_LOCALLY
    assert unknown == set(), f"the local stack does not know how to run {unknown}"


@pytest.fixture(scope="module")
def started_runtime():
    with running_runtime() as running:
        yield running


@pytest.fixture
def runtime(started_runtime):
    with started_runtime.stack.activated():
        yield started_runtime


@pytest.mark.slow
def test_a_plain_boto3_client_sees_its_events_in_the_api(runtime, tmp_path):
    description = runtime.describe()
    assert set(description) == {"aws_endpoint", "api_url", "region", "stream", "table", "bucket", "dlq", "api_auth",
                                "jwt_issuer", "jwt_issuer_key", "jwt_admin_scope"}
    assert description["api_auth"] == "none" and description["jwt_issuer"] is None  # the local default: open
    runtime.write_description(tmp_path / "local.json")
    local = json.loads((tmp_path / "local.json").read_text())

    s3 = boto3.client("s3", endpoint_url=local["aws_endpoint"], region_name=local["region"])
    s3.put_object(Bucket=local["bucket"], Key="incoming/movies.jsonl", Body="\n".join(catalog_lines()).encode())
    version = wait_for(lambda: get(local["api_url"] + "/health")[1]["catalog_version"])

    kinesis = boto3.client("kinesis", endpoint_url=local["aws_endpoint"], region_name=local["region"])
    now = time.time()
    event = {"event_id": "lr-1", "user_id": "visitor", "type": "like", "item_id": "m1", "ts": now}
    kinesis.put_record(StreamName=local["stream"], PartitionKey="visitor", Data=json.dumps(event).encode())
    runtime.wait_until_ingested()
    assert get(local["api_url"] + "/users/visitor/profile")[1]["event_count"] == 1
    status, answer = get(local["api_url"] + "/users/visitor/recommendations?k=3")
    assert status == 200 and answer["strategy"] == "personal" and answer["catalog_version"] == version

    status, accepted = post(local["api_url"] + "/events", {"events": [{**event, "event_id": "lr-2"}]})
    assert (status, accepted) == (202, {"accepted": 1, "rejected": []})
    runtime.wait_until_ingested()
    assert get(local["api_url"] + "/users/visitor/profile")[1]["event_count"] == 2
    assert get(local["api_url"] + "/nowhere") == (404, {"error": "no route GET /nowhere", "detail": None})


@pytest.mark.slow
def test_the_evaluation_runs_end_to_end_on_a_few_users(tmp_path):
    # a 30-day window (TrainingDays; the template's default is 365): the trainings see part of the stream only
    options = EvalOptions(max_users=25, out_dir=tmp_path, shift_users_per_pair=1, shift_steps=3, retrain_days=30,
                          overrides={"TrainingDays": "30"})
    report = run_evaluation(options, Progress(enabled=False))
    methods = {result["name"]: result for result in report["results"]}
    assert set(methods) == {"hybrid (API)", "text-only", "collab-only", "popularity"}
    assert all(result["users"] == 25 for result in methods.values())
    trainings = report["trainings"]
    assert len(trainings) >= 3  # the 25 users' ratings span seven months
    # each training saw only its window (30 days) before its moment, never the whole stream; 25 users
    # are too few for the gate: every training refused, with its reason, and the text catalogue kept serving
    assert all(0 < t["events"] < report["ratings"] // 2 for t in trainings)
    assert {t["decision"] for t in trainings} == {"refused"}
    assert all(t["reason"].startswith("not enough data") and "users < 50" in t["reason"] for t in trainings)
    for result in methods.values():
        assert 0 <= result["hit"] <= 1 and 0 <= result["ndcg"] <= result["hit"] and result["coverage"] > 0
    assert len(report["interest_shift"]["mean_share_by_step"]) == 3
    assert report["freshness_seconds"]["samples"] == 3 * len(report["interest_shift"]["pairs"])
    assert (tmp_path / "eval.png").read_bytes().startswith(b"\x89PNG")
    assert "Hit@10" in report["table"]


@pytest.mark.slow
def test_pulse_local_up_writes_its_description_serves_and_stops_on_ctrl_c(tmp_path):
    import signal
    import subprocess
    import sys

    # Port 0: the processes that listen pick the ports and the description says which (nothing to race for).
    process = subprocess.Popen([sys.executable, "-m", "pulse_dev.cli", "local", "up", "--no-catalog",
                                "--aws-port", "0", "--api-port", "0", "--project", str(REPO_ROOT)],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    description = tmp_path / ".pulse" / "local.json"
    try:
        wait_for(description.is_file)
        local = json.loads(description.read_text())
        assert not local["aws_endpoint"].endswith(":0") and not local["api_url"].endswith(":0")
        kinesis = boto3.client("kinesis", endpoint_url=local["aws_endpoint"], region_name=local["region"])
        assert local["stream"] in kinesis.list_streams()["StreamNames"]
        assert get(local["api_url"] + "/health")[1]["status"] == "degraded"  # no catalogue published
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=90)  # a loaded 2-core runner stops slowly
    assert process.returncode == 0, output
    assert "local stack stopped" in output and not description.exists()


@pytest.mark.slow
def test_every_record_of_the_stream_is_archived_and_read_back_once(runtime):
    import datetime as dt

    from pulse.events.archive import ArchiveReadStats, read_archive

    events = [{"event_id": f"ar-{i}", "user_id": f"archived-{i % 5}", "type": "view", "item_id": "m1",
               "ts": 1_700_000_000 + i} for i in range(300)]
    put_at = dt.datetime.now(dt.UTC)
    runtime.put_events(events + events[:10])  # producer retries are archived too, and read back once
    kinesis = runtime.stack.client("kinesis")
    kinesis.put_record(StreamName=runtime.stack.name_of("AWS::Kinesis::Stream"), PartitionKey="x", Data=b"{oops")
    runtime.archiver.drain()
    # Partitions are arrival days: read every day from before the first put to after the drain (midnight may
    # fall in between).
    first_day, last_day = put_at.date(), dt.datetime.now(dt.UTC).date()
    stats = ArchiveReadStats()
    archived = [event for event in read_archive(runtime.stack.name_of("AWS::S3::Bucket"), first_day, last_day,
                                                stats=stats) if event.event_id.startswith("ar-")]
    assert sorted(event.event_id for event in archived) == sorted(event["event_id"] for event in events)
    assert stats.duplicates >= 10 and stats.invalid >= 1
