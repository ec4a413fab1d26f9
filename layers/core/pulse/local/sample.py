"""A small synthetic behaviour stream for the write-path demo: users with tastes, a few bad records."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

TITLES = {
    "animation": ["Toy Story (1995)", "Aladdin (1992)", "The Lion King (1994)", "Beauty and the Beast (1991)",
                  "Wallace & Gromit: A Close Shave (1995)", "James and the Giant Peach (1996)"],
    "sci-fi": ["Star Wars (1977)", "Contact (1997)", "Alien (1979)", "Blade Runner (1982)",
               "Twelve Monkeys (1995)", "The Terminator (1984)", "Independence Day (1996)"],
    "crime": ["Fargo (1996)", "Pulp Fiction (1994)", "The Usual Suspects (1995)", "The Godfather (1972)",
              "Heat (1995)", "Reservoir Dogs (1992)"],
    "horror": ["Scream (1996)", "The Shining (1980)", "Psycho (1960)", "Nosferatu (1922)",
               "Night of the Living Dead (1968)", "Candyman (1992)"],
    "romance": ["Titanic (1997)", "Sense and Sensibility (1995)", "Sleepless in Seattle (1993)",
                "The English Patient (1996)", "Casablanca (1942)", "Emma (1996)"],
}
SEARCHES = {
    "animation": ["animated movies for kids", "disney classics"],
    "sci-fi": ["space opera", "alien invasion movies"],
    "crime": ["mafia films", "heist thriller"],
    "horror": ["slasher movies", "scary vampire films"],
    "romance": ["period romance drama", "romantic comedy"],
}


def title_text(genre: str, title: str) -> str:
    return f"{title} {genre.title()}"


def behaviour_stream(users: int = 40, events_per_user: int = 15, start: float = 881_250_949, seed: int = 7,
                     poison_share: float = 0.01, duplicate_share: float = 0.02) -> list[tuple[str, bytes]]:
    """(partition key, record data) in time order; each user mostly follows one or two genres."""
    rng = random.Random(seed)
    genres = list(TITLES)
    events: list[dict[str, Any]] = []
    for user in range(users):
        tastes = rng.sample(genres, 2)
        clock = start + rng.uniform(0, 86400)
        for _ in range(events_per_user):
            clock += rng.expovariate(1 / 3600)
            genre = tastes[0] if rng.random() < 0.75 else tastes[1]
            event: dict[str, Any] = {"event_id": str(uuid.UUID(int=rng.getrandbits(128))), "user_id": f"u{user:03d}",
                                     "ts": round(clock, 3)}
            if rng.random() < 0.15:
                event.update(type="search", text=rng.choice(SEARCHES[genre]))
            else:
                title = rng.choice(TITLES[genre])
                kind = rng.choice(["view", "click", "rate", "like"])
                event.update(type=kind, item_id=title, text=title_text(genre, title))
                if kind == "rate":
                    event["value"] = rng.choice([3, 4, 4, 5, 5])
            events.append(event)
    events.sort(key=lambda event: event["ts"])
    records = [(event["user_id"], json.dumps(event).encode()) for event in events]
    for index in rng.sample(range(len(records)), int(len(records) * duplicate_share)):
        records.insert(index + rng.randint(1, 5), records[index])  # a producer retry shortly after
    bad = [b"{not json", json.dumps({"event_id": "x", "user_id": "u000", "type": "teleport", "ts": start,
                                     "text": "?"}).encode(),
           json.dumps({"event_id": "y", "user_id": "u001", "type": "view", "text": "no time"}).encode()]
    for index in range(max(1, int(len(records) * poison_share))):
        records.insert(rng.randrange(len(records)), ("poison", bad[index % len(bad)]))
    return records


def candidate_texts() -> list[tuple[str, str]]:
    return [(title, title_text(genre, title)) for genre, titles in TITLES.items() for title in titles]
