"""The command line: parse → load config → call one core function → render → exit.

This is the only module that prints or exits. ``main`` is the error-handling shell that turns a
``ReportsyncError`` into its message, remedy and exit code.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from reportsync import __version__
from reportsync import fetch as fetch_core
from reportsync.config import Config, default_config_path, load_config, starter_config
from reportsync.errors import ExitCode, ReportsyncError, UsageError
from reportsync.fsutil import ensure_private_dir, make_private
from reportsync.render import Rendered, error_lines, fetch_json, fetch_text

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class App:
    """Global options, shared by every command."""

    config_path: Path | None
    verbose: int
    quiet: bool
    as_json: bool
    traceback: bool

    def load_config(self) -> Config:
        config = load_config(self.config_path or default_config_path())
        _add_log_file(config.settings.state_dir)
        return config

    def render(self, rendered: Rendered, payload: dict[str, Any] | None = None) -> None:
        if self.as_json and payload is not None:
            click.echo(json.dumps(payload, indent=2, sort_keys=False))
        elif not self.quiet:
            for line in rendered.stdout:
                click.echo(line)
        for line in rendered.stderr:
            click.echo(line, err=True)

    def show_progress(self) -> bool:
        return not self.quiet and not self.as_json and sys.stderr.isatty()


def _configure_console_logging(verbose: int) -> None:
    root = logging.getLogger("reportsync")
    root.setLevel(logging.DEBUG)
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        root.addHandler(handler)
    # paramiko logs every disconnect at ERROR/INFO; our own messages already say what matters
    logging.getLogger("paramiko").setLevel(logging.WARNING if verbose > 1 else logging.CRITICAL)


def _add_log_file(state_dir: Path) -> None:
    """An INFO log in the state dir, so a cron failure can be read after the fact."""
    root = logging.getLogger("reportsync")
    if any(isinstance(handler, logging.handlers.RotatingFileHandler) for handler in root.handlers):
        return
    try:
        log_dir = ensure_private_dir(state_dir / "logs")
        handler = logging.handlers.RotatingFileHandler(
            log_dir / "reportsync.log", maxBytes=1_000_000, backupCount=5, encoding="utf-8")
        make_private(log_dir / "reportsync.log")
    except (OSError, ReportsyncError):
        return  # logging must never be the reason a fetch fails; a storage error surfaces later
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)


def _finish(code: int) -> NoReturn:
    sys.exit(int(code))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Config file (default: $REPORTSYNC_CONFIG, else the platform config dir).")
@click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Nothing on stdout on success (for cron).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@click.option("--traceback", is_flag=True, hidden=True, help="Show Python tracebacks.")
@click.version_option(__version__, prog_name="reportsync")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, verbose: int, quiet: bool, as_json: bool,
        traceback: bool) -> None:
    """Fetch encrypted broker statements, exactly once, and keep them safe."""
    ctx.obj = App(config_path=config_path, verbose=verbose, quiet=quiet, as_json=as_json,
                  traceback=traceback)
    _configure_console_logging(verbose)


pass_app = click.make_pass_decorator(App)


@cli.command()
@click.option("--force", is_flag=True, help="Overwrite an existing config.")
@click.option("--source-name", default="ibkr", show_default=True, help="Name of the first source.")
@pass_app
def init(app: App, force: bool, source_name: str) -> None:
    """Write a commented starter config."""
    path = app.config_path or default_config_path()
    if path.exists() and not force:
        raise UsageError(f"{path} exists; not overwriting it", path=str(path),
                         remedy="Pass --force to replace it, or --config PATH for another file.")
    ensure_private_dir(path.parent)
    path.write_text(starter_config(source_name), encoding="utf-8")
    make_private(path)
    app.render(Rendered(stdout=[f"wrote {path}", "edit it, then run: reportsync doctor"]),
               {"command": "init", "path": str(path), "exit_code": 0})


@cli.command()
@click.option("--source", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable).")
@click.option("--dry-run", is_flag=True, help="List and plan; download and write nothing.")
@click.option("--no-decrypt", is_flag=True, help="Download only; decrypt on a later run.")
@click.option("--jobs", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Parallel downloads, each over its own connection.")
@pass_app
def fetch(app: App, sources: tuple[str, ...], dry_run: bool, no_decrypt: bool, jobs: int) -> None:
    """Download new reports, decrypt them and archive them."""
    config = app.load_config()
    options = fetch_core.FetchOptions(sources=sources, dry_run=dry_run, decrypt=not no_decrypt,
                                      jobs=jobs)
    if app.show_progress():
        from reportsync.progress import ProgressBar

        with ProgressBar() as bar:
            result = fetch_core.run(config, options, reporter=bar)
    else:
        result = fetch_core.run(config, options)
    app.render(fetch_text(result), fetch_json(result))
    _finish(result.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, map errors to messages and exit codes."""
    wants_json = "--json" in (argv if argv is not None else sys.argv[1:])
    wants_traceback = "--traceback" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="reportsync", standalone_mode=False)
    except ReportsyncError as error:
        if wants_traceback:
            raise
        _report_error(error, wants_json)
        sys.exit(int(error.exit_code))
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as usage:
        usage.show()
        sys.exit(int(ExitCode.CONFIG))
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted: nothing half-written was kept; the next run resumes", err=True)
        sys.exit(130)
    sys.exit(0)


def _report_error(error: ReportsyncError, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"exit_code": int(error.exit_code), "error": error.to_dict()},
                              indent=2))
    for line in error_lines(error):
        click.echo(line, err=True)
