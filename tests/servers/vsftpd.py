"""The real vsftpd on 127.0.0.1 and a free port: an FTP server that has no MLSD.

``start_vsftpd(workdir)`` writes a config for ``/usr/sbin/vsftpd`` and runs it in the foreground
(``listen=YES``, ``background=NO``). vsftpd implements LIST, NLST, SIZE and MDTM but not MLSD or
MLST (it answers ``500 Unknown command``), which is what many providers' servers do: clients have
to parse LIST and ask SIZE and MDTM per file.

Login is anonymous, read-only, served from ``workdir/data`` (``LocalServer.remote_root`` is
``data/outgoing``, the source's ``remote_dir = "outgoing"``):

* as root, vsftpd chroots each session into ``data`` and then drops to the ``ftp`` user (or
  ``nobody``); the served files must therefore be world-readable (0644, folders 0755: a normal
  umask gives that). ``data`` is made 0755 and owned by root, as vsftpd requires of a chroot.
* as another user, ``run_as_launching_user=YES``: no chroot, the session runs as that user.

vsftpd asks anonymous users for a password and accepts any; the source carries one in a 0600
``password_file`` like the pyftpdlib launcher's, so reportsync logs in exactly as with a real
password. Plain Python, no pytest: the benchmarks use it too.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.servers import LocalServer, free_port, free_port_block, stopper, wait_for_greeting

HOST = "127.0.0.1"
USERNAME = "anonymous"
CANDIDATES = ("/usr/sbin/vsftpd", "/usr/local/sbin/vsftpd", "/sbin/vsftpd")
START_TIMEOUT = 10.0
PASSIVE_PORT_COUNT = 100


def find_vsftpd() -> str | None:
    for candidate in CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("vsftpd")
    return os.path.abspath(found) if found else None


def vsftpd_available() -> bool:
    return find_vsftpd() is not None


def vsftpd_version() -> str:
    """``vsftpd: version 3.0.3`` (vsftpd writes it to its standard *input*), or ""."""
    binary = find_vsftpd()
    if binary is None:
        return ""
    read_end, write_end = os.pipe()
    try:
        subprocess.run([binary, "-v"], stdin=write_end, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=10, check=False)
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end, "rb") as reader:
            read_end = -1
            return reader.read(200).decode(errors="replace").strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)


def _session_user() -> str:
    for name in ("ftp", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("vsftpd needs an unprivileged user (ftp or nobody); neither exists")


def _unprivileged_user(fallback: str) -> str:
    try:
        pwd.getpwnam("nobody")
        return "nobody"
    except KeyError:
        return fallback


def _config_lines(*, port: int, data: Path, empty: Path, passive: list[int], log: Path) -> list[str]:
    lines = [
        "listen=YES",
        "listen_ipv6=NO",
        f"listen_address={HOST}",
        f"listen_port={port}",
        "background=NO",
        "anonymous_enable=YES",
        "local_enable=NO",
        "write_enable=NO",
        f"anon_root={data}",
        "pasv_enable=YES",
        f"pasv_min_port={passive[0]}",
        f"pasv_max_port={passive[-1]}",
        f"pasv_address={HOST}",
        "connect_from_port_20=NO",
        "use_localtime=NO",  # LIST and MDTM in UTC
        "xferlog_enable=NO",
        "syslog_enable=NO",
        f"vsftpd_log_file={log}",
        "dirmessage_enable=NO",
        "tcp_wrappers=NO",
        # Containers often forbid what these need (seccomp filters, network namespaces).
        "seccomp_sandbox=NO",
        "isolate=NO",
        "isolate_network=NO",
        "max_clients=0",
        "max_per_ip=0",
        "delay_failed_login=0",
        "delay_successful_login=0",
        "idle_session_timeout=300",
        "data_connection_timeout=120",
        "ftpd_banner=reportsync test vsftpd ready.",
    ]
    if os.geteuid() == 0:
        user = _session_user()
        # vsftpd chroots into anon_root as root, then runs the session as ``user``; its
        # unprivileged helper process runs as nopriv_user in secure_chroot_dir.
        lines += [f"ftp_username={user}", f"nopriv_user={_unprivileged_user(user)}",
                  f"secure_chroot_dir={empty}"]
    else:
        lines.append("run_as_launching_user=YES")
    return lines


def start_vsftpd(workdir: Path) -> LocalServer:
    """Start vsftpd serving ``workdir/data``; ``stop()`` terminates it."""
    binary = find_vsftpd()
    if binary is None:
        raise RuntimeError("vsftpd is not installed (apt-get install vsftpd)")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    remote_root = data / "outgoing"
    remote_root.mkdir(parents=True, exist_ok=True)
    empty = workdir / "empty"  # secure_chroot_dir: empty, not writable by the session user
    empty.mkdir(exist_ok=True)
    for folder in (data, remote_root, empty):
        folder.chmod(0o755)
    password = secrets.token_urlsafe(18)
    password_file = workdir / "ftp-password"
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")

    port = free_port(HOST)
    passive = free_port_block(PASSIVE_PORT_COUNT, HOST)
    log_path = workdir / "vsftpd.log"
    config = workdir / "vsftpd.conf"
    config.write_text("\n".join(_config_lines(port=port, data=data, empty=empty, passive=passive,
                                              log=log_path)) + "\n", encoding="ascii")
    config.chmod(0o600)  # vsftpd insists the config is its launching user's

    output = workdir / "vsftpd.out"
    with output.open("ab") as out:
        process = subprocess.Popen([binary, str(config)], stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=out, cwd=workdir)
    wait_for_greeting("vsftpd", port, process, output, greeting=b"220",
                      timeout=START_TIMEOUT)

    stop = stopper(process)

    atexit.register(stop)
    source: dict[str, Any] = {
        "protocol": "ftp",
        "host": HOST,
        "port": port,
        "username": USERNAME,
        "password_file": str(password_file),
        "passive": True,
        "remote_dir": "outgoing",
        "timeout": 10.0,
    }
    extra: dict[str, Any] = {
        "password": password,
        "home": data,
        "passive_ports": passive,
        "mlsd": False,
        "config": config,
        "log": log_path,
        "pid": process.pid,
        "version": vsftpd_version(),
    }
    return LocalServer(protocol="ftp", host=HOST, port=port, remote_root=remote_root,
                       source=source, stop=stop, extra=extra)


if __name__ == "__main__":  # pragma: no cover - manual check: python -m tests.servers.vsftpd DIR
    import sys

    server = start_vsftpd(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/reportsync-vsftpd"))
    print(server.source, "password:", server.extra["password"])
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
