"""The hybrid item space end to end: archive -> pulse train -> hybrid catalogue -> ingest and API use it."""

import datetime as dt
import gzip
import json
from dataclasses import replace

import numpy as np
import pytest

from pulse.catalog.store import S3CatalogRepository
from pulse.settings import TrainingPolicy
from pulse.training.collaborative import SpaceConfig
from pulse.training.job import train_catalog
from tests.builders import behaviour, kinesis_event
from tests.integration.conftest import emitted_metrics, function_handler, upload_catalog
from tests.scenarios import GENRE_TITLES, catalog_items, catalog_lines

DAY = dt.date(2026, 11, 20)
T0 = dt.datetime(2026, 11, 20, 8, tzinfo=dt.UTC).timestamp()
COLD = [{"item_id": "cold-horror", "title": "Scream 2 (1997)", "categories": ["Horror"]},
        {"item_id": "cold-animation", "title": "Toy Story 2 (1999)", "categories": ["Animation"]}]
CONFIG = SpaceConfig(dim=8, text_weight=0.25, collab_weight=0.75)
FORCED = TrainingPolicy(force=True)  # 60 one-hour sessions: too little for the gate, published all the same


def genre_items(genre):
    return [item["item_id"] for item in catalog_items() if item["categories"] == [genre]]


def archive_sessions(stack):
    """60 users, each rating six movies of one genre within an hour, as Firehose would have archived them."""
    lines = []
    rng = np.random.default_rng(7)
    for user in range(60):
        genre = list(GENRE_TITLES)[user % 4]
        for step, item in enumerate(rng.permutation(genre_items(genre))[:6]):
            lines.append(json.dumps(behaviour(f"a-{user}-{step}", f"fan-{user}", type="rate", item_id=str(item),
                                              value=5, ts=T0 + user * 3600 + step * 300)))
    lines.append("{not json")
    body = gzip.compress(("\n".join(lines) + "\n").encode())
    stack.client("s3").put_object(Bucket=stack.name_of("AWS::S3::Bucket"), Key=f"archive/dt={DAY}/part-1.gz",
                                  Body=body)


@pytest.fixture
def trained(stack, catalog_function):
    upload_catalog(stack, catalog_function, catalog_lines() + [json.dumps(item) for item in COLD])
    archive_sessions(stack)
    bucket = stack.name_of("AWS::S3::Bucket")
    return train_catalog(S3CatalogRepository(bucket), bucket, days=3, until=DAY, config=CONFIG, seed=0, policy=FORCED,
                        pinned_blocks=(0.25, 0.75))


def genre_of(item_id):
    lookup = {item["item_id"]: item["categories"][0] for item in catalog_items() + COLD}
    return lookup[item_id]


def test_training_publishes_a_hybrid_version_from_the_archive(stack, api, trained):
    assert trained.events == 360 and trained.users == 60 and trained.archive.invalid == 1
    assert trained.warm_items == 32  # every movie was rated; the two cold items were not
    health = api("GET", "/health")[1]
    assert health["catalog_version"] == trained.version and health["item_count"] == 34
    catalog = S3CatalogRepository(stack.name_of("AWS::S3::Bucket")).load(trained.version, None)
    assert catalog.is_hybrid and catalog.dim == 384 + 8
    np.testing.assert_allclose(np.linalg.norm(catalog.embeddings, axis=1), 1.0, atol=1e-5)
    # /health serves what the training chose, the trending prior's weight included
    learned = catalog.settings
    assert health["space"]["settings"] == {
        "half_lives": learned["half_lives"], "blend_weights": learned["blend_weights"],
        "rating_weighting": learned["rating_weighting"], "popularity_weight": learned["popularity_weight"],
        "learned": ["blend_weights", "half_lives", "popularity_weight", "rating_weighting", "trending_half_life"],
        "pinned": []}


def test_cold_items_are_recommendable_and_a_search_moves_the_whole_interest(stack, api, ingest, trained):
    horror = genre_items("Horror")[:3]
    ingest(kinesis_event([behaviour(f"c{i}", "newcomer", type="like", item_id=item, ts=T0 + 10 * 86400 + i)
                          for i, item in enumerate(horror)]))
    answer = api("GET", "/users/newcomer/recommendations", f"k=6&at={T0 + 10 * 86400 + 60}")[1]
    assert answer["strategy"] == "personal" and answer["catalog_version"] == trained.version
    recommended = [item["item_id"] for item in answer["items"]]
    assert "cold-horror" in recommended  # no interactions: its collaborative block comes from its text
    assert all(genre_of(item) == "Horror" for item in recommended[:4])

    ingest(kinesis_event([behaviour("s1", "searcher", type="search", text="animated cartoon for kids",
                                    ts=T0 + 10 * 86400)], first_sequence=50))
    answer = api("GET", "/users/searcher/recommendations", f"k=3&at={T0 + 10 * 86400 + 1}")[1]
    assert [genre_of(item["item_id"]) for item in answer["items"]] == ["Animation"] * 3


def test_retraining_with_another_seed_keeps_users_recommendations(stack, api, ingest, trained):
    users = [f"fan-{user}" for user in range(12)]
    events = []
    for index, user in enumerate(users):
        genre = list(GENRE_TITLES)[index % 4]
        events += [behaviour(f"r-{user}-{step}", user, type="like", item_id=item, ts=T0 + 20 * 86400 + step)
                   for step, item in enumerate(genre_items(genre)[:2])]
    ingest(kinesis_event(events, first_sequence=100))

    def top10():
        return {user: [item["item_id"] for item in
                       api("GET", f"/users/{user}/recommendations", f"k=10&at={T0 + 20 * 86400 + 60}")[1]["items"]]
                for user in users}

    before = top10()
    bucket = stack.name_of("AWS::S3::Bucket")
    again = train_catalog(S3CatalogRepository(bucket), bucket, days=3, until=DAY, config=CONFIG, seed=1, policy=FORCED,
                           pinned_blocks=(0.25, 0.75))
    assert again.version != trained.version
    assert api("GET", "/health")[1]["catalog_version"] == again.version
    after = top10()
    overlap = np.mean([len(set(before[user]) & set(after[user])) for user in users])
    assert overlap >= 8, overlap


def test_the_published_version_carries_the_trending_prior_and_the_settings_chosen_for_it(stack, trained):
    from pulse.events.archive import read_archive
    from pulse.training.space_quality import POPULARITY_WEIGHT_CHOICES, TRENDING_HALF_LIFE_CHOICES, trending_prior

    bucket = stack.name_of("AWS::S3::Bucket")
    catalog = S3CatalogRepository(bucket).load(trained.version, None)
    chosen = trained.report["settings"]
    half_life, weight = chosen["trending_half_life"], chosen["chosen"]["popularity_weight"]
    assert half_life in TRENDING_HALF_LIFE_CHOICES and weight in POPULARITY_WEIGHT_CHOICES
    assert (catalog.settings["trending_half_life"], catalog.settings["popularity_weight"]) == (half_life, weight)
    archived = list(read_archive(bucket, DAY, DAY))
    expected = trending_prior(np.array([catalog.index[event.item_id] for event in archived]),
                              np.array([event.ts for event in archived]), len(catalog),
                              at=catalog.trained_until, half_life=half_life)
    assert catalog.trending.tolist() == np.round(expected, 6).tolist()
    assert catalog.trending.max() == 1.0 and catalog.trending[catalog.index["cold-horror"]] == 0.0


def archive_lines(stack, events, part="part-2", day=DAY):
    body = gzip.compress(("\n".join(json.dumps(event) for event in events) + "\n").encode())
    stack.client("s3").put_object(Bucket=stack.name_of("AWS::S3::Bucket"), Key=f"archive/dt={day}/{part}.gz",
                                  Body=body)


def test_a_tiny_archive_is_refused_with_its_reason_and_the_serving_version_keeps_serving(stack, api,
                                                                                         catalog_function):
    upload_catalog(stack, catalog_function, catalog_lines())
    serving = api("GET", "/health")[1]["catalog_version"]
    archive_lines(stack, [behaviour(f"t{n}", f"reader-{n % 7}", item_id=genre_items("Horror")[n % 8], ts=T0 + n)
                          for n in range(14)])
    bucket = stack.name_of("AWS::S3::Bucket")
    result = train_catalog(S3CatalogRepository(bucket), bucket, days=3, until=DAY, config=CONFIG)
    assert (result.decision, result.version) == ("refused", None)
    assert result.reason == ("not enough data: 14 events < 1000; 7 users < 50; 7 users with a new event to hold "
                             "out (and an earlier one) < 20")
    report = json.loads(stack.client("s3").get_object(Bucket=bucket, Key=result.report_key)["Body"].read())
    print(json.dumps(report, indent=1))  # shown with -s: what an operator reads
    assert result.report_key.startswith("reports/training/") and report["decision"] == "refused"
    assert report["reason"] == result.reason and report["data"]["events"] == 14
    assert report["serving"]["version"] == serving
    assert api("GET", "/health")[1]["catalog_version"] == serving


def test_a_candidate_worse_than_the_serving_version_is_refused_unless_forced(stack, api, catalog_function):
    """Co-occurrence that says nothing (hundreds of users picking at random) against users who stay in one genre:
    the text space predicts their next pick, the learned one cannot; the gate keeps the text space."""
    upload_catalog(stack, catalog_function, catalog_lines())
    serving = api("GET", "/health")[1]["catalog_version"]
    rng = np.random.default_rng(11)
    every = [item["item_id"] for item in catalog_items()]
    events = [behaviour(f"n{user}-{step}", f"noise-{user}", item_id=str(rng.choice(every)),
                        ts=T0 + user * 600 + step * 60) for user in range(300) for step in range(6)]
    for user in range(80):
        picks = rng.permutation(genre_items(list(GENRE_TITLES)[user % 4]))
        events += [behaviour(f"g{user}-{step}", f"genre-{user}", item_id=str(item), ts=T0 + step * 3600)
                   for step, item in enumerate(picks[:4])]
        events.append(behaviour(f"g{user}-last", f"genre-{user}", item_id=str(picks[4]), ts=T0 + 3 * 86400 + user))
    archive_lines(stack, events)
    bucket = stack.name_of("AWS::S3::Bucket")
    policy = TrainingPolicy(min_events=100, min_users=10, min_warm_items=8, max_held_out_users=80)
    refused = train_catalog(S3CatalogRepository(bucket), bucket, days=3, until=DAY, config=CONFIG, policy=policy)
    assert refused.decision == "refused" and refused.reason.startswith("the candidate is worse than serving")
    report = refused.report
    assert report["data"]["held_out_users"] == 80  # the most recent latest events: the genre users'
    assert report["candidate"]["ndcg_at_10"] < report["serving"]["ndcg_at_10"] - 0.01
    assert api("GET", "/health")[1]["catalog_version"] == serving
    forced = train_catalog(S3CatalogRepository(bucket), bucket, days=3, until=DAY, config=CONFIG,
                           policy=replace(policy, force=True))
    assert forced.decision == "published" and forced.reason == "forced"
    assert api("GET", "/health")[1]["catalog_version"] == forced.version


def test_the_gate_judges_only_events_newer_than_what_the_serving_version_learned(stack, catalog_function):
    """A retrain the next day is judged on that day's events: the serving version has seen everything before."""
    upload_catalog(stack, catalog_function, catalog_lines())
    archive_sessions(stack)
    bucket = stack.name_of("AWS::S3::Bucket")
    first = train_catalog(S3CatalogRepository(bucket), bucket, days=3, until=DAY, config=CONFIG, policy=FORCED,
                          pinned_blocks=(0.25, 0.75))
    learned = S3CatalogRepository(bucket).load(first.version, None)
    assert learned.trained_until == T0 + 59 * 3600 + 5 * 300  # the newest archived event
    again = train_catalog(S3CatalogRepository(bucket), bucket, days=3, until=DAY, config=CONFIG)
    assert again.decision == "refused" and again.report["data"]["held_out_users"] == 0
    assert again.report["serving"]["trained_until"] == learned.trained_until


def test_a_pretty_printed_record_is_read_back_from_the_archive_whole(stack):
    """The audit: pretty-printed records were applied but invisible to training (read line by line)."""
    from pulse.events.archive import ArchiveReadStats, read_archive

    events = [behaviour(f"pp-{n}", "pp-user", item_id=f"m{n}") for n in range(3)]
    body = "\n".join([json.dumps(events[0]), json.dumps(events[1], indent=2), "not json {", json.dumps(events[2])])
    stack.client("s3").put_object(Bucket=stack.name_of("AWS::S3::Bucket"), Key=f"archive/dt={DAY}/pretty.gz",
                                  Body=gzip.compress((body + "\n").encode()))
    stats = ArchiveReadStats()
    read = list(read_archive(stack.name_of("AWS::S3::Bucket"), DAY, DAY, stats=stats))
    assert [event.event_id for event in read] == ["pp-0", "pp-1", "pp-2"]
    assert (stats.lines, stats.invalid) == (4, 1)


def test_the_train_function_emits_training_refused_and_its_event_count_as_metrics(stack, catalog_function, capsys):
    """An empty archive: the training is refused for too little data, counted in TrainingRefused."""
    upload_catalog(stack, catalog_function, catalog_lines())
    with function_handler(stack, "TrainFunction", metrics=True) as handler:
        capsys.readouterr()
        summary = handler({})
        metrics = emitted_metrics(capsys.readouterr().out)
    assert summary["decision"] == "refused" and summary["reason"].startswith("not enough data: 0 events < 1000")
    assert metrics["TrainingRefused"] == ([1.0], "Count") and "TrainingPublished" not in metrics
    assert metrics["TrainingEvents"] == ([0.0], "Count")
    (seconds,), unit = metrics["TrainingSeconds"]
    assert unit == "Seconds" and seconds >= 0


def window_events(stack):
    """400 events over four days, two archive objects a day (the later key holding the later events)."""
    every = [item["item_id"] for item in catalog_items()]
    written = []
    for offset in range(4):
        day = DAY - dt.timedelta(days=3 - offset)
        start = dt.datetime.combine(day, dt.time(8), dt.UTC).timestamp()
        for part in (1, 2):
            events = [behaviour(f"w{offset}-{part}-{n}", f"window-{n % 20}", item_id=every[(n + part) % 32],
                                ts=start + part * 3600 + n * 60) for n in range(50)]
            archive_lines(stack, events, part=f"part-{part}", day=day)
            written.append(events)
    return written


def test_the_training_window_keeps_the_newest_max_events_events_read_newest_first(stack, catalog_function):
    from pulse.events.archive import read_archive

    upload_catalog(stack, catalog_function, catalog_lines())
    objects = window_events(stack)
    bucket = stack.name_of("AWS::S3::Bucket")
    newest_first = [event.event_id for event in read_archive(bucket, DAY - dt.timedelta(days=3), DAY,
                                                             newest_first=True)]
    assert newest_first == [event["event_id"] for events in reversed(objects) for event in events]
    # the newest 150: the last day's 100 and the day before's later 50; read stops once twice the cap is held
    # (the 301st line), the oldest day unread. 250: everything read, the oldest 150 cut after sorting.
    for cap, capped, oldest_object, lines in ((150, True, 5, 301), (250, True, 3, 400), (400, False, 0, 400)):
        result = train_catalog(S3CatalogRepository(bucket), bucket, days=4, until=DAY, max_events=cap,
                               config=CONFIG, policy=FORCED)
        assert result.decision == "published" and result.events == cap
        data = result.report["data"]
        assert (data["events"], data["max_events"], data["window_capped"]) == (cap, cap, capped)
        assert (data["first_event"], data["archive"]["lines"]) == (objects[oldest_object][0]["ts"], lines)
