"""Training function (scheduled): the archive's recent events -> a hybrid item space -> a new catalogue version."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from pulse.collaborative import SpaceConfig
from pulse.runtime import catalog_repository
from pulse.settings import settings
from pulse.training import train_catalog

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    config = settings()
    space = SpaceConfig(dim=config.collab_dim, text_weight=config.text_weight, collab_weight=config.collab_weight)
    result = train_catalog(catalog_repository(), config.require("bucket", "PULSE_BUCKET"),
                           days=config.training_days, config=space)
    metrics.add_metric(name="TrainingSeconds", unit=MetricUnit.Seconds, value=result.seconds["total"])
    metrics.add_metric(name="TrainingEvents", unit=MetricUnit.Count, value=result.events)
    summary = {"version": result.version, "base_version": result.base_version, "events": result.events,
               "users": result.users, "warm_items": result.warm_items, "items": result.items,
               "seconds": round(result.seconds["total"], 2), "archive_invalid": result.archive.invalid}
    logger.info("hybrid catalogue published", extra=summary)
    return summary
