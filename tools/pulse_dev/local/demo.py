"""`pulse demo` and `pulse eval` on the terminal: progress bars, a results table, a picture and a JSON report."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from pulse_dev.local.client import Progress, publish
from pulse_dev.local.evaluate import EvalOptions, run_evaluation
from pulse_dev.local.runtime import LocalRuntime
from pulse_dev.movielens import Movie, Rating, load_movies, load_ratings

DEMO_USERS = ("196", "22", "305")


def publish_movielens(runtime: LocalRuntime) -> str:
    movies = {movie.item_id: movie for movie in load_movies()}
    version: str = publish(runtime, movies, load_ratings(), Progress())["version"]
    return version


def run(command: str, args: argparse.Namespace) -> int:
    flags = ("half_lives", "blend_weights", "rating_weighting", "type_weights", "text_weight", "collab_weight",
             "popularity_weight", "retrain_days", "batch_size", "protocol")
    options = EvalOptions(out_dir=args.out_dir, overrides=dict(pair.split("=", 1) for pair in args.parameter),
                          **{name: getattr(args, name) for name in flags if getattr(args, name) is not None})
    started = time.perf_counter()
    report = run_evaluation(options, after_replay=users_now if command == "demo" else None)
    report["seconds"] = round(time.perf_counter() - started, 1)
    if command == "demo":
        print_users(report["users_now"])
    print_report(report)
    out = options.out_dir / f"{command}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwritten: {out}, {report['picture']}")
    return 0


def users_now(runtime: LocalRuntime, movies: dict[str, Movie], ratings: list[Rating]) -> list[dict[str, Any]]:
    """After the whole replay: what a few users did last, and what Pulse recommends them now."""
    from pulse_dev.local.client import Api

    api = Api(runtime.api_url)
    people = []
    for user in DEMO_USERS:
        theirs = [rating for rating in ratings if rating.user_id == user]
        now = theirs[-1].ts + 60
        answer = api.get(f"/users/{user}/recommendations", k=5, exclude_seen="true", at=now)
        people.append({
            "user_id": user, "ratings": len(theirs),
            "did_last": [f"{movies[r.item_id].display_title} ({'*' * int(r.rating)})" for r in theirs[-4:]],
            "strategy": answer["strategy"],
            "recommended": [f"{movies[item['item_id']].display_title} [{', '.join(movies[item['item_id']].genres)}]"
                            for item in answer["items"]],
        })
    return people


def print_users(people: list[dict[str, Any]]) -> None:
    for person in people:
        print(f"\nuser {person['user_id']} ({person['ratings']} ratings) did last:")
        for line in person["did_last"]:
            print(f"    {line}")
        print(f"  Pulse recommends now ({person['strategy']}):")
        for line in person["recommended"]:
            print(f"    {line}")


def print_report(report: dict[str, Any]) -> None:
    replay, catalog = report["replay"], report["catalog"]
    print(f"\nMovieLens-100K: {report['ratings']} ratings, {report['users']} users, {report['items']} movies; "
          f"catalogue {catalog['items']} items at {catalog['items_per_second']} items/s; replay "
          f"{replay['events']} events at {replay['events_per_second']} events/s ({replay['invocations']} invocations)")
    trainings = report["trainings"]
    if trainings:
        published = [t for t in trainings if t["decision"] == "published"]
        refused = [t for t in trainings if t["decision"] == "refused"]
        print(f"\n{len(trainings)} scheduled trainings during the replay, each on the archived events of its window "
              f"before that moment only ({min(t['seconds'] for t in trainings)}-"
              f"{max(t['seconds'] for t in trainings)} s each): {len(published)} published, {len(refused)} refused")
        reasons: dict[str, int] = {}
        for training in refused:
            reason = training["reason"].split(":")[0]
            reasons[reason] = reasons.get(reason, 0) + 1
        for reason, count in sorted(reasons.items(), key=lambda pair: -pair[1]):
            print(f"  refused {count}x: {reason}")
        if published:
            last = published[-1]
            print(f"  last published: {last['version']} on {last['events']} events, settings {last['settings']}, "
                  f"blocks {last['blocks']}; held-out NDCG@10 {last['candidate_ndcg']} vs serving "
                  f"{last['serving_ndcg']}")
    print("\nLeave-last-out, full ranking, exclude seen, asked as of each user's last rating "
          f"(strategies: {report['strategies']}):\n")
    print(report["table"])
    shift = report["interest_shift"]
    print(f"\nInterest shift ({', '.join(shift['pairs'])}; {shift['users']} users): share of the top 10 in the new "
          f"genre after 1..{len(shift['mean_share_by_step'])} events: {shift['mean_share_by_step']}; "
          f"median events until most of the top 10 follows: {shift['median_events_until_majority']}")
    fresh = report["freshness_seconds"]
    print(f"End-to-end freshness (PutRecords -> API reflects it): p50 {fresh['p50']} s, p95 {fresh['p95']} s "
          f"over {fresh['samples']} events")
    print(f"Total {report.get('seconds', '?')} s")
