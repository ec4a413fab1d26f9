"""The offline protocols on a slice of MovieLens-100K: the honest one never learns from the future."""

import numpy as np

from pulse.collaborative import SpaceConfig
from pulse.movielens import Rating, load_movies, load_ratings
from pulse.offline_eval import DAY, DEFAULT_USER_MODEL, honest_protocol, load_split


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
    span_days = (max(r.ts for r in ratings) - min(r.ts for r in ratings)) / DAY
    assert 1 <= trainings <= int(span_days // 30) + 1

    # Poisoning the future changes nothing: ratings after every test moment are never trained on.
    last_query = float(split.stages["test"].times.max())
    items = [movie.item_id for movie in movies]
    poison = [Rating(f"future-{user}", items[(user * 7 + step) % len(items)], 5.0, last_query + DAY + step)
              for user in range(50) for step in range(10)]
    again, _ = honest_protocol(split, ratings + poison, text, SpaceConfig(dim=8), settings, period=30 * DAY)
    assert [(r.hit, r.ndcg) for r in again] == [(r.hit, r.ndcg) for r in results]
