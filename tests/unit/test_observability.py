"""Every function's log lines, the package's stdlib loggers included, carry the Powertools keys."""

import io
import json
import logging
import uuid

import pytest

from pulse.observability import PACKAGE_LOGGER, observability


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
def restore_package_logger():
    package = logging.getLogger(PACKAGE_LOGGER)
    saved = (list(package.handlers), package.level, package.propagate)
    yield
    package.handlers, package.level, package.propagate = saved[0], saved[1], saved[2]


def test_under_another_service_name_the_package_loggers_write_through_the_functions_logger(
        monkeypatch, restore_package_logger):
    service = f"shop-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", service)
    stream = io.StringIO()
    logger, tracer, metrics = observability(stream=stream)
    logger.append_keys(function_request_id="req-1")
    logging.getLogger("pulse.ingest.pipeline").warning("batch %s held back", 7)
    [line] = lines(stream)
    assert line["message"] == "batch 7 held back" and line["level"] == "WARNING"
    assert line["service"] == service and line["function_request_id"] == "req-1"
    assert logger.name == service and tracer is not None and metrics is not None


def test_without_the_routing_another_service_would_lose_the_package_lines(monkeypatch, restore_package_logger):
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"shop-{uuid.uuid4().hex[:8]}")
    stream = io.StringIO()
    from aws_lambda_powertools import Logger

    Logger(stream=stream)  # what a handler had before: its own logger only
    logging.getLogger("pulse.catalog.store").warning("refused")
    assert lines(stream) == []


def test_under_the_default_service_the_package_loggers_are_its_children():
    logger, _, _ = observability()
    assert logger.name == PACKAGE_LOGGER == "pulse"
    assert logging.getLogger("pulse.ingest.pipeline").parent is logging.getLogger(PACKAGE_LOGGER)
