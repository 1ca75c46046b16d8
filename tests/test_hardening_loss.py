"""Hardening, issue 11: never lose or leak (placement races, names the server sends, folder modes).

Real sshd, real FTP servers, real gpg, the real CLI (in-process, through ``cli.main``). Each test
names the line of defence it exercises.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from reportsync import fetch
from reportsync.config import load_config
from reportsync.fetch import FetchOptions
from reportsync.fsutil import printable
from reportsync.pgp import Decrypted, Gpg, plaintext_name
from tests.servers import LocalServer
from tests.servers.hostile_ftpd import Listed, Script
from tests.support import PgpIdentity, random_plain, run_cli_inprocess
from tests.test_fetch_e2e import Workspace
from tests.test_hardening_support import files_by_name, hostile_workspace


@pytest.fixture
def ws(tmp_path: Path, pgp_identity: PgpIdentity, sftp_server: LocalServer) -> Workspace:
    workspace = Workspace(tmp_path / "ws", pgp_identity, sftp_server)
    workspace.root.mkdir()
    workspace.write_config()
    return workspace


# --- 1. two workers, one plaintext name ---------------------------------------------------------


def test_parallel_jobs_never_give_two_reports_one_name(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Line of defence: fsutil.place_file claims each final name atomically (_claim_by_link: a hard
    # link, which fails where the name is taken). Xn.xml.pgp, Xn.xml.gpg and Xn.xml.asc all
    # decrypt to Xn.xml; each real decryption here waits for the other two of its group before
    # it returns, so three --jobs workers place the same name at the same moment (seen in 5 of
    # 23 runs in the field; the old check-then-rename lost a report in nearly every group).
    real_decrypt = Gpg.decrypt
    groups = [f"X{number}.xml" for number in range(5)]
    in_step = {name: threading.Barrier(3, timeout=60) for name in groups}

    def decrypt_in_step(self: Gpg, encrypted: Path, *args: Any, **kwargs: Any) -> Decrypted:
        decrypted = real_decrypt(self, encrypted, *args, **kwargs)
        in_step[plaintext_name(encrypted.name)].wait()
        return decrypted

    monkeypatch.setattr(Gpg, "decrypt", decrypt_in_step)
    expected = {}
    for name in groups:
        for suffix in ("pgp", "gpg", "asc"):
            plain = random_plain(100_000)
            ws.put_report(f"{name}.{suffix}", plain, armor=suffix == "asc")
            expected[f"{name}.{suffix}"] = plain
    result = fetch.run(load_config(ws.config_path), FetchOptions(jobs=4, backoff_base=0.01))
    source = result.sources[0]
    assert result.exit_code == 0, [outcome.error for outcome in source.files]
    outcomes = {outcome.name: outcome for outcome in source.files}
    assert all(outcomes[name].action == "archived" for name in expected), outcomes
    outputs = [outcomes[name].output_path for name in expected]
    assert len(set(outputs)) == len(expected), \
        f"two reports were given one name: {[Path(str(path)).name for path in outputs]}"
    for name, plain in expected.items():
        assert Path(str(outcomes[name].output_path)).read_bytes() == plain, f"{name} was replaced"
    assert sorted(ws.outputs()) == sorted(f"X{n}{suffix}" for n in range(5)
                                          for suffix in (".xml", ".v2.xml", ".v3.xml"))
    with ws.ledger() as db:
        recorded = sorted(row[0] for row in db.execute("SELECT output_path FROM archived"))
    assert recorded == sorted(outputs), "the ledger records each report at its own path"


# --- 3. folder modes ----------------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_existing_folders_keep_their_mode_and_created_ones_are_0700(ws: Workspace) -> None:
    # Line of defence: fsutil.ensure_private_dir never re-modes what exists (the old code made
    # every folder it was given 0700, a configured output_dir = "/" included) and creates each
    # missing folder, parents too, 0700. The GnuPG home is the user's: gpg warns about a loose
    # one, doctor says so, reportsync leaves it alone.
    ws.download_dir.mkdir(parents=True)
    ws.download_dir.parent.chmod(0o755)
    ws.download_dir.chmod(0o755)
    ws.identity.home.chmod(0o755)
    ws.write_config(output_dir=str(ws.root / "new" / "deeper" / "statements"))
    ws.put_report("r.xml.pgp", b"<r/>")
    result = ws.fetch()
    assert result.exit_code == 0, result.stderr
    assert (ws.root / "new" / "deeper" / "statements" / "r.xml").read_bytes() == b"<r/>"
    assert mode_of(ws.download_dir) == 0o755 and mode_of(ws.download_dir.parent) == 0o755
    assert mode_of(ws.identity.home) == 0o755
    for created in (ws.root / "new", ws.root / "new" / "deeper",
                    ws.root / "new" / "deeper" / "statements", ws.state_dir,
                    ws.state_dir / "logs"):
        assert mode_of(created) == 0o700, created
    assert mode_of(ws.download_dir / "r.xml.pgp") == 0o600
    assert mode_of(ws.root / "new" / "deeper" / "statements" / "r.xml") == 0o600
    doctor = run_cli_inprocess("--config", str(ws.config_path), "--json", "doctor")
    home = [finding for finding in doctor.result()["findings"] if finding["check"] == "gnupg home"]
    assert [finding["status"] for finding in home] == ["WARN"], home
    assert home[0]["remedy"] == f"chmod 700 {ws.identity.home}"
    assert mode_of(ws.identity.home) == 0o755, "doctor does not re-mode it either"


def test_a_sticky_shared_folder_is_used_as_it_is(ws: Workspace) -> None:
    # Line of defence: fsutil.shared_folder_problem accepts the sticky bit (like /tmp: nobody
    # can rename or remove another user's files there); ensure_private_dir leaves it 1777.
    ws.output_dir.mkdir(parents=True)
    ws.output_dir.chmod(0o1777)
    ws.put_report("r.xml.pgp", b"<r/>")
    result = ws.fetch()
    assert result.exit_code == 0, result.stderr
    assert ws.outputs() == {"r.xml": b"<r/>"}
    assert mode_of(ws.output_dir) == 0o1777


def test_an_output_dir_anyone_can_write_to_is_refused_with_7_and_nothing_is_written(
    ws: Workspace,
) -> None:
    # Line of defence: fsutil.ensure_private_dir (via shared_folder_problem) in fetch.archive.archive;
    # doctor's _check_folder applies the same rule.
    ws.output_dir.mkdir(parents=True)
    ws.output_dir.chmod(0o777)
    ws.put_report("r.xml.pgp", b"<r/>")
    result = ws.fetch()
    assert result.exit_code == 7, result.stderr
    assert f"sources.broker.output_dir: {ws.output_dir} can be written to by anyone" in \
        result.stderr
    assert f"chmod o-w {ws.output_dir}" in result.stderr
    assert list(ws.output_dir.iterdir()) == [], "nothing is written into it"
    assert mode_of(ws.output_dir) == 0o777, "refused, never re-moded"
    assert (ws.download_dir / "r.xml.pgp").exists(), "the encrypted copy is kept"

    doctor = run_cli_inprocess("--config", str(ws.config_path), "--json", "doctor")
    folders = {finding["finding"].split(":")[0]: finding for finding in doctor.result()["findings"]
               if finding["check"] == "folder"}
    assert folders["sources.broker.output_dir"]["status"] == "FAIL"
    assert "can be written to by anyone" in folders["sources.broker.output_dir"]["finding"]
    assert folders["sources.broker.download_dir"]["status"] == "PASS"

    ws.output_dir.chmod(0o1777)
    doctor = run_cli_inprocess("--config", str(ws.config_path), "--json", "doctor")
    statuses = {finding["finding"].split(":")[0]: finding["status"]
                for finding in doctor.result()["findings"] if finding["check"] == "folder"}
    assert statuses["sources.broker.output_dir"] == "PASS"


# --- 2. a name that is not UTF-8 -----------------------------------------------------------------

NOT_UTF8 = os.fsdecode(b"statement-\xff\xfe.xml.pgp")  # on disk: those bytes, as a server has them


def test_a_name_that_is_not_utf8_on_sftp_is_refused_alone_and_the_rest_fetched(
    ws: Workspace,
) -> None:
    # Line of defence: sftp._list_folder decodes each name with surrogateescape (paramiko's
    # listdir_attr raised UnicodeDecodeError for the whole listing: the source fetched nothing,
    # every night); fsutil.check_remote_name refuses it; fsutil.printable escapes it.
    ws.put_report("a.xml.pgp", b"<a/>")
    ws.put_report(NOT_UTF8, b"<not utf-8/>")
    ws.put_report("z.xml.pgp", b"<z/>")
    assert os.fsencode(NOT_UTF8) in os.listdir(os.fsencode(ws.server.remote_root))
    result = ws.fetch()
    assert result.exit_code == 1, result.stderr
    assert ws.output_dir.is_dir(), f"nothing was fetched: {result.stderr}"
    assert ws.outputs() == {"a.xml": b"<a/>", "z.xml": b"<z/>"}, "the rest are fetched"
    files = files_by_name(result)
    assert files["a.xml.pgp"]["action"] == files["z.xml.pgp"]["action"] == "archived"
    shown = printable(NOT_UTF8)
    assert shown == "'statement-\\udcff\\udcfe.xml.pgp'"
    assert files[shown]["action"] == "refused"
    assert "is not valid UTF-8" in files[shown]["error"]["message"]
    assert f"refused remote file name {shown}" in result.stderr, "named, escaped"
    assert sorted(os.listdir(ws.download_dir)) == ["a.xml.pgp", "z.xml.pgp"], "never downloaded"
    with ws.ledger() as db:
        failures = list(db.execute("SELECT name, stage FROM failures"))
    assert failures == [(shown, "name")], "recorded as a failure like other refused names"


@pytest.mark.parametrize("listing", ["mlsd", "list", "nlst"])
def test_a_name_that_is_not_utf8_on_ftp_is_refused_never_asked_for(
    tmp_path: Path, pgp_identity: PgpIdentity, listing: str,
) -> None:
    # Line of defence: ftp.FtpTransport._lines decodes with surrogateescape (it used "replace",
    # and then asked the server for a name with U+FFFD in it, which failed as a download);
    # check_remote_name refuses the name; _sendable keeps it out of every FTP command.
    script = Script(extra_listing=[Listed(NOT_UTF8, 5)])
    ws, server = hostile_workspace(tmp_path, pgp_identity, script, mlsd=listing == "mlsd")
    try:
        ws.put_report("fine.xml.pgp", b"<fine/>")
        script.list_garbage = listing == "nlst"
        result = ws.fetch()
    finally:
        server.stop()
    assert result.exit_code == 1, result.stderr
    files = files_by_name(result)
    assert files[printable(NOT_UTF8)]["action"] == "refused", files
    assert "is not valid UTF-8" in files[printable(NOT_UTF8)]["error"]["message"]
    assert files["fine.xml.pgp"]["action"] == "archived"
    assert script.retr_count == {"fine.xml.pgp": 1}, "the refused name was never asked for"
    assert ws.outputs() == {"fine.xml": b"<fine/>"}


# --- 4. control and bidirectional characters -------------------------------------------------

DECEPTIVE_NAMES = {
    "rtl-\u202egnp.lmx": "'rtl-\\u202egnp.lmx'",  # shows as rtl-xml.png
    "c1-\x85.xml.pgp": "'c1-\\x85.xml.pgp'",  # NEL: a line break to some terminals
    "csi-\x9b31m.xml.pgp": "'csi-\\x9b31m.xml.pgp'",  # the one-byte CSI of C1
    "isolate-\u2067x.xml.pgp": "'isolate-\\u2067x.xml.pgp'",
    "mark-\u200fx.xml.pgp": "'mark-\\u200fx.xml.pgp'",
    "arabic-mark-\u061cx.xml.pgp": "'arabic-mark-\\u061cx.xml.pgp'",
    "embedding-\u202ax.xml.pgp": "'embedding-\\u202ax.xml.pgp'",
    "separator-\u2028x.xml.pgp": "'separator-\\u2028x.xml.pgp'",
}


@pytest.mark.parametrize("server_fixture", ["sftp_server", "ftp_server", "ftp_server_no_mlsd"])
def test_c1_and_bidi_names_are_refused_and_shown_escaped_and_the_rest_fetched(
    request: pytest.FixtureRequest, tmp_path: Path, pgp_identity: PgpIdentity,
    server_fixture: str,
) -> None:
    # Line of defence: fsutil.check_remote_name refuses C1 controls, the bidirectional controls
    # and Unicode line separators (it knew only C0 and DEL); fsutil.printable escapes them in
    # every message (it escaped only C0 and DEL, so the name printed reordered).
    server: LocalServer = request.getfixturevalue(server_fixture)
    ws = Workspace(tmp_path / "ws", pgp_identity, server)
    ws.root.mkdir()
    ws.write_config(include=["*"])
    ws.put_report("fine.xml.pgp", b"<fine/>")
    for name in DECEPTIVE_NAMES:
        ws.put_report(name, b"<deceptive/>")
    result = ws.fetch()
    assert result.exit_code == 1, result.stderr
    files = files_by_name(result)
    assert files["fine.xml.pgp"]["action"] == "archived"
    for name, shown in DECEPTIVE_NAMES.items():
        assert printable(name) == shown
        assert files[shown]["action"] == "refused", (shown, files.get(shown))
        assert f"refused remote file name {shown}" in result.stderr
    for raw in "\u202e\x85\x9b\u2067\u200f\u061c\u202a\u2028":
        assert raw not in result.stderr and raw not in result.stdout, f"{raw!r} printed raw"
    assert ws.outputs() == {"fine.xml": b"<fine/>"}
    assert sorted(os.listdir(ws.download_dir)) == ["fine.xml.pgp"]
    log = (ws.state_dir / "logs" / "reportsync.log").read_text(encoding="utf-8")
    assert "refused remote file name 'rtl-\\u202egnp.lmx'" in log
    assert not any(raw in log for raw in "\u202e\x85\x9b\u2067"), "the log is escaped too"
