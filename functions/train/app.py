"""Training function (scheduled): the archive's recent events -> a candidate item space -> published only if it
passes the minimum-data rule and the quality gate; every run writes reports/training/<time>.json."""

from collections.abc import Callable

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from pulse.catalog.store import S3CatalogRepository
from pulse.observability import lambda_entry, observability
from pulse.settings import TrainSettings
from pulse.training.job import TrainingResult, deployment_options, train_catalog
from pulse.wiring import catalog_repository, train_settings

logger, tracer, metrics = observability()


def make_handler(repository: Callable[[], S3CatalogRepository] = catalog_repository,
                 settings: Callable[[], TrainSettings] = train_settings,
                 ) -> Callable[[dict, LambdaContext], dict]:
    """The handler, with the catalogue repository it publishes to and its settings (by default the container's;
    tests pass their own). The settings are read now, at cold start: a bad value fails the start."""
    settings()

    @lambda_entry(logger, tracer, metrics)
    def lambda_handler(event: dict, context: LambdaContext) -> dict:
        config = settings()
        force = bool(isinstance(event, dict) and event.get("force") is True)
        return report(train_catalog(repository(), config.require("bucket"), **deployment_options(config, force=force)))

    return lambda_handler


def report(result: TrainingResult) -> dict:
    """Metrics and a log line for one run; the summary the function returns."""
    metrics.add_metric(name="TrainingPublished" if result.published else "TrainingRefused", unit=MetricUnit.Count,
                       value=1)
    metrics.add_metric(name="TrainingSeconds", unit=MetricUnit.Seconds, value=result.seconds["total"])
    metrics.add_metric(name="TrainingEvents", unit=MetricUnit.Count, value=result.events)
    for side in ("serving", "candidate"):
        if "ndcg_at_10" in result.report.get(side, {}):
            metrics.add_metric(name=f"{side.capitalize()}NdcgAt10", unit=MetricUnit.Count,
                               value=result.report[side]["ndcg_at_10"])
    summary = {"decision": result.decision, "reason": result.reason, "version": result.version,
               "base_version": result.base_version, "events": result.events, "users": result.users,
               "warm_items": result.warm_items, "items": result.items, "report": result.report_key,
               "seconds": round(result.seconds["total"], 2), "archive_invalid": result.archive.invalid}
    if result.published:
        logger.info("training published a new item space", extra=summary)
    else:
        logger.warning("training refused to publish", extra=summary)
    return summary


lambda_handler = make_handler()
