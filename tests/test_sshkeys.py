"""reportsync.sshkeys against the real OpenSSH tools: ssh-keygen, sshd (127.0.0.1), and paramiko."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import paramiko
import pytest

from reportsync.config import SourceConfig, parse_config
from reportsync.errors import AuthenticationError, ConfigError, ExitCode, StorageError, UsageError
from reportsync.sshkeys import (
    SshCertificateInfo,
    SshKeyInfo,
    fingerprint,
    generate_ssh_key,
    inspect_ssh_file,
)
from reportsync.transports.sftp import SftpTransport, open_sftp
from tests.servers import LocalServer

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None,
                                reason="OpenSSH ssh-keygen is not installed")

PASSPHRASE = "correct horse 7 battery"
COMMENT = "alice@reportsync-test"


def keygen(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """ssh-keygen in UTC (so -V dates and -L output do not depend on the machine's zone)."""
    return subprocess.run(["ssh-keygen", *args], check=check, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env={**os.environ, "TZ": "UTC"})


def keygen_fingerprint(path: Path) -> str:
    """The line ``ssh-keygen -l -f PATH`` prints, e.g. ``2048 SHA256:... comment (RSA)``."""
    return keygen("-l", "-f", str(path)).stdout.strip()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def pub_key_part(path: Path) -> str:
    """``<type> <base64>`` of a public key line file (its comment dropped)."""
    return " ".join(path.read_text(encoding="utf-8").split()[:2])


def load_with_paramiko(path: Path, key_type: str, password: str | None) -> paramiko.PKey:
    cls: Any = paramiko.RSAKey if key_type == "rsa" else paramiko.Ed25519Key
    return cls.from_private_key_file(str(path), password=password)  # type: ignore[no-any-return]


# --- generating -------------------------------------------------------------------------------


@pytest.mark.parametrize("passphrase", [None, PASSPHRASE], ids=["plain", "encrypted"])
@pytest.mark.parametrize("key_type", ["rsa", "ed25519"])
def test_generated_key_agrees_with_ssh_keygen_and_paramiko(tmp_path: Path, key_type: str,
                                                          passphrase: str | None) -> None:
    path = tmp_path / "new-folder" / "id_test"
    info = generate_ssh_key(path, key_type=key_type, passphrase=passphrase, comment=COMMENT)
    public = Path(f"{path}.pub")
    bits = 2048 if key_type == "rsa" else 256
    expected_type = "RSA" if key_type == "rsa" else "ED25519"

    assert isinstance(info, SshKeyInfo)
    assert (info.key_type, info.bits, info.comment) == (expected_type, bits, COMMENT)
    assert info.encrypted is (passphrase is not None)
    assert info.is_private and info.path == path

    # ssh-keygen -l: the same fingerprint, bits, comment and type, in the same line shape.
    assert info.describe() == f"{bits} {info.fingerprint} {COMMENT} ({expected_type})"
    assert keygen_fingerprint(path) == info.describe()
    assert keygen_fingerprint(public) == info.describe()

    # The .pub line: "<type> <base64> <comment>\n"; its blob hashes to the fingerprint.
    line = public.read_text(encoding="ascii")
    assert line.endswith(f" {COMMENT}\n") and line.count("\n") == 1
    assert pub_key_part(public) == info.public_key
    assert fingerprint(base64.b64decode(info.public_key.split()[1])) == info.fingerprint

    # ssh-keygen -y derives the same public key from the private file (with the passphrase).
    derived = keygen("-y", "-P", passphrase or "", "-f", str(path)).stdout.split()
    assert " ".join(derived[:2]) == info.public_key

    # paramiko loads it, and sees the same key.
    key = load_with_paramiko(path, key_type, passphrase)
    assert fingerprint(key.asbytes()) == info.fingerprint
    assert key.get_bits() == bits

    # Modes: private 0600, public 0644, the created folder 0700; no temp files left behind.
    assert mode(path) == 0o600
    assert mode(public) == 0o644
    assert mode(path.parent) == 0o700
    assert sorted(item.name for item in path.parent.iterdir()) == ["id_test", "id_test.pub"]

    # Reading it back gives the same description.
    again = inspect_ssh_file(path, passphrase)
    assert isinstance(again, SshKeyInfo)
    assert again.describe() == info.describe()
    assert again.encrypted is info.encrypted


def test_encrypted_key_needs_its_passphrase_and_never_stores_it(tmp_path: Path) -> None:
    path = tmp_path / "id_rsa"
    info = generate_ssh_key(path, passphrase=PASSPHRASE, comment=COMMENT)

    with pytest.raises(paramiko.PasswordRequiredException):
        paramiko.RSAKey.from_private_key_file(str(path))
    with pytest.raises(paramiko.SSHException):
        paramiko.RSAKey.from_private_key_file(str(path), password="not the passphrase")
    assert keygen("-y", "-P", "not the passphrase", "-f", str(path), check=False).returncode != 0

    secret = PASSPHRASE.encode()
    for written in (path, Path(f"{path}.pub")):
        data = written.read_bytes()
        assert secret not in data
        assert base64.b64encode(secret) not in data
    assert b"aes256-ctr" in base64.b64decode(b"".join(path.read_bytes().splitlines()[1:-1]))

    # Without the passphrase the public half (stored unencrypted) still describes it, even with
    # the .pub file gone; a wrong passphrase is a ConfigError that does not repeat it.
    Path(f"{path}.pub").unlink()
    bare = inspect_ssh_file(path)
    assert isinstance(bare, SshKeyInfo)
    assert (bare.fingerprint, bare.bits, bare.encrypted) == (info.fingerprint, 2048, True)
    assert bare.describe() == keygen_fingerprint(path)  # "no comment", as ssh-keygen says
    with pytest.raises(ConfigError) as caught:
        inspect_ssh_file(path, "wrong horse")
    assert "wrong passphrase" in str(caught.value)
    assert str(path) in str(caught.value)
    assert "wrong horse" not in str(caught.value.to_dict())


def test_rsa_3072_and_ed25519_ignores_bits(tmp_path: Path) -> None:
    rsa_info = generate_ssh_key(tmp_path / "rsa3072", bits=3072)
    assert rsa_info.bits == 3072
    assert keygen_fingerprint(tmp_path / "rsa3072").split()[:2] == ["3072", rsa_info.fingerprint]
    ed_info = generate_ssh_key(tmp_path / "ed", key_type="ED25519", bits=1024)
    assert (ed_info.key_type, ed_info.bits) == ("ED25519", 256)
    # No comment: the .pub line is just "<type> <base64>".
    assert (tmp_path / "ed.pub").read_text() == ed_info.public_key + "\n"


@pytest.mark.parametrize("bits", [1024, 2047, 4097, 8192])
def test_rsa_bits_outside_2048_to_4096_are_refused(tmp_path: Path, bits: int) -> None:
    with pytest.raises(UsageError) as caught:
        generate_ssh_key(tmp_path / "k", key_type="rsa", bits=bits)
    assert str(bits) in str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("arguments", "words"), [
    ({"key_type": "dsa"}, "unsupported SSH key type"),
    ({"comment": "two\nlines"}, "comment"),
    ({"passphrase": ""}, "passphrase is empty"),
])
def test_bad_arguments_are_usage_errors(tmp_path: Path, arguments: dict[str, Any],
                                        words: str) -> None:
    with pytest.raises(UsageError, match=words):
        generate_ssh_key(tmp_path / "k", **arguments)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("existing", ["id_key", "id_key.pub"])
def test_existing_files_are_not_overwritten_without_force(tmp_path: Path, existing: str) -> None:
    path = tmp_path / "id_key"
    (tmp_path / existing).write_bytes(b"precious old key\n")
    (tmp_path / existing).chmod(0o640)

    with pytest.raises(UsageError) as caught:
        generate_ssh_key(path, key_type="ed25519")
    assert existing in str(caught.value)
    assert "--force" in caught.value.remedy
    assert (tmp_path / existing).read_bytes() == b"precious old key\n"
    assert mode(tmp_path / existing) == 0o640
    assert [item.name for item in tmp_path.iterdir()] == [existing]  # nothing else written

    info = generate_ssh_key(path, key_type="ed25519", force=True)
    assert keygen_fingerprint(path).split()[1] == info.fingerprint
    assert mode(path) == 0o600 and mode(Path(f"{path}.pub")) == 0o644
    assert sorted(item.name for item in tmp_path.iterdir()) == ["id_key", "id_key.pub"]


def test_force_replaces_an_existing_pair_with_a_new_key(tmp_path: Path) -> None:
    path = tmp_path / "id_key"
    first = generate_ssh_key(path, key_type="ed25519", comment="first")
    second = generate_ssh_key(path, key_type="ed25519", comment="second", force=True)
    assert first.fingerprint != second.fingerprint
    assert keygen_fingerprint(path) == second.describe()


def test_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    generate_ssh_key(folder / "k", key_type="ed25519")
    assert mode(folder) == 0o755
    assert mode(folder / "k") == 0o600


def test_unwritable_destination_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError) as caught:
        generate_ssh_key(blocker / "sub" / "k", key_type="ed25519")
    assert caught.value.exit_code == ExitCode.STORAGE
    assert "a-file" in str(caught.value)


# --- inspecting keys made by ssh-keygen ---------------------------------------------------------


@pytest.mark.parametrize(("key_type", "bits"), [("rsa", 2048), ("ed25519", 256), ("ecdsa", 256),
                                                ("ecdsa", 384), ("ecdsa", 521)])
def test_inspect_matches_ssh_keygen_for_its_own_keys(tmp_path: Path, key_type: str,
                                                     bits: int) -> None:
    path = tmp_path / "key"
    keygen("-q", "-t", key_type, "-b", str(bits), "-N", "", "-C", "made by ssh-keygen",
           "-f", str(path))
    for target in (path, Path(f"{path}.pub")):
        info = inspect_ssh_file(target)
        assert isinstance(info, SshKeyInfo)
        assert info.describe() == keygen_fingerprint(target)
        assert info.bits == bits
        assert info.is_private is (target == path)
        assert not info.encrypted
    # Without the .pub the comment comes from the (unencrypted) private key itself.
    Path(f"{path}.pub").unlink()
    alone = inspect_ssh_file(path)
    assert isinstance(alone, SshKeyInfo)
    assert alone.comment == "made by ssh-keygen"
    assert alone.describe() == keygen_fingerprint(path)


def test_inspect_legacy_pem_keys(tmp_path: Path) -> None:
    plain = tmp_path / "pem_plain"
    keygen("-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-C", "pem", "-f", str(plain))
    assert plain.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    info = inspect_ssh_file(plain)
    assert isinstance(info, SshKeyInfo)
    assert info.describe() == keygen_fingerprint(plain)
    assert not info.encrypted

    locked = tmp_path / "pem_locked"
    keygen("-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", PASSPHRASE, "-C", "pem2",
           "-f", str(locked))
    expected = keygen_fingerprint(Path(f"{locked}.pub"))
    with_pub = inspect_ssh_file(locked)  # the .pub beside it names the key
    assert isinstance(with_pub, SshKeyInfo)
    assert with_pub.encrypted and with_pub.describe() == expected
    opened = inspect_ssh_file(locked, PASSPHRASE)
    assert isinstance(opened, SshKeyInfo)
    assert opened.encrypted and opened.describe() == expected
    with pytest.raises(ConfigError, match="wrong passphrase"):
        inspect_ssh_file(locked, "nope")
    Path(f"{locked}.pub").unlink()
    with pytest.raises(ConfigError, match="encrypted") as caught:
        inspect_ssh_file(locked)
    assert caught.value.path == str(locked)


@pytest.mark.parametrize("content", [
    b"this is not a key\n",
    b"",
    os.urandom(512) + b"\xff\xfe",
    b"ssh-rsa not!base64 comment\n",
    b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeadBeef comment\n",  # truncated blob
    b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    b"-----END OPENSSH PRIVATE KEY-----\n",
    b"-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n",
], ids=["text", "empty", "binary", "bad-base64", "truncated-pub", "truncated-openssh", "bad-pem"])
def test_garbage_is_a_config_error_naming_the_path(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pub"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        inspect_ssh_file(path)
    assert caught.value.path == str(path)
    assert str(path) in str(caught.value)
    assert len(caught.value.problems) == 1
    assert caught.value.exit_code == ExitCode.CONFIG


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_missing_file_or_folder_is_a_config_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "key"
    if kind == "folder":
        path.mkdir()
    with pytest.raises(ConfigError) as caught:
        inspect_ssh_file(path)
    assert caught.value.path == str(path)


# --- certificates ------------------------------------------------------------------------------


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    """A user CA made with ssh-keygen (ed25519, no passphrase)."""
    path = tmp_path / "ca" / "user_ca"
    path.parent.mkdir()
    keygen("-q", "-t", "ed25519", "-N", "", "-C", "test-ca", "-f", str(path))
    return path


def sign(ca: Path, public: Path, *options: str, key_id: str = "keyid") -> Path:
    keygen("-q", "-s", str(ca), "-I", key_id, *options, str(public))
    certificate = public.with_name(public.name.removesuffix(".pub") + "-cert.pub")
    assert certificate.exists()
    return certificate


def keygen_listing(certificate: Path) -> dict[str, str]:
    """``ssh-keygen -L`` fields: "Key ID", "Serial", "Valid", "Signing CA", ..."""
    fields: dict[str, str] = {}
    for line in keygen("-L", "-f", str(certificate)).stdout.splitlines():
        name, colon, value = line.strip().partition(": ")
        if colon:
            fields[name] = value.strip()
    return fields


def as_certificate(info: SshKeyInfo | SshCertificateInfo) -> SshCertificateInfo:
    assert isinstance(info, SshCertificateInfo)
    return info


@pytest.mark.parametrize("key_type", ["rsa", "ed25519"])
def test_certificate_report_matches_ssh_keygen(tmp_path: Path, ca: Path, key_type: str) -> None:
    key = generate_ssh_key(tmp_path / "id", key_type=key_type, comment=COMMENT)
    certificate = sign(ca, tmp_path / "id.pub", "-n", "alice,bob", "-V", "+52w", "-z", "42")
    info = as_certificate(inspect_ssh_file(certificate))

    assert info.key_id == "keyid"
    assert info.principals == ("alice", "bob")
    assert info.serial == 42
    assert info.cert_type == "user"
    assert info.status == "valid"
    assert info.days_left is not None and 363 <= info.days_left <= 364
    assert info.algorithm == f"ssh-{key_type}-cert-v01@openssh.com"
    assert info.signature_valid

    ca_line = keygen_fingerprint(Path(f"{ca}.pub"))  # "256 SHA256:... test-ca (ED25519)"
    assert info.ca_fingerprint == ca_line.split()[1]
    assert info.ca_key_type == "ED25519"
    # The certified key is the generated one; ssh-keygen -l shows the cert the same way.
    assert (info.key_type, info.bits, info.fingerprint) == (key.key_type, key.bits,
                                                            key.fingerprint)
    assert info.describe() == keygen_fingerprint(certificate)

    listing = keygen_listing(certificate)
    assert listing["Key ID"] == '"keyid"'
    assert listing["Serial"] == "42"
    assert info.ca_fingerprint in listing["Signing CA"]
    window = re.fullmatch(r"from (\S+) to (\S+)", listing["Valid"])
    assert window is not None
    valid_from, valid_to = window.groups()
    assert info.valid_from == datetime.fromisoformat(valid_from).replace(tzinfo=timezone.utc)
    assert info.valid_to == datetime.fromisoformat(valid_to).replace(tzinfo=timezone.utc)
    assert info.valid_to - info.valid_from >= timedelta(weeks=52)
    # Default extensions, no critical options.
    assert info.critical_options == ()
    assert dict(info.extensions) == {"permit-X11-forwarding": "", "permit-agent-forwarding": "",
                                     "permit-port-forwarding": "", "permit-pty": "",
                                     "permit-user-rc": ""}

    document = json.loads(json.dumps(info.to_dict()))
    assert document["principals"] == ["alice", "bob"]
    assert document["status"] == "valid" and document["kind"] == "certificate"
    assert datetime.fromisoformat(document["valid_to"]) == info.valid_to
    assert document["valid_forever"] is False


def test_ecdsa_certificate(tmp_path: Path, ca: Path) -> None:
    key = tmp_path / "ecdsa"
    keygen("-q", "-t", "ecdsa", "-b", "256", "-N", "", "-f", str(key))
    info = as_certificate(inspect_ssh_file(sign(ca, Path(f"{key}.pub"), "-n", "carol")))
    assert info.algorithm == "ecdsa-sha2-nistp256-cert-v01@openssh.com"
    assert (info.key_type, info.bits) == ("ECDSA", 256)
    assert info.fingerprint == keygen_fingerprint(Path(f"{key}.pub")).split()[1]
    assert info.principals == ("carol",)


def test_expired_certificate(tmp_path: Path, ca: Path) -> None:
    generate_ssh_key(tmp_path / "id", key_type="ed25519")
    info = as_certificate(inspect_ssh_file(
        sign(ca, tmp_path / "id.pub", "-n", "alice", "-V", "20200101:20200201")))
    assert info.status == "expired"
    assert info.valid_from == datetime(2020, 1, 1, tzinfo=timezone.utc)
    assert info.valid_to == datetime(2020, 2, 1, tzinfo=timezone.utc)
    assert info.days_left is not None and info.days_left < -365
    # Status follows the injected clock.
    inside = as_certificate(inspect_ssh_file(info.path, now=datetime(2020, 1, 15, 12,
                                                                     tzinfo=timezone.utc)))
    assert (inside.status, inside.days_left) == ("valid", 16)
    assert as_certificate(inspect_ssh_file(info.path, now=datetime(2020, 2, 1))).status == "expired"
    assert as_certificate(inspect_ssh_file(
        info.path, now=datetime(2019, 12, 31, 23, 59, tzinfo=timezone.utc))).status == "not yet valid"


def test_not_yet_valid_certificate(tmp_path: Path, ca: Path) -> None:
    generate_ssh_key(tmp_path / "id", key_type="ed25519")
    info = as_certificate(inspect_ssh_file(
        sign(ca, tmp_path / "id.pub", "-n", "alice", "-V", "+520w:+530w")))
    assert info.status == "not yet valid"
    assert info.valid_to is not None
    assert info.valid_from > datetime.now(timezone.utc) + timedelta(weeks=519)
    assert info.days_left is not None and 530 * 7 - 2 <= info.days_left <= 530 * 7


def test_forever_host_certificate_with_options(tmp_path: Path, ca: Path) -> None:
    generate_ssh_key(tmp_path / "id", key_type="ed25519")
    certificate = sign(ca, tmp_path / "id.pub", "-h", "-n", "sftp.example.com", "-V",
                       "always:forever", "-z", "7")
    info = as_certificate(inspect_ssh_file(certificate))
    assert info.cert_type == "host"
    assert (info.valid_to, info.days_left, info.status) == (None, None, "valid")
    assert info.to_dict()["valid_to"] is None and info.to_dict()["valid_forever"] is True
    assert keygen_listing(certificate)["Valid"] == "forever"


def test_critical_options_and_extensions(tmp_path: Path, ca: Path) -> None:
    generate_ssh_key(tmp_path / "id", key_type="ed25519")
    certificate = sign(ca, tmp_path / "id.pub", "-n", "alice", "-O", "clear",
                       "-O", "force-command=/bin/true", "-O", "source-address=127.0.0.1/32",
                       "-O", "permit-pty")
    info = as_certificate(inspect_ssh_file(certificate))
    assert dict(info.critical_options) == {"force-command": "/bin/true",
                                           "source-address": "127.0.0.1/32"}
    assert dict(info.extensions) == {"permit-pty": ""}
    assert info.to_dict()["critical_options"] == {"force-command": "/bin/true",
                                                  "source-address": "127.0.0.1/32"}


def test_tampered_certificate_signature_is_reported(tmp_path: Path, ca: Path) -> None:
    generate_ssh_key(tmp_path / "id", key_type="ed25519")
    certificate = sign(ca, tmp_path / "id.pub", "-n", "alice")
    algorithm, encoded, *rest = certificate.read_text().split()
    blob = bytearray(base64.b64decode(encoded))
    blob[-1] ^= 0x01  # the last byte of the CA's signature
    certificate.write_text(" ".join([algorithm, base64.b64encode(bytes(blob)).decode(), *rest]))
    info = as_certificate(inspect_ssh_file(certificate))
    assert not info.signature_valid
    assert info.key_id == "keyid" and info.principals == ("alice",)  # still described


def test_the_test_servers_certificate(sftp_cert_server: LocalServer) -> None:
    # The certificate the cert-only sshd accepts (its login is tested in test_sftp_transport).
    info = as_certificate(inspect_ssh_file(Path(sftp_cert_server.source["certificate_file"])))
    assert info.principals == (sftp_cert_server.source["username"],)
    assert info.status == "valid"
    assert info.ca_fingerprint == keygen_fingerprint(
        Path(sftp_cert_server.extra["ca_key"] + ".pub")).split()[1]
    key = inspect_ssh_file(Path(sftp_cert_server.source["key_file"]))
    assert isinstance(key, SshKeyInfo)
    assert info.fingerprint == key.fingerprint


# --- logging in with a generated key ------------------------------------------------------------


def authorized_keys_file(server: LocalServer) -> Path:
    """The AuthorizedKeysFile the test sshd reads (from its sshd_config)."""
    config = Path(server.extra["sftp_root"]).parent / "sshd_config"
    for line in config.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == "AuthorizedKeysFile":
            return Path(value.strip())
    raise AssertionError(f"no AuthorizedKeysFile in {config}")


@pytest.fixture
def authorize(sftp_server: LocalServer) -> Iterator[Any]:
    """Add public key lines to the shared sshd's authorized keys for one test, then restore."""
    path = authorized_keys_file(sftp_server)
    original = path.read_bytes()

    def add(line: str) -> None:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(line if line.endswith("\n") else line + "\n")

    try:
        yield add
    finally:
        path.write_bytes(original)


def make_source(server: LocalServer, tmp_path: Path, **overrides: Any) -> SourceConfig:
    table = {**server.source, "download_dir": str(tmp_path / "dl"),
             "output_dir": str(tmp_path / "out"), **overrides}
    return parse_config({"sources": {"t": {k: v for k, v in table.items() if v is not None}}}
                        ).sources["t"]


@pytest.mark.parametrize(("key_type", "passphrase"), [("rsa", None), ("ed25519", PASSPHRASE)])
def test_generated_key_logs_in_to_sshd(sftp_server: LocalServer, tmp_path: Path,
                                       authorize: Any, monkeypatch: pytest.MonkeyPatch,
                                       key_type: str, passphrase: str | None) -> None:
    key = tmp_path / "keys" / f"id_{key_type}"
    generate_ssh_key(key, key_type=key_type, passphrase=passphrase, comment=COMMENT)
    overrides: dict[str, Any] = {"key_file": str(key)}
    if passphrase is not None:
        monkeypatch.setenv("RS_TEST_SSHKEYS_PASSPHRASE", passphrase)
        overrides["key_passphrase_env"] = "RS_TEST_SSHKEYS_PASSPHRASE"
    source = make_source(sftp_server, tmp_path, **overrides)
    (sftp_server.remote_root / "statement.pgp").write_bytes(b"encrypted statement")

    # Not yet authorized: the server refuses the new key.
    with pytest.raises(AuthenticationError):
        open_sftp(source)

    authorize(Path(f"{key}.pub").read_text(encoding="ascii"))
    transport = open_sftp(source)
    assert isinstance(transport, SftpTransport)
    with transport:
        assert [item.name for item in transport.list_files()] == ["statement.pgp"]
