"""Decryption against the real gpg, with isolated GnuPG homes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reportsync.config import Secret
from reportsync.errors import DecryptionError, KeyProblemError
from reportsync.pgp import Gpg, looks_like_pgp, plaintext_name, status_lines
from tests.support import PgpIdentity, make_identity

REPORT = b"<FlexQueryResponse><Trade id='1'/></FlexQueryResponse>\n" * 50


def gpg_for(identity: PgpIdentity, passphrase: str | None = None) -> Gpg:
    return Gpg(binary="gpg", home=identity.home,
               passphrase=Secret(passphrase) if passphrase is not None else None)


def test_good_message_decrypts_to_the_exact_plaintext(pgp_identity: PgpIdentity, tmp_path: Path) -> None:
    encrypted = tmp_path / "r.xml.pgp"
    encrypted.write_bytes(pgp_identity.encrypt(REPORT))
    out = tmp_path / "out"
    result = gpg_for(pgp_identity).decrypt(encrypted, out)
    assert out.read_bytes() == REPORT
    assert result.size == len(REPORT)


def test_armored_message_decrypts(pgp_identity: PgpIdentity, tmp_path: Path) -> None:
    encrypted = tmp_path / "r.xml.asc"
    encrypted.write_bytes(pgp_identity.encrypt(REPORT, armor=True))
    gpg_for(pgp_identity).decrypt(encrypted, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == REPORT


def test_corrupt_ciphertext_fails_and_leaves_no_output(pgp_identity: PgpIdentity, tmp_path: Path) -> None:
    data = bytearray(pgp_identity.encrypt(REPORT))
    data[len(data) // 2] ^= 0xFF
    encrypted = tmp_path / "bad.pgp"
    encrypted.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(DecryptionError):
        gpg_for(pgp_identity).decrypt(encrypted, out)
    assert not out.exists()


def test_message_for_another_key_names_the_key_id(
    pgp_identity: PgpIdentity, other_pgp_identity: PgpIdentity, tmp_path: Path
) -> None:
    encrypted = tmp_path / "theirs.pgp"
    encrypted.write_bytes(other_pgp_identity.encrypt(REPORT))
    with pytest.raises(DecryptionError, match="does not hold") as caught:
        gpg_for(pgp_identity).decrypt(encrypted, tmp_path / "out")
    assert other_pgp_identity.fingerprint[-16:] in caught.value.message
    assert not (tmp_path / "out").exists()


def test_message_without_integrity_protection_is_refused(pgp_identity: PgpIdentity, tmp_path: Path) -> None:
    plain = tmp_path / "p.txt"
    plain.write_bytes(REPORT)
    encrypted = tmp_path / "nomdc.pgp"
    subprocess.run(["gpg", "--homedir", str(pgp_identity.home), "--batch", "--yes",
                    "--trust-model", "always", "--rfc2440", "--cipher-algo", "AES256",
                    "-r", pgp_identity.fingerprint, "-o", str(encrypted), "-e", str(plain)],
                   check=True, capture_output=True)
    out = tmp_path / "out"
    with pytest.raises(DecryptionError):
        gpg_for(pgp_identity).decrypt(encrypted, out)
    assert not out.exists(), "gpg writes the plaintext before it fails: it must be removed"


def test_wrong_passphrase_is_a_key_problem(tmp_path: Path) -> None:
    identity = make_identity(tmp_path / "g", "pp@example.com", passphrase="right horse")
    try:
        encrypted = tmp_path / "r.pgp"
        encrypted.write_bytes(identity.encrypt(REPORT))
        with pytest.raises(KeyProblemError, match="passphrase"):
            gpg_for(identity, "wrong").decrypt(encrypted, tmp_path / "o1")
        with pytest.raises(KeyProblemError, match="passphrase"):
            gpg_for(identity, None).decrypt(encrypted, tmp_path / "o2")
        gpg_for(identity, "right horse").decrypt(encrypted, tmp_path / "o3")
        assert (tmp_path / "o3").read_bytes() == REPORT
    finally:
        identity.stop_agent()


def test_required_signer(pgp_identity: PgpIdentity, tmp_path: Path) -> None:
    signed = tmp_path / "signed.pgp"
    signed.write_bytes(pgp_identity.encrypt(REPORT, sign=True))
    unsigned = tmp_path / "unsigned.pgp"
    unsigned.write_bytes(pgp_identity.encrypt(REPORT))
    gpg = gpg_for(pgp_identity)
    result = gpg.decrypt(signed, tmp_path / "o1", require_signer=pgp_identity.fingerprint)
    assert result.signer_fingerprint == pgp_identity.fingerprint
    with pytest.raises(DecryptionError, match="no valid signature"):
        gpg.decrypt(unsigned, tmp_path / "o2", require_signer=pgp_identity.fingerprint)
    with pytest.raises(DecryptionError, match="not by the required"):
        gpg.decrypt(signed, tmp_path / "o3", require_signer="0123456789ABCDEF")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_missing_gpg_binary_is_a_key_problem(tmp_path: Path) -> None:
    with pytest.raises(KeyProblemError, match="gpg not found"):
        Gpg(binary="gpg-that-does-not-exist", home=tmp_path / "h", passphrase=None)


def test_names_and_detection(pgp_identity: PgpIdentity, tmp_path: Path) -> None:
    assert plaintext_name("U1.Activity.20261102.xml.pgp") == "U1.Activity.20261102.xml"
    assert plaintext_name("a.csv.GPG") == "a.csv"
    assert plaintext_name("a.xml.asc") == "a.xml"
    assert plaintext_name("a.xml") == "a.xml"
    assert plaintext_name(".pgp") == ".pgp"
    binary = tmp_path / "noext"
    binary.write_bytes(pgp_identity.encrypt(b"x"))
    armored = tmp_path / "noext2"
    armored.write_bytes(pgp_identity.encrypt(b"x", armor=True))
    plain = tmp_path / "plain"
    plain.write_bytes(b"<xml/>")
    assert looks_like_pgp(binary, "noext") and looks_like_pgp(armored, "noext2")
    assert not looks_like_pgp(plain, "plain.xml")
    assert status_lines("[GNUPG:] NO_SECKEY ABC\nother\n[GNUPG:] NO_SECKEY DEF") == {
        "NO_SECKEY": ["ABC", "DEF"]}
