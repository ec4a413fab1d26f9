"""The life of a deployment on the local stack, through the documented interfaces only (the stream, S3 incoming/,
`pulse train`, the HTTP API): catalogue uploads and trainings never strand a user's interest."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from pulse_dev.local.runtime import LocalRuntime
from pulse_dev.movielens import catalog_record, load_movies
from tests.integration.conftest import http_get, wait_for

pytestmark = pytest.mark.slow

GENRES = ("Horror", "Children's", "Western", "Sci-Fi", "Romance", "Documentary")
USERS = 24
VIEWS = 8


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deployment")
    runtime = LocalRuntime(aws_port=0, api_port=0, train_every_seconds=0).start()
    runtime.write_description(folder / ".pulse" / "local.json")
    yield runtime, folder
    runtime.stop()


def upload(runtime, movies, key):
    """A catalogue file under incoming/, as a deployment's daily upload would put it; -> the version it became."""
    before = http_get(runtime.api_url + "/health")[1]["catalog_version"]
    body = "\n".join(json.dumps(catalog_record(movie, 0)) for movie in movies).encode()
    runtime.stack.client("s3").put_object(Bucket=runtime.stack.name_of("AWS::S3::Bucket"), Key=key, Body=body)
    return wait_for(lambda: (lambda now: now if now != before else None)(
        http_get(runtime.api_url + "/health")[1]["catalog_version"]))


def pulse_train(runtime, folder, *flags):
    """`pulse train` as a developer runs it beside the local stack (it finds it through .pulse/local.json)."""
    runtime.archiver.drain()  # Firehose's buffer, flushed
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PULSE_", "AWS_"))}
    done = subprocess.run([sys.executable, "-m", "pulse_dev.cli", "train", *flags], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def serving(runtime, version):
    wait_for(lambda: http_get(runtime.api_url + "/health")[1]["catalog_version"] == version)
    return http_get(runtime.api_url + "/health")[1]


def top10(runtime, users, at):
    answers = {user: http_get(f"{runtime.api_url}/users/{user}/recommendations?k=10&at={at}")[1] for user in users}
    return {user: answer for user, answer in answers.items()}


def overlap(before, after):
    return float(np.mean([len({i["item_id"] for i in before[u]["items"]} & {i["item_id"] for i in after[u]["items"]})
                          for u in before]))


def assert_all_personal(runtime, answers, at):
    assert {answer["strategy"] for answer in answers.values()} == {"personal"}, \
        [user for user, answer in answers.items() if answer["strategy"] != "personal"]
    for user in answers:  # the profile agrees: interest, and catalogue items close to it
        profile = http_get(f"{runtime.api_url}/users/{user}/profile?at={at}")[1]
        assert profile["strength"] > 0
        assert all(scale["closest_items"] for scale in profile["scales"].values() if scale["strength"] > 0)


def test_interest_survives_uploads_and_trainings(deployment):
    runtime, folder = deployment
    movies = load_movies()
    first = upload(runtime, movies[:-2], "incoming/day-1.jsonl")
    assert serving(runtime, first)["space"]["kind"] == "text"

    now = time.time()
    users = [f"life-{n}" for n in range(USERS)]
    events = []
    for n, user in enumerate(users):
        genre = GENRES[n % len(GENRES)]
        picks = [movie for movie in movies[:-2] if genre in movie.genres][n // len(GENRES) * 3:][:VIEWS]
        events += [{"event_id": f"{user}-{step}", "user_id": user, "type": "view", "item_id": movie.item_id,
                    "ts": now - 600 + step * 30} for step, movie in enumerate(picks)]
    runtime.put_events(events)
    runtime.wait_until_ingested()
    at = now + 60
    start = top10(runtime, users, at)
    assert_all_personal(runtime, start, at)

    # 1. the daily upload, one item more: the same space, the same recommendations
    second = upload(runtime, movies[:-1], "incoming/day-2.jsonl")
    assert serving(runtime, second)["item_count"] == len(movies) - 1
    uploaded = top10(runtime, users, at)
    assert_all_personal(runtime, uploaded, at)
    assert overlap(start, uploaded) >= 9
    print(f"\nlifecycle: upload +1 item: {USERS}/{USERS} personal, top-10 overlap {overlap(start, uploaded):.2f}/10")

    # 2. the first training: a learned (hybrid) space; every user follows at once
    code, output = pulse_train(runtime, folder)
    assert code == 3 and "training refused" in output and "not enough data" in output  # 192 events: too few
    assert http_get(runtime.api_url + "/health")[1]["catalog_version"] == second
    code, output = pulse_train(runtime, folder, "--force")
    assert code == 0, output
    trained = output.split("catalogue ", 1)[1].split()[0]
    health = serving(runtime, trained)
    assert health["space"]["kind"] == "hybrid" and health["space"]["dim"] > 384
    learned = top10(runtime, users, at)
    assert_all_personal(runtime, learned, at)
    print(f"lifecycle: first training (dim {health['space']['dim']}): {USERS}/{USERS} personal, top-10 overlap "
          f"{overlap(uploaded, learned):.2f}/10")

    # 3. the next upload joins the learned space: kind, dimensionality and basis kept, users unaffected
    third = upload(runtime, movies, "incoming/day-3.jsonl")
    after_upload = serving(runtime, third)
    assert after_upload["item_count"] == len(movies)
    assert {key: after_upload["space"][key] for key in ("kind", "dim", "basis")} == \
        {key: health["space"][key] for key in ("kind", "dim", "basis")}
    joined = top10(runtime, users, at)
    assert_all_personal(runtime, joined, at)
    assert overlap(learned, joined) >= 9
    print(f"lifecycle: upload into the learned space: {USERS}/{USERS} personal, top-10 overlap "
          f"{overlap(learned, joined):.2f}/10")

    # 4. a retrain with another seed: a new basis, recommendations kept
    code, output = pulse_train(runtime, folder, "--force", "--seed", "1")
    assert code == 0, output
    retrained = output.split("catalogue ", 1)[1].split()[0]
    assert serving(runtime, retrained)["space"]["basis"] != health["space"]["basis"]
    again = top10(runtime, users, at)
    assert_all_personal(runtime, again, at)
    assert overlap(joined, again) >= 8
    print(f"lifecycle: retrain with another seed: {USERS}/{USERS} personal, top-10 overlap "
          f"{overlap(joined, again):.2f}/10")


def test_the_local_stack_plays_the_training_schedule():
    from pulse_dev.local.runtime import schedule_seconds
    from tests.scenarios import catalog_lines

    assert schedule_seconds({"Daily": {"Type": "Schedule", "Schedule": "rate(1 day)"}}) == 86400
    assert schedule_seconds({"Hourly": {"Type": "Schedule", "Schedule": "rate(2 hours)"}}) == 7200
    runtime = LocalRuntime(aws_port=0, api_port=0, train_every_seconds=1).start()
    try:
        s3, bucket = runtime.stack.client("s3"), runtime.stack.name_of("AWS::S3::Bucket")
        s3.put_object(Bucket=bucket, Key="incoming/catalog.jsonl", Body="\n".join(catalog_lines()).encode())
        wait_for(lambda: http_get(runtime.api_url + "/health")[1]["catalog_version"])
        reports = wait_for(lambda: s3.list_objects_v2(Bucket=bucket, Prefix="reports/training/").get("Contents"))
        report = json.loads(s3.get_object(Bucket=bucket, Key=reports[0]["Key"])["Body"].read())
        assert report["decision"] == "refused" and report["reason"].startswith("not enough data: 0 events")
    finally:
        runtime.stop()
