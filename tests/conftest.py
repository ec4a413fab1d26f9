"""Test-wide settings: no real AWS account is ever reachable, tracing is off (no X-Ray daemon), and no test leaves
the process's environment changed for the tests after it (they run in random order, and in parallel)."""

import logging
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_SERVICE_NAME": "pulse", "POWERTOOLS_METRICS_NAMESPACE": "Pulse",
})
os.environ.pop("AWS_PROFILE", None)
# An explicit log-reference key for code run outside the local stack (which creates the template's secret).
os.environ["PULSE_LOG_HASH_KEY"] = secrets.token_hex(32)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def encoder():
    """The real int8 encoder (built by `make encoder`)."""
    from pulse_encoder import load_encoder

    return load_encoder()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """A test marked `summary` reads what the other tests of its module recorded: whatever the (random) order,
    it runs right after the last of them."""
    for summary in [item for item in items if item.get_closest_marker("summary")]:
        last = max(index for index, item in enumerate(items) if item.module is summary.module)
        items.remove(summary)
        items.insert(last, summary)


@pytest.fixture(autouse=True)
def environment_left_as_found(request):
    """A test that leaves os.environ changed (itself or through its function-scoped fixtures) fails, and the
    environment is put back: what it changed would otherwise steer the tests that happen to run after it."""
    before = dict(os.environ)
    yield
    after = dict(os.environ)
    for snapshot in (before, after):
        snapshot.pop("PYTEST_CURRENT_TEST", None)  # pytest's own, set per test phase
    if after != before:
        from pulse.wiring import reset_caches

        for name in after.keys() - before.keys():
            del os.environ[name]
        os.environ.update(before)
        reset_caches()
        changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
        pytest.fail(f"the test left os.environ changed ({', '.join(changed)}); restore what it sets "
                    "(monkeypatch.setenv, LocalStack.activated())", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """`slow` means something: a test that starts Python or sam in a process (the pulse CLI, a built function, a
    local runtime's moto server, sam build) and is not marked slow fails, so `pytest -m "not slow"` stays a quick
    inner loop. (The session's one shared moto server starts in a fixture and does not count.)"""
    if item.get_closest_marker("slow") is not None:
        return (yield)
    started = []
    real_init = subprocess.Popen.__init__

    def recording_init(self, args, *more, **options):
        program = Path(str(args if isinstance(args, str | bytes | os.PathLike) else args[0])).name
        if program.startswith("python") or program == "sam":  # not a library's helper (lscpu)
            started.append(args)
        real_init(self, args, *more, **options)

    subprocess.Popen.__init__ = recording_init
    try:
        result = yield
    finally:
        subprocess.Popen.__init__ = real_init
    if started:
        pytest.fail(f"the test starts a process ({started[0]}) but is not marked slow: add @pytest.mark.slow",
                    pytrace=False)
    return result


class _LogLines:
    """Records at INFO and above, as text: their message, their extra fields and their exception."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {key: value for key, value in vars(record).items() if key not in ("msg", "args", "exc_info")}
            trace = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
            self.lines.append(f"{record.getMessage()} {fields!r} {trace}")
        except Exception:  # noqa: BLE001 - a record that cannot be rendered is not this check's business
            pass


def _distinctive(user_id: str) -> bool:
    """Ids long and specific enough that finding them in a log line means the id is there (not '196' in a count
    or 'u1' in a hex digest)."""
    return len(user_id) >= 5 and any(char.isalpha() for char in user_id) and not re.fullmatch(r"[0-9a-f]+", user_id)


@pytest.fixture(autouse=True)
def no_raw_user_id_in_logs():
    """README, Privacy: a user id never reaches a log line at INFO or above in clear text. Every test is held to
    it for the ids it built events for (tests.builders.behaviour)."""
    from tests.builders import USED_USER_IDS

    USED_USER_IDS.clear()
    capture = _LogLines()
    real_handle = logging.Logger.handle

    def handle(logger: logging.Logger, record: logging.LogRecord) -> None:
        # Every logger's records, wherever their handlers are (adding a handler to Powertools' logger would
        # change which handler it takes for its own formatter).
        if record.levelno >= logging.INFO:
            capture.emit(record)
        real_handle(logger, record)

    logging.Logger.handle = handle
    try:
        yield
    finally:
        logging.Logger.handle = real_handle
    ids = sorted(user_id for user_id in USED_USER_IDS if _distinctive(user_id))
    for line in capture.lines:
        for user_id in ids:
            if user_id in line or repr(user_id)[1:-1] in line:
                pytest.fail(f"a log line at INFO or above holds the raw user id {user_id!r}: {line[:300]}",
                            pytrace=False)


@pytest.fixture(autouse=True)
def log_handlers_on_open_streams():
    """Powertools binds its handler to the sys.stdout of the moment its logger is first made; made inside a test
    that captured stdout, it would keep writing to that test's closed capture in every later test (random order
    decides which test that is). After each test, such a handler writes to the current stdout again."""
    yield
    for name in ("pulse", None):
        for handler in logging.getLogger(name).handlers:
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and getattr(stream, "closed", False):
                handler.stream = sys.stdout
