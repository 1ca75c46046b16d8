"""A real pyftpdlib FTP / FTPS server in a background thread, on 127.0.0.1 and free ports.

``start_ftpd(workdir)`` serves ``workdir/home`` to one user whose password is in a 0600 file; the
returned ``LocalServer.remote_root`` is ``home/outgoing``. Variants real providers show:

* ``tls=True``: explicit FTPS (AUTH TLS) with TLS required on the control and data channels, a
  certificate for 127.0.0.1 / localhost signed by a CA generated here (``source["ca_file"]``).
* ``mlsd=False``: a server without MLSD/MLST (answers 500), so clients must use LIST/NLST.
* ``list_style="windows"``: LIST in the IIS / Windows format (``11-02-26  12:00PM  1234 name``).

Plain Python, no pytest: ``scripts/demo.py`` uses it too.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from tests.servers import LocalServer, free_port_block

USERNAME = "reportsync"
HOST = "127.0.0.1"
PASSIVE_PORT_COUNT = 20


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


# --- certificates --------------------------------------------------------------------------------


def _new_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                          crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address(HOST)),
                x509.DNSName("localhost"),
            ]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=True, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def make_tls_files(folder: Path) -> dict[str, Path]:
    """ca.pem (trusted), server.pem (cert + key, signed by ca), wrong-ca.pem (an unrelated CA)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _new_ca("reportsync test CA")
    key, cert = _server_cert(ca_key, ca_cert)
    _, wrong_ca = _new_ca("reportsync test CA")  # same name, different key: must not verify
    pem = serialization.Encoding.PEM
    files = {"ca_file": folder / "ca.pem", "server_pem": folder / "server.pem",
             "wrong_ca_file": folder / "wrong-ca.pem"}
    files["ca_file"].write_bytes(ca_cert.public_bytes(pem))
    files["wrong_ca_file"].write_bytes(wrong_ca.public_bytes(pem))
    _write_private(
        files["server_pem"],
        cert.public_bytes(pem)
        + key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()),
    )
    return files


# --- handler variants ----------------------------------------------------------------------------


class WindowsListFS(AbstractedFS):  # type: ignore[misc]
    """LIST output as IIS writes it: ``MM-DD-YY  HH:MMAM  <DIR>|size name`` (times in UTC)."""

    def format_list(self, basedir: str, listing: list[str],
                    ignore_err: bool = True) -> Iterator[bytes]:
        for basename in listing:
            try:
                st = self.lstat(os.path.join(basedir, basename))
            except OSError:
                if ignore_err:
                    continue
                raise
            when = time.strftime("%m-%d-%y  %I:%M%p", time.gmtime(st.st_mtime))
            if stat.S_ISDIR(st.st_mode):
                line = f"{when}       <DIR>          {basename}\r\n"
            else:
                line = f"{when}  {st.st_size:>20} {basename}\r\n"
            yield line.encode(self.cmd_channel.encoding, self.cmd_channel.unicode_errors)


def _reuse_requiring_dtp_handler() -> type[Any]:
    """A TLS data channel handler that, like vsftpd's ``require_ssl_reuse=YES`` (its default),
    drops data connections that do not resume the control connection's TLS session."""
    from OpenSSL._util import lib as openssl  # pyOpenSSL has no session_reused() of its own
    from pyftpdlib.handlers import TLS_DTPHandler

    class ReuseRequiringDTPHandler(TLS_DTPHandler):  # type: ignore[misc]
        def handle_ssl_established(self) -> None:
            if not openssl.SSL_session_reused(self.socket._ssl):
                # close() sends _resp as the transfer's final reply (vsftpd's wording)
                self._resp = ("522 SSL connection failed: session reuse required",
                              logging.getLogger("pyftpdlib").info)
                self.close()
                return
            super().handle_ssl_established()

    return ReuseRequiringDTPHandler


def _handler_class(*, home: Path, password: str, tls: bool, mlsd: bool, list_style: str,
                   certfile: Path | None) -> type[FTPHandler]:
    authorizer = DummyAuthorizer()
    authorizer.add_user(USERNAME, password, str(home), perm="elradfmwMT")
    base: type[FTPHandler]
    attributes: dict[str, Any] = {
        "authorizer": authorizer,
        "passive_ports": free_port_block(PASSIVE_PORT_COUNT, HOST),
        "auth_failed_timeout": 0.1,  # pyftpdlib waits 3 s before a 530 by default
        "use_gmt_times": True,  # LIST and MDTM in UTC (the default, made explicit)
        "banner": "reportsync test FTP server ready.",
        "timeout": 120,
    }
    if tls:
        from pyftpdlib.handlers import TLS_FTPHandler

        base = TLS_FTPHandler
        attributes.update(certfile=str(certfile), keyfile=None, ssl_context=None,
                          tls_control_required=True, tls_data_required=True,
                          dtp_handler=_reuse_requiring_dtp_handler())
    else:
        base = FTPHandler
    if not mlsd:
        attributes["proto_cmds"] = {
            cmd: info for cmd, info in base.proto_cmds.items() if cmd not in ("MLSD", "MLST")
        }
    if list_style == "windows":
        attributes["abstracted_fs"] = WindowsListFS
    elif list_style != "unix":
        raise ValueError(f"list_style must be 'unix' or 'windows', not {list_style!r}")
    return type("ReportsyncTestHandler", (base,), attributes)


# --- the launcher --------------------------------------------------------------------------------


def serve_in_thread(handler: type[Any], name: str, *, max_cons_per_ip: int = 0,
                    ) -> tuple[int, Callable[[], None]]:
    """Serve ``handler`` on 127.0.0.1 and a free port from a thread with its own IOLoop;
    returns the port and the function that stops it. ``max_cons_per_ip``: sessions allowed from
    one address (0: any number), pyftpdlib's own limit."""
    ioloop = IOLoop()
    server = FTPServer((HOST, 0), handler, ioloop=ioloop)
    server.max_cons_per_ip = max_cons_per_ip
    port = int(server.address[1])
    stopping = threading.Event()

    def serve() -> None:
        try:
            while not stopping.is_set():
                ioloop.loop(timeout=0.05, blocking=False)  # serve_forever() logs every call
        finally:
            server.close_all()

    thread = threading.Thread(target=serve, name=f"{name}-{port}", daemon=True)
    thread.start()

    def stop() -> None:
        stopping.set()
        thread.join(timeout=10)

    return port, stop


def start_ftpd(workdir: Path, *, tls: bool = False, mlsd: bool = True,
               list_style: str = "unix") -> LocalServer:
    """Start a pyftpdlib server on 127.0.0.1 in a thread; ``stop()`` closes it and joins."""
    workdir = Path(workdir)
    home = workdir / "home"
    remote_root = home / "outgoing"
    remote_root.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    password_file = workdir / "ftp-password"
    _write_private(password_file, password.encode() + b"\n")
    tls_files = make_tls_files(workdir / "tls") if tls else {}

    pyftpdlib_logger = logging.getLogger("pyftpdlib")
    if not pyftpdlib_logger.handlers:
        # Otherwise pyftpdlib installs its own stderr handler on the first loop.
        pyftpdlib_logger.addHandler(logging.NullHandler())

    handler = _handler_class(home=home, password=password, tls=tls, mlsd=mlsd,
                             list_style=list_style, certfile=tls_files.get("server_pem"))
    if tls:
        # A session id context lets OpenSSL resume sessions from its cache (TLS 1.2 and 1.3).
        handler.get_ssl_context().set_session_id(b"reportsync-test")
    port, stop = serve_in_thread(handler, "ftpd")
    protocol = "ftps" if tls else "ftp"
    source: dict[str, Any] = {
        "protocol": protocol,
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
        "home": home,
        "passive_ports": handler.passive_ports,
        "mlsd": mlsd,
        "list_style": list_style,
        "handler": handler,
    }
    if tls:
        source["ca_file"] = str(tls_files["ca_file"])
        extra["wrong_ca_file"] = str(tls_files["wrong_ca_file"])
        extra["server_pem"] = str(tls_files["server_pem"])
    return LocalServer(protocol=protocol, host=HOST, port=port, remote_root=remote_root,
                       source=source, stop=stop, extra=extra)


if __name__ == "__main__":  # a quick manual check: python -m tests.servers.ftpd [tls]
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        running = start_ftpd(Path(folder), tls="tls" in sys.argv[1:])
        print(running.source, "password:", running.extra["password"])
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            running.stop()
