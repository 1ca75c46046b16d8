"""SFTP downloads of big files against the real sshd: bounded reads in flight, flat memory, no
background thread (docs/fetch.md, "SFTP reads and memory").

The files are sparse zeros made on the server side in no time; a ``.xml`` name of zeros cannot
pass for a PGP message (tests/support.py, ``random_plain``).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import paramiko
import pytest

import reportsync.transports.sftp.wire as sftp_module
from benchmarks.measure import BenchError, run_measured
from reportsync.errors import NetworkError
from reportsync.transports import open_transport
from reportsync.transports.sftp import SftpTransport
from reportsync.transports.sftp.wire import NO_REPLY_WANTED
from tests.servers import LocalServer
from tests.support import REPO_ROOT, PgpIdentity, write_config
from tests.test_sftp_transport import make_source, put

# paramiko's prefetch thread used to die with "Socket is closed" when a connection dropped
# under it: no test of these modules may leave a thread's traceback behind.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

MIB = 1024 * 1024
READS_BOUND = 64
"""Outstanding READ requests a download may keep, far below the 1,024 requests of 32 KiB
(paramiko's prefetch sends them all) that a 32 MiB file takes."""


def sparse_zeros(server: LocalServer, name: str, size: int) -> Path:
    path = server.remote_root / name
    with path.open("wb") as handle:
        handle.truncate(size)
    return path


def connect(server: LocalServer, tmp_path: Path) -> SftpTransport:
    transport = open_transport(make_source(server, tmp_path))
    assert isinstance(transport, SftpTransport)
    return transport


def outstanding(transport: SftpTransport) -> int:
    """Requests paramiko's SFTP session has sent and not yet seen answered, whose replies someone
    will hold (a CLOSE sent without waiting, ``wire.close_later``, has its reply dropped)."""
    expecting = transport._sftp._expecting  # type: ignore[attr-defined]
    return sum(1 for owner in expecting.values() if owner is not NO_REPLY_WANTED)


class CountingSink:
    """A destination that checks the bytes are zeros, counts them and watches the session."""

    def __init__(self, transport: SftpTransport, *, pause_every: int = 0) -> None:
        self.transport = transport
        self.pause_every = pause_every
        self.writes = 0
        self.bytes = 0
        self.most_outstanding = 0
        self.largest_write = 0

    def write(self, data: bytes, /) -> int:
        assert not data.strip(b"\0"), "the file is all zeros"
        self.writes += 1
        self.bytes += len(data)
        self.largest_write = max(self.largest_write, len(data))
        self.most_outstanding = max(self.most_outstanding, outstanding(self.transport))
        if self.pause_every and self.writes % self.pause_every == 0:
            time.sleep(0.002)  # a slow disk: replies wait for the consumer
        return len(data)


def test_a_slow_destination_keeps_a_bounded_number_of_reads_in_flight(
    sftp_server: LocalServer, tmp_path: Path,
) -> None:
    size = 32 * MIB
    sparse_zeros(sftp_server, "big.xml", size)
    with connect(sftp_server, tmp_path) as transport:
        sink = CountingSink(transport, pause_every=2)
        assert transport.download("big.xml", sink) == size
        assert outstanding(transport) == 0  # nothing left to arrive after the download
    assert sink.bytes == size
    assert 0 < sink.most_outstanding <= READS_BOUND


@pytest.mark.slow
def test_memory_stays_flat_when_a_background_request_sender_falls_behind(
    sftp_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The outlier of issue 11 (312 MiB peak for a 256 MiB report, 8-15x slower), made
    deterministic: a thread that sends READ requests in the background (paramiko's prefetch) is
    held up after its first request, as a loaded machine can deschedule it. The reader then
    drains the replies "so far", paramiko takes its prefetch for done, and the replies still
    coming pile up unread in memory (restarting the prefetch, as the transport once did, asks
    for the rest twice: the second copies pile up instead). A reader that sends its own
    requests is not affected: nothing is sent from another thread."""
    downloading = threading.current_thread()
    background_reads = 0
    send = paramiko.SFTPClient._async_request  # type: ignore[attr-defined]

    def held_up_in_the_background(self: paramiko.SFTPClient, fileobj: object, kind: int,
                                  *args: Any) -> int:
        nonlocal background_reads
        if threading.current_thread() is not downloading and kind == paramiko.sftp.CMD_READ:
            background_reads += 1
            if background_reads == 2:
                time.sleep(0.5)  # descheduled after its first request was on its way
        number: int = send(self, fileobj, kind, *args)
        return number

    monkeypatch.setattr(paramiko.SFTPClient, "_async_request", held_up_in_the_background)
    size = 128 * MIB
    sparse_zeros(sftp_server, "big.xml", size)
    with connect(sftp_server, tmp_path) as transport:
        sink = CountingSink(transport)
        # Python's own count of the memory it holds (RSS would hide memory the heap reuses);
        # the window allows 16 replies of 255 KiB plus the 2 MiB channel window
        tracemalloc.start()
        try:
            assert transport.download("big.xml", sink) == size
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert sink.bytes == size
    assert peak < 16 * MIB, f"{peak / MIB:.0f} MiB held at the peak"


def test_a_download_leaves_no_thread_behind_even_when_the_connection_drops(
    sftp_server: LocalServer, tmp_path: Path,
) -> None:
    sparse_zeros(sftp_server, "big.xml", 16 * MIB)
    before = set(threading.enumerate())
    seen: set[threading.Thread] = set()
    with connect(sftp_server, tmp_path) as transport:
        session_threads = set(threading.enumerate()) - before  # paramiko's transport reader

        def watch(_: int) -> None:
            seen.update(threading.enumerate())

        transport.download("big.xml", io.BytesIO(), progress=watch)
        assert seen - before - session_threads == set(), "the download started a thread"

        # the connection drops mid-transfer: no thread may be left to die noisily
        sparse_zeros(sftp_server, "big2.xml", 16 * MIB)

        def drop(_: int) -> None:
            seen.update(threading.enumerate())
            transport.session.close()

        with pytest.raises(NetworkError):
            transport.download("big2.xml", io.BytesIO(), progress=drop)
    assert seen - before - session_threads == set()


def test_short_reads_are_completed_in_order_and_shrink_later_requests(
    sftp_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # OpenSSH answers at most 255 KiB per READ: asking for 1 MiB gets short reads from the real
    # server, whose rest must be asked for before anything later
    monkeypatch.setattr(sftp_module, "READ_REQUEST_BYTES", MIB)
    data = os.urandom(5 * MIB + 123)
    put(sftp_server, "big.pgp", data)
    sizes: list[int] = []
    with connect(sftp_server, tmp_path) as transport:
        sink = io.BytesIO()
        assert transport.download("big.pgp", sink, offset=7, progress=sizes.append) == len(data) - 7
        assert outstanding(transport) == 0
    assert hashlib.sha256(sink.getvalue()).digest() == hashlib.sha256(data[7:]).digest()
    assert max(sizes) == 255 * 1024  # the server's cap, learned from its first answer
    assert len(sizes) <= len(data) // (255 * 1024) + 2 * sftp_module.READS_IN_FLIGHT


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_cli_fetch_of_a_256_mib_report_stays_under_100_mib(
    sftp_server: LocalServer, tmp_path: Path, pgp_identity: PgpIdentity,
) -> None:
    """The whole ``reportsync fetch --no-decrypt`` process, measured by the kernel (its VmHWM,
    as the benchmark runner measures it; ``ru_maxrss`` would carry this test process's peak)."""
    size = 256 * MIB
    sparse_zeros(sftp_server, "U1.Activity.20261102.xml", size)
    download_dir = tmp_path / "encrypted"
    config = write_config(tmp_path / "config.toml", {
        "settings": {"state_dir": str(tmp_path / "state"),
                     "gnupg_home": str(pgp_identity.home)},
        "sources": {"broker": {**sftp_server.source, "download_dir": str(download_dir),
                               "output_dir": str(tmp_path / "statements"),
                               "include": ["*.xml"], "timeout": 10, "retries": 0}},
    })
    try:
        sample = run_measured(
            [sys.executable, "-m", "reportsync", "--config", str(config), "fetch", "--no-decrypt"],
            timeout=300, cwd=REPO_ROOT)
    except BenchError as failed:
        pytest.fail(str(failed))
    assert (download_dir / "U1.Activity.20261102.xml").stat().st_size == size
    peak = sample.maxrss_kib * 1024  # wait4's ru_maxrss through benchmarks.spawn
    assert 0 < peak < 100 * MIB, f"peak RSS {peak / MIB:.0f} MiB"
