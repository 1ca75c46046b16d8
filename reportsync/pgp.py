"""python-gnupg over the real gpg: decryption that trusts only what gpg reports as good.

python-gnupg's ``ok`` flag alone is not enough to trust a plaintext: a message without integrity
protection can still "decrypt". So every decryption is judged on three things together: the
``ok`` flag, gpg's return code, and gpg's status lines (``DECRYPTION_OKAY`` plus ``GOODMDC`` or an
AEAD mode, and no ``BADMDC``/``DECRYPTION_FAILED``).

gpg writes plaintext before it knows the message is intact, so the plaintext never goes to a
name gpg chooses: gpg writes to a pipe (``--output -``, ``--no-use-embedded-filename``), and
reportsync streams it into a temp file it created itself (exclusively, never through a symlink),
counting the bytes: past the plaintext size cap (a compression bomb) gpg is killed. Memory stays
flat whatever the size. The status lines are read by python-gnupg's own ``Crypt`` handler.

This module is the only one that starts gpg or gpgconf (and so, through gpg, the gpg-agent that
outlives the run), through ``reportsync.process``: every such child gets
``process.child_environment()``, an allowlist, never the caller's secrets.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from reportsync import process
from reportsync.config import Secret, Settings
from reportsync.errors import DecryptionError, KeyProblemError, ReportsyncError
from reportsync.fsutil import (
    crash_point,
    ensure_private_dir,
    fsync_dir,
    open_private_new,
    remove_quietly,
    require_private_file,
    storage_error,
)
from reportsync.units import MAX_PLAINTEXT_DEFAULT

if TYPE_CHECKING:
    import gnupg

log = logging.getLogger(__name__)

PGP_SUFFIXES = (".pgp", ".gpg", ".asc")
_ARMOR_HEADER = b"-----BEGIN PGP MESSAGE-----"
PIPE_CHUNK = 256 * 1024

# Always on a decryption's command line: the output goes to our pipe, never to a file name the
# message suggests, and verifying a signature never reaches out to a key server.
DECRYPT_ARGS = ("--no-use-embedded-filename", "--no-auto-key-retrieve", "--output", "-",
                "--decrypt")


GPG_TIMEOUT = 30.0  # gpg --version, gpgconf, ownertrust: local steps, no network

@dataclass(frozen=True)
class GpgBinary:
    """What ``gpg --version`` says about the configured gpg binary."""

    binary: str
    path: str | None  # None: not found on PATH
    first_line: str = ""  # of --version (or of stderr when it printed nothing)
    returncode: int | None = None
    error: str | None = None  # it could not be started at all


def inspect_gpg(binary: str, environ: Mapping[str, str] | None = None) -> GpgBinary:
    path = process.which(binary, environ)
    if path is None:
        return GpgBinary(binary, None)
    try:
        completed = process.run([path, "--version"], timeout=GPG_TIMEOUT, environ=environ)
    except process.ChildError as exc:
        return GpgBinary(binary, path, error=str(exc))
    out = completed.stdout.decode("utf-8", "replace").splitlines()[:1]
    err = completed.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
    return GpgBinary(binary, path, (out or err or [""])[0], completed.returncode)


def gpg_version_line(binary: str = "gpg", environ: Mapping[str, str] | None = None) -> str:
    """The first line of ``gpg --version`` and where gpg is, or "not found"."""
    found = inspect_gpg(binary, environ)
    if found.path is None:
        return "not found"
    if found.error is not None:
        return f"{found.path}: cannot run it: {found.error}"
    return f"{found.first_line or 'no version output'} ({found.path})"


def gpgconf_for(gpg_path: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The gpgconf that belongs to this gpg (its sibling), else the one on PATH."""
    sibling = Path(gpg_path).with_name("gpgconf")
    return str(sibling) if sibling.exists() else process.which("gpgconf", environ)


def kill_agent(gpg_path: str, home: Path, environ: Mapping[str, str] | None = None) -> None:
    """Stop the gpg-agent of ``home`` (quietly: there may be none)."""
    gpgconf = gpgconf_for(gpg_path, environ)
    if gpgconf is None:
        return
    with contextlib.suppress(*process.ChildError):
        process.run([gpgconf, "--homedir", str(home), "--kill", "gpg-agent"], timeout=GPG_TIMEOUT,
                    environ=environ)


# --- decryption results --------------------------------------------------------------------------

# How a decrypted report was signed, as the ledger keeps it (archived.signature).
SIGNATURE_STATES = ("good", "unsigned", "no-public-key", "expired-key", "revoked-key",
                    "expired-signature", "unverifiable")


@dataclass(frozen=True)
class Decrypted:
    path: Path
    size: int
    signature: str = "unsigned"  # one of SIGNATURE_STATES
    signer: str | None = None  # the signing key's fingerprint (or key ID when gpg gave only that)
    sha256: str = ""

    @property
    def signer_fingerprint(self) -> str | None:
        """The signer of a good signature, else None."""
        return self.signer if self.signature == "good" else None


def plaintext_name(name: str) -> str:
    """``report.xml.pgp`` → ``report.xml``; names without a PGP suffix are kept."""
    lowered = name.lower()
    for suffix in PGP_SUFFIXES:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def looks_like_pgp(path: Path, name: str) -> bool:
    """A PGP message by its name or by its first bytes (an armor header or an OpenPGP packet).

    Judged by content too because providers sometimes deliver encrypted files without a suffix;
    the reverse (a ``.pgp`` that is not PGP) is left to gpg to refuse, as corrupt.
    """
    if name.lower().endswith(PGP_SUFFIXES):
        return True
    with path.open("rb") as handle:
        head = handle.read(64)
    if head.lstrip().startswith(_ARMOR_HEADER):
        return True
    if not head:
        return False
    first = head[0]
    if not first & 0x80:
        return False
    # new-format packet headers keep the tag in the low six bits, old-format ones in bits 5..2
    tag = first & 0x3F if first & 0x40 else (first >> 2) & 0x0F
    # 1: public-key encrypted session key, 3: symmetric session key (the start of a message)
    return tag in (1, 3)


def needs_decryption(path: Path, name: str, *, decrypt: bool, require_signer: str) -> bool:
    """The one decision of how a fetched file is archived: True to decrypt it (it is PGP and the
    source decrypts), False to archive it as delivered.

    With ``require_signature`` set, every archived file needs a good signature, and a file that is
    not a PGP message cannot carry one: it fails as unsigned (DecryptionError) instead of being
    archived as it is.
    """
    if decrypt and looks_like_pgp(path, name):
        return True
    if require_signer:
        what = "not a PGP message, so it is unsigned" if decrypt else \
            "archived as delivered (decrypt = false), so its signature is unchecked (unsigned)"
        raise DecryptionError(
            f"{what}; require_signature is {require_signer}, so every archived file needs a good "
            "signature by that key",
            remedy="Ask the provider why this file is delivered unencrypted and unsigned; if such "
            "files are expected, narrow the source's include patterns so they are not fetched, or "
            "clear require_signature. The delivered copy is kept in download_dir.",
        )
    return False


def status_lines(stderr: str) -> dict[str, list[str]]:
    """gpg's machine-readable ``[GNUPG:] KEYWORD args`` lines, keyword → list of arg strings."""
    found: dict[str, list[str]] = {}
    for line in stderr.splitlines():
        if line.startswith("[GNUPG:] "):
            keyword, _, args = line[len("[GNUPG:] ") :].partition(" ")
            found.setdefault(keyword, []).append(args)
    return found


# libgpg-error codes of a pkdecrypt_failed ERROR that mean "the passphrase did not unlock the key"
# (bad passphrase, canceled, no pin/passphrase); GnuPG 2.2 in loopback mode reports a wrong
# passphrase only this way, without a BAD_PASSPHRASE status line.
_PASSPHRASE_ERROR_CODES = {11, 99, 176, 177, 178}


def _passphrase_refused(status: dict[str, list[str]], *, passphrase_given: bool) -> bool:
    if "DECRYPTION_OKAY" in status:
        return False
    if "BAD_PASSPHRASE" in status or "MISSING_PASSPHRASE" in status:
        return True
    if "NEED_PASSPHRASE" in status and not passphrase_given:
        return True
    for args in status.get("ERROR", []):
        parts = args.split()
        is_pkdecrypt_error = len(parts) >= 2 and parts[0] == "pkdecrypt_failed" and parts[1].isdigit()
        if is_pkdecrypt_error and int(parts[1]) & 0xFFFF in _PASSPHRASE_ERROR_CODES:
            return True
    return False


def _human_lines(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines()
            if line.startswith("gpg:") and "encrypted with" not in line]


def check_passphrase(secret: Secret | None, where: str) -> None:
    """gpg reads a passphrase as one line from a pipe: a newline would end it early and hand the
    rest to gpg as message data. Refused before gpg is ever started."""
    if secret is None:
        return
    if any(char in secret.reveal() for char in "\r\n\0"):
        raise KeyProblemError(
            f"the PGP passphrase from {where} contains a line break or NUL character: "
            "refused before starting gpg (gpg reads a passphrase as one line)",
            remedy="Store the passphrase without line breaks (a file may end with one newline, "
            "which is ignored).",
        )


_TRUNCATION_HINTS = ("problem reading source", "read error", "pending bytes",
                     "unexpected end of file", "premature eof")


class _PlaintextSink:
    """The temp file gpg's plaintext streams into: created by us, counted, hashed, capped."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.size = 0
        self.digest = hashlib.sha256()
        self.too_large = False
        self.write_error: OSError | None = None
        remove_quietly(path)  # a stale temp of a killed run (unlink never follows a link)
        self._handle: IO[bytes] = os.fdopen(open_private_new(path), "wb")

    def write(self, chunk: bytes) -> bool:
        """False when the caller must stop gpg (over the cap, or the disk refused the bytes)."""
        if self.size + len(chunk) > self.limit:
            self.too_large = True
            return False
        try:
            self._handle.write(chunk)
        except OSError as exc:
            self.write_error = exc
            return False
        self.size += len(chunk)
        self.digest.update(chunk)
        crash_point("decrypting")
        return True

    def finish(self) -> None:
        """Flush and fsync; a failure here (disk full at the last block) is a write error too."""
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            self.write_error = self.write_error or exc
        finally:
            try:
                self._handle.close()
            except OSError as exc:
                self.write_error = self.write_error or exc

    def discard(self) -> None:
        if not self._handle.closed:
            with contextlib.suppress(OSError):
                self._handle.close()
        remove_quietly(self.path)


class Gpg:
    """One GnuPG home, used through python-gnupg."""

    def __init__(self, *, binary: str, home: Path, passphrase: Secret | None,
                 max_plaintext_bytes: int = MAX_PLAINTEXT_DEFAULT,
                 passphrase_source: str = "the configured passphrase",
                 hide_env: tuple[str, ...] = (), create_home: bool = True,
                 environ: Mapping[str, str] | None = None) -> None:
        """``create_home=False``: use the home as it is (doctor looks, it never repairs).
        ``environ``: the environment gpg is found in (PATH) and its children's environment is
        allowlisted from (default: ours)."""
        check_passphrase(passphrase, passphrase_source)
        resolved = process.which(binary, environ)
        if resolved is None:
            raise KeyProblemError(
                f"gpg not found: {binary!r} is not on PATH",
                remedy="Install GnuPG (Debian: apt install gnupg; macOS: brew install gnupg; "
                "Windows: Gpg4win) or set settings.gpg_binary to its full path.",
            )
        self.binary = resolved
        self.home = home
        self.max_plaintext_bytes = max_plaintext_bytes
        self._passphrase = passphrase
        self._passphrase_source = passphrase_source
        self._hidden = hide_env
        self.environ = environ
        if create_home:
            ensure_private_dir(home)
        try:
            import gnupg  # here, not at the top: `reportsync --help` should not pay for it

            self._gpg = gnupg.GPG(gpgbinary=resolved, gnupghome=str(home),
                                  env=process.child_environment(hide_env, environ=environ))
        except (OSError, ValueError) as exc:
            raise KeyProblemError(f"cannot run gpg ({resolved}): {exc}") from None
        self._gpg.encoding = "utf-8"

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> Gpg:
        ref = settings.gpg_passphrase
        if ref.file is not None:
            require_private_file(ref.file, "settings.gpg_passphrase_file", "passphrase")
        where = (f"the variable {ref.env}" if ref.env else
                 f"the file {ref.file}" if ref.file else "the config")
        return cls(
            binary=settings.gpg_binary,
            home=settings.gnupg_home,
            passphrase=ref.resolve(),
            max_plaintext_bytes=settings.max_plaintext_bytes,
            passphrase_source=where,
            hide_env=(ref.env,) if ref.env else (),
            environ=environ,
        )

    def sibling(self, home: Path) -> Gpg:
        """The same gpg and passphrase on another GnuPG home (the passphrase probe's copy)."""
        return Gpg(binary=self.binary, home=home, passphrase=self._passphrase,
                   max_plaintext_bytes=self.max_plaintext_bytes,
                   passphrase_source=self._passphrase_source, hide_env=self._hidden,
                   environ=self.environ)

    @property
    def has_passphrase(self) -> bool:
        return self._passphrase is not None

    def run(self, *args: str, stdin: bytes = b"") -> bytes:
        """``gpg --homedir HOME --batch ARGS`` (for what python-gnupg lacks, such as ownertrust);
        its stdout, or KeyProblemError with gpg's last words."""
        try:
            completed = process.run([self.binary, "--homedir", str(self.home), "--batch", *args],
                                   stdin=stdin, hidden=self._hidden, timeout=GPG_TIMEOUT,
                                   environ=self.environ)
        except process.ChildError as exc:
            raise KeyProblemError(f"gpg {args[0] if args else ''} could not be run: {exc}") \
                from None
        if completed.returncode != 0:
            detail = completed.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise KeyProblemError(f"gpg {args[0] if args else ''} failed: {detail[0]}")
        return completed.stdout

    def decryption_keys(self, now: float | None = None) -> DecryptionKeys:
        """Which secret keys of this home can still receive reports: one ``--list-secret-keys``."""
        moment = now if now is not None else time.time()
        usable: list[DecryptionKey] = []
        unusable: list[str] = []
        expired: list[DecryptionKey] = []
        for key in self._gpg.list_keys(secret=True):
            fingerprint = str(key.get("fingerprint", ""))
            validity = str(key.get("trust", ""))
            uid = str((key.get("uids") or [""])[0])
            primary_expires = _gpg_timestamp(key.get("expires"))
            # the expiries of the key's encryption (sub)keys that are not revoked: gpg encrypts to
            # the newest valid one, so the key receives reports while any of them is valid
            encrypting = [_gpg_timestamp(info.get("expires"))
                          for info in (key.get("subkey_info") or {}).values()
                          if "e" in str(info.get("cap", ""))
                          and str(info.get("trust", "")) not in ("r", "d", "i")]
            if "e" in str(key.get("cap", "")).replace("E", ""):  # the primary key encrypts itself
                encrypting.append(primary_expires)
            if validity in ("r", "d", "i"):
                unusable.append(f"{fingerprint} ({'revoked' if validity == 'r' else 'disabled'})")
                continue
            if not encrypting:
                unusable.append(f"{fingerprint} (has no usable encryption subkey)")
                continue
            ends = _key_ends(primary_expires, encrypting)
            if validity == "e" or (ends is not None and ends <= moment):
                unusable.append(f"{fingerprint} (expired)")
                expired.append(DecryptionKey(fingerprint, uid, ends))
                continue
            live = [value for value in encrypting if value is None or value > moment]
            usable.append(DecryptionKey(fingerprint, uid, _key_ends(primary_expires, live)))
        return DecryptionKeys(tuple(usable), tuple(unusable), tuple(expired))

    def require_working_passphrase(self) -> None:
        """Once per run, before the first decryption: the configured passphrase must unlock every
        secret key that can decrypt, tried where no gpg-agent cache can stand in for it.

        A gpg-agent caches a passphrase once it worked, and in loopback mode it then never looks
        at the one it is given: a wrong configured passphrase would go unnoticed until the cache
        expires (or the machine restarts), then every run would fail. So the check runs on a copy
        of the GnuPG home with an agent of its own (``probe_passphrase``). Without a configured
        passphrase there is nothing to check (``reportsync doctor`` says whether one is needed).
        """
        if self._passphrase is None:
            return
        usable = [key.fingerprint for key in self.decryption_keys().usable]
        if not usable:
            return  # each file then fails on its own, naming the key it was encrypted to
        probe = probe_passphrase(self, usable)
        log.debug("passphrase probe of %s took %.2fs", ", ".join(usable), probe.seconds)
        if probe.refused:
            raise KeyProblemError(
                f"the PGP passphrase from {self._passphrase_source} does not unlock the secret "
                f"key {', '.join(probe.refused)}: no report was decrypted",
                remedy=f"Put the key's passphrase into {self._passphrase_source} "
                "(settings.gpg_passphrase_env or gpg_passphrase_file; under cron or systemd it "
                "must be set there too), then run `reportsync doctor`.",
            )
        for problem in probe.problems:
            log.warning("the passphrase check could not run (%s); decrypting anyway", problem)

    @property
    def version(self) -> str:
        return ".".join(str(part) for part in (self._gpg.version or ()))

    @property
    def raw(self) -> gnupg.GPG:
        """The python-gnupg object, for key management code."""
        return self._gpg

    def decrypt(self, encrypted: Path, output: Path, *, require_signer: str = "",
                max_bytes: int | None = None) -> Decrypted:
        """Decrypt ``encrypted`` into ``output`` (a temp name the caller renames).

        ``output`` is created here, mode 0600, never through a symlink; gpg itself writes only to
        a pipe. On any failure ``output`` is removed and DecryptionError (this file),
        KeyProblemError (every file would fail: bad passphrase, no usable gpg) or StorageError
        (the disk refused the plaintext) is raised. Past ``max_bytes`` of plaintext (default:
        the configured cap) gpg is killed and the file fails.
        """
        limit = self.max_plaintext_bytes if max_bytes is None else max_bytes
        passphrase = self._passphrase.reveal() if self._passphrase is not None else None
        args = list(DECRYPT_ARGS)
        if passphrase is None:
            args = ["--pinentry-mode", "loopback", *args]
        argv = self._gpg.make_args(args, passphrase is not None)
        try:
            sink = _PlaintextSink(output, limit)
        except OSError as exc:
            raise storage_error(exc, output) from None
        try:
            result, stderr = self._run(argv, encrypted, passphrase, sink)
        except BaseException:
            sink.discard()
            raise
        if sink.write_error is not None:
            sink.discard()
            raise storage_error(sink.write_error, output)
        status = status_lines(stderr)
        try:
            if sink.too_large:
                raise DecryptionError(
                    f"the plaintext grew past the {limit}-byte cap "
                    "(settings.max_plaintext_bytes): refused as a possible compression bomb; "
                    "nothing was kept",
                    remedy="If such large reports are real, raise settings.max_plaintext_bytes.",
                )
            self._judge(result, status, stderr, require_signer)
        except Exception:
            sink.discard()
            raise
        fsync_dir(output.parent)
        signature, signer = signature_status(status)
        if signature != "good" and signature != "unsigned":
            log.info("decrypted %s; its signature is %s (key %s) and was not required",
                     encrypted.name, signature, signer or "?")
        return Decrypted(path=output, size=sink.size, signature=signature, signer=signer,
                         sha256=sink.digest.hexdigest())

    def _run(self, argv: list[str], encrypted: Path, passphrase: str | None,
             sink: _PlaintextSink) -> tuple[gnupg.Crypt, str]:
        """Run gpg: the passphrase line and the message into its stdin, its stdout into ``sink``
        (killing it when the sink says stop), its stderr collected for the status lines."""
        try:
            source = encrypted.open("rb")
        except OSError as exc:
            raise storage_error(exc, encrypted) from None
        try:
            child = process.popen_pipes(argv, env=self._gpg.env)
        except OSError as exc:
            source.close()
            raise KeyProblemError(f"gpg could not be run: {exc.strerror or exc}") from None
        assert child.stdin is not None and child.stdout is not None
        assert child.stderr is not None
        stdin, stdout, errors = child.stdin, child.stdout, child.stderr
        collected: list[bytes] = []

        def feed() -> None:
            try:
                if passphrase is not None:
                    stdin.write((passphrase + "\n").encode("utf-8"))
                while chunk := source.read(PIPE_CHUNK):
                    stdin.write(chunk)
            except OSError:
                pass  # gpg stopped reading (it failed, or was stopped): its status says why
            finally:
                with contextlib.suppress(OSError):
                    stdin.close()

        def drain_stderr() -> None:
            while chunk := errors.read(8192):
                collected.append(chunk)

        threads = [threading.Thread(target=feed, name="gpg-stdin", daemon=True),
                   threading.Thread(target=drain_stderr, name="gpg-stderr", daemon=True)]
        for thread in threads:
            thread.start()
        finished = False
        try:
            while chunk := stdout.read(PIPE_CHUNK):
                if not sink.write(chunk):
                    break  # over the cap or disk full: nothing more is wanted
            else:
                finished = True
            sink.finish()
        finally:
            if not finished and child.poll() is None:
                child.kill()  # stopped early (cap, disk, interrupt): gpg must not go on
            stdout.close()
            child.wait()
            for thread in threads:
                thread.join()
            errors.close()
            source.close()
        stderr = b"".join(collected).decode("utf-8", "replace")
        import gnupg

        result = gnupg.Crypt(self._gpg)
        for line in stderr.splitlines():
            if line.startswith("[GNUPG:] "):
                keyword, _, value = line[len("[GNUPG:] "):].rstrip().partition(" ")
                try:
                    result.handle_status(keyword, value)
                except Exception as exc:  # a status python-gnupg cannot parse: judged below
                    log.debug("gpg status %s not understood by python-gnupg: %s", keyword, exc)
        result.stderr = stderr
        result.returncode = child.returncode
        return result, stderr

    def _judge(
        self,
        result: gnupg.Crypt,
        status: dict[str, list[str]],
        stderr: str,
        require_signer: str,
    ) -> None:
        """Raise unless gpg reports a good, integrity-protected decryption; every refusal says
        what happened and what to do (never DecryptionError's generic remedy)."""
        if _passphrase_refused(status, passphrase_given=self._passphrase is not None):
            raise KeyProblemError(
                "the PGP secret key's passphrase is wrong or missing",
                remedy="Set the passphrase in the variable settings.gpg_passphrase_env names "
                "(or gpg_passphrase_file), then run `reportsync doctor`.",
            )
        if "NO_SECKEY" in status and "DECRYPTION_OKAY" not in status:
            key_ids = ", ".join(sorted({args.split()[0] for args in status["NO_SECKEY"] if args}))
            raise DecryptionError(
                f"encrypted to a key this GnuPG home does not hold (encryption subkey ID {key_ids})",
                remedy="Import the matching secret key (`reportsync keys pgp import`) or ask the "
                "provider which public key they encrypt to.",
            )
        human = _human_lines(stderr)
        truncated = any(hint in line.lower() for line in human for hint in _TRUNCATION_HINTS)
        if truncated:
            raise DecryptionError(
                "the file is truncated: it ends before the PGP message does (gpg: "
                f"{'; '.join(human[-2:])})",
                remedy="The provider's copy or the transfer was cut short; the next run tries "
                "again, and a re-delivered file is fetched as a new version.",
            )
        if "BADMDC" in status:
            raise DecryptionError(
                "the integrity check failed (BADMDC): the file was altered or damaged after it "
                "was encrypted",
                remedy="Ask the provider to deliver the file again; do not trust its contents.",
            )
        if "BADSIG" in status:
            signer = " ".join(status["BADSIG"][0].split()[:1])
            raise DecryptionError(
                f"the file carries a BAD signature (key {signer}): its contents do not match what "
                "was signed",
                remedy="Ask the provider to deliver the file again; do not trust its contents.",
            )
        nodata = {args.split()[0] for args in status.get("NODATA", []) if args}
        if "BEGIN_DECRYPTION" not in status and (nodata & {"1", "2"} or not status):
            raise DecryptionError(
                "not a PGP message: gpg found no OpenPGP data in the file",
                remedy="The provider delivered a file that is not encrypted (or not a file at "
                "all); ask them. The file is kept in download_dir.",
            )
        if _lacks_integrity_protection(status):
            # gpg 2.2 itself refuses most such messages ("decryption forced to fail"); with
            # ignore-mdc-error in gpg.conf it decrypts them: refused here either way
            raise DecryptionError(
                "the message has no integrity protection (no MDC): refused, it could have "
                "been altered",
                remedy="Ask the provider to encrypt with a current OpenPGP implementation "
                "(integrity protection, MDC or AEAD, has been the default since 2003); do not "
                "trust this file's contents.",
            )
        decrypted = (
            result.ok
            and "DECRYPTION_OKAY" in status
            and "DECRYPTION_FAILED" not in status
            and "BADMDC" not in status
        )
        # gpg exits 2 when it cannot check a signature (no public key): that is about the
        # signature alone, judged below, never a reason to lose a good decryption
        exit_ok = result.returncode == 0 or _only_the_signature_failed(status)
        if not (decrypted and exit_ok):
            if "BEGIN_DECRYPTION" not in status:
                detail = "; ".join(human[-2:]) or "it holds no complete encrypted message"
                raise DecryptionError(
                    f"not a complete PGP message (truncated or damaged): gpg: {detail}",
                    remedy="Ask the provider to deliver the file again; the encrypted copy is "
                    "kept and the next run tries again.")
            detail = "; ".join(human[-2:]) or (result.status or "unknown error")
            raise DecryptionError(
                f"gpg could not decrypt the file: {detail}",
                remedy="gpg's words above say why; `reportsync doctor` checks gpg and the keys. "
                "The encrypted copy is kept and the next run tries again.")
        if require_signer:
            _judge_signature(result, status, require_signer)


def _lacks_integrity_protection(status: dict[str, list[str]]) -> bool:
    """Positive evidence of a message without MDC or AEAD: it decrypted without GOODMDC, or gpg
    named its modes (DECRYPTION_INFO) and neither is there. A decryption that never got as far
    as DECRYPTION_INFO is judged by its other status lines instead."""
    if "DECRYPTION_OKAY" in status or "DECRYPTION_INFO" in status:
        return not _integrity_protected(status)
    return False


def _integrity_protected(status: dict[str, list[str]]) -> bool:
    """GOODMDC, or a DECRYPTION_INFO (``mdc_method sym_algo [aead_algo]``) naming an MDC or an
    AEAD mode; gpg writes DECRYPTION_INFO before any plaintext, so it is there even when gpg
    itself refused a message without integrity protection."""
    if "GOODMDC" in status:
        return True
    for args in status.get("DECRYPTION_INFO", []):
        fields = args.split()
        if (fields[:1] and fields[0] != "0") or (len(fields) >= 3 and fields[2] != "0"):
            return True
    return False


_SIGNATURE_TROUBLE = ("ERRSIG", "EXPKEYSIG", "REVKEYSIG", "EXPSIG")


def _only_the_signature_failed(status: dict[str, list[str]]) -> bool:
    """gpg's non-zero exit is explained by a signature it could not accept, and by nothing else:
    the decryption itself ended (END_DECRYPTION), and gpg reported no other error."""
    return (any(keyword in status for keyword in _SIGNATURE_TROUBLE)
            and "END_DECRYPTION" in status
            and "ERROR" not in status
            and all(args.split()[:1] == ["gpg-exit"] for args in status.get("FAILURE", [])))


def signature_status(status: dict[str, list[str]]) -> tuple[str, str | None]:
    """(one of SIGNATURE_STATES, the signing key's fingerprint or key ID) from gpg's status lines.

    BADSIG never gets here (the file fails). ERRSIG's arguments are ``keyid pkalgo hashalgo class
    time rc [fingerprint]``; rc 9 is "no public key".
    """
    def signer(keyword: str) -> str | None:
        valid = status.get("VALIDSIG", [""])[0].split()
        if valid:
            return valid[0]
        fields = status.get(keyword, [""])[0].split()
        return fields[0] if fields else None

    if "EXPKEYSIG" in status:
        return "expired-key", signer("EXPKEYSIG")
    if "REVKEYSIG" in status:
        return "revoked-key", signer("REVKEYSIG")
    if "EXPSIG" in status:
        return "expired-signature", signer("EXPSIG")
    if "GOODSIG" in status and "VALIDSIG" in status:
        return "good", signer("GOODSIG")
    if "ERRSIG" in status:
        fields = status["ERRSIG"][0].split()
        key = fields[6] if len(fields) >= 7 and fields[6] != "-" else \
            (fields[0] if fields else None)
        missing = "NO_PUBKEY" in status or (len(fields) >= 6 and fields[5] == "9")
        return ("no-public-key" if missing else "unverifiable"), key
    return "unsigned", None


def _judge_signature(result: gnupg.Crypt, status: dict[str, list[str]],
                     require_signer: str) -> None:
    """``require_signature``: exactly one kind of reason per refusal."""
    wanted = f"require_signature is {require_signer}"
    if "EXPKEYSIG" in status:
        key = status["EXPKEYSIG"][0].split()[0] if status["EXPKEYSIG"][0] else "?"
        raise DecryptionError(
            f"signed with an EXPIRED key ({key}); {wanted}",
            remedy="Ask the provider for its current signing key (or a new expiry date), import "
            "it, then check require_signature.",
        )
    if "REVKEYSIG" in status:
        key = status["REVKEYSIG"][0].split()[0] if status["REVKEYSIG"][0] else "?"
        raise DecryptionError(f"signed with a REVOKED key ({key}); {wanted}",
                              remedy="Ask the provider why its signing key was revoked.")
    if "EXPSIG" in status:
        raise DecryptionError(f"the signature has expired; {wanted}",
                              remedy="Ask the provider to deliver the file again.")
    if "ERRSIG" in status or "NO_PUBKEY" in status:
        state, signer_key = signature_status(status)
        if state == "no-public-key":
            raise DecryptionError(
                f"signed by a key this GnuPG home does not have ({signer_key or '?'}), so the signature "
                f"cannot be checked; {wanted}",
                remedy="Import the provider's public signing key (`reportsync keys pgp import`).",
            )
        raise DecryptionError(
            f"gpg could not check the signature (key {signer_key or '?'}: an algorithm it does not "
            f"support, or a damaged signature); {wanted}",
            remedy="Ask the provider which key and algorithm they sign with; a current GnuPG may "
            "be needed.",
        )
    if not any(key in status for key in ("GOODSIG", "VALIDSIG", "NEWSIG")):
        raise DecryptionError(
            f"no valid signature: the file is not signed; {wanted}",
            remedy="Ask the provider why the file is not signed, or clear require_signature.",
        )
    if not result.valid or "VALIDSIG" not in status:
        raise DecryptionError(
            f"no valid signature (gpg: {result.status or 'unsigned'}); {wanted}",
            remedy="Import the provider's public signing key, or ask why the signature fails.",
        )
    primary = (result.pubkey_fingerprint or "").upper()
    signing = (result.fingerprint or "").upper()
    if not (primary.endswith(require_signer) or signing.endswith(require_signer)):
        raise DecryptionError(
            f"signed by {primary or signing}, not by the required {require_signer}",
            remedy="Check require_signature against the provider's published key.",
        )


# --- secret keys and the passphrase probe --------------------------------------------------------


def _gpg_timestamp(raw: object) -> float | None:
    text = str(raw or "").strip()
    return float(text) if text.isdigit() and int(text) > 0 else None


@dataclass(frozen=True)
class DecryptionKey:
    fingerprint: str
    uid: str
    # when the provider can no longer encrypt to it: the primary key's expiry or its newest
    # encryption subkey's, whichever comes first; None: never
    expires: float | None


@dataclass(frozen=True)
class DecryptionKeys:
    """The secret keys of a GnuPG home, as far as receiving reports goes."""

    usable: tuple[DecryptionKey, ...]  # can be encrypted to now
    unusable: tuple[str, ...]  # "FINGERPRINT (why not)"
    expired: tuple[DecryptionKey, ...]  # the unusable ones that only expired (extending helps)


def _key_ends(primary_expires: float | None, encrypting: list[float | None]) -> float | None:
    """When a key stops receiving reports: its primary key's expiry or the end of its
    longest-lived encryption subkey, whichever comes first (None: never)."""
    newest = None if any(value is None for value in encrypting) else \
        max(value for value in encrypting if value is not None)
    if primary_expires is None:
        return newest
    return primary_expires if newest is None else min(primary_expires, newest)


@dataclass(frozen=True)
class PassphraseProbe:
    refused: tuple[str, ...]  # fingerprints the configured passphrase (or none) does not unlock
    problems: tuple[str, ...]  # probes that could not run, or did not decrypt for another reason
    seconds: float


PROBE_TEXT = b"reportsync passphrase probe\n"


def probe_passphrase(gpg: Gpg, fingerprints: Sequence[str]) -> PassphraseProbe:
    """Encrypt a probe to each key and decrypt it with ``gpg``'s passphrase, on a throwaway copy
    of its GnuPG home with a gpg-agent of its own.

    A fresh agent has nothing cached, so only the passphrase given can unlock the key; and the
    agent of the real home (perhaps serving a fetch right now) is neither used nor disturbed.
    The copy is removed and its agent stopped at the end. ``reportsync doctor`` and
    ``fetch`` (``Gpg.require_working_passphrase``) share this check.
    """
    started = time.monotonic()
    refused: list[str] = []
    problems: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="rs-pp-"))  # 0700; short, for the agent's sockets
    probe_home = scratch / "g"
    try:
        shutil.copytree(gpg.home, probe_home,
                        ignore=shutil.ignore_patterns("S.*", "*.lock", ".#*", "random_seed"))
        probe_home.chmod(0o700)
        probe = gpg.sibling(probe_home)
        for fingerprint in fingerprints:
            encrypted = scratch / "probe.gpg"
            result = probe.raw.encrypt(PROBE_TEXT, fingerprint, always_trust=True, armor=False,
                                       output=str(encrypted))
            if not result.ok:
                problems.append(f"gpg could not encrypt a probe to {fingerprint} "
                                f"({result.status or 'no status'})")
                continue
            try:
                decrypted = probe.decrypt(encrypted, scratch / "probe.out", max_bytes=1024)
            except KeyProblemError:
                refused.append(fingerprint)
            except DecryptionError as error:
                problems.append(f"the probe encrypted to {fingerprint} did not decrypt: "
                                f"{error.message}")
            else:
                if decrypted.path.read_bytes() != PROBE_TEXT:
                    problems.append(f"the probe encrypted to {fingerprint} decrypted to "
                                    "something else")
            remove_quietly(scratch / "probe.out")
            remove_quietly(encrypted)
    except (OSError, ReportsyncError) as exc:
        problems.append(f"the probe could not run: {exc}")
    finally:
        if probe_home.exists():
            kill_agent(gpg.binary, probe_home, gpg.environ)
        shutil.rmtree(scratch, ignore_errors=True)
    return PassphraseProbe(tuple(refused), tuple(problems), time.monotonic() - started)
