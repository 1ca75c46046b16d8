"""The one retry policy (transports/retry.py) on its own, over the in-memory transport."""

from __future__ import annotations

import io

import pytest

from reportsync.errors import (
    AuthenticationError,
    NetworkError,
    RemoteError,
    ReportsyncError,
    StorageError,
)
from reportsync.transports.memory import MemoryServer
from reportsync.transports.retry import RetryingTransport, RetryPolicy


def policy(retries: int, waits: list[float] | None = None) -> RetryPolicy:
    return RetryPolicy(retries, backoff_base=1.0, sleep=(waits.append if waits is not None
                                                         else lambda seconds: None))


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    waits: list[float] = []
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 8:
            raise NetworkError("timed out")
        return "done"

    assert policy(7, waits).call(flaky, "list") == "done"
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_only_retryable_errors_are_retried_and_retries_end() -> None:
    attempts: list[ReportsyncError] = []

    def failing(error: ReportsyncError) -> None:
        attempts.append(error)
        raise error

    with pytest.raises(AuthenticationError):
        policy(5).call(lambda: failing(AuthenticationError("no")), "connect")
    assert len(attempts) == 1
    attempts.clear()
    with pytest.raises(NetworkError):
        policy(2).call(lambda: failing(NetworkError("down")), "connect")
    assert len(attempts) == 3, "the first attempt and two retries"


def test_a_download_cut_twice_resumes_each_time_and_the_sink_gets_each_byte_once() -> None:
    server = MemoryServer()
    data = bytes(range(256)) * 1000
    server.put("r.xml", data)
    server.faults.cut_after = 100_000
    server.faults.cut_connections = {1, 2}
    sink = io.BytesIO()
    with RetryingTransport(lambda: server.connect("s"), policy(2), "s") as transport:
        assert transport.download("r.xml", sink, expected_size=len(data)) == len(data)
    assert sink.getvalue() == data
    downloads = [op for op in server.operations if op.startswith("download")]
    assert downloads == ["download r.xml@0", "download r.xml@100000", "download r.xml@200000"]
    assert server.connections == 3


def test_an_error_of_the_sink_itself_is_never_retried() -> None:
    server = MemoryServer()
    server.put("r.xml", b"x" * 100_000)

    class FullDisk:
        def write(self, data: bytes, /) -> int:
            raise StorageError("No space left on device")

    with RetryingTransport(lambda: server.connect("s"), policy(3), "s") as transport, \
            pytest.raises(StorageError):
        transport.download("r.xml", FullDisk())
    assert [op for op in server.operations if op.startswith("download")] == ["download r.xml@0"]


def test_a_permanent_error_keeps_the_connection_and_a_transient_one_replaces_it() -> None:
    server = MemoryServer()
    server.put("r.xml", b"data")
    with RetryingTransport(lambda: server.connect("s"), policy(1), "s") as transport:
        with pytest.raises(RemoteError):
            transport.download("missing.xml", io.BytesIO())
        assert server.connections == 1, "a missing file says nothing about the connection"
        server.drop_connections()
        assert [remote.name for remote in transport.list_files()] == ["r.xml"]
        assert server.connections == 2


def test_once_reconnecting_fails_for_good_the_transport_stays_down() -> None:
    server = MemoryServer()
    server.put("r.xml", b"data")
    with RetryingTransport(lambda: server.connect("s"), policy(1), "s") as transport:
        transport.list_files()
        server.drop_connections()
        server.faults.connect_error = NetworkError("connection refused")
        with pytest.raises(NetworkError):
            transport.stat("r.xml")
        assert transport.down is not None
        attempts = server.connect_attempts
        with pytest.raises(NetworkError):
            transport.list_files()
        assert server.connect_attempts == attempts, "no new wait for every remaining file"
