"""The command line: parse → load config → call one core function → render → exit.

This is the only module that prints or exits. ``main`` is the error-handling shell that turns a
``ReportsyncError`` into its message, remedy and exit code.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import platform
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from reportsync import __version__, backup, pgpkeys, render, sshkeys
from reportsync import fetch as fetch_core
from reportsync.config import (
    PROVIDER_PRESETS,
    Config,
    Secret,
    Settings,
    default_config_path,
    load_config,
    parse_config,
    starter_config,
)
from reportsync.errors import ExitCode, ReportsyncError, UsageError
from reportsync.fsutil import ensure_private_dir, make_private, write_atomically
from reportsync.pgp import Gpg, gpg_version_line
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

    def load_config(self, *, need_sources: bool = True) -> Config:
        """The config; without ``need_sources`` one with only ``[settings]`` is valid too (for the
        commands that work on this machine's keys and schedule, not on a server)."""
        config = load_config(self.config_path or default_config_path(),
                             allow_no_sources=not need_sources)
        _add_log_file(config.settings.state_dir)
        return config

    def load_settings(self) -> Settings:
        """The config's settings, or the defaults when no config exists yet (the first steps,
        such as generating keys, come before writing a config)."""
        path = self.config_path or default_config_path()
        if self.config_path is None and not path.exists():
            return parse_config({"sources": {}}, allow_no_sources=True).settings
        return self.load_config(need_sources=False).settings

    def gpg(self) -> Gpg:
        """gpg for key management: listing, exporting and importing need no passphrase."""
        settings = self.load_settings()
        return Gpg(binary=settings.gpg_binary, home=settings.gnupg_home, passphrase=None)

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


def version_lines() -> list[str]:
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
    rows.append(("gpg", gpg_version_line()))
    return [f"{name:<13} {version}" for name, version in rows]


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    for line in version_lines():
        click.echo(line)
    ctx.exit()


def _stdin_is_terminal() -> bool:
    """Whether a person can be asked: never under cron, systemd, a pipe or a closed stdin."""
    return sys.stdin is not None and sys.stdin.isatty()


def _finish(code: int) -> NoReturn:
    sys.exit(int(code))


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
    ctx.obj = App(config_path=config_path, verbose=verbose, quiet=quiet, as_json=as_json,
                  traceback=traceback)
    _configure_console_logging(verbose)


pass_app = click.make_pass_decorator(App)


@cli.command()
@click.option("--provider", type=click.Choice(list(PROVIDER_PRESETS)),
              help="Fill in this provider's host, port, folder and file patterns.")
@click.option("--source-name", default="ibkr", show_default=True, help="Name of the first source.")
@click.option("--username", help="The login name the provider gave you (else a placeholder).")
@click.option("--force", is_flag=True, help="Overwrite an existing config.")
@pass_app
def init(app: App, provider: str | None, source_name: str, username: str | None,
         force: bool) -> None:
    """Write a commented starter config (every key, from the schema). Asks nothing."""
    path = app.config_path or default_config_path()
    if path.exists() and not force:
        raise UsageError(f"{path} exists; not overwriting it", path=str(path),
                         remedy="Pass --force to replace it, or --config PATH for another file.")
    try:
        text = starter_config(source_name, provider, username=username)
    except ValueError as problem:
        raise UsageError(str(problem)) from None
    ensure_private_dir(path.parent)
    write_atomically(path, text.encode("utf-8"))
    lines = [f"wrote {path}" + (f" for {PROVIDER_PRESETS[provider].title}" if provider else "")]
    if username is None:
        lines.append(f"next: set the username (and check every active key) in [sources.{source_name}]")
    lines.append("then run: reportsync doctor")
    app.render(Rendered(stdout=lines),
               {"command": "init", "exit_code": 0, "path": str(path), "provider": provider,
                "source": source_name})


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
def schedule(app: App, kind: str, at_text: str, out_dir: Path | None) -> None:
    """Print a crontab line or a systemd service + timer for the nightly fetch."""
    from reportsync import schedule as schedule_core

    at = schedule_core.parse_time(at_text)
    config = app.load_config(need_sources=False)
    config_path = app.config_path or default_config_path()
    if kind == "systemd":
        result = schedule_core.systemd_schedule(config, config_path, at=at)
    else:
        result = schedule_core.cron_schedule(config, config_path, at=at)
    payload = result.to_dict()
    if out_dir is not None:
        written = schedule_core.write_files(result, out_dir)
        payload["written"] = [str(path) for path in written]
        rendered = Rendered(stdout=[f"wrote {path}" for path in written])
    else:
        rendered = Rendered()
        if not app.as_json:  # what was asked for: printed even with --quiet, like export-public
            click.echo(result.text(), nl=False)
    rendered.stderr.extend(result.warnings)
    app.render(rendered, payload)


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


@cli.command()
@click.option("--source", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable).")
@click.option("--bundle", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write a zip for a support ticket (findings, versions, redacted config, "
              "recent log, ledger summary; no secrets).")
@click.option("-q", "--quiet", "quiet_here", is_flag=True, help="Only the WARN and FAIL lines.")
@pass_app
def doctor(app: App, sources: tuple[str, ...], bundle: Path | None, quiet_here: bool) -> None:
    """Check config, keys, gpg and every source's connection; say what to fix."""
    from reportsync import doctor as doctor_core

    path = app.config_path or default_config_path()
    try:
        app.load_config(need_sources=False)  # only to log to state_dir/logs; a broken config is
        # a finding below
    except ReportsyncError as error:
        logging.getLogger("reportsync").debug("doctor: the config does not load: %s", error)
    report = doctor_core.run_doctor(path, sources)
    written: Path | None = None
    bundle_error: ReportsyncError | None = None
    if bundle is not None:
        try:
            written = doctor_core.write_bundle(report, bundle)
        except ReportsyncError as error:  # the findings still get printed
            bundle_error = error
    app.quiet = app.quiet or quiet_here
    rendered = render.doctor_text(report, quiet=app.quiet, bundle=written)
    payload = render.doctor_json(report, written)
    if bundle_error is not None:
        rendered.stderr.extend(error_lines(bundle_error, prefix="bundle not written"))
        payload["bundle_error"] = bundle_error.to_dict()
    app.render(rendered, payload)
    _finish(bundle_error.exit_code if bundle_error is not None else report.exit_code)


@cli.command("retention")
@click.option("--source", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable).")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; change nothing.")
@pass_app
def retention_command(app: App, sources: tuple[str, ...], dry_run: bool) -> None:
    """Apply the retention policy now and report files at risk of purge."""
    from reportsync.retention import run_retention

    result = run_retention(app.load_config(), sources, dry_run=dry_run)
    app.render(render.retention_text(result), render.retention_json(result))
    _finish(result.exit_code)


@cli.command("status")
@click.option("--source", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable).")
@click.option("--ack", "acknowledge", multiple=True, metavar="NAME",
              help="Acknowledge a lost file so it is no longer reported (repeatable).")
@pass_app
def status_command(app: App, sources: tuple[str, ...], acknowledge: tuple[str, ...]) -> None:
    """From the ledger: last run, archive, failures, files at risk, lost files, stale feeds."""
    from reportsync.ledger import Ledger
    from reportsync.status import status

    config = app.load_config()
    with Ledger.in_state_dir(config.settings.state_dir) as ledger:
        report = status(config, ledger, sources, acknowledge=acknowledge)
    app.render(render.status_text(report), render.status_json(report))
    _finish(report.exit_code)


@cli.command("verify")
@click.option("--source", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable).")
@pass_app
def verify_command(app: App, sources: tuple[str, ...]) -> None:
    """Re-hash the archive against the ledger: report missing and altered files."""
    from reportsync.ledger import Ledger
    from reportsync.status import verify

    config = app.load_config()
    with Ledger.in_state_dir(config.settings.state_dir) as ledger:
        report = verify(config, ledger, sources)
    app.render(render.verify_text(report), render.verify_json(report))
    _finish(report.exit_code)


# --- keys ----------------------------------------------------------------------------------------


def _secret_from_options(no_passphrase: bool, passphrase_env: str | None, *, what: str,
                         confirm: bool) -> Secret | None:
    """A passphrase from --passphrase-env, or a prompt on a terminal; None with --no-passphrase."""
    if no_passphrase and passphrase_env:
        raise UsageError("give either --no-passphrase or --passphrase-env, not both")
    if no_passphrase:
        return None
    if passphrase_env:
        value = os.environ.get(passphrase_env)
        if not value:
            raise UsageError(f"environment variable {passphrase_env} is not set or empty",
                             remedy=f"Export {passphrase_env} with the {what} first.")
        return Secret(value)
    if not _stdin_is_terminal():
        raise UsageError(f"no {what} given and no terminal to ask on",
                         remedy="Pass --passphrase-env VAR (or --no-passphrase where offered).")
    return Secret(click.prompt(f"{what[0].upper()}{what[1:]}", hide_input=True,
                               confirmation_prompt=confirm))


def _required_secret(passphrase_env: str | None, *, what: str, confirm: bool) -> Secret:
    secret = _secret_from_options(False, passphrase_env, what=what, confirm=confirm)
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
                 passphrase_env: str | None, export_to: Path | None, force: bool) -> None:
    """Create a new PGP key pair."""
    settings = app.load_settings()
    passphrase = _secret_from_options(no_passphrase, passphrase_env, what="passphrase for the new "
                                      "PGP key", confirm=True)
    gpg = Gpg(binary=settings.gpg_binary, home=settings.gnupg_home, passphrase=passphrase)
    result = pgpkeys.generate_pgp_key(gpg, name=name, email=email, algorithm=algo, expire=expire,
                                      passphrase=passphrase, export_to=export_to, force=force)
    app.render(render.generated_pgp_text(result, str(settings.gnupg_home)),
               {"command": "keys pgp generate", "exit_code": 0, "key": result.key.to_dict(),
                "protected": result.protected, "warnings": list(result.warnings),
                "exported_to": str(export_to) if export_to else None})


@pgp.command("list")
@pass_app
def pgp_list(app: App) -> None:
    """Keys in the GnuPG home: fingerprint, uid, created, expiry, secret part present."""
    gpg = app.gpg()
    listing = pgpkeys.list_pgp_keys(gpg)
    app.render(Rendered(stdout=render.pgp_key_lines(listing)),
               {"command": "keys pgp list", "exit_code": 0, "gnupg_home": str(gpg.home),
                "keys": [key.to_dict() for key in listing]})


@pgp.command("export-public")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="File (else stdout).")
@click.option("--key", "selector", metavar="FINGERPRINT|EMAIL", help="Which key, if several.")
@pass_app
def pgp_export_public(app: App, out: Path | None, selector: str | None) -> None:
    """The armored public key to send to the provider."""
    gpg = app.gpg()
    key = pgpkeys.find_key(gpg, selector, secret=True)
    if out is None:
        click.echo(pgpkeys.export_public_key(gpg, key.fingerprint), nl=False)
        return
    pgpkeys.write_public_key(gpg, key.fingerprint, out)
    app.render(Rendered(stdout=[f"public key {key.fingerprint} written to {out}"]),
               {"command": "keys pgp export-public", "exit_code": 0,
                "fingerprint": key.fingerprint, "path": str(out)})


@pgp.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--passphrase-env", metavar="VAR", help="Passphrase of a protected secret key.")
@pass_app
def pgp_import(app: App, file: Path, passphrase_env: str | None) -> None:
    """Import a public or secret key file."""
    passphrase = Secret(os.environ[passphrase_env]) if passphrase_env and \
        passphrase_env in os.environ else None
    report = pgpkeys.import_key_file(app.gpg(), file, passphrase=passphrase)
    app.render(render.import_text(report, str(file)),
               {"command": "keys pgp import", "exit_code": 0,
                "fingerprints": list(report.fingerprints), "secret_imported": report.secret_imported,
                "public_imported": report.public_imported, "unchanged": report.unchanged})


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
                 passphrase_env: str | None, comment: str, force: bool) -> None:
    """Create an OpenSSH key pair (PATH 0600 and PATH.pub)."""
    passphrase = _secret_from_options(no_passphrase, passphrase_env,
                                      what="passphrase for the new SSH key", confirm=True)
    info = sshkeys.generate_ssh_key(out, key_type=key_type, bits=bits,
                                    passphrase=passphrase.reveal() if passphrase else None,
                                    comment=comment, force=force)
    lines = [f"created {out} and {out}.pub", f"  {info.describe()}",
             f"  send {out}.pub to your provider; set key_file = \"{out}\" in the config"]
    app.render(Rendered(stdout=lines), {"command": "keys ssh generate", "exit_code": 0,
                                        "key": info.to_dict()})


@ssh.command("show")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@pass_app
def ssh_show(app: App, path: Path) -> None:
    """Type, bits and fingerprint of a key; validity and principals of a certificate."""
    info = sshkeys.inspect_ssh_file(path)
    app.render(Rendered(stdout=render.ssh_info_lines(info)),
               {"command": "keys ssh show", "exit_code": 0, "info": info.to_dict()})


@keys.command("backup")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The backup file to write (0600).")
@click.option("--passphrase-env", metavar="VAR", help="Backup passphrase from this variable.")
@pass_app
def keys_backup(app: App, out: Path, passphrase_env: str | None) -> None:
    """One encrypted file with everything needed to decrypt and log in again."""
    config = app.load_config(need_sources=False)
    passphrase = _required_secret(passphrase_env, what="backup passphrase", confirm=True)
    manifest = backup.create_backup(config, Gpg.from_settings(config.settings), out, passphrase)
    lines = [f"wrote {out} ({len(manifest.members)} members, encrypted with AES-256-GCM)"]
    lines += render.manifest_lines(manifest, str(out))[1:]
    lines.append("keep the passphrase apart from the file; test it: reportsync keys verify-backup")
    app.render(Rendered(stdout=lines), {"command": "keys backup", "exit_code": 0, "path": str(out),
                                        "manifest": manifest.to_dict()})


@keys.command("verify-backup")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--passphrase-env", metavar="VAR", help="Backup passphrase from this variable.")
@pass_app
def keys_verify_backup(app: App, file: Path, passphrase_env: str | None) -> None:
    """Decrypt and check every member against the manifest; writes nothing."""
    passphrase = _required_secret(passphrase_env, what="backup passphrase", confirm=False)
    contents = backup.verify_backup(file, passphrase)
    app.render(Rendered(stdout=render.manifest_lines(contents.manifest, str(file))),
               {"command": "keys verify-backup", "exit_code": 0, "path": str(file),
                "manifest": contents.manifest.to_dict()})


@keys.command("restore")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--passphrase-env", metavar="VAR", help="Backup passphrase from this variable.")
@click.option("--force", is_flag=True, help="Replace existing files that differ.")
@pass_app
def keys_restore(app: App, file: Path, passphrase_env: str | None, force: bool) -> None:
    """Verify a backup, then restore keys, certificates and config onto this machine."""
    passphrase = _required_secret(passphrase_env, what="backup passphrase", confirm=False)
    report = backup.restore_backup(file, passphrase,
                                   config_path=app.config_path or default_config_path(), force=force)
    app.render(render.restore_text(report),
               {"command": "keys restore", "exit_code": 0, "written": list(report.written),
                "unchanged": list(report.unchanged), "pgp_fingerprints": list(report.pgp_fingerprints),
                "not_included": list(report.not_included)})


def _log_library_thread_error(args: threading.ExceptHookArgs) -> None:
    """Background threads of libraries (paramiko's prefetch, after a dropped connection) must not
    print tracebacks into a cron mail; the failure already surfaced as a ReportsyncError."""
    logging.getLogger("reportsync").debug(
        "error in background thread %s: %s", getattr(args.thread, "name", "?"), args.exc_value)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, map errors to messages and exit codes."""
    threading.excepthook = _log_library_thread_error
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
