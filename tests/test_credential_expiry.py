"""A PGP decryption key or an SSH certificate that ends within 30 days is warned about by `fetch`
(on stderr, also under -q: what cron runs), not only by `doctor` (issue 11), with the real gpg,
ssh-keygen and sshd. `doctor` and `fetch` take the finding from the same function.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from reportsync import pgpkeys
from reportsync.pgp import Gpg
from tests.servers import LocalServer
from tests.support import PgpIdentity, run_cli_inprocess
from tests.test_fetch_e2e import Workspace

DAY = 86400


def gpg_batch(home: Path, *args: str) -> None:
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
                    "--passphrase", "", *args], check=True, capture_output=True)


def test_fetch_warns_under_quiet_when_the_decryption_key_expires_within_30_days(
    tmp_path: Path, pgp_identity: PgpIdentity, sftp_server: LocalServer,
) -> None:
    ws = Workspace(tmp_path, pgp_identity, sftp_server)
    ws.write_config()
    ws.put_report("a.xml.pgp", b"<a/>", age_days=1)
    plain = run_cli_inprocess("--config", str(ws.config_path), "-q", "fetch")
    assert plain.exit_code == 0 and plain.stderr == "", "a key without expiry: no warning"

    fingerprint = ws.identity.fingerprint
    gpg_batch(ws.identity.home, "--quick-set-expire", fingerprint, "10d")
    gpg_batch(ws.identity.home, "--quick-set-expire", fingerprint, "10d", "*")
    quiet = run_cli_inprocess("--config", str(ws.config_path), "-q", "fetch")  # nothing new: still warned
    assert quiet.exit_code == 0 and quiet.stdout == ""
    assert re.search(rf"^warning: PGP secret key {fingerprint} expires on \S+, in (9|10) days; "
                     "after that the provider cannot encrypt reports to it$", quiet.stderr,
                     flags=re.MULTILINE), quiet.stderr
    assert f"what to do: Extend it now: `gpg --homedir {ws.identity.home} --quick-set-expire " \
        f"{fingerprint} 2y`" in quiet.stderr
    result = ws.fetch()
    [expiring] = result.result()["expiring"]
    assert expiring["kind"] == "pgp" and expiring["subject"] == fingerprint
    assert expiring["days_left"] in (9, 10) and expiring["source"] is None

    doctor = run_cli_inprocess("--config", str(ws.config_path), "--json", "doctor")
    [finding] = [f for f in doctor.result()["findings"] if f["check"] == "secret key"]
    assert finding["status"] == "WARN" and finding["finding"] == expiring["finding"], \
        "doctor and fetch say the same, from the same function"
    no_decrypt = run_cli_inprocess("--config", str(ws.config_path), "-q", "fetch", "--no-decrypt")
    assert no_decrypt.exit_code == 0 and "expires" not in no_decrypt.stderr, \
        "a run that decrypts nothing does not ask gpg"
    dry = run_cli_inprocess("--config", str(ws.config_path), "fetch", "--dry-run")
    assert dry.exit_code == 0 and "expires" not in dry.stderr, "nor does a dry run"


def test_a_newer_encryption_subkey_keeps_the_key_receiving_reports(tmp_path: Path) -> None:
    """gpg encrypts to the newest valid encryption subkey: an older one that ends soon is no
    reason to warn (doctor used the soonest subkey, and called a key with an expired old subkey
    unusable)."""
    home = tmp_path / "g"
    home.mkdir(mode=0o700)
    gpg_batch(home, "--quick-gen-key", "Rotated <rotated@example.com>", "ed25519", "cert", "0")
    listed = subprocess.run(["gpg", "--homedir", str(home), "--list-keys", "--with-colons"],
                            capture_output=True, text=True, check=True).stdout
    fingerprint = next(line.split(":")[9] for line in listed.splitlines()
                       if line.startswith("fpr:"))
    gpg_batch(home, "--quick-add-key", fingerprint, "cv25519", "encr", "5d")
    gpg_batch(home, "--quick-add-key", fingerprint, "cv25519", "encr", "60d")
    gpg = Gpg(binary="gpg", home=home, passphrase=None)
    now = time.time()
    keys = gpg.decryption_keys(now)
    assert [key.fingerprint for key in keys.usable] == [fingerprint]
    expiry = pgpkeys.decryption_key_expiry(keys, home, now)
    assert expiry is not None and expiry.days_left in (59, 60) and not expiry.soon
    later = now + 10 * DAY  # the older subkey has ended: the key still receives reports
    assert [key.fingerprint for key in gpg.decryption_keys(later).usable] == [fingerprint]
    much_later = now + 61 * DAY
    ended = gpg.decryption_keys(much_later)
    assert ended.usable == () and ended.unusable == (f"{fingerprint} (expired)",)
    gone = pgpkeys.decryption_key_expiry(ended, home, much_later)
    assert gone is not None and gone.days_left < 0 and "expired on" in gone.finding
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False,
                   capture_output=True)


def _certificate(server: LocalServer, folder: Path, validity: str) -> tuple[Path, Path]:
    key = folder / "id_rsa"
    shutil.copyfile(server.extra["user_key"], key)
    shutil.copyfile(server.extra["user_key"] + ".pub", f"{key}.pub")
    key.chmod(0o600)
    subprocess.run(["ssh-keygen", "-q", "-s", server.extra["ca_key"], "-I", "soon", "-n",
                    server.source["username"], "-V", validity, f"{key}.pub"], check=True,
                   capture_output=True)
    return key, folder / "id_rsa-cert.pub"


@pytest.mark.parametrize(("validity", "warned"), [("-1d:+5d", True), ("-1d:+60d", False)])
def test_fetch_warns_under_quiet_when_the_ssh_certificate_ends_within_30_days(
    tmp_path: Path, pgp_identity: PgpIdentity, sftp_cert_server: LocalServer, validity: str,
    warned: bool,
) -> None:
    key, certificate = _certificate(sftp_cert_server, tmp_path, validity)
    ws = Workspace(tmp_path, pgp_identity, sftp_cert_server)
    ws.write_config(key_file=str(key), certificate_file=str(certificate))
    ws.put_report("a.xml.pgp", b"<a/>", age_days=1)
    quiet = run_cli_inprocess("--config", str(ws.config_path), "-q", "fetch")
    assert quiet.exit_code == 0 and quiet.stdout == "", quiet.stderr
    assert ws.outputs() == {"a.xml": b"<a/>"}, "the certificate still works"
    if not warned:
        assert quiet.stderr == ""
        return
    assert re.search(rf"^warning: source 'broker': the SSH certificate {re.escape(str(certificate))} "
                     r"expires on \S+ \S+ UTC, in (4|5) days; after that the server refuses the "
                     "login$", quiet.stderr, flags=re.MULTILINE), quiet.stderr
    assert "what to do: Ask your provider (the certificate authority) for a renewed " \
        f"certificate for the same key and save it as {certificate}." in quiet.stderr
    [expiring] = ws.fetch().result()["expiring"]
    assert (expiring["kind"], expiring["source"], expiring["subject"]) == (
        "ssh-certificate", "broker", str(certificate))
