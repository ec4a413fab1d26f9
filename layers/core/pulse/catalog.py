"""The item catalogue: one immutable version in memory, and how readers find item embeddings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class CatalogReader(Protocol):
    def embeddings_for(self, item_ids: Iterable[str]) -> dict[str, np.ndarray]:
        """Embeddings of the items the catalogue knows; unknown ids are simply absent."""
        ...


class EmptyCatalog:
    """No catalogue published yet: every item is unknown."""

    def embeddings_for(self, item_ids: Iterable[str]) -> dict[str, np.ndarray]:
        return {}


@dataclass(frozen=True, eq=False)
class CatalogVersion:
    """One published version: L2-normalised float32 rows, ids and what filters and answers need."""

    version: str
    item_ids: list[str]
    embeddings: np.ndarray  # (n, dim) float32, C-contiguous, rows of unit length
    encoder_fingerprint: str
    titles: list[str | None] = field(default_factory=list)
    categories: list[list[str]] = field(default_factory=list)
    available: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    popularity: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    created_at: float = 0.0

    def __post_init__(self) -> None:
        count = len(self.item_ids)
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != count:
            raise ValueError(f"{count} item ids but an embedding matrix of shape {self.embeddings.shape}")
        defaults = {"titles": [None] * count, "categories": [[] for _ in range(count)],
                    "available": np.ones(count, dtype=bool), "popularity": np.zeros(count)}
        for name, default in defaults.items():
            value = getattr(self, name)
            if len(value) == 0 and count:
                object.__setattr__(self, name, default)
            elif len(value) != count:
                raise ValueError(f"{name} has {len(value)} entries for {count} items")
        object.__setattr__(self, "index", {item_id: row for row, item_id in enumerate(self.item_ids)})
        by_category: dict[str, list[int]] = {}
        for row, names in enumerate(self.categories):
            for name in names:
                by_category.setdefault(name.casefold(), []).append(row)
        object.__setattr__(self, "category_rows", {name: np.array(rows) for name, rows in by_category.items()})

    index: dict[str, int] = field(init=False, repr=False)
    category_rows: dict[str, np.ndarray] = field(init=False, repr=False)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.item_ids)

    def embeddings_for(self, item_ids: Iterable[str]) -> dict[str, np.ndarray]:
        return {item_id: self.embeddings[self.index[item_id]] for item_id in item_ids if item_id in self.index}


def in_memory_catalog(item_ids: Sequence[str], embeddings: np.ndarray, *, fingerprint: str = "test",
                      **columns) -> CatalogVersion:
    return CatalogVersion(version="in-memory", item_ids=list(item_ids),
                          embeddings=np.ascontiguousarray(embeddings, dtype=np.float32),
                          encoder_fingerprint=fingerprint, **columns)
