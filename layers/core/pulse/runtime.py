"""Wiring the real dependencies, once per container (lazily: nothing connects at import time)."""

from __future__ import annotations

from functools import lru_cache

from pulse.catalog import EmptyCatalog
from pulse.dead_letters import SqsDeadLetters
from pulse.ingest import IngestPipeline
from pulse.settings import ConfigurationError, settings
from pulse.store import DynamoInterestStore


@lru_cache(maxsize=1)
def ingest_pipeline() -> IngestPipeline:
    config = settings()
    if not config.dead_letter_queue_url:
        raise ConfigurationError("PULSE_DLQ_URL is required by the ingest function (the dead-letter queue URL)")

    def load_embedder():
        from pulse_encoder import load_encoder

        return load_encoder(intra_op_threads=config.encoder_threads)

    return IngestPipeline(
        store=DynamoInterestStore(config.table_name, ttl_days=config.ttl_days, attempts=config.write_attempts),
        load_embedder=load_embedder,
        catalog=EmptyCatalog(),
        dead_letters=SqsDeadLetters(config.dead_letter_queue_url),
        settings=config,
    )
