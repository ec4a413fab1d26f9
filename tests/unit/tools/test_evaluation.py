"""Ranking metrics, the popularity baseline, the results table and the report plot."""

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulse_dev.evaluation import (
    MethodResult,
    PopularityBaseline,
    coverage,
    hit_at_k,
    hit_by_activity,
    mrr_at_k,
    ndcg_at_k,
    novelty,
    novelty_of_list,
    plot_report,
    results_table,
    summarize,
)

RANKED = [f"i{n}" for n in range(1, 16)]


@pytest.mark.parametrize(("target", "hit", "ndcg", "mrr"), [
    ("i1", 1.0, 1.0, 1.0),
    ("i3", 1.0, 0.5, 1 / 3),
    ("i10", 1.0, 1 / math.log2(11), 0.1),
    ("i11", 0.0, 0.0, 0.0),  # beyond the cutoff
    ("absent", 0.0, 0.0, 0.0),
])
def test_metrics_at_10(target, hit, ndcg, mrr):
    assert hit_at_k(RANKED, target) == hit
    assert ndcg_at_k(RANKED, target) == pytest.approx(ndcg)
    assert mrr_at_k(RANKED, target) == pytest.approx(mrr)


def test_metrics_edge_cases():
    assert hit_at_k([], "i1") == ndcg_at_k([], "i1") == mrr_at_k([], "i1") == 0.0
    assert hit_at_k(["a", "b"], "b", k=50) == 1.0
    assert hit_at_k(RANKED, "i3", k=2) == 0.0
    with pytest.raises(ValueError, match="k must be"):
        hit_at_k(RANKED, "i1", k=0)


def test_coverage():
    assert coverage([["a", "b"], ["b", "c"]], 10) == 0.3
    assert coverage([], 10) == 0.0
    with pytest.raises(ValueError):
        coverage([["a"]], 0)


def test_novelty():
    shares = {"a": 0.5, "b": 0.25, "c": 0.125}
    assert novelty_of_list(["a", "b"], shares) == pytest.approx(1.5)
    assert novelty_of_list([], shares) == 0.0
    assert novelty([["a"], ["c"]], shares) == pytest.approx(2.0)
    assert novelty([["a"], ["a"]], [shares, {"a": 0.25}]) == pytest.approx(1.5)  # popularity as of each list
    assert math.isnan(novelty([], shares))
    with pytest.raises(ValueError, match="positive"):
        novelty_of_list(["zero"], {"zero": 0.0})


def test_shares_give_unseen_items_one_over_total_plus_one():
    baseline = PopularityBaseline(["a", "b", "c"])
    assert baseline.shares()["a"] == 1.0  # nothing seen yet: finite, novelty 0
    for item_id in "aaab":
        baseline.add(item_id)
    shares = baseline.shares()
    assert (shares["a"], shares["b"], shares["c"]) == (0.75, 0.25, 0.2)
    assert shares.total == 4 and dict(shares).keys() == {"a", "b", "c"}
    baseline.add("c")
    assert shares["c"] == 0.2  # a snapshot: later events do not change it
    assert novelty_of_list(["c"], shares) == pytest.approx(-math.log2(0.2))


def test_top_k_excludes_seen_and_breaks_ties_by_construction_order():
    baseline = PopularityBaseline(["x", "y", "z", "w"])
    for item_id in ["w", "w", "z", "y"]:
        baseline.add(item_id)
    assert baseline.top_k(4, exclude=set()) == ["w", "y", "z", "x"]
    assert baseline.top_k(2, exclude={"w"}) == ["y", "z"]
    assert baseline.top_k(10, exclude={"w", "y"}) == ["z", "x"]
    assert baseline.top_k(0, exclude=set()) == []
    with pytest.raises(ValueError, match="unique"):
        PopularityBaseline(["a", "a"])


@given(st.lists(st.integers(0, 29), max_size=200), st.sets(st.integers(0, 29)), st.integers(0, 35),
       st.randoms(use_true_random=False))
def test_top_k_matches_brute_force(events, seen, k, rng):
    item_ids = [f"m{n}" for n in range(30)]
    rng.shuffle(item_ids)  # construction order is not id order
    baseline = PopularityBaseline(item_ids)
    for event in events:
        baseline.add(f"m{event}")
    exclude = {f"m{n}" for n in seen}
    counts = {item_id: events.count(int(item_id[1:])) for item_id in item_ids}
    expected = sorted((item_id for item_id in item_ids if item_id not in exclude),
                      key=lambda item_id: (-counts[item_id], item_ids.index(item_id)))[:k]
    assert baseline.top_k(k, exclude=exclude) == expected


def test_top_k_on_catalogue_sized_random_data():
    rng = random.Random(7)
    item_ids = [str(n) for n in range(1, 1683)]
    baseline = PopularityBaseline(item_ids)
    counts = dict.fromkeys(item_ids, 0)
    for _ in range(20_000):
        item_id = str(int(rng.paretovariate(1.2)) % 1682 + 1)
        baseline.add(item_id)
        counts[item_id] += 1
    exclude = set(rng.sample(item_ids, 200))
    expected = sorted((i for i in item_ids if i not in exclude), key=lambda i: (-counts[i], int(i)))[:10]
    assert baseline.top_k(10, exclude=exclude) == expected


def test_summarize():
    shares = {item_id: 0.05 for item_id in RANKED}
    result = summarize("pop", [RANKED, RANKED[::-1]], ["i1", "i15"], catalogue_size=30,
                       shares_per_list=[shares, shares])
    assert (result.name, result.users, result.hit, result.mrr) == ("pop", 2, 1.0, 1.0)
    assert result.ndcg == 1.0 and result.per_user_hits == [1.0, 1.0]
    assert result.coverage == pytest.approx(15 / 30)  # only the top 10 of each list count
    assert result.novelty == pytest.approx(-math.log2(0.05))
    empty = summarize("none", [], [], catalogue_size=30, shares_per_list=[])
    assert empty.users == 0 and math.isnan(empty.hit) and math.isnan(empty.novelty)
    with pytest.raises(ValueError, match="lengths differ"):
        summarize("bad", [RANKED], [], catalogue_size=30, shares_per_list=[shares])


def _result(name, hits):
    return MethodResult(name=name, users=len(hits), hit=sum(hits) / len(hits), ndcg=0.12345, mrr=0.0625,
                        coverage=0.5, novelty=9.876, per_user_hits=hits)


def test_results_table():
    table = results_table([_result("popularity", [1.0, 0.0]), _result("pulse (half-life 1d)", [1.0, 1.0])],
                          extra_rows=[("BPR (published)", {"Hit@10": 0.6})])
    lines = table.splitlines()
    assert lines[0].split() == ["method", "users", "Hit@10", "NDCG@10", "MRR@10", "coverage", "novelty"]
    assert "popularity" in table and "pulse (half-life 1d)" in table and "BPR (published)" in table
    assert "0.5000" in table and "1.0000" in table and "0.1235" in table and "9.88" in table
    assert lines[-1].split() == ["BPR", "(published)", "-", "0.6000", "-", "-", "-", "-"]
    assert len({len(line) for line in lines[2:]}) == 1  # right-aligned columns end together


def test_hit_by_activity():
    summary = hit_by_activity([1.0, 0.0, 1.0, 1.0, 0.0], [5, 25, 30, 150, 0])
    assert summary == [("1-19", 1.0, 1), ("20-49", 0.5, 2), ("50-99", pytest.approx(math.nan, nan_ok=True), 0),
                       ("100-199", 1.0, 1), ("200-9999", pytest.approx(math.nan, nan_ok=True), 0)]
    assert hit_by_activity([], [])[0][2] == 0


def test_plot_report_writes_a_png(tmp_path):
    path = tmp_path / "report.png"
    results = [_result("popularity", [1.0, 0.0, 0.0]), _result("pulse", [1.0, 1.0, 0.0])]
    plot_report(path, results, activity=[10, 60, 300], shift_curve={"1h": [0.1, 0.4, 0.7], "1d": [0.0, 0.2, 0.4]},
                freshness_seconds=[0.8, 1.1, 1.3, 2.5, 4.0])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_plot_report_with_only_the_activity_panel(tmp_path):
    path = tmp_path / "small.png"
    plot_report(path, [_result("popularity", [1.0])], activity=[3], shift_curve=None, freshness_seconds=None)
    assert path.read_bytes().startswith(b"\x89PNG")
