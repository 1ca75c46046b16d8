"""The command line: parse → load config → call one core function → render its result → exit code.

With ``cli_app.py`` (the run context, ``App``) the only module that prints. ``main`` runs
in-process (httpie's ``Environment``): the environment and streams given to it are what config
loading, secrets, children and output use, so tests call it directly; the console script exits
with the code it returns. ``main`` is also the error-handling shell that turns a
``ReportsyncError`` into its message, remedy and exit code.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import logging.handlers
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import click

from reportsync import pgpkeys, render
from reportsync.cli_app import App, version_lines
from reportsync.config import (
    PROVIDER_PRESETS,
    Secret,
)
from reportsync.errors import ExitCode, ReportsyncError, UsageError
from reportsync.pgp import Gpg
from reportsync.results import DoctorRun

PROG_NAME = "reportsync"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    app = ctx.find_object(App)
    for line in version_lines(app.environ if app else None):
        click.echo(line, file=app.stdout if app else None)
    ctx.exit()


def _stdin_is_terminal() -> bool:
    """Whether a person can be asked: never under cron, systemd, a pipe or a closed stdin."""
    return sys.stdin is not None and sys.stdin.isatty()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Config file (default: $REPORTSYNC_CONFIG, else the platform config dir).")
@click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Nothing on stdout on success (for cron).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@click.option("--traceback", is_flag=True, hidden=True, help="Show Python tracebacks.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Versions of reportsync, Python, paramiko, cryptography, python-gnupg and gpg.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, verbose: int, quiet: bool, as_json: bool,
        traceback: bool) -> None:
    """Fetch encrypted broker statements, exactly once, and keep them safe."""
    app = ctx.find_object(App)
    if app is None:  # cli() called without main(), e.g. by Click's test runner
        app = App(environ=os.environ, stdout=sys.stdout, stderr=sys.stderr)
        ctx.obj = app
    app.config_path, app.verbose, app.quiet = config_path, verbose, quiet
    app.as_json, app.traceback = as_json, traceback
    app.configure_console_logging()


def _command_path(ctx: click.Context) -> str | None:
    """``keys pgp list`` for ``reportsync keys pgp list``; None for the program itself."""
    return " ".join(ctx.command_path.split()[1:]) or None


def pass_app(command: Callable[..., int]) -> Callable[..., int]:
    """Hand the command its ``App``, after noting the command's path (for the JSON envelope)."""
    @functools.wraps(command)
    def with_app(*args: Any, **kwargs: Any) -> int:
        ctx = click.get_current_context()
        app = ctx.find_object(App)
        assert app is not None
        app.command = _command_path(ctx)
        return command(app, *args, **kwargs)
    return with_app


@cli.command()
@click.option("--provider", type=click.Choice(list(PROVIDER_PRESETS)),
              help="Fill in this provider's host, port, folder and file patterns.")
@click.option("--source-name", default="ibkr", show_default=True, help="Name of the first source.")
@click.option("--username", help="The login name the provider gave you (else a placeholder).")
@click.option("--force", is_flag=True, help="Overwrite an existing config.")
@pass_app
def init(app: App, provider: str | None, source_name: str, username: str | None,
         force: bool) -> int:
    """Write a commented starter config (every key, from the schema). Asks nothing."""
    from reportsync.init import write_starter_config

    result = write_starter_config(app.config_file, source_name=source_name, provider=provider,
                                  username=username, force=force)
    return app.finish(result, render.init_text)


@cli.command()
@click.option("--cron", "kind", flag_value="cron", default=True,
              help="A crontab line (the default).")
@click.option("--systemd", "kind", flag_value="systemd",
              help="A systemd service and timer pair, hardened.")
@click.option("--at", "at_text", default="07:15", show_default=True, metavar="HH:MM",
              help="Local time of the daily run (after the provider's overnight delivery).")
@click.option("--out-dir", type=click.Path(path_type=Path, file_okay=False),
              help="--systemd: write reportsync.service and reportsync.timer here instead.")
@pass_app
def schedule(app: App, kind: str, at_text: str, out_dir: Path | None) -> int:
    """Print a crontab line or a systemd service + timer for the nightly fetch."""
    from reportsync import schedule as schedule_core

    result = schedule_core.make_schedule(app.load_config(need_sources=False), app.config_file,
                                         kind=kind, at_text=at_text, out_dir=out_dir)
    return app.finish(result, render.schedule_text)


@cli.command()
@click.option("--source", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable).")
@click.option("--dry-run", is_flag=True, help="List and plan; download and write nothing.")
@click.option("--no-decrypt", is_flag=True, help="Download only; decrypt on a later run.")
@click.option("--jobs", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Parallel downloads, each over its own connection.")
@pass_app
def fetch(app: App, sources: tuple[str, ...], dry_run: bool, no_decrypt: bool, jobs: int) -> int:
    """Download new reports, decrypt them and archive them."""
    from reportsync.transports.head_start import head_start

    config = app.load_config()
    with head_start(config, sources) as connect:
        # imported while the first source logs in (the fetch machinery is most of a run's
        # imports: transports/head_start.py)
        from reportsync import fetch as fetch_core
        from reportsync.notify import monitored_fetch

        options = fetch_core.FetchOptions(sources=sources, dry_run=dry_run,
                                          decrypt=not no_decrypt, jobs=jobs)
        if app.show_progress():
            from reportsync.progress import ProgressBar

            with ProgressBar(app.stderr) as bar:
                run = monitored_fetch(config, options, reporter=bar, connect=connect)
        else:
            run = monitored_fetch(config, options, connect=connect)
    if run.error is not None:  # the fetch stopped as a whole: its error is what the run reports
        for line in render.monitoring_lines(run):
            app.echo(line, err=True)
        raise run.error
    return app.finish(run, render.monitored_fetch_text)


@cli.command()
@click.option("--source", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable).")
@click.option("--bundle", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write a zip for a support ticket (findings, versions, redacted config, "
              "recent log, ledger summary; no secrets).")
@click.option("--notify-test", is_flag=True,
              help="Also send one test message through every [notify] channel.")
@click.option("-q", "--quiet", "quiet_here", is_flag=True, help="Only the WARN and FAIL lines.")
@pass_app
def doctor(app: App, sources: tuple[str, ...], bundle: Path | None, notify_test: bool,
           quiet_here: bool) -> int:
    """Check config, keys, gpg and every source's connection; say what to fix."""
    from reportsync import doctor as doctor_core

    try:
        app.load_config(need_sources=False)  # only to log to state_dir/logs; a broken config is
        # a finding below
    except ReportsyncError as error:
        logging.getLogger("reportsync").debug("doctor: the config does not load: %s", error)
    report = doctor_core.run_doctor(app.config_file, sources, environ=app.environ,
                                    notify_test=notify_test)
    run = DoctorRun(report)
    if bundle is not None:
        try:
            run = DoctorRun(report, bundle=doctor_core.write_bundle(report, bundle))
        except ReportsyncError as error:  # the findings still get printed
            run = DoctorRun(report, bundle_error=error)
    app.quiet = app.quiet or quiet_here
    return app.finish(run, functools.partial(render.doctor_text, quiet=app.quiet))


@cli.command("retention")
@click.option("--source", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable).")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; change nothing.")
@pass_app
def retention_command(app: App, sources: tuple[str, ...], dry_run: bool) -> int:
    """Apply the retention policy now and report files at risk of purge."""
    from reportsync.retention import run_retention

    return app.finish(run_retention(app.load_config(), sources, dry_run=dry_run),
                      render.retention_text)


@cli.command("status")
@click.option("--source", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable).")
@click.option("--ack", "acknowledge", multiple=True, metavar="NAME",
              help="Acknowledge a lost file so it is no longer reported (repeatable).")
@pass_app
def status_command(app: App, sources: tuple[str, ...], acknowledge: tuple[str, ...]) -> int:
    """From the ledger: last run, archive, failures, files at risk, lost files, stale feeds."""
    from reportsync.ledger import open_ledger
    from reportsync.status import status

    config = app.load_config()
    with open_ledger(config.settings, environ=config.environ) as ledger:
        report = status(config, ledger, sources, acknowledge=acknowledge)
    return app.finish(report, functools.partial(render.status_text, strip=app.stdout_is_terminal(),
                                                unicode=app.stdout_takes_unicode()))


@cli.command("verify")
@click.option("--source", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable).")
@pass_app
def verify_command(app: App, sources: tuple[str, ...]) -> int:
    """Re-hash the archive against the ledger: report missing and altered files."""
    from reportsync.ledger import open_ledger
    from reportsync.status import verify

    config = app.load_config()
    with open_ledger(config.settings, environ=config.environ) as ledger:
        report = verify(config, ledger, sources)
    return app.finish(report, render.verify_text)


@cli.group("ledger")
def ledger_group() -> None:
    """The ledger: move it into a shared PostgreSQL database."""


@ledger_group.command("migrate")
@click.option("--to", "url", required=True, metavar="URL",
              help="postgresql://USER@HOST:PORT/DBNAME (the password: as for ledger_url).")
@click.option("--force", is_flag=True, help="Merge into a database holding these sources.")
@pass_app
def ledger_migrate(app: App, url: str, force: bool) -> int:
    """Copy the SQLite ledger of state_dir into a shared PostgreSQL ledger."""
    from reportsync.ledger.migrate import migrate_to_postgres

    result = migrate_to_postgres(app.load_config(need_sources=False), url, force=force)
    return app.finish(result, render.ledger_migrate_text)


# --- keys ----------------------------------------------------------------------------------------


def _secret_from_options(app: App, no_passphrase: bool, passphrase_env: str | None, *, what: str,
                         confirm: bool) -> Secret | None:
    """A passphrase from --passphrase-env, or a prompt on a terminal; None with --no-passphrase."""
    if no_passphrase and passphrase_env:
        raise UsageError("give either --no-passphrase or --passphrase-env, not both")
    if no_passphrase:
        return None
    if passphrase_env:
        value = app.environ.get(passphrase_env)
        if not value:
            raise UsageError(f"environment variable {passphrase_env} is not set or empty",
                             remedy=f"Export {passphrase_env} with the {what} first.")
        return Secret(value)
    if not _stdin_is_terminal():
        raise UsageError(f"no {what} given and no terminal to ask on",
                         remedy="Pass --passphrase-env VAR (or --no-passphrase where offered).")
    return Secret(click.prompt(f"{what[0].upper()}{what[1:]}", hide_input=True,
                               confirmation_prompt=confirm))


def _required_secret(app: App, passphrase_env: str | None, *, what: str, confirm: bool) -> Secret:
    secret = _secret_from_options(app, False, passphrase_env, what=what, confirm=confirm)
    assert secret is not None
    return secret


@cli.group()
def keys() -> None:
    """Generate, export, back up and restore PGP and SSH keys."""


@keys.group()
def pgp() -> None:
    """PGP keys in reportsync's GnuPG home (settings.gnupg_home)."""


@pgp.command("generate")
@click.option("--name", required=True, help="Real name or firm on the key.")
@click.option("--email", required=True, help="Email address on the key.")
@click.option("--algo", type=click.Choice(list(pgpkeys.ALGORITHMS)), default=pgpkeys.DEFAULT_ALGORITHM,
              show_default=True, help="Key algorithm and size.")
@click.option("--expire", default="2y", show_default=True, help="Expiry: 2y, 18m, 52w, 365d or never.")
@click.option("--no-passphrase", is_flag=True, help="Store the secret key unprotected.")
@click.option("--passphrase-env", metavar="VAR", help="Take the key's passphrase from this variable.")
@click.option("--export", "export_to", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the armored public key here (the file to send the provider).")
@click.option("--force", is_flag=True, help="Create a key even if one exists for this email.")
@pass_app
def pgp_generate(app: App, name: str, email: str, algo: str, expire: str, no_passphrase: bool,
                 passphrase_env: str | None, export_to: Path | None, force: bool) -> int:
    """Create a new PGP key pair."""
    settings = app.load_settings()  # a broken config stops here, before a passphrase is asked for
    passphrase = _secret_from_options(app, no_passphrase, passphrase_env,
                                      what="passphrase for the new PGP key", confirm=True)
    result = pgpkeys.generate_pgp_key(app.gpg(passphrase, settings), name=name, email=email,
                                      algorithm=algo, expire=expire, passphrase=passphrase,
                                      export_to=export_to, force=force)
    return app.finish(result, render.generated_pgp_text)


@pgp.command("list")
@pass_app
def pgp_list(app: App) -> int:
    """Keys in the GnuPG home: fingerprint, uid, created, expiry, secret part present."""
    return app.finish(pgpkeys.key_list(app.gpg()), render.pgp_list_text)


@pgp.command("export-public")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="File (else stdout).")
@click.option("--key", "selector", metavar="FINGERPRINT|EMAIL", help="Which key, if several.")
@pass_app
def pgp_export_public(app: App, out: Path | None, selector: str | None) -> int:
    """The armored public key to send to the provider."""
    return app.finish(pgpkeys.export_public(app.gpg(), selector, out), render.exported_key_text)


@pgp.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--passphrase-env", metavar="VAR", help="Passphrase of a protected secret key.")
@pass_app
def pgp_import(app: App, file: Path, passphrase_env: str | None) -> int:
    """Import a public or secret key file."""
    value = app.environ.get(passphrase_env) if passphrase_env else None
    report = pgpkeys.import_key_file(app.gpg(), file,
                                     passphrase=Secret(value) if value is not None else None)
    return app.finish(report, render.import_text)


@keys.group()
def ssh() -> None:
    """SSH keys for SFTP login."""


@ssh.command("generate")
@click.option("--type", "key_type", type=click.Choice(["rsa", "ed25519"]), default="rsa",
              show_default=True, help="RSA is what the reference provider requires.")
@click.option("--bits", type=click.IntRange(2048, 4096), default=2048, show_default=True,
              help="RSA key size.")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Private key path; the public key goes to PATH.pub.")
@click.option("--no-passphrase", is_flag=True, help="Store the private key unprotected.")
@click.option("--passphrase-env", metavar="VAR", help="Take the key's passphrase from this variable.")
@click.option("--comment", default="reportsync", show_default=True, help="Comment in PATH.pub.")
@click.option("--force", is_flag=True, help="Overwrite an existing key.")
@pass_app
def ssh_generate(app: App, key_type: str, bits: int, out: Path, no_passphrase: bool,
                 passphrase_env: str | None, comment: str, force: bool) -> int:
    """Create an OpenSSH key pair (PATH 0600 and PATH.pub)."""
    from reportsync import sshkeys  # cryptography's key code: for the ssh key commands only

    passphrase = _secret_from_options(app, no_passphrase, passphrase_env,
                                      what="passphrase for the new SSH key", confirm=True)
    info = sshkeys.generate_ssh_key(out, key_type=key_type, bits=bits,
                                    passphrase=passphrase.reveal() if passphrase else None,
                                    comment=comment, force=force)
    return app.finish(sshkeys.GeneratedSshKey(info), render.generated_ssh_text)


@ssh.command("show")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@pass_app
def ssh_show(app: App, path: Path) -> int:
    """Type, bits and fingerprint of a key; validity and principals of a certificate."""
    from reportsync import sshkeys  # cryptography's key code: for the ssh key commands only

    return app.finish(sshkeys.ShownSshFile(sshkeys.inspect_ssh_file(path)), render.ssh_show_text)


@keys.command("backup")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The backup file to write (0600).")
@click.option("--passphrase-env", metavar="VAR", help="Backup passphrase from this variable.")
@pass_app
def keys_backup(app: App, out: Path, passphrase_env: str | None) -> int:
    """One encrypted file with everything needed to decrypt and log in again."""
    from reportsync import backup  # cryptography's AEAD and scrypt: for these commands only

    config = app.load_config(need_sources=False)
    passphrase = _required_secret(app, passphrase_env, what="backup passphrase", confirm=True)
    written = backup.create_backup(config, Gpg.from_settings(config.settings, config.environ), out,
                                   passphrase)
    return app.finish(written, render.backup_text)


@keys.command("verify-backup")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--passphrase-env", metavar="VAR", help="Backup passphrase from this variable.")
@pass_app
def keys_verify_backup(app: App, file: Path, passphrase_env: str | None) -> int:
    """Decrypt and check every member against the manifest; writes nothing."""
    from reportsync import backup  # cryptography's AEAD and scrypt: for these commands only

    passphrase = _required_secret(app, passphrase_env, what="backup passphrase", confirm=False)
    return app.finish(backup.verify_backup(file, passphrase), render.verify_backup_text)


@keys.command("restore")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--passphrase-env", metavar="VAR", help="Backup passphrase from this variable.")
@click.option("--force", is_flag=True, help="Replace existing files that differ.")
@pass_app
def keys_restore(app: App, file: Path, passphrase_env: str | None, force: bool) -> int:
    """Verify a backup, then restore keys, certificates and config onto this machine."""
    from reportsync import backup  # cryptography's AEAD and scrypt: for these commands only

    passphrase = _required_secret(app, passphrase_env, what="backup passphrase", confirm=False)
    report = backup.restore_backup(file, passphrase, config_path=app.config_file, force=force,
                                   environ=app.environ)
    return app.finish(report, render.restore_text)


# --- the shell around every command ---------------------------------------------------------------


def _log_library_thread_error(args: threading.ExceptHookArgs) -> None:
    """Background threads of libraries (paramiko's prefetch, after a dropped connection) must not
    print tracebacks into a cron mail; the failure already surfaced as a ReportsyncError."""
    logging.getLogger("reportsync").debug(
        "error in background thread %s: %s", getattr(args.thread, "name", "?"), args.exc_value)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run one command and return its exit code; errors become their message, remedy and code.

    ``env`` (default: ``os.environ``) is the environment the run sees: where the config is
    looked for, the variables secrets are read from, what gpg and other children inherit (through
    the allowlist of ``reportsync.process``). ``stdout``/``stderr`` (default: the process's)
    receive all output, Click's help and usage messages included."""
    args = list(sys.argv[1:] if argv is None else argv)
    app = App(environ=os.environ if env is None else env, stdout=stdout or sys.stdout,
              stderr=stderr or sys.stderr)
    hook = threading.excepthook
    threading.excepthook = _log_library_thread_error
    try:
        with _output_to(stdout, stderr):
            return _run(app, args)
    finally:
        threading.excepthook = hook
        app.close()


def console() -> NoReturn:
    """The console script (and ``python -m reportsync``): ``main``, then exit with its code.

    Before the interpreter's teardown, everything the run made is handed to the collector's
    permanent generation (``gc.freeze``): the teardown still runs every exit handler and frees
    every module, but its collections no longer walk the objects of every library the run
    loaded, which took about 0.1 s of each run (docs/performance.md "Head start"). Only here:
    ``main`` also runs in-process (tests), where freezing would keep their garbage for good."""
    code = main()
    gc.freeze()
    sys.exit(code)


@contextlib.contextmanager
def _output_to(stdout: TextIO | None, stderr: TextIO | None) -> Iterator[None]:
    """Click writes help, usage errors and prompts to sys.stdout/sys.stderr: the given streams."""
    with contextlib.ExitStack() as stack:
        if stdout is not None:
            stack.enter_context(contextlib.redirect_stdout(stdout))
        if stderr is not None:
            stack.enter_context(contextlib.redirect_stderr(stderr))
        yield


def _run(app: App, args: list[str]) -> int:
    wants_json = "--json" in args  # known before the options are parsed, for their errors
    try:
        code = cli.main(args=args, prog_name=PROG_NAME, standalone_mode=False, obj=app)
    except ReportsyncError as error:
        if "--traceback" in args:
            raise
        _report_error(app, error, wants_json)
        return int(error.exit_code)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except click.ClickException as usage:
        usage.show(file=app.stderr)
        if wants_json:
            command = app.command or (_command_path(usage.ctx) if isinstance(
                usage, click.UsageError) and usage.ctx is not None else None)
            app.echo(render.dumps(render.envelope(command,
                                                  error=UsageError(usage.format_message()))))
        return int(ExitCode.CONFIG)
    except click.exceptions.Abort:
        app.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        app.echo("interrupted: nothing half-written was kept; the next run resumes", err=True)
        return 130
    except SystemExit as done:  # Click's shell completion ends this way
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return int(code) if isinstance(code, int) else 0


def _report_error(app: App, error: ReportsyncError, as_json: bool) -> None:
    if as_json:
        app.echo(render.dumps(render.envelope(app.command, error=error)))
    for line in render.error_lines(error):
        app.echo(line, err=True)

