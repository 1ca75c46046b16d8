"""Hardening, issue 11: never lose or leak (placement races, names the server sends, folder modes).

Real sshd, real FTP servers, real gpg, the real CLI in a subprocess. Each test names the line of
defence it exercises.
"""

from __future__ import annotations

import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from reportsync import fetch
from reportsync.config import load_config
from reportsync.fetch import FetchOptions
from reportsync.pgp import Decrypted, Gpg, plaintext_name
from tests.servers import LocalServer
from tests.support import PgpIdentity, random_plain, run_cli
from tests.test_fetch_e2e import Workspace


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
    # Line of defence: fsutil.place_file claims each final name atomically (claim_name: a hard
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
    doctor = run_cli("--config", str(ws.config_path), "--json", "doctor", timeout=60)
    home = [finding for finding in doctor.json()["findings"] if finding["check"] == "gnupg home"]
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
    # Line of defence: fsutil.ensure_private_dir (via shared_folder_problem) in fetch._archive;
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

    doctor = run_cli("--config", str(ws.config_path), "--json", "doctor", timeout=60)
    folders = {finding["finding"].split(":")[0]: finding for finding in doctor.json()["findings"]
               if finding["check"] == "folder"}
    assert folders["sources.broker.output_dir"]["status"] == "FAIL"
    assert "can be written to by anyone" in folders["sources.broker.output_dir"]["finding"]
    assert folders["sources.broker.download_dir"]["status"] == "PASS"

    ws.output_dir.chmod(0o1777)
    doctor = run_cli("--config", str(ws.config_path), "--json", "doctor", timeout=60)
    statuses = {finding["finding"].split(":")[0]: finding["status"]
                for finding in doctor.json()["findings"] if finding["check"] == "folder"}
    assert statuses["sources.broker.output_dir"] == "PASS"
