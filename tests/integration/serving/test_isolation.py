"""What keeps the suite independent of order and of parallel jobs: moto's server binds its own port and says
which (no port probed, closed and handed over: another job could take it in between), the local stack gives the
environment back, and a test that leaves os.environ changed fails."""

import os
import select
import socket
import subprocess
import sys
import urllib.request

import boto3
import pytest

from pulse_dev.local.stack import LocalStack
from tests.paths import REPO_ROOT

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.slow  # each test starts a process of its own
ROOT = REPO_ROOT


@pytest.fixture
def suite(pytester, monkeypatch):
    """A pytest of its own in a temporary folder, with this suite's tests/conftest.py (run in a subprocess)."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the conftest imports tests.builders
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    slow: starts a process\n    summary: runs after its module's tests\n")
    return pytester


def test_moto_server_binds_port_zero_itself_and_reports_the_bound_port():
    server = subprocess.Popen([sys.executable, "-m", "pulse_dev.local.moto_process", "127.0.0.1", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready, _, _ = select.select([server.stdout], [], [], 120)
        assert ready, "moto's server wrote no port within 120 s"
        port = server.stdout.readline().strip()
        assert port.isdigit() and int(port) > 0, f"first line {port!r} is not the bound port"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/data.json", timeout=30) as response:
            assert response.status == 200  # listening already: no wait for the port to open
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_stack_on_a_port_in_use_fails_with_a_sentence_naming_the_address():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        stack = LocalStack(port=port)
        with pytest.raises(RuntimeError, match=rf"cannot listen on 127\.0\.0\.1:{port} .*pick another port"):
            stack.start()
    assert os.environ.get("AWS_ENDPOINT_URL") != f"http://127.0.0.1:{port}"


def test_a_stopped_stack_leaves_the_environment_as_it_found_it():
    before = dict(os.environ)
    stack = LocalStack(port=0).start()
    try:
        assert os.environ["AWS_ENDPOINT_URL"] == stack.endpoint
        stack.use_function_environments()
        assert os.environ["PULSE_TABLE"] == stack.name_of("AWS::DynamoDB::Table")
    finally:
        stack.stop()
    assert dict(os.environ) == before


def test_activated_points_the_process_at_the_stack_and_then_puts_back_what_was_there(moto_stack, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://elsewhere.invalid:1")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with moto_stack.activated():
        assert os.environ["AWS_ENDPOINT_URL"] == moto_stack.endpoint
        assert boto3.client("sqs").list_queues()["ResponseMetadata"]["HTTPStatusCode"] == 200  # reaches moto
    assert os.environ["AWS_ENDPOINT_URL"] == "http://elsewhere.invalid:1"
    assert "AWS_DEFAULT_REGION" not in os.environ
    monkeypatch.undo()
    before = dict(os.environ)
    moto_stack.activate()
    moto_stack.restore_environment()  # what the next test's `stack` does: the values above are long gone
    assert dict(os.environ) == before


def test_a_test_that_leaves_the_environment_changed_fails_and_the_next_one_sees_it_restored(suite):
    suite.makepyfile(test_leak="""
        import os

        def test_leaks():
            os.environ["PULSE_LEAKED"] = "1"

        def test_after():
            assert "PULSE_LEAKED" not in os.environ
    """)
    result = suite.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*the test left os.environ changed (PULSE_LEAKED)*"])


def test_a_test_that_starts_a_process_fails_unless_it_is_marked_slow(suite):
    suite.makepyfile(test_process="""
        import subprocess
        import sys

        import pytest

        def test_unmarked():
            subprocess.run([sys.executable, "-c", "pass"], check=True)

        @pytest.mark.slow
        def test_marked():
            subprocess.run([sys.executable, "-c", "pass"], check=True)
    """)
    result = suite.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["the test starts a process (*python*) but is not marked slow: add @pytest.mark.slow",
                                 "FAILED test_process.py::test_unmarked*"])


def test_a_summary_test_runs_after_the_tests_of_its_module_in_any_order(suite):
    suite.makepyfile(test_summary="""
        import pytest

        seen = []

        @pytest.mark.summary
        def test_summary():
            assert seen == ["a", "b", "c"]

        @pytest.mark.parametrize("name", ["a", "b", "c"])
        def test_record(name):
            seen.append(name)
            seen.sort()
    """, test_other="def test_other():\n    pass\n")
    for seed in ("1", "2"):
        result = suite.runpytest_subprocess("-p", "randomly", f"--randomly-seed={seed}", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=5)
    alone = suite.runpytest_subprocess("-k", "test_summary", "--collect-only", "-p", "no:cacheprovider")
    assert alone.ret == 0, alone.stdout.str()  # selected without the tests it follows
