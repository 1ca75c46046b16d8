from __future__ import annotations

import importlib
import pkgutil
import re

import reportsync
from reportsync import errors
from reportsync.errors import ExitCode, most_severe
from tests.support import REPO_ROOT


def documented_error_codes() -> dict[str, int]:
    """docs/commands.md's table "Which error gives which code": class name → exit code."""
    text = (REPO_ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    section = text.split("### Which error gives which code", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (\d+) \|", section, flags=re.MULTILINE)
    assert rows, "the table is there"
    return {name: int(code) for name, code in rows}


def every_error_class() -> list[type[errors.ReportsyncError]]:
    """ReportsyncError and every subclass, recursively, from every module of the package (a
    subclass exists only once its module is imported)."""
    for module in pkgutil.walk_packages(reportsync.__path__, "reportsync."):
        importlib.import_module(module.name)
    found: list[type[errors.ReportsyncError]] = []
    pending = [errors.ReportsyncError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def public_ancestor(cls: type) -> type:
    return next(base for base in cls.__mro__ if not base.__name__.startswith("_"))


def test_every_error_class_exits_with_its_documented_code_and_has_a_remedy() -> None:
    documented = documented_error_codes()
    classes = every_error_class()
    names = {cls.__name__ for cls in classes if not cls.__name__.startswith("_")}
    assert len(names) == len([cls for cls in classes if not cls.__name__.startswith("_")]), \
        "one class per name: the name is what --json reports"
    assert sorted(documented) == sorted(names), "docs/commands.md lists exactly these classes"
    for cls in classes:
        # a private subclass (a detail of one module) reports its public parent's code
        expected = documented[public_ancestor(cls).__name__]
        assert int(cls.exit_code) == expected, f"{cls.__qualname__} ({cls.__module__})"
        assert int(cls.exit_code) in {int(code) for code in ExitCode}
        assert cls.default_remedy or cls is errors.ReportsyncError or cls.__name__.startswith("_"), \
            f"{cls.__name__} says what to do"
    made = [errors.ConfigError(["x"]) if cls is errors.ConfigError else cls("x")
            for cls in classes if cls.__init__ is errors.ReportsyncError.__init__
            or cls is errors.ConfigError]
    for error in made:
        assert error.remedy or type(error) is errors.ReportsyncError, type(error).__name__
        assert error.to_dict()["exit_code"] == int(error.exit_code)


def test_only_transient_errors_are_retryable() -> None:
    assert errors.NetworkError("x").retryable
    assert errors.TransferError("x").retryable
    assert not errors.AuthenticationError("x").retryable
    assert not errors.HostKeyError("x").retryable


def test_priority_order_of_spec() -> None:
    order = [2, 5, 4, 6, 7, 3, 1]
    for index, code in enumerate(order):
        assert most_severe(order[index:]) == code
    assert most_severe([0, 0]) == ExitCode.OK
    assert most_severe([]) == ExitCode.OK
    assert most_severe([1, 3]) == ExitCode.NETWORK
    assert most_severe([3, 4, 7]) == ExitCode.AUTH


def test_describe_names_source_and_file() -> None:
    error = errors.DecryptionError("bad").with_context(source="ibkr", path="a.pgp")
    assert error.describe() == "source 'ibkr', a.pgp: bad"
    error.with_context(source="other")
    assert error.source == "ibkr", "context already known is not overwritten"


def test_config_error_lists_every_problem() -> None:
    error = errors.ConfigError(["a: wrong", "b: wrong"], path="/c.toml")
    assert "2 config problems" in error.message
    assert error.to_dict()["problems"] == ["a: wrong", "b: wrong"]
