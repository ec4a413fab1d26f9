"""The item catalogue: one immutable version in memory, and how readers find item embeddings."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray


class CatalogReader(Protocol):
    def embeddings_for(self, item_ids: Iterable[str]) -> dict[str, NDArray[Any]]:
        """Embeddings of the items the catalogue knows; unknown ids are simply absent."""
        ...

    def embed_texts(self, text_vectors: NDArray[Any]) -> NDArray[Any]:
        """Encoder vectors of behaviour texts -> the catalogue's item space."""
        ...

    def text_vectors_for(self, item_ids: Iterable[str]) -> dict[str, NDArray[Any]]:
        """The encoder's vectors of the items' texts (what a user's text-space residual is made of)."""
        ...

    def learned_settings(self) -> dict[str, Any] | None:
        """Interest settings the training chose for this version (None: none learned yet)."""
        ...


class EmptyCatalog:
    """No catalogue published yet: every item is unknown, texts stay in the encoder's space."""

    def embeddings_for(self, item_ids: Iterable[str]) -> dict[str, NDArray[Any]]:
        return {}

    def embed_texts(self, text_vectors: NDArray[Any]) -> NDArray[Any]:
        return text_vectors

    def text_vectors_for(self, item_ids: Iterable[str]) -> dict[str, NDArray[Any]]:
        return {}

    def learned_settings(self) -> dict[str, Any] | None:
        return None


@dataclass(frozen=True, eq=False)
class CatalogVersion:
    """One published version: L2-normalised float32 rows, ids and what filters and answers need."""

    version: str
    item_ids: list[str]
    embeddings: NDArray[np.float32]  # (n, dim) float32, C-contiguous, rows of unit length
    encoder_fingerprint: str
    titles: list[str | None] = field(default_factory=list)
    categories: list[list[str]] = field(default_factory=list)
    available: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    popularity: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    created_at: float = 0.0
    # A hybrid version (pulse train): rows are [text block, collaborative block]; texts reach the same space
    # through text_to_collab (ridge map learned on the warm items).
    text_to_collab: NDArray[Any] | None = None
    text_weight: float = 1.0
    collab_weight: float = 0.0
    # Interest settings chosen by the training that made this version (half_lives, blend_weights,
    # rating_weighting); the API and the ingest use them unless the deployment pins its own.
    settings: dict[str, Any] | None = None
    # Identifies the item space: an upload that extends a version keeps it, only a training makes a new one.
    basis: str | None = None
    # The newest event time the space learned from (None: nothing learned): the gate holds out only later events.
    trained_until: float | None = None
    # What users did lately, per item, in [0, 1] (training.space_quality.trending_prior, computed by the
    # training): added to personal scores with the learned popularity_weight. Zero until a training publishes.
    trending: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0, dtype=np.float64))

    def __post_init__(self) -> None:
        count = len(self.item_ids)
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != count:
            raise ValueError(f"{count} item ids but an embedding matrix of shape {self.embeddings.shape}")
        defaults = {"titles": [None] * count, "categories": [[] for _ in range(count)],
                    "available": np.ones(count, dtype=bool), "popularity": np.zeros(count),
                    "trending": np.zeros(count)}
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
        if self.text_to_collab is not None and not self.text_weight > 0:
            raise ValueError("a hybrid version needs a text block (text_weight > 0)")
        if not _all_finite(self.embeddings):
            raise ValueError("the embeddings hold non-finite values (NaN or infinity)")
        if len(self.trending) and not (np.isfinite(self.trending).all() and self.trending.min() >= 0
                                       and self.trending.max() <= 1):
            raise ValueError("trending values must be finite numbers in [0, 1]")
        # Once per version, not per request: the float32 prior the scores are summed with (None: no trend).
        object.__setattr__(self, "trend32", np.ascontiguousarray(self.trending, dtype=np.float32)
                           if self.trending.any() else None)

    index: dict[str, int] = field(init=False, repr=False)
    # The API's int8 codes of the rows (pulse.serving.int8_scan.Int8Scan), attached when it starts serving the
    # version; None: every score is a float32 product over `embeddings`.
    scan: Any = field(default=None, init=False, repr=False)
    # The rows as published for the int8 scan, (uint8 codes, float32 scales), set by the repository when the API
    # loads the version (not an init field: dataclasses.replace never carries codes over to other rows).
    quantized: tuple[NDArray[np.uint8], NDArray[np.float32]] | None = field(default=None, init=False, repr=False)
    trend32: NDArray[np.float32] | None = field(init=False, repr=False)
    category_rows: dict[str, NDArray[Any]] = field(init=False, repr=False)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.item_ids)

    def embeddings_for(self, item_ids: Iterable[str]) -> dict[str, NDArray[np.float32]]:
        return {item_id: self.embeddings[self.index[item_id]] for item_id in item_ids if item_id in self.index}

    @property
    def is_hybrid(self) -> bool:
        return self.text_to_collab is not None

    def embed_texts(self, text_vectors: NDArray[Any]) -> NDArray[Any]:
        """Encoder vectors -> this version's item space (a search moves the whole interest, not only text)."""
        if self.text_to_collab is None:
            return text_vectors
        return hybrid_vectors(text_vectors, text_vectors @ self.text_to_collab, self.text_weight, self.collab_weight)

    @property
    def text_dim(self) -> int:
        return self.dim if self.text_to_collab is None else int(self.text_to_collab.shape[0])

    @property
    def text_share(self) -> float:
        return 1.0 if self.text_to_collab is None else self.text_weight / (self.text_weight + self.collab_weight)

    def text_block(self, rows: NDArray[Any] | slice | int = slice(None)) -> NDArray[np.float32]:
        """The encoder's (unit) vectors of these rows' texts: the hybrid rows' text block, rescaled."""
        return self.embeddings[rows, : self.text_dim] / np.float32(math.sqrt(self.text_share))

    def text_vectors_for(self, item_ids: Iterable[str]) -> dict[str, NDArray[np.float32]]:
        return {item_id: self.text_block(self.index[item_id]) for item_id in item_ids if item_id in self.index}

    def embed_residual(self, residual: NDArray[Any]) -> NDArray[np.float64]:
        """A text-space interest vector -> this space, its length kept (blend reads strength from lengths)."""
        strength = float(np.linalg.norm(residual))
        if strength == 0.0:
            return np.zeros(self.dim)
        if self.text_to_collab is None:
            return np.asarray(residual, dtype=np.float64)
        vector: NDArray[np.float64] = strength * self.embed_texts((residual / strength)[None, :]).astype(np.float64)[0]
        return vector

    def learned_settings(self) -> dict[str, Any] | None:
        return self.settings


def _all_finite(matrix: NDArray[Any]) -> bool:
    """A NaN or infinity anywhere makes its row's sum non-finite: one product at memory speed, no boolean copy
    of the matrix (which took 60 ms at 100k items); a non-finite sum is confirmed element by element."""
    if matrix.size == 0:
        return True
    if np.isfinite(matrix @ np.ones(matrix.shape[1], dtype=matrix.dtype)).all():
        return True
    return bool(np.isfinite(matrix).all())


def unit_rows(matrix: NDArray[Any]) -> NDArray[np.float64]:
    matrix = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: NDArray[np.float64] = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    return unit


def hybrid_vectors(text: NDArray[Any], collab: NDArray[Any], text_weight: float, collab_weight: float
                   ) -> NDArray[np.float32]:
    """Row i = [sqrt(a) * t_i/|t_i|, sqrt(b) * c_i/|c_i|] with a = text_weight/(text_weight + collab_weight),
    b = 1 - a (a zero block stays zero).

    Rows are unit length (when both blocks are non-zero) and the dot product of two rows is
    a * cos_text + b * cos_collab, so the weights are the blocks' shares of the similarity and scoring stays
    one mat-vec over the concatenation.
    """
    if text_weight < 0 or collab_weight < 0 or text_weight + collab_weight <= 0:
        raise ValueError("block weights must be non-negative and not both zero")
    share = text_weight / (text_weight + collab_weight)
    blocks = [math.sqrt(share) * unit_rows(text), math.sqrt(1.0 - share) * unit_rows(collab)]
    return np.ascontiguousarray(np.hstack(blocks), dtype=np.float32)


def in_memory_catalog(item_ids: Sequence[str], embeddings: NDArray[Any], *, fingerprint: str = "test",
                      **columns: Any) -> CatalogVersion:
    return CatalogVersion(version="in-memory", item_ids=list(item_ids),
                          embeddings=np.ascontiguousarray(embeddings, dtype=np.float32),
                          encoder_fingerprint=fingerprint, **columns)
