"""Offline ranking evaluation: leave-last-out, full ranking over the catalogue, seen items excluded, cutoff 10."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from matplotlib.axes import Axes

K = 10


def _rank(recommended: Sequence[str], target: str, k: int) -> int | None:
    """1-based rank of the target within the first k, or None."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    for position, item_id in enumerate(recommended[:k], start=1):
        if item_id == target:
            return position
    return None


def hit_at_k(recommended: Sequence[str], target: str, k: int = K) -> float:
    return 0.0 if _rank(recommended, target, k) is None else 1.0


def ndcg_at_k(recommended: Sequence[str], target: str, k: int = K) -> float:
    """With one relevant item the ideal DCG is 1, so NDCG is 1/log2(rank + 1)."""
    rank = _rank(recommended, target, k)
    return 0.0 if rank is None else 1.0 / math.log2(rank + 1)


def mrr_at_k(recommended: Sequence[str], target: str, k: int = K) -> float:
    rank = _rank(recommended, target, k)
    return 0.0 if rank is None else 1.0 / rank


def coverage(recommendation_lists: Iterable[Sequence[str]], catalogue_size: int) -> float:
    """Share of the catalogue that appears in at least one list."""
    if catalogue_size < 1:
        raise ValueError(f"catalogue_size must be at least 1, got {catalogue_size}")
    return len({item_id for items in recommendation_lists for item_id in items}) / catalogue_size


def novelty_of_list(items: Sequence[str], shares: Mapping[str, float]) -> float:
    """Mean self-information -log2(share) of the items (0.0 for an empty list). Shares must be positive:
    PopularityShares gives a never-seen item 1/(total + 1) so it is finite and the most novel."""
    if not items:
        return 0.0
    values = [shares.get(item_id, 0.0) for item_id in items]
    if min(values) <= 0:
        raise ValueError("every recommended item needs a positive popularity share (use PopularityBaseline.shares)")
    return float(np.mean(-np.log2(values)))


def novelty(recommendation_lists: Sequence[Sequence[str]],
            popularity_share: Mapping[str, float] | Sequence[Mapping[str, float]]) -> float:
    """Mean novelty over lists (NaN for none); one shares mapping for all, or one per list (popularity as of
    that list's moment)."""
    if not recommendation_lists:
        return math.nan
    if isinstance(popularity_share, Mapping):
        popularity_share = [popularity_share] * len(recommendation_lists)
    _same_length(recommendation_lists=recommendation_lists, popularity_share=popularity_share)
    return float(np.mean([novelty_of_list(items, shares)
                          for items, shares in zip(recommendation_lists, popularity_share, strict=True)]))


class PopularityShares(Mapping[str, float]):
    """A snapshot of each item's share of the interactions counted so far. A never-seen item gets
    1/(total + 1), as if it were about to get its first interaction: positive, and below any seen item."""

    def __init__(self, index: Mapping[str, int], counts: NDArray[Any]):
        self._index, self._counts, self.total = index, counts, int(counts.sum())

    def __getitem__(self, item_id: str) -> float:
        count = int(self._counts[self._index[item_id]])
        return count / self.total if count else 1.0 / (self.total + 1)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


class PopularityBaseline:
    """Counts of interactions seen so far (in time order), answering 'top k most popular items the user has
    not seen' at any moment; ties go to the item that came first in the constructor's order."""

    def __init__(self, item_ids: Sequence[str]):
        self._item_ids = list(item_ids)
        self._index = {item_id: position for position, item_id in enumerate(self._item_ids)}
        if len(self._index) != len(self._item_ids):
            raise ValueError("item_ids must be unique")
        self._counts = np.zeros(len(self._item_ids), dtype=np.int64)

    def add(self, item_id: str) -> None:
        self._counts[self._index[item_id]] += 1

    def top_k(self, k: int, exclude: Collection[str] = ()) -> list[str]:
        # A stable sort of -counts keeps construction order among equal counts.
        picked: list[str] = []
        for position in np.argsort(-self._counts, kind="stable"):
            if len(picked) >= k:
                break
            item_id = self._item_ids[position]
            if item_id not in exclude:
                picked.append(item_id)
        return picked

    def shares(self) -> PopularityShares:
        return PopularityShares(self._index, self._counts.copy())


@dataclass
class MethodResult:
    name: str
    users: int
    hit: float
    ndcg: float
    mrr: float
    coverage: float
    novelty: float
    per_user_hits: list[float] = field(default_factory=list, repr=False)


def summarize(name: str, lists: Sequence[Sequence[str]], targets: Sequence[str], catalogue_size: int,
              shares_per_list: Sequence[Mapping[str, float]]) -> MethodResult:
    """One method's mean metrics over users (NaN when there are no users)."""
    _same_length(lists=lists, targets=targets, shares_per_list=shares_per_list)
    pairs = list(zip(lists, targets, strict=True))
    hits = [hit_at_k(items, target) for items, target in pairs]
    top = [items[:K] for items in lists]
    return MethodResult(
        name=name, users=len(lists), hit=_mean(hits),
        ndcg=_mean([ndcg_at_k(items, target) for items, target in pairs]),
        mrr=_mean([mrr_at_k(items, target) for items, target in pairs]),
        coverage=coverage(top, catalogue_size), novelty=novelty(top, shares_per_list), per_user_hits=hits)


_COLUMNS = (("users", "{:.0f}"), ("Hit@10", "{:.4f}"), ("NDCG@10", "{:.4f}"), ("MRR@10", "{:.4f}"),
            ("coverage", "{:.4f}"), ("novelty", "{:.2f}"))


def results_table(results: Sequence[MethodResult],
                  extra_rows: Sequence[tuple[str, Mapping[str, float]]] = ()) -> str:
    """Aligned plain-text table. extra_rows are (name, {column header: value}) for numbers from elsewhere
    (e.g. published baselines); missing columns show '-'."""
    rows = [(result.name, {"users": result.users, "Hit@10": result.hit, "NDCG@10": result.ndcg,
                           "MRR@10": result.mrr, "coverage": result.coverage, "novelty": result.novelty})
            for result in results] + list(extra_rows)
    cells = [["method", *(header for header, _ in _COLUMNS)]]
    cells += [[name, *(template.format(values[header]) if header in values else "-"
                       for header, template in _COLUMNS)] for name, values in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(cells[0]))]
    lines = ["  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                       for column, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def hit_by_activity(per_user_hits: Sequence[float], activity: Sequence[int],
                    bins: Sequence[int] = (1, 20, 50, 100, 200, 10_000)) -> list[tuple[str, float, int]]:
    """-> [(label like '20-49', mean hit, users)] per bin [lo, hi); NaN for an empty bin, out-of-range users
    are left out."""
    _same_length(per_user_hits=per_user_hits, activity=activity)
    hits, counts = np.asarray(per_user_hits, dtype=float), np.asarray(activity)
    summary = []
    for low, high in zip(bins[:-1], bins[1:], strict=True):
        members = hits[(counts >= low) & (counts < high)]
        summary.append((f"{low}-{high - 1}", _mean(members), len(members)))
    return summary


def plot_report(path: Path, results: Sequence[MethodResult], activity: Sequence[int],
                shift_curve: Mapping[str, Sequence[float]] | None = None,
                freshness_seconds: Sequence[float] | None = None,
                timeline: Mapping[str, Any] | None = None) -> None:
    """One PNG: Hit@10 by user activity, then the interest-shift curve, the freshness histogram and Hit@10 over
    the replay with every training's decision marked, if given."""
    # Imported here so the Lambda layers never load matplotlib; no pyplot, so no global backend state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = 1 + (shift_curve is not None) + (freshness_seconds is not None) + (timeline is not None)
    figure = Figure(figsize=(6 * panels, 4.5))
    FigureCanvasAgg(figure)
    axes = list(figure.subplots(1, panels, squeeze=False)[0])
    _plot_activity(axes.pop(0), results, activity)
    if shift_curve is not None:
        _plot_shift(axes.pop(0), shift_curve)
    if freshness_seconds is not None:
        _plot_freshness(axes.pop(0), freshness_seconds)
    if timeline is not None:
        _plot_timeline(axes.pop(0), results, timeline)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _plot_activity(axis: Axes, results: Sequence[MethodResult], activity: Sequence[int]) -> None:
    summaries = [hit_by_activity(result.per_user_hits, activity) for result in results]
    labels = [f"{label}\n({users} users)" for label, _, users in summaries[0]] if summaries else []
    width = 0.8 / max(len(results), 1)
    for offset, (result, summary) in enumerate(zip(results, summaries, strict=True)):
        positions = np.arange(len(summary)) + (offset - (len(results) - 1) / 2) * width
        axis.bar(positions, [hit for _, hit, _ in summary], width, label=result.name)
    axis.set_xticks(np.arange(len(labels)), labels)
    axis.set_title("(a) Hit@10 by user activity")
    axis.set_xlabel("events before the test event")
    axis.set_ylabel("Hit@10")
    if results:
        axis.legend()


def _plot_timeline(axis: Axes, results: Sequence[MethodResult], timeline: Mapping[str, Any]) -> None:
    """Hit@10 of the questions asked in each simulated week; trainings as ticks: published (green), refused (red)."""
    days = (np.asarray(timeline["times"], dtype=np.float64) - timeline["start"]) / 86400.0
    if not len(days):
        return
    weeks = np.floor(days / 7).astype(int)
    for result in results:
        hits = np.asarray(result.per_user_hits, dtype=np.float64)
        centres, means = [], []
        for week in np.unique(weeks):
            chosen = weeks == week
            if chosen.sum() >= 5:
                centres.append(week * 7 + 3.5)
                means.append(hits[chosen].mean())
        axis.plot(centres, means, marker=".", label=result.name)
    for key, colour, label in (("published", "green", "published"), ("refused", "red", "refused")):
        moments = (np.asarray(timeline.get(key, []), dtype=np.float64) - timeline["start"]) / 86400.0
        if len(moments):
            axis.vlines(moments, 0, 0.03, color=colour, linewidth=0.8, label=f"training {label} ({len(moments)})")
    axis.set_ylim(0, None)
    axis.set_title("(d) Hit@10 over the replay (weekly), trainings marked")
    axis.set_xlabel("simulated days since the first event")
    axis.set_ylabel("Hit@10")
    axis.legend(fontsize=7)


def _plot_shift(axis: Axes, shift_curve: Mapping[str, Sequence[float]]) -> None:
    for setting, shares in shift_curve.items():
        axis.plot(np.arange(1, len(shares) + 1), shares, marker=".", label=setting)
    axis.axhline(0.5, linestyle="--", color="grey")
    axis.set_ylim(0, 1.05)
    axis.set_title("(b) Interest shift")
    axis.set_xlabel("events since the switch")
    axis.set_ylabel("share of top-10 in the new genre")
    if shift_curve:
        axis.legend(title="half-life")


def _plot_freshness(axis: Axes, freshness_seconds: Sequence[float]) -> None:
    seconds = np.asarray(freshness_seconds, dtype=float)
    axis.hist(seconds, bins=30, color="tab:blue", alpha=0.7)
    if seconds.size:
        for name, value, colour in (("p50", np.percentile(seconds, 50), "tab:green"),
                                    ("p95", np.percentile(seconds, 95), "tab:red")):
            axis.axvline(value, color=colour, linestyle="--", label=f"{name} = {value:.2f} s")
        axis.legend()
    axis.set_title("(c) End-to-end freshness")
    axis.set_xlabel("seconds from event to updated recommendations")
    axis.set_ylabel("events")


def _mean(values: Sequence[float] | NDArray[Any]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _same_length(**sequences: Sequence[Any]) -> None:
    if len({len(values) for values in sequences.values()}) > 1:
        sizes = ", ".join(f"{name}={len(values)}" for name, values in sequences.items())
        raise ValueError(f"lengths differ: {sizes}")
