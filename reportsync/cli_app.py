"""The CLI's run context: one invocation's environment, streams and global options (``App``),
its log file, and the version lines. Click-aware like ``cli.py`` (which holds the commands);
core modules never import this."""

from __future__ import annotations

import codecs
import contextlib
import logging
import logging.handlers
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, TypeVar

import click

from reportsync import __version__, render
from reportsync.config import Config, Secret, Settings, default_config_path, load_config, parse_config
from reportsync.errors import ReportsyncError
from reportsync.fsutil import ensure_private_dir, make_private
from reportsync.pgp import Gpg, gpg_version_line
from reportsync.render import Rendered
from reportsync.results import CommandResult
from reportsync.runlog import LOG_FORMAT

R = TypeVar("R", bound=CommandResult)


@dataclass
class App:
    """One run: its environment and streams, and the global options every command shares."""

    environ: Mapping[str, str]
    stdout: TextIO
    stderr: TextIO
    config_path: Path | None = None
    verbose: int = 0
    quiet: bool = False
    as_json: bool = False
    traceback: bool = False
    command: str | None = None  # "keys pgp list": the command path, once a command started
    _log_handlers: list[logging.Handler] = field(default_factory=list)

    @property
    def config_file(self) -> Path:
        return self.config_path or default_config_path(self.environ)

    def load_config(self, *, need_sources: bool = True) -> Config:
        """The config; without ``need_sources`` one with only ``[settings]`` is valid too (for the
        commands that work on this machine's keys and schedule, not on a server)."""
        config = load_config(self.config_file, environ=self.environ,
                             allow_no_sources=not need_sources)
        handler = add_log_file(config.settings.state_dir)
        if handler is not None:
            self._log_handlers.append(handler)
        return config

    def load_settings(self) -> Settings:
        """The config's settings, or the defaults when no config exists yet (the first steps,
        such as generating keys, come before writing a config)."""
        if self.config_path is None and not self.config_file.exists():
            return parse_config({"sources": {}}, allow_no_sources=True,
                                environ=self.environ).settings
        return self.load_config(need_sources=False).settings

    def gpg(self, passphrase: Secret | None = None, settings: Settings | None = None) -> Gpg:
        """gpg for key management: listing, exporting and importing need no passphrase."""
        settings = settings or self.load_settings()
        return Gpg(binary=settings.gpg_binary, home=settings.gnupg_home, passphrase=passphrase,
                   environ=self.environ)

    def finish(self, result: R, text: Callable[[R], Rendered]) -> int:
        """Print ``result`` (text, or with ``--json`` its envelope) and return its exit code.
        What needs a person (``stderr``) is printed in every mode."""
        rendered = text(result)
        if self.as_json:
            self.echo(render.dumps(render.envelope(self.command, result=result)))
        else:
            if rendered.document is not None:  # what was asked for: printed even with --quiet
                self.echo(rendered.document, nl=False)
            if not self.quiet:
                for line in rendered.stdout:
                    self.echo(line)
        for line in rendered.stderr:
            self.echo(line, err=True)
        return int(result.exit_code)

    def echo(self, text: str, *, err: bool = False, nl: bool = True) -> None:
        click.echo(text, file=self.stderr if err else self.stdout, nl=nl)

    def stdout_is_terminal(self) -> bool:
        return bool(getattr(self.stdout, "isatty", lambda: False)())

    def stdout_takes_unicode(self) -> bool:
        """Whether stdout encodes as UTF-8 (else pictures fall back to plain ASCII)."""
        with contextlib.suppress(LookupError):
            return codecs.lookup(getattr(self.stdout, "encoding", None) or "ascii").name == "utf-8"
        return False

    def show_progress(self) -> bool:
        return not self.quiet and not self.as_json and self.stderr.isatty()

    def configure_console_logging(self) -> None:
        root = logging.getLogger("reportsync")
        root.setLevel(logging.DEBUG)
        if self.verbose:
            handler = logging.StreamHandler(self.stderr)
            handler.setLevel(logging.DEBUG if self.verbose > 1 else logging.INFO)
            handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
            root.addHandler(handler)
            self._log_handlers.append(handler)
        # paramiko logs every disconnect at ERROR/INFO; our own messages already say what matters
        logging.getLogger("paramiko").setLevel(logging.WARNING if self.verbose > 1
                                               else logging.CRITICAL)

    def close(self) -> None:
        """Detach this run's log handlers (a next in-process run logs to its own state dir)."""
        root = logging.getLogger("reportsync")
        for handler in self._log_handlers:
            root.removeHandler(handler)
            handler.close()
        self._log_handlers.clear()


def add_log_file(state_dir: Path) -> logging.Handler | None:
    """An INFO log in the state dir, so a cron failure can be read after the fact; the handler
    added, or None if one is there already (or the folder cannot take one)."""
    root = logging.getLogger("reportsync")
    if any(isinstance(handler, logging.handlers.RotatingFileHandler) for handler in root.handlers):
        return None
    try:
        log_dir = ensure_private_dir(state_dir / "logs")
        handler = logging.handlers.RotatingFileHandler(
            log_dir / "reportsync.log", maxBytes=1_000_000, backupCount=5, encoding="utf-8")
        make_private(log_dir / "reportsync.log")
    except (OSError, ReportsyncError):
        return None  # logging must never be the reason a fetch fails; a storage error surfaces later
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    return handler


def version_lines(environ: Mapping[str, str] | None = None) -> list[str]:
    """reportsync's version and those of the libraries and the gpg it relies on (read from the
    installed metadata, without importing the libraries: fast)."""
    from importlib import metadata

    def installed(distribution: str) -> str:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            return "not installed"

    rows = [("reportsync", __version__), ("python", platform.python_version())]
    rows += [(name, installed(name)) for name in ("paramiko", "cryptography", "python-gnupg")]
    from reportsync.transports.openssh_program import engine_summary

    rows.append(("sftp engine", engine_summary(installed("paramiko"))))
    rows.append(("gpg", gpg_version_line(environ=environ)))
    return [f"{name:<13} {version}" for name, version in rows]
