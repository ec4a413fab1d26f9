"""MovieLens 100K loading against the real files shipped in RecBole."""

from collections import defaultdict

import pytest

from pulse.events.behaviour import parse_event
from pulse_dev.movielens import Movie, catalog_record, leave_last_out, load_movies, load_ratings, rating_event


@pytest.fixture(scope="module")
def movies():
    return load_movies()


@pytest.fixture(scope="module")
def ratings():
    return load_ratings()


def test_sizes(movies, ratings):
    assert len(movies) == 1682
    assert len({movie.item_id for movie in movies}) == 1682
    assert len(ratings) == 100_000
    assert len({rating.user_id for rating in ratings}) == 943
    assert {rating.item_id for rating in ratings} <= {movie.item_id for movie in movies}


def test_ratings_are_in_time_order_with_deterministic_ties(ratings):
    keys = [(rating.ts, rating.user_id, rating.item_id) for rating in ratings]
    assert keys == sorted(keys)


def test_toy_story_catalog_record(movies):
    toy_story = next(movie for movie in movies if movie.item_id == "1")
    assert catalog_record(toy_story, popularity=452) == {
        "item_id": "1", "title": "Toy Story (1995)", "categories": ["Animation", "Children's", "Comedy"],
        "popularity": 452, "year": "1995"}


def test_odd_rows_are_cleaned(movies):
    by_id = {movie.item_id: movie for movie in movies}
    # Year 'V' in the file; the year is recovered from the title.
    assert by_id["1412"].display_title == "Land Before Time III: The Time of the Great Giving (1995)"
    assert by_id["267"].year is None and by_id["267"].genres == ()
    assert by_id["1373"].genres == ()  # genre 'unknown'
    assert {genre for movie in movies for genre in movie.genres} >= {"Sci-Fi", "Film-Noir", "Children's"}


def test_record_without_year_has_plain_title():
    record = catalog_record(Movie(item_id="9", title="Untitled", year=None, genres=()))
    assert record == {"item_id": "9", "title": "Untitled", "categories": [], "popularity": 0}


def test_leave_last_out(ratings):
    history, held_out = leave_last_out(ratings)
    assert len(held_out) == 943 and len(history) == 99_057
    assert [(r.ts, r.user_id, r.item_id) for r in history] == sorted((r.ts, r.user_id, r.item_id) for r in history)
    latest = defaultdict(lambda: (0.0, ""))
    for rating in history:
        latest[rating.user_id] = max(latest[rating.user_id], (rating.ts, rating.item_id))
    for user_id, last in held_out.items():
        assert last.user_id == user_id
        assert (last.ts, last.item_id) > latest[user_id]


def test_rating_events_pass_the_event_contract(ratings):
    for rating in ratings[::997]:
        event = parse_event(rating_event(rating))
        assert (event.user_id, event.item_id, event.type) == (rating.user_id, rating.item_id, "rate")
        assert (event.value, event.ts) == (rating.rating, rating.ts)
        assert event.event_id == f"ml-{rating.user_id}-{rating.item_id}-{int(rating.ts)}"


def test_event_ids_are_unique(ratings):
    assert len({rating_event(rating)["event_id"] for rating in ratings}) == len(ratings)


def test_loads_latin1_and_missing_fields(tmp_path):
    path = tmp_path / "tiny.item"
    path.write_bytes("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                     "1\tMis\xe9rables, Les\t1995\tDrama Musical\n2\tNo Year\t\t\n".encode("latin-1"))
    assert load_movies(path) == [Movie("1", "Misérables, Les", "1995", ("Drama", "Musical")),
                                 Movie("2", "No Year", None, ())]
