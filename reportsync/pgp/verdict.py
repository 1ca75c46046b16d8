"""Judging one decryption by gpg's status lines: what reportsync trusts, and why it refuses.

python-gnupg's ``ok`` flag alone is not enough to trust a plaintext: a message without integrity
protection can still "decrypt". So every decryption is judged on three things together: the
``ok`` flag, gpg's return code, and gpg's status lines (``DECRYPTION_OKAY`` plus ``GOODMDC`` or an
AEAD mode, and no ``BADMDC``/``DECRYPTION_FAILED``). ``judge`` takes the lines of ONE file: the
whole stderr of a ``gpg --decrypt`` (``Gpg.decrypt``) or one ``FILE_START … FILE_DONE`` block of
a ``gpg --decrypt-files`` run (``DecryptionPool``), so both are judged by the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from reportsync.errors import DecryptionError, KeyProblemError


class GpgResult(Protocol):
    """What ``judge`` reads of python-gnupg's ``Crypt`` (built from the same status lines)."""

    ok: bool
    returncode: int | None
    status: str | None
    valid: bool
    fingerprint: str | None
    pubkey_fingerprint: str | None


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


def plaintext_too_large(limit: int) -> DecryptionError:
    """A plaintext past the size cap: a possible compression bomb, refused, nothing kept."""
    return DecryptionError(
        f"the plaintext grew past the {limit}-byte cap (settings.max_plaintext_bytes): refused "
        "as a possible compression bomb; nothing was kept",
        remedy="If such large reports are real, raise settings.max_plaintext_bytes.",
    )


# gpg's own words when it cannot start or reach gpg-agent, which holds every secret key
_AGENT_FAILURES = ("can't connect to the agent", "failed to start agent",
                   "failed to start the agent", "no gpg-agent running")


def agent_failure(stderr: str) -> str | None:
    """gpg's lines saying it could not use its agent (and the one before, which often says
    why: ``failed to create temporary file ...: Read-only file system``), or None."""
    human = [line[len("gpg:"):].strip() for line in stderr.splitlines() if line.startswith("gpg:")]
    for index, line in enumerate(human):
        if any(words in line.lower() for words in _AGENT_FAILURES):
            cause = human[index - 1] if index and "temporary file" in human[index - 1] else None
            return f"{cause}; {line}" if cause else line
    return None


_TRUNCATION_HINTS = ("problem reading source", "read error", "pending bytes",
                     "unexpected end of file", "premature eof")


def judge(result: GpgResult, status: dict[str, list[str]], stderr: str, require_signer: str,
          *, passphrase_given: bool, home: Path | None = None) -> None:
    """Raise unless gpg reports a good, integrity-protected decryption of one file; every
    refusal says what happened and what to do (never DecryptionError's generic remedy).

    ``stderr`` and ``status`` are that file's own lines (its status block in a batch);
    ``result`` is python-gnupg's reading of them, with the return code gpg gave that file.
    ``home``: the GnuPG home, named in the remedy of a problem that is the home's.
    """
    if _passphrase_refused(status, passphrase_given=passphrase_given):
        raise KeyProblemError(
            "the PGP secret key's passphrase is wrong or missing",
            remedy="Set the passphrase in the variable settings.gpg_passphrase_env names "
            "(or gpg_passphrase_file), then run `reportsync doctor`.",
        )
    agent = agent_failure(stderr)
    if agent is not None and "DECRYPTION_OKAY" not in status:
        # without its agent gpg reaches no secret key and says NO_SECKEY for every file: that
        # is the home or the agent, not the file (a read-only home, a socket it cannot make)
        where = f"the GnuPG home {home}" if home is not None else "the GnuPG home"
        raise KeyProblemError(
            f"gpg cannot use its agent, so no secret key is reachable (gpg: {agent})",
            remedy=f"Make {where} writable by the user reportsync runs as (gpg-agent creates "
            "its socket and lock files there), or set settings.gnupg_home to a writable "
            "folder that holds the key; then run `reportsync doctor`.",
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


def _judge_signature(result: GpgResult, status: dict[str, list[str]],
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

