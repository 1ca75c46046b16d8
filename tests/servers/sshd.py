"""A real OpenSSH ``sshd`` on 127.0.0.1 and a free port, for the tests and the demo.

Plain Python (no pytest): ``start_sshd(workdir)`` generates keys with ``ssh-keygen`` (host keys,
a user RSA 2048 key, a user CA and a certificate for the user key), writes an ``sshd_config``,
starts ``sshd -D -e`` and waits until it speaks SSH. The login user is the current OS user, so it
works as root (``PermitRootLogin prohibit-password``) and as a normal user alike.

The SFTP subsystem is ``internal-sftp -d <workdir>/root``: the relative ``remote_dir = "outgoing"``
resolves to ``<workdir>/root/outgoing`` (``LocalServer.remote_root``).

Two login modes:

- ``login="key"``: the user key is listed in an ``AuthorizedKeysFile`` written here;
- ``login="cert"``: no authorized key at all; the user logs in only with a certificate signed by
  the user CA that ``TrustedUserCAKeys`` names (principal = the login user name).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import getpass
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.servers import LocalServer, free_port, stopper, wait_for_greeting

HOST = "127.0.0.1"
SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")
START_TIMEOUT = 10.0


def find_sshd() -> str | None:
    """Absolute path of OpenSSH's sshd (it must be absolute: sshd re-executes itself), or None."""
    found = shutil.which("sshd")
    if found:
        return os.path.abspath(found)
    for candidate in SSHD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_ssh_keygen() -> str | None:
    return shutil.which("ssh-keygen")


def sshd_available() -> bool:
    return find_sshd() is not None and find_ssh_keygen() is not None


def _keygen(*args: str) -> None:
    keygen = find_ssh_keygen()
    if keygen is None:
        raise RuntimeError("ssh-keygen is not installed")
    subprocess.run([keygen, "-q", *args], check=True, stdin=subprocess.DEVNULL,
                   capture_output=True)


def _new_key(path: Path, key_type: str, comment: str) -> Path:
    if not path.exists():
        bits = ["-b", "2048"] if key_type == "rsa" else []
        _keygen("-t", key_type, *bits, "-N", "", "-C", comment, "-f", str(path))
    path.chmod(0o600)
    return path


def public_key_line(private_key: Path) -> str:
    """``<type> <base64>`` of the key's ``.pub`` file (no comment)."""
    fields = Path(f"{private_key}.pub").read_text(encoding="ascii").split()
    return f"{fields[0]} {fields[1]}"


def sha256_fingerprint(private_key: Path) -> str:
    """``SHA256:<base64, no padding>`` exactly as ``ssh-keygen -l`` prints it."""
    blob = base64.b64decode(public_key_line(private_key).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def generate_keys(keys: Path, user: str) -> dict[str, Path]:
    """Every key the servers need, generated once into ``keys`` (reused when present)."""
    keys.mkdir(parents=True, exist_ok=True)
    made = {
        "host_ed25519": _new_key(keys / "ssh_host_ed25519_key", "ed25519", "host"),
        "host_rsa": _new_key(keys / "ssh_host_rsa_key", "rsa", "host"),
        "user_key": _new_key(keys / "user_rsa", "rsa", f"{user}@reportsync-test"),
        "ca_key": _new_key(keys / "user_ca", "ed25519", "reportsync-test-user-ca"),
        "other_user_key": _new_key(keys / "other_ed25519", "ed25519", "stranger"),
        "impostor_host_key": _new_key(keys / "impostor_host_ed25519", "ed25519", "impostor"),
    }
    certificate = keys / "user_rsa-cert.pub"
    if not certificate.exists():
        _keygen("-s", str(made["ca_key"]), "-I", f"{user}-reportsync-test", "-n", user,
                "-V", "-1d:+3650d", str(made["user_key"]) + ".pub")
    made["certificate"] = certificate
    return made


def _known_hosts_line(port: int, private_key: Path) -> str:
    return f"[{HOST}]:{port} {public_key_line(private_key)}\n"


def _write_known_hosts(workdir: Path, port: int, keys: dict[str, Path]) -> dict[str, Path]:
    files = {
        "known_hosts": workdir / "known_hosts",
        "known_hosts_rsa_only": workdir / "known_hosts_rsa_only",
        "known_hosts_hashed": workdir / "known_hosts_hashed",
        "wrong_known_hosts": workdir / "wrong_known_hosts",
    }
    files["known_hosts"].write_text(
        "# test server\n" + _known_hosts_line(port, keys["host_ed25519"])
        + _known_hosts_line(port, keys["host_rsa"]),
        encoding="ascii",
    )
    files["known_hosts_rsa_only"].write_text(_known_hosts_line(port, keys["host_rsa"]),
                                             encoding="ascii")
    files["known_hosts_hashed"].write_text(files["known_hosts"].read_text(encoding="ascii"),
                                           encoding="ascii")
    _keygen("-H", "-f", str(files["known_hosts_hashed"]))
    with contextlib.suppress(FileNotFoundError):
        Path(f"{files['known_hosts_hashed']}.old").unlink()
    # Same host, same key type, a different key: the "host key changed" case.
    files["wrong_known_hosts"].write_text(_known_hosts_line(port, keys["impostor_host_key"]),
                                          encoding="ascii")
    return files


def find_sftp_server() -> str | None:
    for candidate in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                      "/usr/libexec/sftp-server", "/usr/lib/ssh/sftp-server"):
        if Path(candidate).is_file():
            return candidate
    return None


def _sftp_subsystem(sftp_root: Path, log: Path | None) -> str:
    if log is None:
        return f"Subsystem sftp internal-sftp -d {sftp_root}"
    server = find_sftp_server()
    if server is None:
        raise RuntimeError("OpenSSH's sftp-server is not installed (openssh-sftp-server)")
    # sshd runs a subsystem command through the login shell: its stderr (-e) goes to the log
    return f"Subsystem sftp {server} -e -l INFO -d {sftp_root} 2>>{log}"


def start_sshd(workdir: Path, *, login: str = "key", keys_dir: Path | None = None,
               sftp_log: bool = False) -> LocalServer:
    """Start sshd in ``workdir``; ``keys_dir`` shares generated keys between servers.
    ``sftp_log``: OpenSSH's ``sftp-server`` (not ``internal-sftp``, whose log goes to syslog)
    logs every file it opens and closes into ``extra["sftp_log"]``, so a test can count the
    transfers of each file."""
    if login not in ("key", "cert"):
        raise ValueError(f"login must be 'key' or 'cert', not {login!r}")
    sshd = find_sshd()
    if sshd is None:
        raise RuntimeError("OpenSSH sshd is not installed")
    user = getpass.getuser()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    keys = generate_keys((keys_dir or workdir / "keys").resolve(), user)
    sftp_root = workdir / "root"
    remote_root = sftp_root / "outgoing"
    remote_root.mkdir(parents=True, exist_ok=True)

    authorized_keys = workdir / "authorized_keys"
    authorized_keys.write_text(public_key_line(keys["user_key"]) + " user\n", encoding="ascii")
    authorized_keys.chmod(0o600)
    if os.geteuid() == 0:
        # sshd's privilege separation directory (Debian creates it at boot, containers do not).
        with contextlib.suppress(OSError):
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    port = free_port(HOST)
    lines = [
        f"ListenAddress {HOST}",
        f"Port {port}",
        f"HostKey {keys['host_ed25519']}",
        f"HostKey {keys['host_rsa']}",
        f"PidFile {workdir / 'sshd.pid'}",
        "StrictModes no",
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        f"AllowUsers {user}",
        "AuthorizedKeysCommand none",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "PrintMotd no",
        "MaxStartups 100:30:200",
        "LogLevel VERBOSE",
        _sftp_subsystem(sftp_root, workdir / "sftp.log" if sftp_log else None),
    ]
    if login == "key":
        lines.append(f"AuthorizedKeysFile {authorized_keys}")
    else:
        lines += ["AuthorizedKeysFile none", f"TrustedUserCAKeys {keys['ca_key']}.pub"]
    config = workdir / "sshd_config"
    config.write_text("\n".join(lines) + "\n", encoding="ascii")

    log_path = workdir / "sshd.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=log)
    wait_for_greeting("sshd", port, process, log_path, greeting=b"SSH-",
                      timeout=START_TIMEOUT)

    stop = stopper(process)

    atexit.register(stop)

    known = _write_known_hosts(workdir, port, keys)
    source: dict[str, Any] = {
        "protocol": "sftp",
        "host": HOST,
        "port": port,
        "username": user,
        "key_file": str(keys["user_key"]),
        "known_hosts": str(known["known_hosts"]),
        "remote_dir": "outgoing",
    }
    if login == "cert":
        source["certificate_file"] = str(keys["certificate"])
    extra: dict[str, Any] = {
        # paramiko prefers ed25519 host keys: this is the key it is shown without known_hosts.
        "host_key_fingerprint": sha256_fingerprint(keys["host_ed25519"]),
        "host_rsa_fingerprint": sha256_fingerprint(keys["host_rsa"]),
        "known_hosts_rsa_only": str(known["known_hosts_rsa_only"]),
        "known_hosts_hashed": str(known["known_hosts_hashed"]),
        "wrong_known_hosts": str(known["wrong_known_hosts"]),
        "other_user_key": str(keys["other_user_key"]),
        "ca_key": str(keys["ca_key"]),
        "user_key": str(keys["user_key"]),
        "certificate": str(keys["certificate"]),
        "sftp_root": sftp_root,
        "log": log_path,
        "sftp_log": workdir / "sftp.log" if sftp_log else None,
        "pid": process.pid,
        "login": login,
    }
    return LocalServer(protocol="sftp", host=HOST, port=port, remote_root=remote_root,
                       source=source, stop=stop, extra=extra)


if __name__ == "__main__":  # pragma: no cover - manual check: python -m tests.servers.sshd DIR
    import sys

    server = start_sshd(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/reportsync-sshd"))
    print(server.source)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
