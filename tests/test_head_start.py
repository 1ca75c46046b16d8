"""The first source's login started ahead (``transports/head_start.py``) and the ledger read
behind the listing (``fetch/runner.py``), with ``background.Background`` under both.

Over the in-memory server, where every connection is counted; then the real CLI against the
real sshd: one login per fetch, and a login nobody used (the run stopped at the lock) leaves no
ssh and no key link behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reportsync import fetch
from reportsync.background import Background
from reportsync.config import SourceConfig
from reportsync.errors import ConfigError, LedgerDamagedError, NetworkError
from reportsync.fetch import FetchOptions
from reportsync.ledger import Ledger
from reportsync.lock import RunLock
from reportsync.transports import Transport
from reportsync.transports.head_start import HeadStart, head_start
from reportsync.transports.openssh_program import find_ssh
from reportsync.vocab import Action
from tests.fixtures_memory import MemoryWorkspace
from tests.servers import LocalServer
from tests.support import PgpIdentity, processes, run_cli
from tests.test_fetch_e2e import Workspace
from tests.test_sftp_openssh import SshdLog

# --- Background ------------------------------------------------------------------------------


def test_background_gives_the_value_and_raises_the_error_in_the_callers_thread() -> None:
    worked_in: list[str] = []

    def work() -> int:
        worked_in.append(threading.current_thread().name)
        return 42

    assert Background(work, "answer").result() == 42
    assert worked_in == ["answer"]

    def fail() -> int:
        raise NetworkError("the server went away")

    failing = Background(fail, "failing")
    failing.wait()  # ended, nothing raised yet
    with pytest.raises(NetworkError, match="went away"):
        failing.result()


# --- HeadStart over the in-memory server -------------------------------------------------------


def starter(mem: MemoryWorkspace, started: list[Transport]) -> Callable[
        [SourceConfig], Callable[[], Transport]]:
    def start(source: SourceConfig) -> Callable[[], Transport]:
        def login() -> Transport:
            transport = mem.connect(source)
            started.append(transport)
            return transport
        return login
    return start


def test_the_fetch_uses_the_connection_started_ahead(mem: MemoryWorkspace) -> None:
    mem.put("a.xml", b"<a/>")
    mem.put("b.xml", b"<b/>")
    config = mem.config()
    started: list[Transport] = []
    with head_start(config, (), connect=mem.connect, start=starter(mem, started)) as connect:
        run = fetch.run(config, FetchOptions(backoff_base=0.0), connect=connect)
    assert run.exit_code == 0
    assert run.sources[0].count(Action.ARCHIVED) == 2
    assert len(started) == 1
    assert mem.server.connect_attempts == 1, "a second login: the one started ahead was unused"


def test_a_failure_before_the_network_is_the_first_connects_error(mem: MemoryWorkspace) -> None:
    mem.put("a.xml", b"<a/>")
    config = mem.config()

    def start(source: SourceConfig) -> Callable[[], Transport]:
        raise ConfigError([f"sources.{source.name}.key_file: unreadable"])

    with head_start(config, (), connect=mem.connect, start=start) as connect:
        run = fetch.run(config, FetchOptions(backoff_base=0.0), connect=connect)
    error = run.sources[0].error
    assert isinstance(error, ConfigError) and "key_file: unreadable" in error.describe()
    assert mem.server.connect_attempts == 0
    assert mem.outputs() == {}


def test_a_refused_login_ahead_is_the_first_attempt_and_retried(mem: MemoryWorkspace) -> None:
    mem.put("a.xml", b"<a/>")
    mem.source["retries"] = 1
    mem.server.faults.refuse_connects = 1
    config = mem.config()
    with head_start(config, (), connect=mem.connect, start=starter(mem, [])) as connect:
        run = fetch.run(config, FetchOptions(backoff_base=0.0), connect=connect)
    assert run.exit_code == 0, run.sources[0].error
    assert mem.server.connect_attempts == 2  # the refused one ahead, then the retry
    assert mem.outputs() == {"a.xml": b"<a/>"}


def test_with_no_retries_the_refused_login_ahead_ends_the_source(mem: MemoryWorkspace) -> None:
    mem.put("a.xml", b"<a/>")
    mem.server.faults.refuse_connects = 1
    config = mem.config()
    with head_start(config, (), connect=mem.connect, start=starter(mem, [])) as connect:
        run = fetch.run(config, FetchOptions(backoff_base=0.0), connect=connect)
    assert isinstance(run.sources[0].error, NetworkError)
    assert mem.server.connect_attempts == 1


def test_a_connection_nobody_takes_is_closed(mem: MemoryWorkspace) -> None:
    started: list[Transport] = []
    with head_start(mem.config(), (), connect=mem.connect, start=starter(mem, started)) as ahead:
        wait_until(lambda: ahead._logged_in)  # the login has ended before the close
    assert_closed(started)


def test_close_does_not_wait_for_a_login_still_running_which_then_closes_itself(
        mem: MemoryWorkspace) -> None:
    source = mem.config().sources["mem"]
    release = threading.Event()
    opened: list[Transport] = []

    def start(source: SourceConfig) -> Callable[[], Transport]:
        def slow_login() -> Transport:
            release.wait(10)  # a server that takes its time to answer
            opened.append(mem.connect(source))
            return opened[-1]
        return slow_login

    ahead = HeadStart(source, mem.connect, start)
    began = time.monotonic()
    ahead.close()
    assert time.monotonic() - began < 1, "close waited for the login"
    release.set()
    wait_until(lambda: bool(opened))
    time.sleep(0.1)  # the login thread closes what it opened right after
    assert_closed(opened)


def wait_until(condition: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def assert_closed(opened: list[Transport]) -> None:
    """One connection was opened, and it is closed now."""
    assert len(opened) == 1
    with pytest.raises(NetworkError, match="closed"):
        opened[0].list_files()


def test_only_the_first_selected_source_starts_ahead_and_only_once(
        mem: MemoryWorkspace) -> None:
    source = mem.config().sources["mem"]
    started: list[Transport] = []
    with HeadStart(source, mem.connect, starter(mem, started)) as connect:
        first = connect(source)
        again = connect(source)  # a reconnect, or another job's connection: a new one
    assert first is started[0] and again is not first
    assert mem.server.connect_attempts == 2


def test_an_unknown_source_name_is_left_to_the_run(mem: MemoryWorkspace) -> None:
    config = mem.config()
    started: list[Transport] = []
    with head_start(config, ("nonesuch",), connect=mem.connect,
                    start=starter(mem, started)) as connect, \
            pytest.raises(ConfigError, match="no source named 'nonesuch'"):
        fetch.run(config, FetchOptions(sources=("nonesuch",)), connect=connect)
    assert started == [] and mem.server.connect_attempts == 0


# --- the ledger read behind the listing ---------------------------------------------------------


def test_a_ledger_read_failure_during_the_listing_ends_the_source_with_it(
        mem: MemoryWorkspace, monkeypatch: pytest.MonkeyPatch) -> None:
    mem.put("a.xml", b"<a/>")
    assert mem.fetch().count(Action.ARCHIVED) == 1
    mem.put("b.xml", b"<b/>")
    listed = threading.Event()
    mem.server.faults.on_request = lambda operation: listed.set() if operation == "list" else None

    def failing_read(self: Ledger, source: str) -> object:
        listed.wait(5)  # fails while the server lists: the listing goes on meanwhile
        raise LedgerDamagedError("the ledger could not be read: database disk image is malformed")

    monkeypatch.setattr(Ledger, "version_index", failing_read)
    result = mem.fetch()
    assert isinstance(result.error, LedgerDamagedError)
    assert "b.xml" not in mem.outputs()
    assert mem.downloads() == ["a.xml@0"], "nothing is fetched without the ledger's rows"


def test_a_dead_server_waits_for_the_ledger_read_before_the_source_ends(
        mem: MemoryWorkspace, monkeypatch: pytest.MonkeyPatch) -> None:
    mem.put("a.xml", b"<a/>")
    mem.server.faults.connect_error = NetworkError("cannot connect: connection refused")
    reads: list[tuple[float, float]] = []
    original = Ledger.version_index

    def slow_read(self: Ledger, source: str) -> object:
        began = time.monotonic()
        time.sleep(0.3)
        index = original(self, source)
        reads.append((began, time.monotonic()))
        return index

    monkeypatch.setattr(Ledger, "version_index", slow_read)
    run = mem.fetch_run()
    ended = time.monotonic()
    assert isinstance(run.sources[0].error, NetworkError)
    assert len(reads) == 1 and reads[0][1] <= ended, "the run went on while the ledger was read"


# --- the real CLI against the real sshd -------------------------------------------------------

needs_openssh = pytest.mark.skipif(find_ssh() is None or not find_ssh().usable,  # type: ignore[union-attr]
                                   reason="needs OpenSSH's ssh >= 8.5")


@pytest.fixture
def ssh_workspace(tmp_path: Path, pgp_identity: PgpIdentity,
                  sftp_server: LocalServer) -> Workspace:
    workspace = Workspace(tmp_path, pgp_identity, sftp_server)
    workspace.write_config(ssh_engine="openssh")
    return workspace


@needs_openssh
def test_a_cli_fetch_logs_in_once(ssh_workspace: Workspace) -> None:
    ws = ssh_workspace
    ws.put_report("r1.xml.pgp", b"<r1/>")
    log = SshdLog(ws.server)
    result = ws.fetch()
    assert result.exit_code == 0, result.stderr
    assert ws.outputs() == {"r1.xml": b"<r1/>"}
    assert log.since().count("Accepted publickey") == 1


@needs_openssh
def test_a_run_stopped_at_the_lock_fetches_nothing_and_leaves_no_key_link(
        ssh_workspace: Workspace, tmp_path: Path) -> None:
    ws = ssh_workspace
    ws.put_report("r1.xml.pgp", b"<r1/>")
    temp = tmp_path / "tmp"
    temp.mkdir()
    with RunLock(ws.state_dir, "fetch"):
        result = run_cli("--config", str(ws.config_path), "fetch", env={"TMPDIR": str(temp)})
    assert result.exit_code == 75, result.stderr
    assert list(temp.iterdir()) == [], "the key's link folder was left behind"
    assert not ws.download_dir.exists() or list(ws.download_dir.iterdir()) == []
    assert not ws.output_dir.exists() or list(ws.output_dir.iterdir()) == []


@needs_openssh
def test_a_run_stopped_at_the_lock_exits_at_once_while_a_silent_server_keeps_the_login(
        ssh_workspace: Workspace, tmp_path: Path, silent_port: int) -> None:
    ws = ssh_workspace
    ws.write_config(ssh_engine="openssh", port=silent_port, timeout=20)
    temp = tmp_path / "tmp"
    temp.mkdir()
    with RunLock(ws.state_dir, "fetch"):
        began = time.monotonic()
        result = run_cli("--config", str(ws.config_path), "fetch", env={"TMPDIR": str(temp)})
        elapsed = time.monotonic() - began
    assert result.exit_code == 75, result.stderr
    assert elapsed < 10, f"the run waited {elapsed:.1f} s for a login nobody needed"
    assert list(temp.iterdir()) == [], "the key's link folder was left behind"
    # the ssh of a key link in ``temp`` names it in its command line
    assert processes(lambda argv: any(str(temp).encode() in arg for arg in argv)) == [], \
        "an ssh outlived the run"
