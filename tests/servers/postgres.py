"""A real PostgreSQL server on 127.0.0.1 and a free port, for the tests, scripts and benchmarks.

Plain Python (no pytest). ``start_postgres()`` finds the server binaries (``pg_config --bindir``,
then ``/usr/lib/postgresql/*/bin`` newest first, then ``PATH``), ``initdb``s a fresh cluster in a
short temp folder (``/tmp/rs-pg-*``: the unix socket lives there and its path must stay under
~100 bytes), starts it with ``pg_ctl`` listening on 127.0.0.1 only, and creates the role
``reportsync`` (its own generated password) owning the database ``reportsync``.

Authentication is ``scram-sha-256`` for local and TCP connections alike (``initdb --auth-local
--auth-host``, the superuser ``postgres`` gets a generated password through ``--pwfile``): a wrong
password is refused, as on a real server.

``initdb`` and ``postgres`` refuse to run as root. As root, the cluster is owned and run by the
system user ``reportsync-test`` (created with ``useradd --system`` when missing, else ``nobody``);
the child processes switch to it through ``subprocess``'s ``user=``/``group=``. Not as root, the
cluster runs as the current user.

``PostgresServer`` holds the connection facts (host, port, dbname, user, password, the superuser's
credentials; ``url()`` has no password), and:

- ``create_database()``: a fresh database (``TEMPLATE template0``) owned by a fresh role with its
  own password, so tests sharing one server per session stay isolated (advisory locks are per
  database too); ``drop_database()`` removes both;
- ``terminate_connections(dbname=, user=)``: ``pg_terminate_backend`` on every matching session
  and waits until they are gone: "a killed host's connection drops";
- ``stop()``: ``pg_ctl stop -m fast`` and removes the folder (also registered with ``atexit``).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.servers import free_port

HOST = "127.0.0.1"
SUPERUSER = "postgres"
ROLE = "reportsync"
DBNAME = "reportsync"
TEST_OS_USER = "reportsync-test"
START_TIMEOUT = 60
TERMINATE_TIMEOUT = 10.0
_REQUIRED = ("initdb", "pg_ctl", "postgres")


# --- finding the binaries ------------------------------------------------------------------------


def _has_server_binaries(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in _REQUIRED)


def _version_key(folder: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: the newest version first.
    return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name)) or (0,)


def find_postgres_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None.

    ``pg_config`` may come from libpq's dev package without a server beside it, and Debian keeps
    the server binaries out of PATH: each candidate is checked for all three.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                  timeout=10, check=True)
            candidates.append(Path(done.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for candidate in candidates:
        if _has_server_binaries(candidate):
            return candidate
    return None


def postgres_available() -> bool:
    return find_postgres_bindir() is not None


# --- the unprivileged user that owns and runs the cluster ----------------------------------------


def _server_os_user() -> pwd.struct_passwd | None:
    """The user to run ``initdb``/``postgres`` as, or None for "the current user" (not root)."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(TEST_OS_USER)
    useradd = shutil.which("useradd") or ("/usr/sbin/useradd" if os.access("/usr/sbin/useradd",
                                                                            os.X_OK) else None)
    if useradd:
        # A system user with no home and no login shell: it only ever owns throw-away clusters.
        subprocess.run([useradd, "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                        "--comment", "reportsync test PostgreSQL", TEST_OS_USER],
                       capture_output=True, check=False)
        with contextlib.suppress(KeyError):  # created now, or by a concurrent run
            return pwd.getpwnam(TEST_OS_USER)
    return pwd.getpwnam("nobody")


def _child_env() -> dict[str, str]:
    # PG* variables of the caller (PGDATA, PGHOST, PGPORT, ...) must not steer the test cluster.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _run_as(user: pwd.struct_passwd | None, argv: list[str], *, cwd: Path,
            timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
    switch: dict[str, Any] = {}
    if user is not None:
        switch = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    return subprocess.run(argv, cwd=cwd, env=_child_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False, **switch)


# --- connection facts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresDatabase:
    """One database and the role that owns it: what a ledger config needs."""

    host: str
    port: int
    dbname: str
    user: str
    password: str = field(repr=False)

    def url(self) -> str:
        """``postgresql://user@host:port/dbname``: the form ``ledger_url`` takes (no password)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    def conninfo(self, **overrides: Any) -> str:
        """A libpq connection string with the password (for psycopg; never print it)."""
        params: dict[str, Any] = {"host": self.host, "port": self.port, "dbname": self.dbname,
                                  "user": self.user, "password": self.password,
                                  "connect_timeout": 10}
        params.update(overrides)
        return make_conninfo("", **params)

    def connect(self, *, autocommit: bool = False, **overrides: Any) -> psycopg.Connection[Any]:
        """A psycopg connection; ``overrides`` replace connection parameters (``password=...``)."""
        return psycopg.connect(self.conninfo(**overrides), autocommit=autocommit)


@dataclass
class PostgresServer:
    host: str
    port: int
    dbname: str
    user: str
    password: str = field(repr=False)
    superuser: str
    superuser_password: str = field(repr=False)
    workdir: Path  # data/, the unix socket, postgres.log
    bindir: Path
    os_user: str  # who owns and runs the cluster
    version: str
    timings: dict[str, float] = field(default_factory=dict)  # seconds: initdb, start, setup
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1), repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.workdir

    @property
    def log(self) -> Path:
        return self.workdir / "postgres.log"

    @property
    def database(self) -> PostgresDatabase:
        """The ``reportsync`` database, as the ``reportsync`` role sees it."""
        return PostgresDatabase(self.host, self.port, self.dbname, self.user, self.password)

    @property
    def admin(self) -> PostgresDatabase:
        """The superuser on the ``postgres`` database."""
        return PostgresDatabase(self.host, self.port, "postgres", self.superuser,
                                self.superuser_password)

    def url(self) -> str:
        return self.database.url()

    @contextlib.contextmanager
    def _admin_connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self.admin.connect(autocommit=True) as connection:
            yield connection

    def create_role(self, name: str | None = None) -> tuple[str, str]:
        """A new login role with a generated password: ``(name, password)``."""
        name = name or f"rs_role_{next(self._names):04d}"
        password = secrets.token_urlsafe(18)
        with self._admin_connection() as connection:
            connection.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)))
        return name, password

    def create_database(self, name: str | None = None, *,
                        owner: tuple[str, str] | None = None) -> PostgresDatabase:
        """A fresh empty database; owned by ``owner`` (name, password) or by a fresh role."""
        number = next(self._names)
        name = name or f"rs_test_{number:04d}"
        user, password = owner or self.create_role(f"{name}_owner")
        with self._admin_connection() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(
                sql.Identifier(name), sql.Identifier(user)))
        return PostgresDatabase(self.host, self.port, name, user, password)

    def drop_database(self, database: PostgresDatabase, *, drop_owner: bool = True) -> None:
        """Drop the database (its sessions are ended first) and, by default, its owner role."""
        with self._admin_connection() as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(database.dbname)))
            if drop_owner and database.user not in (self.user, self.superuser):
                connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(
                    sql.Identifier(database.user)))

    def terminate_connections(self, *, dbname: str | None = None, user: str | None = None) -> int:
        """End every session of that database and/or role, as a killed host's would end.

        Returns how many were ended, once they are gone from ``pg_stat_activity`` (so their
        session-level advisory locks are released by then).
        """
        if dbname is None and user is None:
            raise ValueError("name a database or a role (or both)")
        with self._admin_connection() as connection:
            # Chosen first, ended second: in one WHERE clause the planner could call
            # pg_terminate_backend before the filters and end sessions it should not.
            chosen = connection.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
                " AND (%(db)s::text IS NULL OR datname = %(db)s)"
                " AND (%(user)s::text IS NULL OR usename = %(user)s)",
                {"db": dbname, "user": user}).fetchall()
            pids = [row[0] for row in chosen
                    if connection.execute("SELECT pg_terminate_backend(%s)",
                                          (row[0],)).fetchone() == (True,)]
            deadline = time.monotonic() + TERMINATE_TIMEOUT
            while pids:
                left = connection.execute("SELECT count(*) FROM pg_stat_activity"
                                          " WHERE pid = ANY(%s)", (pids,)).fetchone()
                if not left or left[0] == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sessions {pids} still there {TERMINATE_TIMEOUT}s after"
                                       " pg_terminate_backend")
                time.sleep(0.02)
        return len(pids)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        user = _lookup_user(self.os_user)
        if (self.data_dir / "postmaster.pid").exists():
            _run_as(user, [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data_dir),
                           "-m", "fast", "-w", "-t", "30"], cwd=self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _lookup_user(name: str) -> pwd.struct_passwd | None:
    return None if os.geteuid() != 0 else pwd.getpwnam(name)


# --- start ---------------------------------------------------------------------------------------


def _workdir(owner: pwd.struct_passwd | None) -> Path:
    # Short on purpose: the socket path <workdir>/.s.PGSQL.<port> must stay under ~100 bytes, and
    # a TMPDIR deep inside pytest's basetemp (0700, root's) would not be reachable by the owner.
    base = tempfile.gettempdir()
    if len(base) > 40 or owner is not None:
        base = "/tmp"
    workdir = Path(tempfile.mkdtemp(prefix="rs-pg-", dir=base))
    if owner is not None:
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
    return workdir


def _fail(what: str, done: subprocess.CompletedProcess[str] | None, log: Path | None) -> str:
    text = f"PostgreSQL test server: {what}"
    if done is not None:
        text += f" (exit {done.returncode})\n{done.stdout}{done.stderr}"
    if log is not None and log.exists():
        text += "\n--- postgres.log ---\n" + log.read_text(errors="replace")[-4000:]
    return text


def _initdb(bindir: Path, owner: pwd.struct_passwd | None, workdir: Path,
            superuser_password: str) -> None:
    password_file = workdir / "pwfile"
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(superuser_password + "\n")
    if owner is not None:
        os.chown(password_file, owner.pw_uid, owner.pw_gid)
    try:
        # --no-sync: a cluster that lives for one test session needs no fsync of its files.
        done = _run_as(owner, [str(bindir / "initdb"), "-D", str(workdir / "data"),
                               "-U", SUPERUSER, "--pwfile", str(password_file),
                               "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
                               "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                       cwd=workdir)
    finally:
        password_file.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(_fail("initdb failed", done, None))


def _configure(workdir: Path, port: int) -> None:
    settings = {
        "listen_addresses": f"'{HOST}'",
        "port": str(port),
        "unix_socket_directories": f"'{workdir}'",
        "password_encryption": "'scram-sha-256'",
        # Durability is pointless for a cluster thrown away at the end of the session, and fsync on
        # a CI machine's shared disk costs seconds per test. Crash safety is not what is tested:
        # session-level locks and their release when a connection drops do not depend on it.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "shared_buffers": "'32MB'",  # a small machine shared with other test servers
        "max_connections": "100",
    }
    config = workdir / "data" / "postgresql.conf"
    with config.open("a", encoding="utf-8") as handle:
        handle.write("\n# reportsync test server\n")
        handle.writelines(f"{key} = {value}\n" for key, value in settings.items())


def _set_port(workdir: Path, port: int) -> None:
    config = workdir / "data" / "postgresql.conf"
    text = config.read_text(encoding="utf-8")
    config.write_text(re.sub(r"(?m)^port = \d+$", f"port = {port}", text), encoding="utf-8")


def _pg_ctl_start(bindir: Path, owner: pwd.struct_passwd | None,
                  workdir: Path) -> subprocess.CompletedProcess[str]:
    # -w waits until the postmaster reports "ready to accept connections".
    return _run_as(owner, [str(bindir / "pg_ctl"), "start", "-D", str(workdir / "data"),
                           "-l", str(workdir / "postgres.log"), "-w", "-t", str(START_TIMEOUT)],
                   cwd=workdir, timeout=START_TIMEOUT + 10)


def _create_default_role_and_database(server: PostgresServer) -> None:
    with server._admin_connection() as connection:
        connection.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(server.user), sql.Literal(server.password)))
        connection.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(
            sql.Identifier(server.dbname), sql.Identifier(server.user)))


def start_postgres() -> PostgresServer:
    """initdb + start a cluster; the caller calls ``stop()`` (an ``atexit`` hook does too)."""
    bindir = find_postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found:"
                           " apt-get install postgresql (Debian/Ubuntu), brew install postgresql")
    owner = _server_os_user()
    os_user = owner.pw_name if owner is not None else pwd.getpwuid(os.geteuid()).pw_name
    workdir = _workdir(owner)
    superuser_password = secrets.token_urlsafe(18)
    timings: dict[str, float] = {}
    try:
        began = time.monotonic()
        _initdb(bindir, owner, workdir, superuser_password)
        timings["initdb"] = time.monotonic() - began

        began = time.monotonic()
        port = free_port(HOST)
        _configure(workdir, port)
        for attempt in itertools.count(1):
            done = _pg_ctl_start(bindir, owner, workdir)
            if done.returncode == 0:
                break
            log = workdir / "postgres.log"
            taken = log.exists() and "could not bind" in log.read_text(errors="replace")
            if not taken or attempt == 3:
                raise RuntimeError(_fail("pg_ctl start failed", done, log))
            port = free_port(HOST)  # somebody took the free port in between: another one
            _set_port(workdir, port)
        timings["start"] = time.monotonic() - began

        version_done = _run_as(owner, [str(bindir / "postgres"), "--version"], cwd=workdir)
        server = PostgresServer(
            host=HOST, port=port, dbname=DBNAME, user=ROLE, password=secrets.token_urlsafe(18),
            superuser=SUPERUSER, superuser_password=superuser_password, workdir=workdir,
            bindir=bindir, os_user=os_user, version=version_done.stdout.strip(), timings=timings)
        atexit.register(server.stop)
        began = time.monotonic()
        _create_default_role_and_database(server)
        timings["setup"] = time.monotonic() - began
    except BaseException:
        if (workdir / "data" / "postmaster.pid").exists():
            _run_as(owner, [str(bindir / "pg_ctl"), "stop", "-D", str(workdir / "data"),
                            "-m", "immediate", "-w"], cwd=workdir)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return server


if __name__ == "__main__":  # pragma: no cover - manual check: python -m tests.servers.postgres
    running = start_postgres()
    print(f"{running.version} as {running.os_user}: {running.url()}  timings {running.timings}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        running.stop()
