"""fetch's retention step, `retention`, `status` and `verify` through the real CLI and sshd.

Ages come from the remote mtimes the tests set (delivery time), so nothing depends on when the
suite runs.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.servers import LocalServer
from tests.servers.proxy import FaultPlan, FaultProxy
from tests.support import PgpIdentity, run_cli_inprocess
from tests.test_fetch_e2e import Workspace, _proxy_known_hosts


@pytest.fixture
def ws(tmp_path: Path, pgp_identity: PgpIdentity, sftp_server: LocalServer) -> Workspace:
    workspace = Workspace(tmp_path, pgp_identity, sftp_server)
    workspace.write_config()
    return workspace


def cli(ws: Workspace, *args: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    """The exit code, the envelope's result (or its error), stderr."""
    result = run_cli_inprocess("--config", str(ws.config_path), "--json", *args)
    document = result.json()
    return result.exit_code, document.get("result", document.get("error")), result.stderr


def tree_hashes(*folders: Path) -> dict[str, str]:
    hashes = {}
    for folder in folders:
        if folder.exists():
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def test_fetch_expires_old_encrypted_copies_and_keeps_reports(ws: Workspace) -> None:
    ws.put_report("old.xml.pgp", b"<old/>", age_days=101)
    ws.put_report("new.xml.pgp", b"<new/>", age_days=5)
    code, result, stderr = cli(ws, "fetch")
    assert code == 0, stderr
    deletions = result["sources"][0]["deletions"]
    assert [(d["target"], d["name"], d["done"]) for d in deletions] == [
        ("local_encrypted", "old.xml.pgp", True)]
    assert not (ws.download_dir / "old.xml.pgp").exists()
    assert (ws.download_dir / "new.xml.pgp").exists()
    assert ws.outputs() == {"old.xml": b"<old/>", "new.xml": b"<new/>"}
    verified = run_cli_inprocess("--config", str(ws.config_path), "verify")
    assert verified.exit_code == 0, "a deliberate deletion is not a verify problem"


def test_at_risk_and_lost_are_announced_even_under_quiet_and_status_tracks_them(
    ws: Workspace, other_pgp_identity: PgpIdentity
) -> None:
    # a file we cannot decrypt: failing, its encrypted copy kept; near the purge it is at risk
    ws.put("risky.xml.pgp", other_pgp_identity.encrypt(b"<not ours/>"), age_days=95)
    # a file whose every transfer breaks off, past the purge: no copy at all, so it is lost
    ws.put("lost.xml.pgp", os.urandom(2 * 1024 * 1024), age_days=101)
    ws.put_report("zfine.xml.pgp", b"<fine/>", age_days=2)
    proxy = FaultProxy(int(ws.server.port), FaultPlan(cut_after=1024 * 1024))
    try:
        ws.write_config(port=proxy.port, known_hosts=_proxy_known_hosts(ws, proxy.port))
        quiet = run_cli_inprocess("--config", str(ws.config_path), "-q", "fetch")
    finally:
        proxy.stop()
    assert quiet.exit_code == 1 and quiet.stdout == ""
    assert "risky.xml.pgp" in quiet.stderr and "purges it in 5 days" in quiet.stderr
    assert "LOST" in quiet.stderr and "lost.xml.pgp" in quiet.stderr

    code, status, _ = cli(ws, "status")
    assert code == 1
    source = status["sources"][0]
    assert [n["name"] for n in source["at_risk"]] == ["risky.xml.pgp"]
    assert [n["name"] for n in source["lost"]] == ["lost.xml.pgp"]
    assert {f["name"] for f in source["failures"]} == {"risky.xml.pgp", "lost.xml.pgp"}
    assert source["archived"] == 1 and source["last_run"]["exit_code"] == 1
    quiet_status = run_cli_inprocess("--config", str(ws.config_path), "-q", "status")
    assert quiet_status.stdout == "" and "lost.xml.pgp" in quiet_status.stderr, \
        "cron mails what needs a person"

    code, acked, _ = cli(ws, "status", "--ack", "lost.xml.pgp")
    assert acked["acknowledged"] == 1 and acked["sources"][0]["lost"] == []
    assert {f["name"] for f in acked["sources"][0]["failures"]} == {"risky.xml.pgp"}, \
        "acknowledging closes the lost file's failures too"
    code, again, _ = cli(ws, "status", "--ack", "lost.xml.pgp")
    assert code != 2 and again["acknowledged"] == 1, "acknowledging twice is harmless"
    code, _, stderr = cli(ws, "status", "--ack", "no-such-file.pgp")
    assert code == 2 and "no file named" in stderr


def test_downloaded_but_not_yet_decrypted_files_are_neither_at_risk_nor_lost(
    ws: Workspace,
) -> None:
    ws.put_report("old.xml.pgp", b"<old/>", age_days=99)
    result = run_cli_inprocess("--config", str(ws.config_path), "fetch", "--no-decrypt")
    assert result.exit_code == 0 and "purges" not in result.stderr
    code, status, _ = cli(ws, "status")
    assert code == 0
    assert status["sources"][0]["at_risk"] == [] and status["sources"][0]["lost"] == []


def test_retention_dry_run_changes_no_byte(ws: Workspace) -> None:
    ws.put_report("old.xml.pgp", b"<old/>", age_days=130)
    ws.put_report("new.xml.pgp", b"<new/>", age_days=3)
    ws.write_config(retries=0)
    assert cli(ws, "fetch", "--dry-run")[0] == 0
    assert run_cli_inprocess("--config", str(ws.config_path), "fetch", "--no-decrypt").exit_code == 0
    assert run_cli_inprocess("--config", str(ws.config_path), "fetch").exit_code == 0
    config_text = ws.config_path.read_text().replace("[settings]", "[retention]\n"
                                                      'remote = "delete-after-fetch"\n'
                                                      'local_encrypted = "expire"\n\n'
                                                      "[settings]")
    ws.config_path.write_text(config_text)
    ledger_file = ws.state_dir / "ledger.sqlite3"
    before = tree_hashes(ws.download_dir, ws.output_dir, ws.server.remote_root)
    ledger_before = hashlib.sha256(ledger_file.read_bytes()).hexdigest()
    code, result, stderr = cli(ws, "retention", "--dry-run")
    assert code == 0, stderr
    planned = {(d["target"], d["name"]) for d in result["sources"][0]["planned"]}
    assert planned == {("remote", "old.xml.pgp"), ("remote", "new.xml.pgp")}
    assert not (ws.download_dir / "old.xml.pgp").exists(), "fetch already expired that copy"
    assert tree_hashes(ws.download_dir, ws.output_dir, ws.server.remote_root) == before
    assert hashlib.sha256(ledger_file.read_bytes()).hexdigest() == ledger_before

    code, result, stderr = cli(ws, "retention")
    assert code == 0, stderr
    assert sorted(p.name for p in ws.server.remote_root.iterdir()) == []
    assert ws.outputs() == {"old.xml": b"<old/>", "new.xml": b"<new/>"}


def test_delete_expired_keeps_what_failed_to_decrypt(ws: Workspace,
                                                     other_pgp_identity: PgpIdentity) -> None:
    ws.put_report("archived.xml.pgp", b"<a/>", age_days=120)
    ws.put("undecryptable.xml.pgp", other_pgp_identity.encrypt(b"<x/>"), age_days=120)
    ws.put_report("recent.xml.pgp", b"<r/>", age_days=3)
    ws.config_path.write_text(ws.config_path.read_text().replace(
        "[settings]", '[retention]\nremote = "delete-expired"\n\n[settings]'))
    code, result, _ = cli(ws, "fetch")
    assert code == 1, result
    remote_left = sorted(p.name for p in ws.server.remote_root.iterdir())
    assert remote_left == ["recent.xml.pgp", "undecryptable.xml.pgp"]
    assert (ws.download_dir / "undecryptable.xml.pgp").exists()
    done = [(d["target"], d["name"]) for d in result["sources"][0]["deletions"] if d["done"]]
    assert ("remote", "archived.xml.pgp") in done
    code, status, _ = cli(ws, "status")
    assert status["sources"][0]["purged_by_provider"] == 0, "our own deletion is not a purge"


def test_vanished_file_is_recorded_as_purged_by_the_provider(ws: Workspace) -> None:
    ws.put_report("a.xml.pgp", b"<a/>", age_days=50)
    ws.put_report("b.xml.pgp", b"<b/>", age_days=40)
    assert cli(ws, "fetch")[0] == 0
    (ws.server.remote_root / "a.xml.pgp").unlink()  # the provider purges it
    assert cli(ws, "fetch")[0] == 0
    code, status, _ = cli(ws, "status")
    assert code == 0
    assert status["sources"][0]["purged_by_provider"] == 1
    assert status["sources"][0]["lost"] == [], "it was archived: nothing is lost"


def test_verify_finds_altered_and_missing_reports(ws: Workspace) -> None:
    for name in ("a", "b", "c"):
        ws.put_report(f"{name}.xml.pgp", f"<{name}/>".encode(), age_days=3)
    assert cli(ws, "fetch")[0] == 0
    assert cli(ws, "verify")[0] == 0
    (ws.output_dir / "a.xml").write_bytes(b"<tampered/>")
    (ws.output_dir / "b.xml").unlink()
    code, result, stderr = cli(ws, "verify")
    assert code == 1
    problems = {(p["name"], p["copy"], p["problem"]) for p in result["problems"]}
    assert problems == {("a.xml.pgp", "archive", "altered"), ("b.xml.pgp", "archive", "missing")}
    assert "ALTERED" in stderr and "MISSING" in stderr


def test_stale_feed_is_warned_by_fetch_and_status(ws: Workspace) -> None:
    ws.put_report("last.xml.pgp", b"<last/>", age_days=5)
    ws.write_config(expect_every_days=3)
    quiet = run_cli_inprocess("--config", str(ws.config_path), "-q", "fetch")
    assert quiet.exit_code == 0 and "feed looks stale" in quiet.stderr
    code, status, _ = cli(ws, "status")
    assert code == 1 and status["sources"][0]["stale"]
    ws.write_config(expect_every_days=7)
    assert cli(ws, "status")[0] == 0


def test_a_failed_file_gone_from_the_server_is_retried_from_its_kept_copy(
    ws: Workspace, other_pgp_identity: PgpIdentity
) -> None:
    ws.put("theirs.xml.pgp", other_pgp_identity.encrypt(b"<recovered/>"), age_days=20)
    assert cli(ws, "fetch")[0] == 1
    (ws.server.remote_root / "theirs.xml.pgp").unlink()  # purged before anyone fixed the key
    secret = subprocess.run(["gpg", "--homedir", str(other_pgp_identity.home), "--batch",
                             "--export-secret-keys", other_pgp_identity.fingerprint],
                            capture_output=True, check=True).stdout
    subprocess.run(["gpg", "--homedir", str(ws.identity.home), "--batch", "--import"],
                   input=secret, capture_output=True, check=True)
    code, result, stderr = cli(ws, "fetch")
    assert code == 0, stderr
    assert ws.outputs() == {"theirs.xml": b"<recovered/>"}
    assert result["sources"][0]["bytes_transferred"] == 0
    assert cli(ws, "status")[0] == 0


def test_a_deletion_refused_by_the_safety_check_is_a_warning_and_exit_1(ws: Workspace) -> None:
    ws.put_report("old.xml.pgp", b"<old/>", age_days=120)
    ws.put_report("recent.xml.pgp", b"<recent/>", age_days=3)
    keep = ws.config_path.read_text().replace("[settings]",
                                              '[retention]\nlocal_encrypted = "keep"\n\n[settings]')
    ws.config_path.write_text(keep)
    assert cli(ws, "fetch")[0] == 0
    (ws.output_dir / "old.xml").write_bytes(b"<altered/>")
    ws.write_config()  # local_encrypted = "expire" again
    quiet = run_cli_inprocess("--config", str(ws.config_path), "-q", "fetch")
    assert quiet.exit_code == 1 and quiet.stdout == ""
    assert "no longer matches the ledger's hash" in quiet.stderr
    assert (ws.download_dir / "old.xml.pgp").exists(), "the only good copy is kept"


def test_dry_run_warns_only_about_files_it_would_fetch(ws: Workspace) -> None:
    ws.put("old-unmatched.txt", b"not a report", age_days=95)
    ws.put_report("old.xml.pgp", b"<old/>", age_days=95)
    dry = run_cli_inprocess("--config", str(ws.config_path), "fetch", "--dry-run")
    assert dry.exit_code == 0
    assert "old.xml.pgp" in dry.stderr and "old-unmatched.txt" not in dry.stderr


def test_a_no_decrypt_download_gone_from_the_server_is_still_archived(ws: Workspace) -> None:
    ws.put_report("r.xml.pgp", b"<r/>", age_days=30)
    assert run_cli_inprocess("--config", str(ws.config_path), "fetch", "--no-decrypt").exit_code == 0
    (ws.server.remote_root / "r.xml.pgp").unlink()
    code, result, stderr = cli(ws, "fetch")
    assert code == 0, stderr
    assert ws.outputs() == {"r.xml": b"<r/>"}
    assert result["sources"][0]["counts"]["archived"] == 1


def _with_retention(ws: Workspace, text: str) -> None:
    ws.config_path.write_text(ws.config_path.read_text().replace(
        "[settings]", f"[retention]\n{text}\n\n[settings]"))


def test_ordinary_expiry_of_a_small_archive_is_done_in_one_run(ws: Workspace) -> None:
    """Issue 11: a cap of 10 % of the archive deleted two of 13 expired files a run and told the
    user to check the clock; ordinary expiry is not what the caps are for."""
    for day in range(13):
        ws.put_report(f"U1.Activity.{day:02d}.xml.pgp", f"<r{day}/>".encode(), age_days=101 + day)
    ws.put_report("U1.Activity.today.xml.pgp", b"<today/>", age_days=1)
    _with_retention(ws, 'remote = "delete-expired"\nlocal_encrypted = "expire"')
    code, result, stderr = cli(ws, "fetch")
    assert code == 0, stderr
    source = result["sources"][0]
    assert source["counts"]["archived"] == 14
    done = {(d["target"], d["name"]) for d in source["deletions"] if d["done"]}
    assert done == {(target, f"U1.Activity.{day:02d}.xml.pgp") for day in range(13)
                    for target in ("local_encrypted", "remote")}
    assert source["deletions_held_back"] == 0 and source["deletions_withheld"] is None
    assert "held back" not in stderr and "clock" not in stderr
    assert sorted(p.name for p in ws.server.remote_root.iterdir()) == ["U1.Activity.today.xml.pgp"]
    assert sorted(p.name for p in ws.download_dir.iterdir()) == ["U1.Activity.today.xml.pgp"]
    assert len(ws.outputs()) == 14, "every report stays archived"


def test_over_max_deletions_the_rest_follow_in_the_next_run_with_a_warning(ws: Workspace) -> None:
    for index in range(60):  # not PGP: archived as delivered, no gpg needed
        ws.put(f"U1.Notice.{index:02d}.xml", f"<n{index}/>".encode(), age_days=150)
    ws.put("U1.Notice.today.xml", b"<today/>", age_days=1)
    _with_retention(ws, 'remote = "delete-expired"\nlocal_encrypted = "keep"')
    first = run_cli_inprocess("--config", str(ws.config_path), "-q", "fetch")
    assert first.exit_code == 0, first.stderr
    assert ("10 more deletion(s) held back by the per-run cap (retention.max_deletions = 50 "
            "files)") in first.stderr
    assert "max_deletions_percent" not in first.stderr
    assert len(list(ws.server.remote_root.iterdir())) == 11
    code, result, stderr = cli(ws, "retention")
    assert code == 0, stderr
    assert sum(d["done"] for d in result["sources"][0]["deletions"]) == 10
    assert result["sources"][0]["held_back"] == 0 and "held back" not in stderr
    assert [p.name for p in ws.server.remote_root.iterdir()] == ["U1.Notice.today.xml"]
    assert len(ws.outputs()) == 61


def test_a_folder_whose_newest_file_is_older_than_days_gets_no_deletion(ws: Workspace) -> None:
    ws.put_report("a.xml.pgp", b"<a/>", age_days=130)
    ws.put_report("b.xml.pgp", b"<b/>", age_days=120)
    _with_retention(ws, 'remote = "delete-expired"')
    quiet = run_cli_inprocess("--config", str(ws.config_path), "-q", "fetch")
    assert quiet.exit_code == 0, quiet.stderr
    assert "no deletions this run: the newest file on the server is 120 days old" in quiet.stderr
    assert "whole folder looks expired" in quiet.stderr and "clock" in quiet.stderr
    assert sorted(p.name for p in ws.server.remote_root.iterdir()) == ["a.xml.pgp", "b.xml.pgp"]
    assert sorted(p.name for p in ws.download_dir.iterdir()) == ["a.xml.pgp", "b.xml.pgp"]
    code, result, stderr = cli(ws, "retention")
    assert code == 0 and result["sources"][0]["withheld"] == 4
    assert [n["kind"] for n in result["sources"][0]["notices"]] == ["deletions-withheld"]
    assert "whole folder looks expired" in stderr
    ws.put_report("c.xml.pgp", b"<c/>", age_days=1)  # a new delivery: the clock is believable
    code, result, stderr = cli(ws, "fetch")
    assert code == 0, stderr
    assert sorted(p.name for p in ws.server.remote_root.iterdir()) == ["c.xml.pgp"]


def test_a_removed_cap_key_is_an_error_that_says_what_replaced_it(ws: Workspace) -> None:
    _with_retention(ws, "max_deletions_percent = 10")
    result = run_cli_inprocess("--config", str(ws.config_path), "fetch")
    assert result.exit_code == 2
    assert "retention.max_deletions_percent: unknown key: removed" in result.stderr
    assert "delete this line" in result.stderr


@pytest.mark.parametrize("dry_run", [True, False])
def test_retention_before_the_first_fetch_warns_from_the_listing(ws: Workspace,
                                                                 dry_run: bool) -> None:
    """Issue 11: `retention` planned from the ledger only, so before the first fetch it saw no
    file at risk (SPEC: it lists each source's server, so files at risk are reported even then)."""
    ws.put_report("risky.xml.pgp", b"<r/>", age_days=95)
    ws.put_report("alsorisky.xml.pgp", b"<a/>", age_days=93)
    ws.put_report("fresh.xml.pgp", b"<f/>", age_days=2)
    ws.put("unmatched.txt", b"not selected", age_days=95)
    ledger_file = ws.state_dir / "ledger.sqlite3"
    assert not ledger_file.exists()
    args = ["retention", "--dry-run"] if dry_run else ["retention"]
    quiet = run_cli_inprocess("--config", str(ws.config_path), "-q", *args)
    assert quiet.exit_code == 0, quiet.stderr
    assert "risky.xml.pgp: not archived yet; the provider purges it in 5 days" in quiet.stderr
    assert "alsorisky.xml.pgp: not archived yet; the provider purges it in 7 days" in quiet.stderr
    assert "fresh.xml.pgp" not in quiet.stderr and "unmatched.txt" not in quiet.stderr
    code, result, _ = cli(ws, *args)
    assert code == 0
    at_risk = sorted((n["kind"], n["name"]) for n in result["sources"][0]["notices"])
    assert at_risk == [("at-risk", "alsorisky.xml.pgp"), ("at-risk", "risky.xml.pgp")]
    if dry_run:
        assert not ledger_file.exists(), "a dry run changes nothing anywhere: no ledger either"
    else:
        with ws.ledger() as db:
            seen = {row[0] for row in db.execute("SELECT name FROM remote_files")}
        assert seen == {"risky.xml.pgp", "alsorisky.xml.pgp", "fresh.xml.pgp"}
    assert not ws.download_dir.exists() and not ws.output_dir.exists()


def test_an_acknowledged_failure_is_not_retried_until_the_file_changes(
    ws: Workspace, other_pgp_identity: PgpIdentity
) -> None:
    """Issue 11: after `status --ack NAME` the next fetch decrypted the kept copy again (and
    retried a listed failing file) and exited 1, so cron mailed every night. An acknowledged
    version is left alone; a new version of the same name is fetched as usual."""
    ws.put("listed.xml.pgp", other_pgp_identity.encrypt(b"<not ours/>"), age_days=20)
    ws.put("purged.xml.pgp", other_pgp_identity.encrypt(b"<not ours either/>"), age_days=30)
    ws.put_report("fine.xml.pgp", b"<fine/>", age_days=2)
    code, result, _ = cli(ws, "fetch")
    assert code == 1
    assert result["sources"][0]["counts"]["failed"] == 2
    (ws.server.remote_root / "purged.xml.pgp").unlink()  # its kept copy is retried from now on
    code, result, _ = cli(ws, "fetch")
    assert code == 1 and result["sources"][0]["counts"]["failed"] == 2

    with ws.ledger() as db:
        failure_rows = db.execute("SELECT COUNT(*) FROM failures").fetchone()[0]
    code, acked, _ = cli(ws, "status", "--ack", "listed.xml.pgp", "--ack", "purged.xml.pgp")
    assert acked["acknowledged"] == 2 and acked["sources"][0]["failures"] == []

    quiet = run_cli_inprocess("--config", str(ws.config_path), "-q", "fetch")
    assert quiet.exit_code == 0, quiet.stderr
    assert quiet.stdout == "" and quiet.stderr == "", "nothing for cron to mail"
    code, result, stderr = cli(ws, "fetch")
    assert code == 0, stderr
    files = {f["name"]: f for f in result["sources"][0]["files"]}
    assert files["listed.xml.pgp"]["action"] == "acknowledged"
    assert files["listed.xml.pgp"]["error"] is None
    assert "purged.xml.pgp" not in files, "not retried from its kept copy"
    assert result["sources"][0]["counts"]["acknowledged"] == 1
    assert result["sources"][0]["counts"]["failed"] == 0
    assert result["sources"][0]["bytes_transferred"] == 0
    with ws.ledger() as db:
        assert db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == failure_rows
        assert db.execute("SELECT COUNT(*) FROM failures WHERE resolved_at IS NULL"
                          ).fetchone()[0] == 0, "no decryption was attempted"
    assert (ws.download_dir / "listed.xml.pgp").exists(), "the kept copy stays"
    dry = run_cli_inprocess("--config", str(ws.config_path), "--json", "fetch", "--dry-run")
    assert {f["name"]: f["action"] for f in dry.result()["sources"][0]["files"]}[
        "listed.xml.pgp"] == "acknowledged"
    assert cli(ws, "status")[0] == 0

    # the provider re-delivers the report, now to the right key: a new version, fetched as usual
    ws.put_report("listed.xml.pgp", b"<delivered again/>", age_days=0.5)
    code, result, stderr = cli(ws, "fetch")
    assert code == 0, stderr
    files = {f["name"]: f for f in result["sources"][0]["files"]}
    assert files["listed.xml.pgp"]["action"] == "archived"
    assert ws.outputs()["listed.xml"] == b"<delivered again/>"


def test_acknowledging_a_refused_name_says_why_it_cannot_be_and_changes_nothing(
    ws: Workspace,
) -> None:
    ws.put(".hidden.xml.pgp", b"a name fetch refuses", age_days=3)
    assert cli(ws, "fetch")[0] == 1
    code, _, stderr = cli(ws, "status", "--ack", ".hidden.xml.pgp")
    assert code == 2 and "refused as unsafe" in stderr and "rename or remove" in stderr
    code, status, _ = cli(ws, "status")
    assert [f["stage"] for f in status["sources"][0]["failures"]] == ["name"], \
        "an acknowledgement that is refused closes nothing"


def test_retention_retries_a_connection_dropped_in_the_handshake_like_fetch(ws: Workspace) -> None:
    ws.put_report("old.xml.pgp", b"<old/>", age_days=30)
    assert cli(ws, "fetch")[0] == 0
    proxy = FaultProxy(int(ws.server.port), FaultPlan(cut_after=1))  # the first one dies at once
    try:
        ws.write_config(port=proxy.port, known_hosts=_proxy_known_hosts(ws, proxy.port), retries=1)
        config_text = ws.config_path.read_text().replace(
            "[settings]", '[retention]\nremote = "delete-after-fetch"\n\n[settings]')
        ws.config_path.write_text(config_text)
        code, result, stderr = cli(ws, "retention")
        assert code == 0, stderr
        assert [(d["target"], d["name"], d["done"]) for d in result["sources"][0]["deletions"]] == [
            ("remote", "old.xml.pgp", True)]
        assert proxy.connections == 2, "the retry came over a second connection"
    finally:
        proxy.stop()
    assert list(ws.server.remote_root.iterdir()) == []
