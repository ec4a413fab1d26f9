"""Catalogue publishing, one code path for `pulse catalog build` and the S3-triggered catalogue function:
validate JSON Lines -> embed title/text in batches -> CatalogVersion (content-addressed, so idempotent)."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote_plus

import numpy as np
from numpy.typing import NDArray

from pulse.catalog.store import CatalogRefusedError
from pulse.catalog.version import CatalogVersion, hybrid_vectors
from pulse.errors import PulseError
from pulse.events.behaviour import InvalidEventError, identifier

MAX_CATEGORIES = 64
MAX_ITEM_TEXT = 4000


class InvalidCatalogError(PulseError, ValueError):
    """Some lines are invalid; `problems` lists (line number, message)."""

    def __init__(self, problems: Sequence[tuple[int, str]]):
        self.problems = list(problems)
        shown = "; ".join(f"line {line}: {message}" for line, message in self.problems[:5])
        more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(f"{len(self.problems)} invalid catalogue line(s): {shown}{more}")


@dataclass(frozen=True, slots=True)
class CatalogItem:
    item_id: str
    title: str | None
    text: str | None
    categories: tuple[str, ...]
    available: bool = True
    popularity: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def embedding_text(self) -> str:
        """What the encoder sees: title, description and categories (MovieLens: 'Fargo (1996) Crime Drama')."""
        parts = [self.title, self.text, " ".join(self.categories) if self.categories else None]
        return " ".join(part for part in parts if part)


def parse_item(payload: Any) -> CatalogItem:
    if not isinstance(payload, dict):
        raise InvalidEventError("an item must be a JSON object")
    item_id = identifier(payload, "item_id")
    title, text = _optional_text(payload, "title"), _optional_text(payload, "text")
    if title is None and text is None:
        raise InvalidEventError("an item needs a title or a text to embed")
    categories = payload.get("categories", [])
    if categories is None:
        categories = []
    if not isinstance(categories, list) or not all(isinstance(c, str) and c.strip() for c in categories):
        raise InvalidEventError("categories must be a list of non-empty strings")
    if len(categories) > MAX_CATEGORIES:
        raise InvalidEventError(f"{len(categories)} categories; the limit is {MAX_CATEGORIES}")
    available = payload.get("available", True)
    if not isinstance(available, bool):
        raise InvalidEventError("available must be true or false")
    popularity = payload.get("popularity", 0)
    if isinstance(popularity, bool) or not isinstance(popularity, int | float) or not _finite_float(popularity) \
            or popularity < 0:
        raise InvalidEventError("popularity must be a non-negative number")
    known = {"item_id", "title", "text", "categories", "available", "popularity"}
    return CatalogItem(item_id=item_id, title=title, text=text, categories=tuple(c.strip() for c in categories),
                       available=available, popularity=float(popularity),
                       metadata={key: value for key, value in payload.items() if key not in known})


def parse_catalog_lines(lines: Iterable[str | bytes]) -> tuple[list[CatalogItem], list[tuple[int, str]]]:
    """-> (valid items, [(line number, problem)]); blank lines are skipped, repeated item_ids are problems."""
    items: list[CatalogItem] = []
    problems: list[tuple[int, str]] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            problems.append((number, "not valid UTF-8"))
            continue
        if not line.strip():
            continue
        try:
            item = parse_item(json.loads(line, parse_constant=_non_finite, parse_float=_finite_number))
        except json.JSONDecodeError as error:
            problems.append((number, f"not valid JSON: {error.msg} at column {error.colno}"))
            continue
        except InvalidEventError as error:
            problems.append((number, str(error)))
            continue
        except RecursionError:
            problems.append((number, "not valid JSON: nested too deeply"))
            continue
        except ValueError as error:  # e.g. an integer of more digits than Python converts
            problems.append((number, f"not valid JSON: {error}"))
            continue
        if item.item_id in first_line:
            problems.append((number, f"item_id '{item.item_id}' repeats line {first_line[item.item_id]}"))
            continue
        first_line[item.item_id] = number
        items.append(item)
    return items, problems


def _non_finite(constant: str) -> float:
    raise ValueError(f"{constant} is not a finite number")


def _finite_number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _finite_float(value: int | float) -> bool:
    """A finite number that fits a float (an integer of 400 digits does not)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def content_version(items: Sequence[CatalogItem], encoder_fingerprint: str) -> str:
    """Same items and same encoder -> same version id: re-publishing is idempotent."""
    digest = hashlib.sha256(encoder_fingerprint.encode())
    for item in items:
        digest.update(json.dumps([item.item_id, item.title, item.text, item.categories, item.available,
                                  item.popularity], ensure_ascii=False).encode())
    return f"v-{digest.hexdigest()[:20]}"


def build_catalog(items: Sequence[CatalogItem], encode: Callable[[Sequence[str]], NDArray[Any]],
                  encoder_fingerprint: str, *, batch_size: int = 256,
                  progress: Callable[[int], None] | None = None) -> CatalogVersion:
    if not items:
        raise InvalidCatalogError([(0, "the catalogue has no items")])
    texts = [item.embedding_text for item in items]
    chunks = []
    for start in range(0, len(texts), batch_size):
        chunks.append(encode(texts[start:start + batch_size]))
        if progress is not None:
            progress(min(batch_size, len(texts) - start))
    embeddings = np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)
    return CatalogVersion(
        version=content_version(items, encoder_fingerprint),
        item_ids=[item.item_id for item in items],
        embeddings=embeddings,
        encoder_fingerprint=encoder_fingerprint,
        titles=[item.title for item in items],
        categories=[list(item.categories) for item in items],
        available=np.array([item.available for item in items], dtype=bool),
        popularity=np.array([item.popularity for item in items], dtype=np.float64),
        created_at=time.time(),
        basis=f"text-{encoder_fingerprint[:12]}",  # the encoder's own space
    )


def uploaded_objects(event: dict[str, Any], prefix: str = "incoming/") -> list[tuple[str, str]]:
    """(bucket, key) of the JSON Lines files an S3 notification or an EventBridge "Object Created" event names."""
    if "Records" in event:
        found = [(record["s3"]["bucket"]["name"], unquote_plus(record["s3"]["object"]["key"]))
                 for record in event["Records"] if record.get("eventSource") == "aws:s3"]
    elif event.get("detail-type") == "Object Created":
        found = [(event["detail"]["bucket"]["name"], event["detail"]["object"]["key"])]
    else:
        raise ValueError("not an S3 notification nor an EventBridge 'Object Created' event")
    return [(bucket, key) for bucket, key in found if key.startswith(prefix) and key.endswith(".jsonl")]


def _optional_text(payload: dict[str, Any], field_name: str) -> str | None:
    raw = payload.get(field_name)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidEventError(f"{field_name} must be a string")
    if not raw.strip():
        return None
    if len(raw) > MAX_ITEM_TEXT:
        raise InvalidEventError(f"{field_name} is {len(raw)} characters; the limit is {MAX_ITEM_TEXT}")
    return raw.strip()



@dataclass(frozen=True)
class PublishResult:
    version: str
    items: int
    new_files: bool
    skipped: list[tuple[int, str]]
    basis: str | None = None


def extend_space(serving: CatalogVersion, state: dict[str, NDArray[Any]], uploaded: CatalogVersion
                 ) -> tuple[CatalogVersion, dict[str, NDArray[Any]]]:
    """The uploaded items in the serving version's learned space (its dimensionality and basis kept).

    Text blocks come from the upload (a changed text updates its block). An item the training saw in use keeps
    its collaborative vector; a new or never-used item gets it from its text through the version's
    text->collaborative map; an item keeps its trending prior (a new one starts at 0). Items the upload leaves
    out leave the version. -> (version, training state)."""
    text = uploaded.embeddings.astype(np.float64)
    mapped = text @ np.asarray(serving.text_to_collab, dtype=np.float64)
    collab = mapped.copy()
    warm = np.zeros(len(uploaded), dtype=bool)
    trending = np.zeros(len(uploaded))  # what users did lately stays with the item; a new one has no trend yet
    for row, item_id in enumerate(uploaded.item_ids):
        old = serving.index.get(item_id)
        if old is not None:
            trending[row] = serving.trending[old]
        if old is not None and bool(state["warm"][old]):
            collab[row], warm[row] = state["collab"][old], True
    vectors = hybrid_vectors(text, collab, serving.text_weight, serving.collab_weight)
    digest = hashlib.sha256(uploaded.version.encode())
    digest.update(f"{serving.basis}".encode())
    extended = replace(uploaded, version=f"v-{digest.hexdigest()[:20]}", embeddings=vectors,
                       text_to_collab=serving.text_to_collab, text_weight=serving.text_weight,
                       collab_weight=serving.collab_weight, settings=serving.settings, basis=serving.basis,
                       trained_until=serving.trained_until, trending=trending)
    return extended, {"text": text, "collab": collab, "warm": warm}


def publish_catalog(lines: Iterable[str | bytes], encoder: Any, repository: Any, *, skip_invalid: bool = False,
                    progress: Callable[[int], None] | None = None, batch_size: int = 256) -> PublishResult:
    """The one code path of `pulse catalog build` and the catalogue function. Nothing is published when a
    line is invalid, unless skip_invalid (then the bad lines are skipped and reported).

    When a trained (hybrid) version serves, the upload joins its space (extend_space) instead of replacing it:
    only a training changes the space."""
    items, problems = parse_catalog_lines(lines)
    if problems and not skip_invalid:
        raise InvalidCatalogError(problems)
    if not items:
        raise InvalidCatalogError(problems or [(0, "the catalogue has no items")])
    serving, state = _serving_space(repository, encoder.fingerprint)
    catalog = build_catalog(items, encoder.encode, encoder.fingerprint, batch_size=batch_size, progress=progress)
    if serving is not None and state is not None:
        catalog, state = extend_space(serving, state, catalog)
    new_files = repository.publish(catalog, training_state=state)
    return PublishResult(catalog.version, len(catalog), new_files, problems, catalog.basis)


def _serving_space(repository: Any, fingerprint: str) -> tuple[CatalogVersion | None, dict[str, NDArray[Any]] | None]:
    """The serving version and its training state, when it is a trained space of this encoder."""
    version = repository.current_version()
    if version is None:
        return None, None
    try:
        serving = repository.load(version, fingerprint)
    except CatalogRefusedError:  # another encoder's space, or a broken version: the upload starts afresh
        return None, None
    if not serving.is_hybrid:
        return None, None
    state = repository.load_training_state(version)
    if state is None or len(state["warm"]) != len(serving):
        raise InvalidCatalogError([(0, f"the serving version {version} lacks its training state; run a training "
                                  "(pulse train) before uploading, or restore the version")])
    return serving, state
