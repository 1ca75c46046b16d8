"""A real pyftpdlib FTP server that lies on purpose, for the hardening tests.

It is the ordinary test server (tests/servers/ftpd.py) with a handler whose answers a test scripts
through a ``Script``: the names, sizes and times the listing shows (MLSD, LIST and NLST alike,
whatever is on disk), the bytes a ``RETR`` sends (fewer or more than listed, ignoring ``REST``),
what ``SIZE``/``MDTM``/``MLST`` say, and a hook that runs just before a download starts (to change
the file between the listing and the transfer). It can also answer ``USER`` (a server that wants
TLS, or has no session left), ``MLSD`` and ``LIST`` with a reply of the test's choosing, reset a
data connection (a real TCP RST) after some bytes, allow only so many sessions per address
(pyftpdlib's own ``421 Too many connections``), and lack any command (``without``, e.g. FEAT).
Everything not scripted is the real server's answer.

Plain Python, no pytest. 127.0.0.1 only, like every test server.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyftpdlib.handlers import DTPHandler, FTPHandler

from tests.servers import LocalServer, free_port_block
from tests.servers.ftpd import HOST, USERNAME, _write_private, serve_in_thread


@dataclass
class Listed:
    """One entry of a lying listing."""

    name: str
    size: int
    mtime: float = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC


@dataclass
class Script:
    """What the server says instead of the truth; None/empty = the truth."""

    listing: list[Listed] | None = None  # replaces the folder's real entries in every listing
    extra_listing: list[Listed] = field(default_factory=list)  # added to the real entries
    content: dict[str, bytes] = field(default_factory=dict)  # RETR name -> bytes sent
    ignore_rest: bool = False  # send from byte 0 whatever REST asked for
    list_garbage: bool = False  # LIST ends with a line no client can read (-> NLST fallback)
    on_command: Callable[[str, str], None] | None = None  # (command, argument), before it runs
    retr_count: dict[str, int] = field(default_factory=dict)  # how often each name was fetched
    commands: list[str] = field(default_factory=list)  # every command received, in order
    # the reply to USER instead of the real one (lines joined with CRLF); a 421 closes the session
    user_reply: str | None = None
    mlsd_reply: str | None = None  # the reply to MLSD instead of a listing (e.g. "550 ...")
    list_reply: str | None = None  # the same for LIST
    reset_after: int | None = None  # RETR: send this many bytes, then reset the data connection
    # a scripted LIST in local time: mtime -> the zone's offset from UTC then (MDTM stays UTC,
    # as RFC 3659 wants and ProFTPD with TimesGMT off, or IIS, do)
    list_offset: Callable[[float], int] | None = None


def _mlsd_time(mtime: float) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(mtime))


SIX_MONTHS = 180 * 86400


def _list_time(mtime: float, offset: int = 0) -> str:
    """As ``ls -l`` (and pyftpdlib) show it: the minute for the last six months, else the year;
    on a wall clock ``offset`` seconds from UTC (a server listing in its local time)."""
    shown = time.gmtime(mtime + offset)
    if 0 <= time.time() - mtime <= SIX_MONTHS:
        return time.strftime("%b %d %H:%M", shown)
    return time.strftime("%b %d  %Y", shown)


class ResettingDTPHandler(DTPHandler):  # type: ignore[misc]
    """A data channel that, when the script says so, sends ``reset_after`` bytes and then resets
    the connection (SO_LINGER 0: the close sends a TCP RST, as a middlebox cutting it would)."""

    def send(self, data: bytes) -> int:
        limit = self.cmd_channel.script.reset_after
        if limit is None or self.tot_bytes_sent + len(data) < limit:
            return int(super().send(data))
        part = data[: max(0, limit - self.tot_bytes_sent)]
        sent = int(super().send(part)) if part else 0
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._resp = ("426 Connection reset; transfer aborted.", logging.getLogger(__name__).info)
        self.close()
        return sent


class HostileHandler(FTPHandler):  # type: ignore[misc]
    script: Script  # set on the class each server makes
    _raw_arg = ""

    # -- helpers --

    def _entries(self, path: str) -> list[Listed] | None:
        script = self.script
        if script.listing is None and not script.extra_listing:
            return None
        if script.listing is not None:
            return list(script.listing)
        real = []
        for name in sorted(os.listdir(path)):
            info = os.stat(os.path.join(path, name))
            if os.path.isfile(os.path.join(path, name)):
                real.append(Listed(name, info.st_size, info.st_mtime))
        return real + list(script.extra_listing)

    def _scripted(self, name: str) -> Listed | None:
        for entry in [*(self.script.listing or []), *self.script.extra_listing]:
            if entry.name == name:
                return entry
        return None

    def _encode(self, text: str) -> bytes:
        return text.encode("utf-8", "surrogateescape")

    # -- commands --

    def pre_process_command(self, line: str, cmd: str, arg: str) -> Any:
        self.script.commands.append(cmd)
        self._raw_arg = arg  # the name as the client sent it, before the fs maps it
        if self.script.on_command is not None:
            self.script.on_command(cmd, arg)
        return super().pre_process_command(line, cmd, arg)

    def ftp_USER(self, line: str) -> Any:
        reply = self.script.user_reply
        if reply is None:
            return super().ftp_USER(line)
        self.push(reply.replace("\r\n", "\n").replace("\n", "\r\n") + "\r\n")
        if reply.startswith("421"):
            self.close_when_done()
        return None

    def ftp_MLSD(self, path: str) -> Any:
        if self.script.mlsd_reply is not None:
            self.respond(self.script.mlsd_reply)
            return None
        entries = self._entries(path)
        if entries is None:
            return super().ftp_MLSD(path)
        lines = "".join(f"type=file;size={e.size};modify={_mlsd_time(e.mtime)}; {e.name}\r\n"
                        for e in entries)
        self.push_dtp_data(self._encode(lines), cmd="MLSD")
        return path

    def ftp_LIST(self, path: str) -> Any:
        if self.script.list_reply is not None:
            self.respond(self.script.list_reply)
            return None
        entries = self._entries(path)
        if entries is None:
            return super().ftp_LIST(path)
        zone = self.script.list_offset or (lambda _mtime: 0)
        lines = "".join(f"-rw-r--r--   1 owner group {e.size:>10} "
                        f"{_list_time(e.mtime, zone(e.mtime))} {e.name}\r\n" for e in entries)
        if self.script.list_garbage:
            lines += "this line is in no LIST format anybody knows\r\n"
        self.push_dtp_data(self._encode(lines), cmd="LIST")
        return path

    def ftp_NLST(self, path: str) -> Any:
        entries = self._entries(path)
        if entries is None:
            return super().ftp_NLST(path)
        self.push_dtp_data(self._encode("".join(f"{e.name}\r\n" for e in entries)), cmd="NLST")
        return path

    def ftp_SIZE(self, path: str) -> Any:
        entry = self._scripted(self._raw_arg)
        if entry is not None:
            self.respond(f"213 {entry.size}")
            return None
        return super().ftp_SIZE(path)

    def ftp_MDTM(self, path: str) -> Any:
        entry = self._scripted(self._raw_arg)
        if entry is not None:
            self.respond(f"213 {_mlsd_time(entry.mtime)}")
            return path
        return super().ftp_MDTM(path)

    def ftp_MLST(self, path: str) -> Any:
        entry = self._scripted(self._raw_arg)
        if entry is not None:
            self.push(f"250-Listing {entry.name}\r\n")
            self.push(f" type=file;size={entry.size};modify={_mlsd_time(entry.mtime)}; "
                      f"{entry.name}\r\n")
            self.respond("250 End MLST.")
            return path
        return super().ftp_MLST(path)

    def ftp_RETR(self, file: str) -> Any:
        name = os.path.basename(file)
        script = self.script
        script.retr_count[name] = script.retr_count.get(name, 0) + 1
        if name not in script.content:
            if script.ignore_rest:
                self._restart_position = 0
            return super().ftp_RETR(file)
        rest = 0 if script.ignore_rest else self._restart_position
        self._restart_position = 0
        self.push_dtp_data(script.content[name][rest:], cmd="RETR")
        return file


def start_hostile_ftpd(workdir: Path, script: Script, *, mlsd: bool = True,
                       without: tuple[str, ...] = (), max_sessions: int = 0) -> LocalServer:
    """Start the lying server on 127.0.0.1; ``stop()`` closes it. ``mlsd=False``: the server has
    no MLSD, so clients use LIST (and SIZE/MDTM, which the script answers too). ``without``: more
    commands it does not implement (answered ``500``). ``max_sessions``: sessions allowed from one
    address (0: any number); one more is refused with pyftpdlib's ``421 Too many connections from
    the same IP address.``"""
    workdir = Path(workdir)
    home = workdir / "home"
    remote_root = home / "outgoing"
    remote_root.mkdir(parents=True, exist_ok=True)
    password = "hostile-test-password"
    password_file = workdir / "ftp-password"
    _write_private(password_file, password.encode() + b"\n")

    from pyftpdlib.authorizers import DummyAuthorizer

    authorizer = DummyAuthorizer()
    authorizer.add_user(USERNAME, password, str(home), perm="elradfmwMT")
    attributes: dict[str, Any] = {
        "authorizer": authorizer,
        "passive_ports": free_port_block(10, HOST),
        "auth_failed_timeout": 0.1,
        "use_gmt_times": True,
        "banner": "hostile test FTP server ready.",
        "timeout": 60,
        "script": script,
        "dtp_handler": ResettingDTPHandler,
        "use_sendfile": False,  # every byte through ResettingDTPHandler.send
    }
    missing = set(without) | (set() if mlsd else {"MLSD", "MLST"})
    if missing:
        attributes["proto_cmds"] = {cmd: info for cmd, info in FTPHandler.proto_cmds.items()
                                    if cmd not in missing}
    handler = type("ScriptedHostileHandler", (HostileHandler,), attributes)
    port, stop = serve_in_thread(handler, "hostile-ftpd", max_cons_per_ip=max_sessions)
    source: dict[str, Any] = {"protocol": "ftp", "host": HOST, "port": port, "username": USERNAME,
                              "password_file": str(password_file), "passive": True,
                              "remote_dir": "outgoing"}
    return LocalServer(protocol="ftp", host=HOST, port=port, remote_root=remote_root,
                       source=source, stop=stop, extra={"password": password, "script": script})
