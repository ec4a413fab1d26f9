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
    assert len(errors) >= 14
    assert [name for name, error in errors.items() if not issubclass(error, PulseError)] == []


def test_the_errors_keep_the_builtin_bases_their_callers_catch():
    from pulse.authorization import ForbiddenError, UnauthorizedError
    from pulse.catalog.store import CatalogRefusedError, CatalogUnavailableError
    from pulse.events.behaviour import InvalidEventError
    from pulse.interest.store import WriteConflictError
    from pulse.serving.service import NotFoundError
    from pulse.settings import ConfigurationError

    assert issubclass(InvalidEventError, ValueError) and issubclass(ConfigurationError, ValueError)
    assert issubclass(CatalogRefusedError, ValueError) and issubclass(CatalogUnavailableError, RuntimeError)
    assert issubclass(WriteConflictError, RuntimeError) and issubclass(NotFoundError, LookupError)
    assert issubclass(UnauthorizedError, PermissionError) and issubclass(ForbiddenError, PermissionError)
    assert CatalogUnavailableError("the store is down", retryable=True).retryable


def test_every_error_is_named_for_what_went_wrong_and_ends_in_error():
    names = [name.rsplit(".", 1)[1] for name in errors_defined_in_the_package()]
    assert [name for name in names if not name.endswith("Error")] == []
