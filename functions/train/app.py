"""Training function (scheduled): the archive's recent events -> a candidate item space -> published only if it
passes the minimum-data rule and the quality gate; every run writes reports/training/<time>.json."""

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from pulse.observability import observability
from pulse.settings import TrainSettings, load_settings
from pulse.training.job import deployment_options, train_catalog
from pulse.wiring import catalog_repository

logger, tracer, metrics = observability()
load_settings(TrainSettings)  # at cold start: a bad setting fails the start, naming its variable


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    config = load_settings(TrainSettings)
    force = bool(isinstance(event, dict) and event.get("force") is True)
    result = train_catalog(catalog_repository(), config.require("bucket"),
                           **deployment_options(config, force=force))
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
