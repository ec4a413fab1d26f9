"""The offline protocols on a slice of MovieLens-100K: the honest one never learns from the future."""

import math

import numpy as np

from pulse.training.collaborative import SpaceConfig
from pulse_dev.movielens import Movie, Rating, load_movies, load_ratings
from pulse_dev.offline_eval import DAY, DEFAULT_USER_MODEL, evaluate_offline, honest_protocol, load_split


def test_the_honest_protocol_trains_only_on_the_past_and_scores_every_test_user():
    movies = load_movies()
    ratings = [r for r in load_ratings() if int(r.user_id) <= 60]
    split = load_split(movies, ratings)
    rng = np.random.default_rng(0)
    text = rng.normal(size=(len(movies), 16)).astype(np.float32)
    settings = {"hybrid": ((0.25, 0.75), DEFAULT_USER_MODEL), "text-only": ((1.0, 0.0), DEFAULT_USER_MODEL)}
    results, trainings = honest_protocol(split, ratings, text, SpaceConfig(dim=8), settings, period=30 * DAY)
    assert [result.name for result in results][0] == "popularity" and len(results) == 3
    assert all(result.users == len(split.stages["test"].users) for result in results)
    assert all(0.0 <= result.hit <= 1.0 and result.ndcg <= result.hit for result in results)
    popularity = evaluate_offline("popularity", split, "test", None)  # checked by hand on a tiny stream below
    assert (results[0].hit, results[0].ndcg) == (popularity.hit, popularity.ndcg)
    span_days = (max(r.ts for r in ratings) - min(r.ts for r in ratings)) / DAY
    assert 1 <= trainings <= int(span_days // 30) + 1

    # Poisoning the future changes nothing: ratings after every test moment are never trained on.
    last_query = float(split.stages["test"].times.max())
    items = [movie.item_id for movie in movies]
    poison = [Rating(f"future-{user}", items[(user * 7 + step) % len(items)], 5.0, last_query + DAY + step)
              for user in range(50) for step in range(10)]
    again, _ = honest_protocol(split, ratings + poison, text, SpaceConfig(dim=8), settings, period=30 * DAY)
    assert [(r.hit, r.ndcg) for r in again] == [(r.hit, r.ndcg) for r in results]


def test_the_popularity_baseline_scores_a_tiny_stream_as_computed_by_hand():
    movies = [Movie(f"i{n:02d}", f"title {n}", None, ()) for n in range(14)]
    stream = [("u1", "i13"), ("u1", "i12"), ("u1", "i09"), ("u2", "i13"), ("u2", "i12"), ("u2", "i00"),
              ("u3", "i13"), ("u3", "i12"), ("u3", "i11")]
    split = load_split(movies, [Rating(user, item, 4.0, float(t)) for t, (user, item) in enumerate(stream, 1)])
    result = evaluate_offline("popularity", split, "test", None)
    # Each user has seen i13 and i12 (excluded). At u1's test (t3) nothing else was rated: catalogue order,
    # i09 10th. At u2's (t6) i09 has one rating: i09 first, i00 2nd. At u3's (t9) i09 and i00 have one each:
    # i00, i09, i01..i08 - i11 is not in the top 10.
    assert result.users == 3
    assert result.hit == 2 / 3
    assert math.isclose(result.ndcg, (1 / math.log2(11) + 1 / math.log2(3) + 0) / 3)
