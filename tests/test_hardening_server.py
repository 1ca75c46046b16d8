"""Hardening, issue 6: a hostile server (items 1-8, 16, 17, 20).

Each test names the line of defence it exercises. The lying FTP server is a pyftpdlib handler
whose answers the test scripts (tests/servers/hostile_ftpd.py); SFTP cases use the real sshd.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import paramiko
import pytest

from reportsync import fetch, fsutil, listing
from reportsync.config import load_config, parse_config
from reportsync.errors import ConfigError, ExitCode, HostKeyError, UnsafeNameError
from reportsync.fetch import FetchOptions
from reportsync.fsutil import contained_path, place_file
from reportsync.transports import open_transport
from reportsync.transports.ftp import FtpTransport
from reportsync.transports.sftp import SftpTransport, require_strict_kex_support
from tests.servers import LocalServer
from tests.servers.hostile_ftpd import Listed, Script
from tests.support import REPO_ROOT, PgpIdentity, random_plain
from tests.test_fetch_e2e import Workspace, counts
from tests.test_hardening_support import files_by_name, hidden_files, hostile_workspace, part_name

# --- 1. hostile names ------------------------------------------------------------------------

_HOSTILE_NAMES = ["../../x.pgp", "/etc/x.pgp", "..", ".", "a\\b.pgp", "nul\x00in.pgp",
                  "cr\rin.pgp", "esc\x1b[31mred.pgp", "l" * 300 + ".pgp"]


@pytest.mark.parametrize("listing", ["mlsd", "list", "nlst"])
def test_hostile_names_from_a_lying_ftp_server_are_refused_by_name_and_the_rest_fetched(
    tmp_path: Path, pgp_identity: PgpIdentity, listing: str,
) -> None:
    # Line of defence: fsutil.check_remote_name in listing.select (refused and reported, never
    # downloaded); the FTP transport keeps names as sent (NLST no longer shortens "a/b" to "b").
    names = list(_HOSTILE_NAMES)
    if listing == "mlsd":
        names.append("")  # only MLSD can say "a file with an empty name"
    script = Script(extra_listing=[Listed(name, 5) for name in names])
    ws, server = hostile_workspace(tmp_path, pgp_identity, script, mlsd=listing == "mlsd")
    try:
        ws.put_report("fine.xml.pgp", b"<fine/>")
        ws.write_config(include=["*"])
        script.list_garbage = listing == "nlst"  # a LIST the client cannot read: NLST follows
        result = ws.fetch()
    finally:
        server.stop()
    assert result.exit_code == 1, result.stderr
    files = files_by_name(result)
    assert files["fine.xml.pgp"]["action"] == "archived", "the other files are fetched"
    refused = {name for name, entry in files.items() if entry["action"] == "refused"}
    # NLST gives bare names: "." and ".." there are the folder references servers send, skipped
    expected = {fsutil.printable(name) for name in names
                if listing != "nlst" or name not in (".", "..")}
    assert expected <= refused, f"not refused: {expected - refused}"
    assert script.retr_count == {"fine.xml.pgp": 1}, "no hostile name was ever downloaded"
    for raw in ("\x00", "\r", "\x1b"):
        assert raw not in result.stderr and raw not in result.stdout, "names are escaped"
    assert "'../../x.pgp'" in result.stderr and "'/etc/x.pgp'" in result.stderr
    assert ws.outputs() == {"fine.xml": b"<fine/>"}
    assert sorted(p.name for p in ws.download_dir.iterdir()) == ["fine.xml.pgp"]
    for outside in (tmp_path / "x.pgp", tmp_path.parent / "x.pgp", REPO_ROOT / "x.pgp",
                    REPO_ROOT.parent / "x.pgp", Path("/etc/x.pgp"), Path("/x.pgp")):
        assert not outside.exists(), outside


# --- 2. containment on the final path --------------------------------------------------------


def test_containment_is_checked_on_the_final_path_even_if_the_name_check_let_it_through(
    tmp_path: Path, pgp_identity: PgpIdentity, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Line of defence: fsutil.contained_path, applied where the download and the report get
    # their final paths (fetch.transfer.download, fetch.archive.archive, fsutil.place_file). The first line
    # (check_remote_name in listing.select) is switched off here to prove the second one holds
    # alone.
    monkeypatch.setattr(listing, "check_remote_name", lambda name: None)
    folder = tmp_path / "inside"
    folder.mkdir()
    for name in ("../x", "/etc/passwd", "a/../../b", "sub/x"):
        with pytest.raises(UnsafeNameError):
            contained_path(folder, name)
        temp = folder / ".t"
        temp.write_bytes(b"x")
        with pytest.raises(UnsafeNameError):
            place_file(temp, folder, name, "0" * 64)
    assert contained_path(folder, "ok.xml") == folder / "ok.xml"

    script = Script(extra_listing=[Listed("../../escape.xml", 5), Listed("../up.xml", 5)],
                    content={"escape.xml": b"EVIL!", "up.xml": b"EVIL!"})
    ws, server = hostile_workspace(tmp_path, pgp_identity, script)
    try:
        ws.put("fine.xml", b"<fine/>")
        ws.write_config(include=["*.xml"])
        result = fetch.run(load_config(ws.config_path), FetchOptions(backoff_base=0.01))
    finally:
        server.stop()
    outcomes = {outcome.name: outcome for outcome in result.sources[0].files}
    assert outcomes["fine.xml"].action == "archived"
    for name in ("../../escape.xml", "../up.xml"):
        assert outcomes[name].action == "failed"
        assert isinstance(outcomes[name].error, UnsafeNameError)
    for outside in (ws.root / "escape.xml", ws.root.parent / "escape.xml", ws.root / "up.xml",
                    ws.root / "reports" / "up.xml", tmp_path / "escape.xml"):
        assert not outside.exists(), outside
    assert sorted(p.name for p in ws.download_dir.iterdir()) == ["fine.xml"]


# --- 3. planted symlinks ---------------------------------------------------------------------


def test_symlinks_planted_at_temp_and_target_paths_are_never_followed(
    sftp_server: LocalServer, tmp_path: Path, pgp_identity: PgpIdentity,
) -> None:
    # Line of defence: O_NOFOLLOW/O_EXCL opens and lstat checks in fsutil (open_private_resumable,
    # open_private_new, regular_file_info) used by fetch.transfer (_transfer, _adopt_existing), place_file.
    ws = Workspace(tmp_path, pgp_identity, sftp_server)
    ws.write_config()
    big = random_plain(200_000)
    remote = ws.put("big.xml", big)
    adopted = ws.put("adopt.xml", b"the real report 42")
    target = ws.put("target.xml", b"<target/>")
    ws.download_dir.mkdir(parents=True)
    ws.output_dir.mkdir(parents=True)
    victims = {}
    for name, data in (("part", b"VICTIM OF THE PART LINK"), ("secret", b"S" * 18),
                       ("target", b"VICTIM OF THE TARGET LINK")):
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_bytes(data)
    info = remote.stat()
    # a) the resumable temp file is a link to a file of ours
    (ws.download_dir / part_name("big.xml", len(big), info.st_mtime)).symlink_to(victims["part"])
    # b) the downloaded copy's name is a link to a secret of the same size and mtime
    os.utime(victims["secret"], (adopted.stat().st_mtime, adopted.stat().st_mtime))
    (ws.download_dir / "adopt.xml").symlink_to(victims["secret"])
    # c) the report's final name is a link
    (ws.output_dir / "target.xml").symlink_to(victims["target"])

    result = ws.fetch()
    assert result.exit_code == 0, result.stderr
    assert victims["part"].read_bytes() == b"VICTIM OF THE PART LINK"
    assert victims["secret"].read_bytes() == b"S" * 18
    assert victims["target"].read_bytes() == b"VICTIM OF THE TARGET LINK"
    assert (ws.output_dir / "big.xml").read_bytes() == big
    assert (ws.output_dir / "adopt.xml").read_bytes() == b"the real report 42", \
        "the planted link was not adopted as the download"
    assert (ws.output_dir / "target.v2.xml").read_bytes() == target.read_bytes()
    assert (ws.output_dir / "target.xml").is_symlink(), "the link is left alone, not written"
    assert hidden_files(ws.download_dir) == [] and hidden_files(ws.output_dir) == []


# --- 4, 5. fewer or more bytes than listed ---------------------------------------------------


def test_fewer_bytes_than_listed_then_a_clean_end_is_a_size_mismatch_not_decrypted(
    tmp_path: Path, pgp_identity: PgpIdentity,
) -> None:
    # Line of defence: the byte count against the listing in fetch.transfer._transfer (a clean 226 after
    # too few bytes is not success).
    script = Script()
    ws, server = hostile_workspace(tmp_path, pgp_identity, script)
    try:
        ws.put_report("short.xml.pgp", b"<short/>" * 500)
        data = ws.put("plain.xml", b"<plain report/>" * 300).read_bytes()
        script.content["short.xml.pgp"] = (ws.server.remote_root / "short.xml.pgp").read_bytes()[:-100]
        script.content["plain.xml"] = data[:1000]
        result = ws.fetch()
    finally:
        server.stop()
    assert result.exit_code == 1, result.stderr
    files = files_by_name(result)
    for name in ("short.xml.pgp", "plain.xml"):
        assert files[name]["action"] == "failed"
        assert "transfer incomplete" in files[name]["error"]["message"]
    assert not ws.output_dir.exists() or list(ws.output_dir.iterdir()) == [], "nothing decrypted"
    assert not (ws.download_dir / "short.xml.pgp").exists()
    assert not (ws.download_dir / "plain.xml").exists()


def test_more_bytes_than_listed_fail_at_once_and_nothing_is_kept(
    tmp_path: Path, pgp_identity: PgpIdentity,
) -> None:
    # Line of defence: fetch.transfer._BoundedSink stops the transfer at the first byte past the listed
    # size (a lying server can neither fill the disk nor get extra bytes archived).
    script = Script()
    ws, server = hostile_workspace(tmp_path, pgp_identity, script)
    try:
        data = ws.put("long.xml", b"<report/>" * 100).read_bytes()
        script.content["long.xml"] = data + b"<extra/>" * 2_000_000  # 16 MB more than listed
        started = time.monotonic()
        result = ws.fetch()
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert result.exit_code == 1, result.stderr
    entry = files_by_name(result)["long.xml"]
    assert entry["action"] == "failed"
    assert "more than the 900 bytes" in entry["error"]["message"]
    assert list(ws.download_dir.iterdir()) == [], "no part file, no copy"
    assert not ws.output_dir.exists() or list(ws.output_dir.iterdir()) == []
    assert elapsed < 20


# --- 6. a file that changes between the listing and the download ------------------------------


def test_ftp_file_changed_between_listing_and_download_is_left_for_the_next_run(
    tmp_path: Path, pgp_identity: PgpIdentity,
) -> None:
    # Line of defence: Transport.stat before and after the transfer, compared with the listing
    # in fetch.transfer._transfer -> RemoteChangedError -> "pending" (not kept, not an error).
    script = Script()
    ws, server = hostile_workspace(tmp_path, pgp_identity, script)
    try:
        grows = ws.put("grows.xml", b"<first part/>")
        rewritten = ws.put("rewritten.xml", b"<version 1/>")
        ws.put("steady.xml", b"<steady/>")
        changed: set[str] = set()

        def provider_writes(command: str, argument: str) -> None:
            if command == "RETR" and argument not in changed:
                changed.add(argument)
                if argument == "grows.xml":  # still being uploaded: it grows
                    with grows.open("ab") as handle:
                        handle.write(b"<second part/>")
                elif argument == "rewritten.xml":  # replaced, same size, new time
                    rewritten.write_bytes(b"<version 2/>")
                    stamp = time.time() - 100
                    os.utime(rewritten, (stamp, stamp))

        script.on_command = provider_writes
        first = ws.fetch()
        script.on_command = None
        second = ws.fetch()
    finally:
        server.stop()
    assert first.exit_code == 0, first.stderr
    files = files_by_name(first)
    assert files["steady.xml"]["action"] == "archived"
    for name in ("grows.xml", "rewritten.xml"):
        assert files[name]["action"] == "pending", files[name]
        assert "changed on the server" in files[name]["error"]["message"]
    assert hidden_files(ws.download_dir) == [], "the mixed bytes are not kept"
    assert second.exit_code == 0, second.stderr
    assert ws.outputs() == {"grows.xml": b"<first part/><second part/>",
                            "rewritten.xml": b"<version 2/>", "steady.xml": b"<steady/>"}
    assert second.result()["sources"][0]["lost"] == [], "the old version is not reported lost"


def test_sftp_file_changed_before_download_never_resumes_an_old_part(
    sftp_server: LocalServer, tmp_path: Path, pgp_identity: PgpIdentity,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Line of defence: SftpTransport.stat compared with the listing before the transfer (and the
    # version-derived part name): a part of the listed version is not continued with other bytes.
    ws = Workspace(tmp_path, pgp_identity, sftp_server)
    ws.write_config()
    old = b"<old version/>" * 1000
    path = ws.put("r.xml", old)
    listed_mtime = path.stat().st_mtime
    ws.download_dir.mkdir(parents=True)
    part = ws.download_dir / part_name("r.xml", len(old), listed_mtime)
    part.write_bytes(old[:5000])  # an interrupted earlier attempt at the listed version
    real_list = SftpTransport.list_files

    def list_then_provider_replaces(self: SftpTransport) -> Any:
        listing = real_list(self)
        path.write_bytes(b"<new version/>" * 1000)
        return listing

    monkeypatch.setattr(SftpTransport, "list_files", list_then_provider_replaces)
    result = fetch.run(load_config(ws.config_path), FetchOptions(backoff_base=0.01))
    outcome = result.sources[0].files[0]
    assert outcome.action == "pending" and outcome.transferred == 0
    assert not part.exists() and hidden_files(ws.download_dir) == []
    monkeypatch.undo()
    again = ws.fetch()
    assert again.exit_code == 0, again.stderr
    assert ws.outputs() == {"r.xml": b"<new version/>" * 1000}


# --- 7. PASV address --------------------------------------------------------------------------
# Proven by tests/test_ftp_transport.py::test_pasv_address_is_ignored_data_goes_to_control_host
# (a server whose PASV names 10.255.255.1; any connection outside 127/8 fails the test).


# --- 8. known_hosts markers ------------------------------------------------------------------


def _known_hosts(server: LocalServer, tmp_path: Path, *extra: str, plain: bool = True) -> str:
    lines = list(Path(server.source["known_hosts"]).read_text().splitlines()) if plain else []
    path = tmp_path / "known_hosts_marked"
    path.write_text("\n".join([*lines, *extra]) + "\n")
    return str(path)


def _host_key_line(server: LocalServer) -> str:
    """``[127.0.0.1]:PORT ssh-ed25519 AAAA...``, the key paramiko is shown first."""
    for line in Path(server.source["known_hosts"]).read_text().splitlines():
        if "ssh-ed25519" in line:
            return line.strip()
    raise AssertionError("no ed25519 host key line")


@pytest.fixture
def auth_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    for method in ("auth_none", "auth_publickey", "auth_password"):
        original = getattr(paramiko.Transport, method)

        def spy(self: paramiko.Transport, *args: Any, _m: str = method, _o: Any = original,
                **kwargs: Any) -> Any:
            calls.append(_m)
            return _o(self, *args, **kwargs)

        monkeypatch.setattr(paramiko.Transport, method, spy)
    return calls


def _sftp_source(server: LocalServer, tmp_path: Path, **overrides: Any) -> Any:
    table = {**server.source, "download_dir": str(tmp_path / "d"), "output_dir": str(tmp_path / "o"),
             "timeout": 5, **overrides}
    return parse_config({"sources": {"t": table}}).sources["t"]


def test_revoked_host_key_is_refused_before_any_credential(
    sftp_server: LocalServer, tmp_path: Path, auth_spy: list[str], pgp_identity: PgpIdentity,
) -> None:
    # Line of defence: sftp.verify_host_key checks @revoked lines first (paramiko skips them).
    # The paramiko engine's own check (the openssh engine's: tests/test_sftp_openssh.py; ssh
    # would use the RSA key on record instead of the revoked ed25519 one).
    known = _known_hosts(sftp_server, tmp_path, f"@revoked {_host_key_line(sftp_server)}")
    with pytest.raises(HostKeyError, match="@revoked") as caught:
        open_transport(_sftp_source(sftp_server, tmp_path, known_hosts=known,
                                    ssh_engine="paramiko"))
    assert caught.value.exit_code == ExitCode.HOST_KEY
    assert auth_spy == [], "nothing was sent to a revoked key"
    ws = Workspace(tmp_path / "ws", pgp_identity, sftp_server)
    ws.root.mkdir()
    ws.write_config(known_hosts=known, ssh_engine="paramiko")
    assert ws.fetch().exit_code == 5


def test_cert_authority_line_is_refused_loudly_never_silently_skipped(
    sftp_server: LocalServer, tmp_path: Path, auth_spy: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Line of defence: sftp.verify_host_key refuses a host trusted only through @cert-authority
    # (host certificates are not validated, so the line is named instead of being ignored).
    # The paramiko engine's rule: ssh validates host certificates itself (docs/security.md).
    ca_public = Path(f"{sftp_server.extra['ca_key']}.pub").read_text().split()
    ca_line = f"@cert-authority [127.0.0.1]:{sftp_server.port} {ca_public[0]} {ca_public[1]}"
    only_ca = _known_hosts(sftp_server, tmp_path, ca_line, plain=False)
    with pytest.raises(HostKeyError) as caught:
        open_transport(_sftp_source(sftp_server, tmp_path, known_hosts=only_ca,
                                    ssh_engine="paramiko"))
    assert "@cert-authority" in caught.value.message and "line 1" in caught.value.message
    assert "does not validate SSH host certificates" in caught.value.message
    assert auth_spy == []
    # beside a plain key line the connection works, and the unused CA line is still named
    caplog.set_level(logging.WARNING, logger="reportsync.transports.sftp")
    both = _known_hosts(sftp_server, tmp_path, ca_line)
    with open_transport(_sftp_source(sftp_server, tmp_path, known_hosts=both,
                                     ssh_engine="paramiko")) as transport:
        assert transport.list_files() == []
    assert "@cert-authority" in caplog.text and "were not used" in caplog.text


# --- 16. resume never appends past the remote size ------------------------------------------


def test_a_part_longer_than_the_remote_file_is_discarded_never_appended_to(
    sftp_server: LocalServer, tmp_path: Path, pgp_identity: PgpIdentity,
) -> None:
    # Line of defence: fetch.transfer._part_length discards a .part longer than the listed size.
    ws = Workspace(tmp_path, pgp_identity, sftp_server)
    ws.write_config()
    data = random_plain(50_000)
    path = ws.put("r.xml", data)
    ws.download_dir.mkdir(parents=True)
    part = ws.download_dir / part_name("r.xml", len(data), path.stat().st_mtime)
    part.write_bytes(os.urandom(80_000))
    result = ws.fetch()
    assert result.exit_code == 0, result.stderr
    assert files_by_name(result)["r.xml"]["bytes_transferred"] == len(data), "started again"
    assert ws.outputs() == {"r.xml": data}


def test_a_server_that_ignores_rest_cannot_make_a_resume_append_past_the_size(
    tmp_path: Path, pgp_identity: PgpIdentity,
) -> None:
    # Line of defence: fetch.transfer._BoundedSink (the resumed transfer may add only size - offset bytes)
    script = Script(ignore_rest=True)
    ws, server = hostile_workspace(tmp_path, pgp_identity, script)
    try:
        data = random_plain(40_000)
        path = ws.put("r.xml", data)
        ws.download_dir.mkdir(parents=True)
        part = ws.download_dir / part_name("r.xml", len(data), path.stat().st_mtime)
        part.write_bytes(data[:10_000])
        first = ws.fetch()
        assert first.exit_code == 1
        assert "more than the 40000 bytes" in files_by_name(first)["r.xml"]["error"]["message"]
        assert hidden_files(ws.download_dir) == [], "the bad part is deleted, not resumed"
        assert not ws.output_dir.exists() or list(ws.output_dir.iterdir()) == []
        script.ignore_rest = False
        second = ws.fetch()
    finally:
        server.stop()
    assert second.exit_code == 0, second.stderr
    assert ws.outputs() == {"r.xml": data}


# --- 17. a lock left by a killed run -----------------------------------------------------------


def test_a_lock_held_by_a_run_killed_with_sigkill_does_not_block(
    sftp_server: LocalServer, tmp_path: Path, pgp_identity: PgpIdentity,
) -> None:
    # Line of defence: lock.RunLock is an OS lock (fcntl): it dies with its holder.
    ws = Workspace(tmp_path, pgp_identity, sftp_server)
    ws.write_config()
    ws.put_report("r.xml.pgp", b"<r/>")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from reportsync.lock import RunLock\n"
         "with RunLock(Path(sys.argv[1]), 'fetch'):\n"
         "    print('held', flush=True)\n    time.sleep(60)\n", str(ws.state_dir)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        blocked = ws.fetch()
        assert blocked.exit_code == 75 and time.monotonic() - started < 10
        assert f"pid {holder.pid}" in blocked.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    result = ws.fetch()
    assert result.exit_code == 0, result.stderr
    assert counts(result)["archived"] == 1


# --- 20. PASV trust off, reject policy, strict kex ---------------------------------------------


def test_ftp_never_trusts_the_pasv_address(ftp_server: LocalServer, tmp_path: Path) -> None:
    # Line of defence: transports.ftp._Client sets trust_server_pasv_ipv4_address = False.
    source = parse_config({"sources": {"t": {**ftp_server.source, "download_dir": str(tmp_path / "d"),
                                             "output_dir": str(tmp_path / "o")}}}).sources["t"]
    with open_transport(source) as transport:
        assert isinstance(transport, FtpTransport)
        transport.list_files()
        client = transport._client
        assert client is not None and client.trust_server_pasv_ipv4_address is False


def test_paramiko_without_strict_kex_is_refused_before_connecting(
    sftp_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Line of defence: sftp.require_strict_kex_support at the start of SftpTransport.connect
    # (Terrapin, CVE-2023-48795; paramiko >= 3.4 is also pinned in pyproject.toml).
    with pytest.raises(ConfigError, match="Terrapin"):
        require_strict_kex_support("3.3.1")
    require_strict_kex_support("3.4.0")
    monkeypatch.setattr(paramiko, "__version__", "2.12.0")
    connections: list[Any] = []
    monkeypatch.setattr(socket, "create_connection",
                        lambda *args, **kwargs: connections.append(args))
    with pytest.raises(ConfigError, match=r"paramiko 2\.12\.0 is too old"):
        open_transport(_sftp_source(sftp_server, tmp_path))
    assert connections == [], "refused before the network"
    assert '"paramiko>=3.4"' in (REPO_ROOT / "pyproject.toml").read_text(), "the bound is pinned"


def test_strict_kex_is_agreed_with_a_real_openssh_and_unknown_keys_are_rejected(
    sftp_server: LocalServer, tmp_path: Path, auth_spy: list[str],
) -> None:
    # Line of defence: paramiko's strict kex (advertised by default from 3.4) against sshd; the
    # host key policy is "reject" (verify_host_key raises for any key not on record).
    with open_transport(_sftp_source(sftp_server, tmp_path, ssh_engine="paramiko")) as transport:
        assert isinstance(transport, SftpTransport)
        assert transport.session.transport.agreed_on_strict_kex is True  # type: ignore[attr-defined]
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    auth_spy.clear()
    with pytest.raises(HostKeyError, match="unknown host key"):
        open_transport(_sftp_source(sftp_server, tmp_path, known_hosts=str(empty),
                                    ssh_engine="paramiko"))
    assert auth_spy == []
