"""The Powertools preamble every handler shares: one Logger, Tracer and Metrics per function, with the package's
stdlib loggers (`pulse.ingest.pipeline`, `pulse.catalog.store`, ...) written by the same JSON handler, so their
lines carry the same keys (service, cold start, request id, the user reference a handler appends)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

PACKAGE_LOGGER = "pulse"
Handler = TypeVar("Handler", bound=Callable[..., Any])


def observability(**logger_options: Any) -> tuple[Logger, Tracer, Metrics]:
    """Logger, Tracer and Metrics as POWERTOOLS_* configure them. A Logger's stdlib logger is named after its
    service: with the default service `pulse` the package's loggers are its children and propagate to it; under
    another service name they are given its handler and level."""
    logger = Logger(**logger_options)
    if logger.name != PACKAGE_LOGGER:
        logging.getLogger(PACKAGE_LOGGER)  # registered, so the copy below finds it
        copy_config_to_registered_loggers(source_logger=logger, include={PACKAGE_LOGGER})
    return logger, Tracer(), Metrics()


def lambda_entry(logger: Logger, tracer: Tracer, metrics: Metrics, **context_options: Any
                 ) -> Callable[[Handler], Handler]:
    """Powertools' three handler decorators, in the order every function uses: the Lambda context in each log line
    (`context_options`: a correlation id path, clear_state), the X-Ray segment, the metrics flushed at the end."""

    def wrap(handler: Handler) -> Handler:
        traced = tracer.capture_lambda_handler(metrics.log_metrics(handler))
        return cast(Handler, logger.inject_lambda_context(traced, **context_options))

    return wrap
