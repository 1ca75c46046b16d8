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
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from reportsync.config import Secret, Settings
from reportsync.errors import DecryptionError, KeyProblemError
from reportsync.fsutil import (
    crash_point,
    ensure_private_dir,
    fsync_dir,
    open_private_new,
    remove_quietly,
    require_private_file,
    storage_error,
)

if TYPE_CHECKING:
    import gnupg

log = logging.getLogger(__name__)

PGP_SUFFIXES = (".pgp", ".gpg", ".asc")
_ARMOR_HEADER = b"-----BEGIN PGP MESSAGE-----"
DEFAULT_MAX_PLAINTEXT = 2 * 1024**3  # settings.max_plaintext_bytes
PIPE_CHUNK = 256 * 1024
_NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # Windows: no console flashes up

# Always on a decryption's command line: the output goes to our pipe, never to a file name the
# message suggests, and verifying a signature never reaches out to a key server.
DECRYPT_ARGS = ("--no-use-embedded-filename", "--no-auto-key-retrieve", "--output", "-",
                "--decrypt")


@dataclass(frozen=True)
class Decrypted:
    path: Path
    size: int
    signer_fingerprint: str | None
    sha256: str = ""


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
                 max_plaintext_bytes: int = DEFAULT_MAX_PLAINTEXT,
                 passphrase_source: str = "the configured passphrase",
                 hide_env: tuple[str, ...] = ()) -> None:
        check_passphrase(passphrase, passphrase_source)
        resolved = shutil.which(binary)
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
        ensure_private_dir(home)
        # gpg's children never inherit the variable that holds the passphrase
        child_env = {key: value for key, value in os.environ.items() if key not in hide_env} \
            if hide_env else None
        try:
            import gnupg  # here, not at the top: `reportsync --help` should not pay for it

            self._gpg = gnupg.GPG(gpgbinary=resolved, gnupghome=str(home), env=child_env)
        except (OSError, ValueError) as exc:
            raise KeyProblemError(f"cannot run gpg ({resolved}): {exc}") from None
        self._gpg.encoding = "utf-8"

    @classmethod
    def from_settings(cls, settings: Settings) -> Gpg:
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
        )

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
        signer = result.fingerprint if result.valid else None
        return Decrypted(path=output, size=sink.size, signer_fingerprint=signer,
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
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, env=self._gpg.env,
                                       creationflags=_NO_WINDOW)
        except OSError as exc:
            source.close()
            raise KeyProblemError(f"gpg could not be run: {exc.strerror or exc}") from None
        assert process.stdin is not None and process.stdout is not None
        assert process.stderr is not None
        stdin, stdout, errors = process.stdin, process.stdout, process.stderr
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
            if not finished and process.poll() is None:
                process.kill()  # stopped early (cap, disk, interrupt): gpg must not go on
            stdout.close()
            process.wait()
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
        result.returncode = process.returncode
        return result, stderr

    def _judge(
        self,
        result: gnupg.Crypt,
        status: dict[str, list[str]],
        stderr: str,
        require_signer: str,
    ) -> None:
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
        integrity_protected = "GOODMDC" in status or any(
            len(args.split()) >= 3 and args.split()[2] != "0"  # an AEAD mode
            for args in status.get("DECRYPTION_INFO", [])
        )
        good = (
            result.ok
            and result.returncode == 0
            and "DECRYPTION_OKAY" in status
            and "DECRYPTION_FAILED" not in status
            and "BADMDC" not in status
        )
        if "DECRYPTION_OKAY" in status and not integrity_protected:
            raise DecryptionError(
                "the message has no integrity protection (no MDC): refused, it could have "
                "been altered",
                remedy="Ask the provider to encrypt with a current OpenPGP implementation.",
            )
        if not good:
            if "BEGIN_DECRYPTION" not in status:
                detail = "; ".join(human[-2:]) or "it holds no complete encrypted message"
                raise DecryptionError(f"not a complete PGP message (truncated or damaged): "
                                      f"gpg: {detail}")
            detail = "; ".join(human[-2:]) or (result.status or "unknown error")
            raise DecryptionError(f"gpg could not decrypt the file: {detail}")
        if require_signer:
            _judge_signature(result, status, require_signer)


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
        raise DecryptionError(
            f"signed by a key this GnuPG home does not have, so the signature cannot be checked; "
            f"{wanted}",
            remedy="Import the provider's public signing key (`reportsync keys pgp import`).",
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
