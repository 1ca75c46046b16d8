"""python-gnupg over the real gpg: decryption that trusts only what gpg reports as good.

python-gnupg's ``ok`` flag alone is not enough to trust a plaintext: a message without integrity
protection can still "decrypt". So every decryption is judged on three things together: the
``ok`` flag, gpg's return code, and gpg's status lines (``DECRYPTION_OKAY`` plus ``GOODMDC`` or an
AEAD mode, and no ``BADMDC``/``DECRYPTION_FAILED``).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import gnupg

from reportsync.config import Secret, Settings
from reportsync.errors import DecryptionError, KeyProblemError
from reportsync.fsutil import ensure_private_dir, remove_quietly

log = logging.getLogger(__name__)

PGP_SUFFIXES = (".pgp", ".gpg", ".asc")
_ARMOR_HEADER = b"-----BEGIN PGP MESSAGE-----"


@dataclass(frozen=True)
class Decrypted:
    path: Path
    size: int
    signer_fingerprint: str | None


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


class Gpg:
    """One GnuPG home, used through python-gnupg."""

    def __init__(self, *, binary: str, home: Path, passphrase: Secret | None) -> None:
        resolved = shutil.which(binary)
        if resolved is None:
            raise KeyProblemError(
                f"gpg not found: {binary!r} is not on PATH",
                remedy="Install GnuPG (Debian: apt install gnupg; macOS: brew install gnupg; "
                "Windows: Gpg4win) or set settings.gpg_binary to its full path.",
            )
        self.binary = resolved
        self.home = home
        self._passphrase = passphrase
        ensure_private_dir(home)
        try:
            self._gpg = gnupg.GPG(gpgbinary=resolved, gnupghome=str(home))
        except (OSError, ValueError) as exc:
            raise KeyProblemError(f"cannot run gpg ({resolved}): {exc}") from None
        self._gpg.encoding = "utf-8"

    @classmethod
    def from_settings(cls, settings: Settings) -> Gpg:
        return cls(
            binary=settings.gpg_binary,
            home=settings.gnupg_home,
            passphrase=settings.gpg_passphrase.resolve(),
        )

    @property
    def version(self) -> str:
        return ".".join(str(part) for part in (self._gpg.version or ()))

    @property
    def raw(self) -> gnupg.GPG:
        """The python-gnupg object, for key management code."""
        return self._gpg

    def decrypt(self, encrypted: Path, output: Path, *, require_signer: str = "") -> Decrypted:
        """Decrypt ``encrypted`` into ``output`` (a temp name the caller renames).

        On any failure ``output`` is removed and DecryptionError (this file) or KeyProblemError
        (every file would fail: bad passphrase, no usable gpg) is raised.
        """
        extra_args = ["--pinentry-mode", "loopback"] if self._passphrase is None else []
        passphrase = self._passphrase.reveal() if self._passphrase is not None else None
        try:
            result = self._gpg.decrypt_file(
                str(encrypted), passphrase=passphrase, output=str(output), extra_args=extra_args
            )
        except (OSError, ValueError) as exc:
            remove_quietly(output)
            raise KeyProblemError(f"gpg could not be run: {exc}") from None
        stderr = result.stderr or ""
        status = status_lines(stderr)
        try:
            self._judge(result, status, stderr, require_signer)
        except Exception:
            remove_quietly(output)
            raise
        signer = result.fingerprint if result.valid else None
        return Decrypted(path=output, size=output.stat().st_size, signer_fingerprint=signer)

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
        if good and not integrity_protected:
            raise DecryptionError(
                "the message has no integrity protection (no MDC): refused, it could have "
                "been altered",
                remedy="Ask the provider to encrypt with a current OpenPGP implementation.",
            )
        if not good:
            detail = "; ".join(_human_lines(stderr)[-2:]) or (result.status or "unknown error")
            raise DecryptionError(f"gpg could not decrypt the file: {detail}")
        if require_signer:
            signer = (result.pubkey_fingerprint or result.fingerprint or "").upper()
            if not result.valid:
                raise DecryptionError(
                    f"no valid signature (gpg: {result.status or 'unsigned'}); "
                    f"require_signature is {require_signer}",
                    remedy="Import the provider's public signing key, or ask why the file is "
                    "not signed.",
                )
            if not signer.endswith(require_signer) and not (
                (result.fingerprint or "").upper().endswith(require_signer)
            ):
                raise DecryptionError(
                    f"signed by {signer}, not by the required {require_signer}",
                    remedy="Check require_signature against the provider's published key.",
                )

