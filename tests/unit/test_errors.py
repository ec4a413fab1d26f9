"""Every error the deployed package defines descends from PulseError and keeps the builtin base callers catch."""

import importlib
import inspect

from pulse.errors import PulseError
from pulse_dev.reachable import shipped_modules
from tests.paths import REPO_ROOT

CORE = REPO_ROOT / "layers" / "core"


def errors_defined_in_the_package() -> dict[str, type[BaseException]]:
    found = {}
    for name in sorted(shipped_modules(CORE, ["pulse"])):
        module = importlib.import_module(name)
        for attribute, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name:
                found[f"{name}.{attribute}"] = value
    return found


def test_every_error_the_package_defines_is_a_pulse_error():
    errors = errors_defined_in_the_package()
    assert len(errors) >= 15
    assert [name for name, error in errors.items() if not issubclass(error, PulseError)] == []


def test_the_errors_keep_the_builtin_bases_their_callers_catch():
    from pulse.authorization import Forbidden, Unauthorized
    from pulse.catalog.store import CatalogRefused, CatalogUnavailable
    from pulse.events.behaviour import InvalidEvent
    from pulse.interest.store import WriteConflictError
    from pulse.serving.service import NotFound
    from pulse.settings import ConfigurationError

    assert issubclass(InvalidEvent, ValueError) and issubclass(ConfigurationError, ValueError)
    assert issubclass(CatalogRefused, ValueError) and issubclass(CatalogUnavailable, RuntimeError)
    assert issubclass(WriteConflictError, RuntimeError) and issubclass(NotFound, LookupError)
    assert issubclass(Unauthorized, PermissionError) and issubclass(Forbidden, PermissionError)
    assert CatalogUnavailable("the store is down", retryable=True).retryable
