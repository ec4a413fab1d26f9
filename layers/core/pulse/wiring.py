"""Wiring the real dependencies, once per container (lazily: nothing connects at import time).

The handlers in functions/ take these builders as the defaults of their factories (`make_handler`,
`create_app`); tests and the bench pass their own instead."""

from __future__ import annotations

import json
import tempfile
from typing import TYPE_CHECKING

from pulse import container
from pulse.catalog.store import LiveCatalog, S3CatalogRepository
from pulse.catalog.version import CatalogReader, EmptyCatalog
from pulse.events.dead_letters import SqsDeadLetters
from pulse.ingest.pipeline import IngestPipeline
from pulse.interest.store import DynamoInterestStore
from pulse.privacy import log_key
from pulse.serving.int8_scan import prepare_for_serving
from pulse.serving.service import EventPublisher, RecommendationService
from pulse.settings import (
    ApiSettings,
    CatalogSettings,
    EncoderSettings,
    IngestSettings,
    Settings,
    TrainSettings,
    load_settings,
)

if TYPE_CHECKING:
    from pulse_encoder import Encoder


@container.once_per_container
def encoder_fingerprint() -> str | None:
    """The deployed encoder's fingerprint, read from its manifest (no model loaded)."""
    try:
        from pulse_encoder import DEFAULT_MODEL_DIR
    except ImportError:
        return None
    manifest = DEFAULT_MODEL_DIR / "manifest.json"
    return json.loads(manifest.read_text())["fingerprint"] if manifest.is_file() else None


def count_refused_catalog(reason: str) -> None:
    from aws_lambda_powertools import Metrics  # instances share one metric set, flushed by the handler
    from aws_lambda_powertools.metrics import MetricUnit

    Metrics().add_metric(name="CatalogRefused", unit=MetricUnit.Count, value=1)


def ingest_settings() -> IngestSettings:
    return load_settings(IngestSettings)


def api_settings() -> ApiSettings:
    return load_settings(ApiSettings)


def catalog_settings() -> CatalogSettings:
    return load_settings(CatalogSettings)


def train_settings() -> TrainSettings:
    return load_settings(TrainSettings)


def catalog_repository() -> S3CatalogRepository:
    config = load_settings(Settings)
    return S3CatalogRepository(config.require("bucket"), config.catalog_prefix)


def encoder() -> Encoder:
    from pulse_encoder import load_encoder

    return load_encoder(intra_op_threads=load_settings(EncoderSettings).encoder_threads)


@container.once_per_container
def live_catalog() -> LiveCatalog | None:
    config = load_settings(Settings)
    if not config.bucket:
        return None
    return LiveCatalog(catalog_repository(), encoder_fingerprint(),
                       check_interval=config.catalog_check_seconds, on_refused=count_refused_catalog)


def interest_store() -> DynamoInterestStore:
    config = load_settings(Settings)
    return DynamoInterestStore(config.table_name, ttl_days=config.ttl_days, attempts=config.write_attempts,
                               tombstone_days=config.tombstone_days)


@container.once_per_container
def ingest_pipeline() -> IngestPipeline:
    config = ingest_settings()
    log_key()  # at the first invocation: a missing or unreadable key fails now, clearly
    dead_letter_queue = config.require("dead_letter_queue_url")
    catalog: CatalogReader = live_catalog() or EmptyCatalog()
    return IngestPipeline(store=interest_store(), load_embedder=encoder, catalog=catalog,
                          dead_letters=SqsDeadLetters(dead_letter_queue, config.bucket), settings=config)


@container.once_per_container
def api_service() -> RecommendationService:
    config = api_settings()
    log_key()
    config.require("bucket")
    catalog = live_catalog()
    assert catalog is not None  # PULSE_BUCKET is set (required above)
    catalog.prepare_with(prepare_for_serving, rows_dir=tempfile.gettempdir())
    return RecommendationService(store=interest_store(), catalog=catalog, settings=config,
                                 encoder_fingerprint=encoder_fingerprint())


@container.once_per_container
def event_publisher() -> EventPublisher:
    config = api_settings()
    return EventPublisher(config.require("stream_name"), settings=config)


def reset_caches() -> None:
    """Forget everything built from the environment, as a new container would (tests and the local stack change
    it): every cache registered with pulse.container, these builders', the settings' and the clients' alike."""
    container.reset()
