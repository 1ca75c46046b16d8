from __future__ import annotations

import pytest

from reportsync import errors
from reportsync.errors import ExitCode, most_severe


@pytest.mark.parametrize(
    ("error_class", "code"),
    [
        (errors.UsageError, 2),
        (errors.ConfigError, 2),
        (errors.NetworkError, 3),
        (errors.AuthenticationError, 4),
        (errors.HostKeyError, 5),
        (errors.TlsError, 5),
        (errors.KeyProblemError, 6),
        (errors.StorageError, 7),
        (errors.DecryptionError, 1),
        (errors.TransferError, 1),
        (errors.UnsafeNameError, 1),
        (errors.RemoteError, 1),
        (errors.LockHeldError, 75),
    ],
)
def test_every_error_class_carries_its_exit_code_and_a_remedy(error_class: type, code: int) -> None:
    error = error_class(["x"]) if error_class is errors.ConfigError else error_class("x")
    assert int(error.exit_code) == code
    assert error.remedy, "every error says what to do"


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
