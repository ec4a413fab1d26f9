"""Catalogue function: a JSON Lines file put under incoming/ becomes a new catalogue version (Lambda face)."""

import json

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from pulse import aws
from pulse.catalog.build import InvalidCatalogError, publish_catalog, uploaded_objects
from pulse.observability import observability
from pulse.settings import CatalogSettings, load_settings
from pulse.wiring import catalog_repository, encoder

logger, tracer, metrics = observability()
load_settings(CatalogSettings)  # at cold start: a bad setting fails the start, naming its variable


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    results = []
    for bucket, key in uploaded_objects(event):
        body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        try:
            published = publish_catalog(body.splitlines(), encoder(), catalog_repository(),
                                        skip_invalid=load_settings(CatalogSettings).catalog_skip_invalid)
        except InvalidCatalogError as error:
            # Retrying cannot fix the file: report it next to the input and stop here.
            metrics.add_metric(name="CatalogFilesRejected", unit=MetricUnit.Count, value=1)
            logger.error("catalogue file rejected", extra={"key": key, "problems": error.problems[:50]})
            write_report(bucket, key, {"status": "rejected", "error": str(error), "problems": error.problems})
            results.append({"key": key, "status": "rejected", "problems": len(error.problems)})
            continue
        metrics.add_metric(name="CatalogItemsPublished", unit=MetricUnit.Count, value=published.items)
        report = {"status": "published", "version": published.version, "items": published.items,
                  "new_files": published.new_files, "skipped": published.skipped}
        write_report(bucket, key, report)
        logger.info("catalogue published", extra={"key": key, **report, "skipped": len(published.skipped)})
        results.append({"key": key, "status": "published", "version": published.version})
    return {"results": results}


def write_report(bucket: str, key: str, report: dict) -> None:
    aws.client("s3").put_object(Bucket=bucket, Key=f"reports/{key}.json", Body=json.dumps(report).encode())
