"""Catalogue function: a JSON Lines file put under incoming/ becomes a new catalogue version (Lambda face)."""

import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from pulse import aws
from pulse.catalog.build import InvalidCatalogError, publish_catalog, uploaded_objects
from pulse.catalog.store import S3CatalogRepository
from pulse.observability import lambda_entry, observability
from pulse.settings import CatalogSettings
from pulse.wiring import catalog_repository, catalog_settings, encoder

logger, tracer, metrics = observability()


def make_handler(embedder: Callable[[], Any] = encoder,
                 repository: Callable[[], S3CatalogRepository] = catalog_repository,
                 settings: Callable[[], CatalogSettings] = catalog_settings,
                 ) -> Callable[[dict, LambdaContext], dict]:
    """The handler, with what it publishes through (by default the container's encoder, S3 repository and
    settings, each built on first use; tests pass their own). The settings are read now, at cold start: a bad
    value fails the start, naming its variable."""
    settings()

    @lambda_entry(logger, tracer, metrics)
    def lambda_handler(event: dict, context: LambdaContext) -> dict:
        return {"results": [publish_upload(bucket, key, embedder(), repository(), settings().catalog_skip_invalid)
                            for bucket, key in uploaded_objects(event)]}

    return lambda_handler


def publish_upload(bucket: str, key: str, embedder: Any, repository: S3CatalogRepository,
                   skip_invalid: bool) -> dict:
    """One uploaded file: published as a new version, or rejected with its problems; a report beside it."""
    body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        published = publish_catalog(body.splitlines(), embedder, repository, skip_invalid=skip_invalid)
    except InvalidCatalogError as error:
        # Retrying cannot fix the file: report it next to the input and stop here.
        metrics.add_metric(name="CatalogFilesRejected", unit=MetricUnit.Count, value=1)
        logger.error("catalogue file rejected", extra={"key": key, "problems": error.problems[:50]})
        write_report(bucket, key, {"status": "rejected", "error": str(error), "problems": error.problems})
        return {"key": key, "status": "rejected", "problems": len(error.problems)}
    metrics.add_metric(name="CatalogItemsPublished", unit=MetricUnit.Count, value=published.items)
    report = {"status": "published", "version": published.version, "items": published.items,
              "new_files": published.new_files, "skipped": published.skipped}
    write_report(bucket, key, report)
    logger.info("catalogue published", extra={"key": key, **report, "skipped": len(published.skipped)})
    return {"key": key, "status": "published", "version": published.version}


def write_report(bucket: str, key: str, report: dict) -> None:
    aws.client("s3").put_object(Bucket=bucket, Key=f"reports/{key}.json", Body=json.dumps(report).encode())


lambda_handler = make_handler()
