"""Real-shaped sample events, one file per scenario in events/ (run `python -m tests.scenarios` to rewrite).

No catalogue is published on the write path's own, so item events carry their item's title as text.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tests.builders import behaviour, http_event, kinesis_event, s3_put_event
from tests.paths import REPO_ROOT

EVENTS_DIR = REPO_ROOT / "events"
DAY = 86400
T0 = 881_250_949  # 1997-12-04, MovieLens time

TITLES = [
    "Toy Story (1995) Animation Children's Comedy",
    "Star Wars (1977) Action Adventure Romance Sci-Fi War",
    "Fargo (1996) Crime Drama Thriller",
    "Contact (1997) Drama Sci-Fi",
    "Scream (1996) Horror Thriller",
    "Titanic (1997) Action Drama Romance",
    "Aladdin (1992) Animation Children's Comedy Musical",
    "Alien (1979) Action Horror Sci-Fi Thriller",
]


def valid_batch() -> list[dict[str, Any]]:
    return [
        behaviour("vb-1", "196", type="view", ts=T0, item_id="1", text=TITLES[0]),
        behaviour("vb-2", "196", type="rate", ts=T0 + 60, item_id="1", text=TITLES[0], value=5),
        behaviour("vb-3", "196", type="search", ts=T0 + 120, text="pixar animated family comedy"),
        behaviour("vb-4", "186", type="click", ts="1997-12-04T16:00:00Z", item_id="50", text=TITLES[1]),
        behaviour("vb-5", "186", type="purchase", ts=T0 + 600, item_id="258", text=TITLES[3]),
        behaviour("vb-6", "22", type="like", ts=T0 + 30, item_id="100", text=TITLES[2]),
        behaviour("vb-7", "22", type="dislike", ts=T0 + 90, item_id="288", text=TITLES[4]),
        behaviour("vb-8", "22", type="view", ts=T0 + 95, item_id="313", text=TITLES[5], value=12),
    ]


def poison_batch() -> list[bytes | str | dict[str, Any]]:
    return [
        behaviour("pb-1", "305", type="view", ts=T0, item_id="95", text=TITLES[6]),
        "this is not json",
        b'{"event_id": "pb-3", "user_id": "305", "type": "view", "ts": 1, "text": "caf\xe9"}',
        behaviour("pb-4", "305", type="teleport", ts=T0, text=TITLES[7]),
        {"event_id": "pb-5", "user_id": "305", "type": "view", "item_id": "95", "text": TITLES[6]},
        behaviour("pb-6", "305", type="view", ts=T0 * 1000, text=TITLES[7]),
        behaviour("pb-7", "305", type="click", ts=T0, item_id="999999"),
        behaviour("pb-8", "305", type="rate", ts=T0, item_id="96", text=TITLES[7]),
        behaviour("pb-9", "305", type="view", ts=T0 + 10, item_id="96", text=TITLES[7]),
        ["an", "array"],
    ]


POISON_REASONS = {
    2: "record data is not valid JSON: Expecting value at line 1 column 1",
    3: "record data is not valid UTF-8",
    4: "unknown type 'teleport'",
    5: "ts is required",
    6: "milliseconds? divide by 1000",
    7: "item_id '999999' is not in the catalogue and the event has no text to embed",
    8: "type 'rate' needs a numeric value",
    10: "an event must be a JSON object, got an array",
}


def duplicate_event_ids() -> list[dict[str, Any]]:
    """A producer retried: the same event_id arrives again with new sequence numbers."""
    first = behaviour("dup-1", "42", type="add_to_cart", ts=T0, item_id="181", text=TITLES[1])
    second = behaviour("dup-2", "42", type="view", ts=T0 + 5, item_id="7", text=TITLES[0])
    return [first, second, dict(first), behaviour("dup-3", "42", type="view", ts=T0 + 9, text=TITLES[3]),
            dict(second)]


def late_events() -> list[dict[str, Any]]:
    """One user's events arriving newest first (phone offline, clock skew)."""
    return [behaviour(f"late-{index}", "77", type="view", ts=T0 + (5 - index) * DAY, item_id=str(index),
                      text=TITLES[index]) for index in range(6)]


def many_users() -> list[dict[str, Any]]:
    """50 users, 2 events each, interleaved as a real stream is."""
    events = []
    for round_ in range(2):
        for user in range(50):
            title = TITLES[(user + round_) % len(TITLES)]
            events.append(behaviour(f"mu-{user}-{round_}", f"user-{user}", type=("view", "click")[round_],
                                    ts=T0 + user * 10 + round_ * 300, item_id=str(100 + user + round_),
                                    text=title))
    return events


SCENARIOS = {
    "ingest-valid-batch": (valid_batch, 1),
    "ingest-poison-batch": (poison_batch, 101),
    "ingest-duplicate-event-ids": (duplicate_event_ids, 201),
    "ingest-late-events": (late_events, 301),
    "ingest-many-users": (many_users, 401),
}


FIXED = {"request_id": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "now": 1_763_900_000.0}
# A backend's SigV4-signed request, as the default deployment (IAM) hands it over.
SIGNED_BY_BACKEND = {"iam": {"accessKey": "AKIAIOSFODNN7EXAMPLE", "accountId": "123456789012",
                             "callerId": "AROAEXAMPLE:app", "principalOrgId": None,
                             "userArn": "arn:aws:sts::123456789012:assumed-role/app-backend/app",
                             "userId": "AROAEXAMPLE:app"}}
OTHER_EVENTS = {
    "api-recommendations": lambda: http_event("GET", "/users/196/recommendations", "k=5&exclude_seen=true",
                                              authorizer=SIGNED_BY_BACKEND, **FIXED),
    "api-health": lambda: http_event("GET", "/health", **FIXED),
    "api-post-events": lambda: http_event("POST", "/events", body={"events": valid_batch()[:3]},
                                          authorizer=SIGNED_BY_BACKEND, **FIXED),
    "catalog-s3-put": lambda: s3_put_event("pulse-catalog-bucket", "incoming/catalog.jsonl"),
    "train-schedule": lambda: {
        "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-11-23T03:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/pulse-TrainFunctionDaily"], "detail": {}},
}


def lambda_event(name: str) -> dict[str, Any]:
    if name in OTHER_EVENTS:
        return OTHER_EVENTS[name]()
    build, first_sequence = SCENARIOS[name]
    return kinesis_event(build(), first_sequence=first_sequence)


def render(name: str) -> str:
    return json.dumps(lambda_event(name), indent=2) + "\n"


def main() -> None:
    EVENTS_DIR.mkdir(exist_ok=True)
    for name in [*SCENARIOS, *OTHER_EVENTS]:
        (EVENTS_DIR / f"{name}.json").write_text(render(name))
        print(f"wrote events/{name}.json", file=sys.stderr)


if __name__ == "__main__":
    main()


GENRE_TITLES = {
    "Sci-Fi": ["Star Wars (1977)", "Contact (1997)", "Alien (1979)", "Blade Runner (1982)", "Twelve Monkeys (1995)",
               "The Terminator (1984)", "Independence Day (1996)", "Stargate (1994)"],
    "Horror": ["Scream (1996)", "The Shining (1980)", "Psycho (1960)", "Nosferatu (1922)", "Candyman (1992)",
               "Night of the Living Dead (1968)", "The Exorcist (1973)", "Halloween (1978)"],
    "Animation": ["Toy Story (1995)", "Aladdin (1992)", "The Lion King (1994)", "Beauty and the Beast (1991)",
                  "Pinocchio (1940)", "Cinderella (1950)", "Dumbo (1941)", "Fantasia (1940)"],
    "Romance": ["Titanic (1997)", "Sense and Sensibility (1995)", "Sleepless in Seattle (1993)", "Casablanca (1942)",
                "Emma (1996)", "The English Patient (1996)", "Roman Holiday (1953)", "Notting Hill (1999)"],
}


def catalog_items() -> list[dict[str, Any]]:
    """32 movies in four genres; one unavailable; popularity falls with the position."""
    items = []
    for genre, titles in GENRE_TITLES.items():
        for title in titles:
            items.append({"item_id": f"m{len(items) + 1}", "title": title, "categories": [genre],
                          "popularity": 100 - len(items), "available": title != "Halloween (1978)"})
    return items


def catalog_lines() -> list[str]:
    return [json.dumps(item) for item in catalog_items()]


def item_id_of(title: str) -> str:
    return next(item["item_id"] for item in catalog_items() if item["title"] == title)
