"""One GnuPG home, through python-gnupg and the real gpg: the pipe decryption of one file.

gpg writes plaintext before it knows the message is intact, so in ``Gpg.decrypt`` the plaintext
never goes to a name gpg chooses: gpg writes to a pipe (``--output -``,
``--no-use-embedded-filename``), and reportsync streams it into a temp file it created itself
(exclusively, never through a symlink), counting the bytes: past the plaintext size cap (a
compression bomb) gpg is killed. Memory stays flat whatever the size. The verdict is
``verdict.judge``'s, on python-gnupg's own reading of the status lines.

This package is the only one that starts gpg or gpgconf (and so, through gpg, the gpg-agent that
outlives the run), and this module the only one that imports python-gnupg; every child starts
through ``reportsync.process`` and gets ``process.child_environment()``, an allowlist, never the
caller's secrets.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from reportsync import process
from reportsync.config import Secret, Settings
from reportsync.errors import KeyProblemError
from reportsync.fsutil import (
    crash_point,
    ensure_private_dir,
    fsync_dir,
    open_private_new,
    remove_quietly,
    require_private_file,
    storage_error,
)
from reportsync.pgp.binary import GPG_TIMEOUT, gpg_not_found
from reportsync.pgp.keys import (
    DecryptionKey,
    DecryptionKeys,
    gpg_timestamp,
    key_ends,
    probe_passphrase,
)
from reportsync.pgp.verdict import (
    Decrypted,
    judge,
    plaintext_too_large,
    signature_status,
    status_lines,
)
from reportsync.units import MAX_PLAINTEXT_DEFAULT

if TYPE_CHECKING:
    import gnupg

log = logging.getLogger(__name__)

PIPE_CHUNK = 256 * 1024

# Always on a decryption's command line: the output goes to a name reportsync chose, never to
# a file name the message suggests, and verifying a signature never reaches out to a key server.
FILE_DECRYPT_ARGS = ("--no-use-embedded-filename", "--no-auto-key-retrieve")
# one file: the plaintext into our pipe
DECRYPT_ARGS = (*FILE_DECRYPT_ARGS, "--output", "-", "--decrypt")


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


def note_signature(name: str, signature: str, signer: str | None) -> None:
    """Log a decrypted file's signature that was neither good nor absent (and not required)."""
    if signature != "good" and signature != "unsigned":
        log.info("decrypted %s; its signature is %s (key %s) and was not required",
                 name, signature, signer or "?")


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
            message, remedy = gpg_not_found(binary)
            raise KeyProblemError(message, remedy=remedy)
        self.binary = resolved
        self.home = home
        self.max_plaintext_bytes = max_plaintext_bytes
        self._passphrase = passphrase
        self._passphrase_source = passphrase_source
        self._hidden = hide_env
        self.environ = environ
        if create_home:
            ensure_private_dir(home, "settings.gnupg_home")
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
            primary_expires = gpg_timestamp(key.get("expires"))
            # the expiries of the key's encryption (sub)keys that are not revoked: gpg encrypts to
            # the newest valid one, so the key receives reports while any of them is valid
            encrypting = [gpg_timestamp(info.get("expires"))
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
            ends = key_ends(primary_expires, encrypting)
            if validity == "e" or (ends is not None and ends <= moment):
                unusable.append(f"{fingerprint} (expired)")
                expired.append(DecryptionKey(fingerprint, uid, ends))
                continue
            live = [value for value in encrypting if value is None or value > moment]
            usable.append(DecryptionKey(fingerprint, uid, key_ends(primary_expires, live)))
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
        argv = self._argv(DECRYPT_ARGS)
        try:
            sink = _PlaintextSink(output, limit)
        except OSError as exc:
            raise storage_error(exc, output) from None
        try:
            stderr, returncode = self._run(argv, encrypted, passphrase, sink)
        except BaseException:
            sink.discard()
            raise
        if sink.write_error is not None:
            sink.discard()
            raise storage_error(sink.write_error, output)
        try:
            if sink.too_large:
                raise plaintext_too_large(limit)
            signature, signer = self.judged(stderr, returncode, require_signer)
        except Exception:
            sink.discard()
            raise
        fsync_dir(output.parent)
        note_signature(encrypted.name, signature, signer)
        return Decrypted(path=output, size=sink.size, signature=signature, signer=signer,
                         sha256=sink.digest.hexdigest())

    def _argv(self, args: Sequence[str]) -> list[str]:
        """gpg's command line: python-gnupg's (``--status-fd 2``, ``--batch``, ``--homedir``,
        and with a passphrase ``--passphrase-fd 0``) plus ``args``; loopback pinentry always,
        so gpg-agent never opens a pinentry window or prompt (it fails instead)."""
        if self._passphrase is None:
            argv = self._gpg.make_args(["--pinentry-mode", "loopback", *args], False)
        else:
            argv = self._gpg.make_args(list(args), True)  # make_args adds loopback itself
        return [str(part) for part in argv]

    def start_decrypt_files(self, names: Sequence[str], folder: Path) -> process.Popen[bytes]:
        """``gpg --decrypt-files NAMES`` run in ``folder``: gpg writes each plaintext beside its
        input, under the input's name without ``.gpg``, into the file the caller created there
        (``--yes``: gpg writes into it instead of refusing an existing file); files it creates
        itself are 0600. stdout is discarded; stderr carries the status lines and gpg's words,
        one ``FILE_START … FILE_DONE`` block per file. The passphrase goes in as one line on
        stdin, which is then closed (never on the command line or in the environment)."""
        argv = self._argv(("--yes", *FILE_DECRYPT_ARGS, "--decrypt-files", *names))
        try:
            child = process.popen_pipes(argv, env=self._gpg.env, stdout=process.DEVNULL,
                                        cwd=folder, private_files=True)
        except OSError as exc:
            raise KeyProblemError(f"gpg could not be run: {exc.strerror or exc}") from None
        assert child.stdin is not None
        with contextlib.suppress(OSError):  # gpg already gone: its status says why
            if self._passphrase is not None:
                child.stdin.write((self._passphrase.reveal() + "\n").encode("utf-8"))
        with contextlib.suppress(OSError):
            child.stdin.close()
        return child

    def judged(self, stderr: str, returncode: int | None,
               require_signer: str) -> tuple[str, str | None]:
        """``verdict.judge`` on one file's gpg lines (``stderr``, with the exit code that file
        gets): raises unless it is a good decryption, else returns how it was signed (one of
        SIGNATURE_STATES) and by which key."""
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
        result.returncode = returncode
        status = status_lines(stderr)
        judge(result, status, stderr, require_signer, passphrase_given=self.has_passphrase,
              home=self.home)
        return signature_status(status)

    def _run(self, argv: list[str], encrypted: Path, passphrase: str | None,
             sink: _PlaintextSink) -> tuple[str, int]:
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
        return b"".join(collected).decode("utf-8", "replace"), child.returncode
