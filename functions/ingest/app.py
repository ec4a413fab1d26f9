"""Ingest function: Kinesis behaviour events -> decayed interest in DynamoDB (the Lambda face only)."""

import time
from collections.abc import Callable

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from pulse.errors import PulseError
from pulse.events.stream import StreamRecord
from pulse.ingest.pipeline import IngestPipeline, IngestReport
from pulse.observability import lambda_entry, observability
from pulse.settings import IngestSettings
from pulse.wiring import ingest_pipeline, ingest_settings

logger, tracer, metrics = observability()


class RecordNotAppliedError(PulseError):
    """Reported to Lambda as a batch item failure: it retries from the lowest such record."""


def make_handler(pipeline: Callable[[], IngestPipeline] = ingest_pipeline,
                 settings: Callable[[], IngestSettings] = ingest_settings) -> Callable[[dict, LambdaContext], dict]:
    """The handler, with the pipeline it applies batches through (by default the container's, built on first use
    from the environment; the bench and tests pass their own). The settings are read now, at cold start: a bad
    value fails the start, naming its variable."""
    settings()

    @lambda_entry(logger, tracer, metrics)
    def lambda_handler(event: dict, context: LambdaContext) -> dict:
        started = time.perf_counter()
        report = pipeline().process([StreamRecord.from_lambda(record) for record in event["Records"]])
        publish(report, elapsed_ms=(time.perf_counter() - started) * 1000)
        failed = set(report.failed_sequence_numbers)

        def check_applied(record: KinesisStreamRecord) -> None:
            if record.kinesis.sequence_number in failed:
                raise RecordNotAppliedError(record.kinesis.sequence_number)

        processor = BatchProcessor(event_type=EventType.KinesisDataStreams)
        return process_partial_response(event=event, record_handler=check_applied, processor=processor,
                                        context=context)

    return lambda_handler


lambda_handler = make_handler()


def publish(report: IngestReport, elapsed_ms: float) -> None:
    metrics.add_metric(name="EventsAccepted", unit=MetricUnit.Count, value=report.accepted)
    metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=report.rejected)
    metrics.add_metric(name="EventsDeduplicated", unit=MetricUnit.Count, value=report.duplicates)
    metrics.add_metric(name="RecordsRedelivered", unit=MetricUnit.Count, value=report.redelivered)
    metrics.add_metric(name="EventsOfForgottenUsers", unit=MetricUnit.Count, value=report.forgotten)
    metrics.add_metric(name="RecordsFailed", unit=MetricUnit.Count, value=len(report.failed_sequence_numbers))
    metrics.add_metric(name="UserWrites", unit=MetricUnit.Count, value=report.user_writes)
    metrics.add_metric(name="BatchLatency", unit=MetricUnit.Milliseconds, value=elapsed_ms)
    for sequence_number, reason in report.rejections:
        logger.warning("record rejected to the dead-letter queue", extra={"sequence_number": sequence_number,
                                                                          "reason": reason})
    logger.info("batch applied", extra={"records": report.records, "accepted": report.accepted,
                                        "rejected": report.rejected, "duplicates": report.duplicates,
                                        "redelivered": report.redelivered, "forgotten": report.forgotten,
                                        "user_writes": report.user_writes,
                                        "failed": len(report.failed_sequence_numbers),
                                        "texts_embedded": report.texts_embedded})
