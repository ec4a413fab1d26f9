"""`pulse train`: the archive's recent events -> a hybrid item space -> a new catalogue version.

Reads a window of the event archive, learns the collaborative block (pulse.collaborative), keeps the current
version's items, text block, titles and filters, and publishes the hybrid version (CURRENT swapped last). A
retrain is rotated onto the previous collaborative block (orthogonal Procrustes on the items warm in both), so
users' stored interest stays valid; the first switch from a text-only catalogue restarts interest vectors once
(pulse.interest), since they live in another space.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pulse.archive import ArchiveReadStats, read_archive
from pulse.catalog_store import S3CatalogRepository
from pulse.collaborative import Interactions, SpaceConfig, TrainedSpace, train


@dataclass(frozen=True)
class TrainingResult:
    version: str
    base_version: str
    events: int
    users: int
    warm_items: int
    items: int
    seconds: dict[str, float]
    peak_bytes_estimate: int
    archive: ArchiveReadStats


def train_catalog(repository: S3CatalogRepository, archive_bucket: str, *, days: int = 30,
                  until: dt.date | None = None, before: float | None = None, config: SpaceConfig | None = None,
                  seed: int = 0) -> TrainingResult:
    """`before`: only events that happened earlier than this epoch second (replays and backfills, whose
    arrival day says nothing of when the events happened)."""
    config = config or SpaceConfig()
    started = time.perf_counter()
    base_version = repository.current_version()
    if base_version is None:
        raise RuntimeError("no catalogue published yet: publish one (pulse catalog build) before training")
    base = repository.load(base_version, None)
    state = repository.load_training_state(base_version) if base.is_hybrid else None
    text = state["text"] if state is not None else base.embeddings.astype(np.float64)
    previous = None
    if state is not None and state["collab"].shape[1] == config.dim:
        previous = TrainedSpace(vectors=base.embeddings, collab=state["collab"], warm_mask=state["warm"],
                                text_map=base.text_to_collab, rotation=None, config=config, seed=-1)

    last_day = until or dt.datetime.now(dt.UTC).date()
    stats = ArchiveReadStats()
    users: dict[str, int] = {}
    user_ids, rows, times = [], [], []
    for event in read_archive(archive_bucket, last_day - dt.timedelta(days=days - 1), last_day, stats=stats):
        row = base.index.get(event.item_id) if event.item_id is not None else None
        if row is None or (before is not None and event.ts >= before):
            continue  # search texts and unknown items carry no co-occurrence
        user_ids.append(users.setdefault(event.user_id, len(users)))
        rows.append(row)
        times.append(event.ts)
    interactions = Interactions(np.array(user_ids, dtype=np.int64), np.array(rows, dtype=np.int64),
                                np.array(times, dtype=np.float64))
    read_seconds = time.perf_counter() - started
    space = train(interactions, len(base), text, config, seed=seed, previous=previous)
    digest = hashlib.sha256(space.vectors.tobytes())
    digest.update(base.encoder_fingerprint.encode())
    trained = replace(base, version=f"t-{digest.hexdigest()[:20]}", embeddings=space.vectors,
                      text_to_collab=space.text_map.astype(np.float32), text_weight=config.text_weight,
                      collab_weight=config.collab_weight, created_at=time.time())
    described = _describe(config, seed, base_version, len(interactions), len(users), days, last_day, before)
    repository.publish(trained, training_state={"text": text, "collab": space.collab, "warm": space.warm_mask},
                       space=described)
    return TrainingResult(version=trained.version, base_version=base_version, events=len(interactions),
                          users=len(users), warm_items=int(space.warm_mask.sum()), items=len(base),
                          seconds={"read_archive": read_seconds, **space.seconds},
                          peak_bytes_estimate=space.peak_bytes_estimate, archive=stats)


def _describe(config: SpaceConfig, seed: int, base: str, events: int, users: int, days: int,
              last_day: dt.date, before: float | None) -> dict[str, Any]:
    return {"trained_on": {"events": events, "users": users, "days": days, "until": last_day.isoformat(),
                           "events_before": before},
            "base_version": base, "seed": seed,
            "config": {key: getattr(config, key) for key in config.__dataclass_fields__}}
