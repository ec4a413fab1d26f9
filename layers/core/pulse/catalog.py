"""Reading item embeddings from the catalogue. The write path only needs `embeddings_for`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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


class InMemoryCatalog:
    def __init__(self, item_ids: Sequence[str], embeddings: np.ndarray):
        if len(item_ids) != len(embeddings):
            raise ValueError(f"{len(item_ids)} item ids but {len(embeddings)} embeddings")
        self.index = {item_id: row for row, item_id in enumerate(item_ids)}
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)

    def embeddings_for(self, item_ids: Iterable[str]) -> dict[str, np.ndarray]:
        return {item_id: self.embeddings[self.index[item_id]] for item_id in item_ids if item_id in self.index}
