"""`reportsync schedule`: the crontab line, or the systemd service and timer, for the nightly fetch.

Plain functions that return text; ``cli.py`` prints it. Everything named in the output is an
absolute path, because cron and systemd start with an almost empty environment and ``/`` (or
``$HOME``) as the working directory.

Why 07:15: the reference provider builds the previous business day's statements overnight, after
the US market close, and they are on its server by the early morning in Europe and North America.
A run a little after that finds them the same morning; a statement that arrives later is fetched
by the next run (a run with nothing new costs one listing), long before the provider's 100-day
purge.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import time
from pathlib import Path
from typing import Any, ClassVar

from reportsync import process
from reportsync.config import Config, secret_refs
from reportsync.errors import ExitCode, UsageError
from reportsync.fsutil import write_atomically

DEFAULT_TIME = time(7, 15)
UNIT_NAME = "reportsync"
RANDOMIZED_DELAY = "10min"
CRON_PATH = ("/usr/bin", "/bin")  # cron's default PATH
SYSTEM_UNIT_DIR = "/etc/systemd/system"


@dataclass(frozen=True)
class Schedule:
    """What ``schedule`` prints: one or more files (name → text) and warnings for stderr."""

    kind: str  # "cron" | "systemd"
    at: time
    command: tuple[str, ...]  # the absolute command line that runs the nightly fetch
    files: dict[str, str]  # "crontab" → text, or "reportsync.service"/"reportsync.timer" → text
    secret_env: tuple[str, ...] = ()  # environment variables the config reads secrets from
    warnings: tuple[str, ...] = ()
    written: tuple[Path, ...] = ()  # with --out-dir: the unit files written (else printed)

    exit_code: ClassVar[ExitCode] = ExitCode.OK

    def text(self) -> str:
        """Every file in one text: for cron a crontab fragment, for systemd both units."""
        if self.kind == "cron":
            return self.files["crontab"]
        parts = []
        for name, body in self.files.items():
            parts.append(f"# ==> {name} <==\n{body}")
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        shape: dict[str, Any] = {
            "kind": self.kind, "at": self.at.strftime("%H:%M"), "run": list(self.command),
            "files": dict(self.files), "secret_env": list(self.secret_env),
            "warnings": list(self.warnings)}
        if self.written:
            shape["written"] = [str(path) for path in self.written]
        return shape


def make_schedule(config: Config, config_path: Path, *, kind: str, at_text: str,
                  out_dir: Path | None = None) -> Schedule:
    """``reportsync schedule``: the cron or systemd schedule, its units written to ``out_dir``
    when given."""
    at = parse_time(at_text)
    if kind == "systemd":
        schedule = systemd_schedule(config, config_path, at=at)
    else:
        schedule = cron_schedule(config, config_path, at=at)
    if out_dir is None:
        return schedule
    return replace(schedule, written=tuple(write_files(schedule, out_dir)))


def parse_time(text: str) -> time:
    """``HH:MM`` (24-hour, local time) → time; UsageError otherwise."""
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text.strip())
    if match is None:
        raise UsageError(f"--at {text!r} is not a time of day",
                         remedy="Give it as HH:MM in 24-hour local time, e.g. --at 07:15.")
    return time(int(match.group(1)), int(match.group(2)))


def reportsync_command(
    argv0: str | None = None,
    *,
    executable: str = sys.executable,
    which: Callable[[str], str | None] = shutil.which,
    environ: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
    """The absolute command that starts this reportsync installation.

    In order: the script this process was started as (``sys.argv[0]``), the ``reportsync``
    script beside the running interpreter (a virtualenv's ``bin``), ``reportsync`` on ``PATH``,
    else ``python -m reportsync`` with the running interpreter (through ``env PYTHONPATH=...``
    when the package is a source folder the interpreter finds only from its working directory).
    A symlink (pipx puts one in
    ``~/.local/bin``) is kept as it is, so an upgrade behind it needs no new schedule.
    """
    candidates: list[str] = []
    if argv0 and Path(argv0).name.startswith("reportsync") and not argv0.endswith(".py"):
        candidates.append(argv0)
    candidates.append(str(Path(executable).parent / "reportsync"))
    on_path = which("reportsync")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return (os.path.abspath(candidate),)
    module = (os.path.abspath(executable), "-m", "reportsync")
    checkout = _uninstalled_checkout(executable, environ)
    if checkout is None:
        return module
    # run from a source folder, not installed: cron starts in $HOME, where `-m` would not find it
    return (shutil.which("env") or "/usr/bin/env", f"PYTHONPATH={checkout}", *module)


def _uninstalled_checkout(executable: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The folder holding the ``reportsync`` package if ``executable`` cannot import it from
    elsewhere (a source checkout found only through the working directory or $PYTHONPATH)."""
    root = str(Path(__file__).resolve().parent.parent)
    # the allowlisted environment every child gets (no secret, and no PYTHONPATH: cron has none)
    try:
        probe = process.run([executable, "-c", "import reportsync"], cwd=os.path.abspath(os.sep),
                            timeout=60, environ=environ)
    except process.ChildError:
        return root
    return None if probe.returncode == 0 else root


def fetch_command(program: Iterable[str], config_path: Path) -> tuple[str, ...]:
    return (*program, "--config", os.path.abspath(config_path), "--quiet", "fetch")


def secret_env_names(config: Config) -> tuple[str, ...]:
    """The environment variables the config takes secrets from, in config order, once each."""
    names: list[str] = []
    for ref in secret_refs(config):  # by the schema: [notify]'s URLs are secrets too
        if ref.env and ref.env not in names:
            names.append(ref.env)
    return tuple(names)


def writable_paths(config: Config) -> tuple[Path, ...]:
    """The folders a fetch writes to: state dir, GnuPG home, every download and output dir, the
    metrics file's folder.

    Absolute, without duplicates and without folders inside another one of the list.
    """
    paths = [config.settings.state_dir, config.settings.gnupg_home]
    for source in config.sources.values():
        paths += [source.download_dir, source.output_dir]
    if config.notify.metrics_file is not None:  # written atomically: a temp file beside it
        paths.append(config.notify.metrics_file.parent)
    absolute = sorted({Path(os.path.abspath(path)) for path in paths}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in absolute:
        if not any(path == other or other in path.parents for other in kept):
            kept.append(path)
    return tuple(sorted(kept))


def _log_file(config: Config) -> Path:
    return Path(os.path.abspath(config.settings.state_dir)) / "logs" / "reportsync.log"


def _gpg_path_note(config: Config) -> list[str]:
    """cron's PATH is /usr/bin:/bin; a gpg elsewhere (Homebrew, /usr/local) is not found there."""
    binary = config.settings.gpg_binary
    if os.path.isabs(binary):
        return []
    found = process.which(binary, config.environ)
    if found is None or os.path.dirname(found) in CRON_PATH:
        return []
    return [f"# cron's PATH is {':'.join(CRON_PATH)}; {binary} is {found}: set "
            f'settings.gpg_binary = "{found}" in the config.']


# --- cron ----------------------------------------------------------------------------------------


def _cron_word(arg: str) -> str:
    """Shell-quoted; ``%`` escaped, since cron turns an unescaped one into a newline."""
    return shlex.quote(arg).replace("%", "\\%")


def cron_schedule(config: Config, config_path: Path, *, at: time = DEFAULT_TIME,
                  program: tuple[str, ...] | None = None) -> Schedule:
    """A crontab fragment: comment lines and one line that runs ``--quiet fetch`` daily at ``at``."""
    command = fetch_command(program or reportsync_command(sys.argv[0], environ=config.environ),
                             config_path)
    secrets = secret_env_names(config)
    lines = [
        f"# reportsync: fetch new statements daily at {at:%H:%M} local time, after the provider's "
        "overnight delivery.",
        "# Quiet on success: cron mails only warnings and errors. Log: "
        f"{_log_file(config)}",
    ]
    if secrets:
        lines.append(f"# The config reads {', '.join(secrets)} from the environment, which cron does "
                     "not set: use the *_file keys (a 0600 file) instead, or set them above this line.")
    lines += _gpg_path_note(config)
    lines.append(f"{at.minute} {at.hour} * * * " + " ".join(_cron_word(arg) for arg in command))
    return Schedule(kind="cron", at=at, command=command, files={"crontab": "\n".join(lines) + "\n"},
                    secret_env=secrets,
                    warnings=tuple(_missing_env_warnings(secrets, config.environ)))


def _missing_env_warnings(secrets: Iterable[str], environ: Mapping[str, str]) -> list[str]:
    return [f"note: {name} is not set in this shell either; the scheduled run needs it"
            for name in secrets if name not in environ]


# --- systemd -------------------------------------------------------------------------------------


def _systemd_escape(text: str) -> str:
    return text.replace("%", "%%")


def _systemd_word(arg: str, *, expand_env: bool = True) -> str:
    """One word of ExecStart= or ReadWritePaths=: specifiers and (in ExecStart) ``$`` escaped,
    quoted when it holds whitespace or quotes."""
    word = _systemd_escape(arg.replace("\\", "\\\\"))
    if expand_env:
        word = word.replace("$", "$$")
    if not arg or any(char in arg for char in " \t\"'"):
        word = '"' + word.replace('"', '\\"') + '"'
    return word


def _current_user() -> str | None:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # pragma: no cover - a uid without a passwd entry (some containers)
        return None


def _uid_of(user: str | None) -> int | None:
    if user is None:
        return os.getuid()
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def systemd_schedule(config: Config, config_path: Path, *, at: time = DEFAULT_TIME,
                     program: tuple[str, ...] | None = None,
                     user: str | None = None) -> Schedule:
    """A hardened oneshot ``reportsync.service`` and a ``reportsync.timer`` that starts it daily.

    The service runs as ``user`` (default: whoever runs ``schedule``), can write only the folders
    a fetch writes to, and reads secrets from an EnvironmentFile beside the config.
    """
    command = fetch_command(program or reportsync_command(sys.argv[0], environ=config.environ),
                             config_path)
    secrets = secret_env_names(config)
    run_as = user if user is not None else _current_user()
    writable = list(writable_paths(config))
    warnings = _missing_env_warnings(secrets, config.environ)
    missing = [path for path in writable if not path.is_dir()]
    if missing:
        warnings.append("warning: these folders do not exist yet, and the service cannot create "
                        "them (ProtectSystem=strict): " + ", ".join(map(str, missing)) +
                        ". Run `reportsync fetch` once by hand first; it creates them.")
    env_file = Path(os.path.abspath(config_path)).parent / f"{UNIT_NAME}.env"
    install = [
        "# Install: `reportsync schedule --systemd --out-dir DIR` writes both units; copy them",
        f"# into {SYSTEM_UNIT_DIR}/, then",
        f"#   sudo systemctl daemon-reload && sudo systemctl enable --now {UNIT_NAME}.timer",
        f"# Check: systemctl list-timers {UNIT_NAME}.timer; journalctl -u {UNIT_NAME}.service",
    ]
    service = [
        "# Generated by `reportsync schedule --systemd`.",
        *install,
        "[Unit]",
        "Description=reportsync: fetch, decrypt and archive new broker statements",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
    ]
    if run_as and run_as != "root":
        service.append(f"User={run_as}")
    else:
        service.append("# User=... (runs as root without it: better a user of its own)")
    # systemd expands $VARS in the arguments, not in the program's path
    service.append("ExecStart=" + " ".join([_systemd_word(command[0], expand_env=False),
                                            *(_systemd_word(arg) for arg in command[1:])]))
    if secrets:
        service += [
            f"# The config reads {', '.join(secrets)} from the environment. Put them as VAR=value",
            "# lines in this file (chmod 600, owned by the user above), never in this unit, which",
            "# every local user can read (systemctl show). Or use the config's *_file keys.",
            f"EnvironmentFile={_systemd_escape(str(env_file))}",
        ]
    uid = _uid_of(run_as)
    rw_words = [_systemd_word(str(path), expand_env=False) for path in writable]
    service += [
        "# Hardening: the service can write only the folders a fetch writes to.",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "ReadWritePaths=" + " ".join(rw_words),
    ]
    if uid is not None:
        service += ["# gpg-agent's socket, when the user has a runtime dir",
                    f"ReadWritePaths=-/run/user/{uid}"]
    service += ["UMask=0077", ""]
    timer = [
        "# Generated by `reportsync schedule --systemd`: starts reportsync.service daily.",
        "[Unit]",
        f"Description=Daily reportsync fetch at {at:%H:%M}",
        "",
        "[Timer]",
        f"OnCalendar=*-*-* {at:%H:%M}:00",
        "# a run missed while the machine was off happens at the next boot",
        "Persistent=true",
        "# spreads the load on the provider's server: the run starts within this delay",
        f"RandomizedDelaySec={RANDOMIZED_DELAY}",
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ]
    return Schedule(kind="systemd", at=at, command=command,
                    files={f"{UNIT_NAME}.service": "\n".join(service),
                           f"{UNIT_NAME}.timer": "\n".join(timer)},
                    secret_env=secrets, warnings=tuple(warnings))


def write_files(schedule: Schedule, folder: Path) -> list[Path]:
    """Write each file of a systemd schedule into ``folder`` (0644: units hold no secrets)."""
    if schedule.kind != "systemd":
        raise UsageError("--out-dir is for --systemd; install a crontab line with "
                         "`(crontab -l; reportsync schedule --cron) | crontab -`")
    return [write_atomically(folder / name, body.encode("utf-8"), mode=0o644)
            for name, body in schedule.files.items()]
