"""PGP key management in reportsync's GnuPG home: generate, list, export, import.

Passphrases reach gpg only on its standard input (python-gnupg's ``--passphrase-fd 0`` and the
key-generation parameter block), never on the command line, where other users could read them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar

from reportsync.config import Secret
from reportsync.errors import ExitCode, KeyProblemError, UsageError
from reportsync.expiry import PGP, CredentialExpiry
from reportsync.pgp import DecryptionKeys, Gpg
from reportsync.units import DAY

ALGORITHMS: dict[str, dict[str, str | int]] = {
    "rsa2048": {"key_type": "RSA", "key_length": 2048, "subkey_type": "RSA", "subkey_length": 2048},
    "rsa3072": {"key_type": "RSA", "key_length": 3072, "subkey_type": "RSA", "subkey_length": 3072},
    "rsa4096": {"key_type": "RSA", "key_length": 4096, "subkey_type": "RSA", "subkey_length": 4096},
    "ed25519": {"key_type": "EDDSA", "key_curve": "ed25519", "subkey_type": "ECDH",
                "subkey_curve": "cv25519"},
}
DEFAULT_ALGORITHM = "rsa3072"
EXPIRY_PATTERN = re.compile(r"^(never|0|[1-9][0-9]*[dwmy]?)$")

# gpg's numeric public-key algorithm ids (RFC 4880 / 6637 / draft EdDSA)
_ALGORITHM_NAMES = {"1": "rsa", "2": "rsa", "3": "rsa", "16": "elgamal", "17": "dsa",
                    "18": "ecdh", "19": "ecdsa", "22": "eddsa"}


@dataclass(frozen=True)
class PgpKeyInfo:
    fingerprint: str
    uids: tuple[str, ...]
    algorithm: str  # e.g. "rsa3072", "eddsa"
    created: datetime
    expires: datetime | None
    has_secret: bool

    def days_to_expiry(self, now: float | None = None) -> int | None:
        if self.expires is None:
            return None
        return int((self.expires.timestamp() - (now if now is not None else time.time())) // DAY)

    def to_dict(self) -> dict[str, object]:
        return {
            "fingerprint": self.fingerprint,
            "uids": list(self.uids),
            "algorithm": self.algorithm,
            "created": self.created.isoformat(),
            "expires": self.expires.isoformat() if self.expires else None,
            "days_to_expiry": self.days_to_expiry(),
            "has_secret": self.has_secret,
        }


@dataclass(frozen=True)
class GeneratedPgpKey:
    """``keys pgp generate``."""

    key: PgpKeyInfo
    protected: bool
    exported_to: Path | None
    gnupg_home: Path
    warnings: tuple[str, ...] = ()
    other_secret_keys: tuple[str, ...] = ()  # fingerprints of secret keys already in the home

    exit_code: ClassVar[ExitCode] = ExitCode.OK


@dataclass(frozen=True)
class KeyList:
    """``keys pgp list``: every key of the GnuPG home."""

    gnupg_home: Path
    keys: tuple[PgpKeyInfo, ...]

    exit_code: ClassVar[ExitCode] = ExitCode.OK


@dataclass(frozen=True)
class ExportedKey:
    """``keys pgp export-public``: the armored public key, written to ``path`` or (None) shown."""

    fingerprint: str
    path: Path | None
    armored: str

    exit_code: ClassVar[ExitCode] = ExitCode.OK


@dataclass(frozen=True)
class ImportReport:
    """``keys pgp import``: what gpg imported, and what it warned about (kept in ``--json``)."""

    origin: str  # the file (or backup member) the keys came from
    fingerprints: tuple[str, ...]
    secret_imported: int
    public_imported: int
    unchanged: int
    warnings: tuple[str, ...] = field(default_factory=tuple)

    exit_code: ClassVar[ExitCode] = ExitCode.OK


def _when(raw: str) -> datetime | None:
    if not raw:
        return None
    return datetime.fromtimestamp(int(raw), tz=timezone.utc)


def key_list(gpg: Gpg) -> KeyList:
    return KeyList(gnupg_home=gpg.home, keys=tuple(list_pgp_keys(gpg)))


def list_pgp_keys(gpg: Gpg) -> list[PgpKeyInfo]:
    secret_fingerprints = {key["fingerprint"] for key in gpg.raw.list_keys(secret=True)}
    keys = []
    for key in gpg.raw.list_keys():
        name = _ALGORITHM_NAMES.get(str(key.get("algo", "")), f"algo{key.get('algo')}")
        length = key.get("length") or ""
        algorithm = f"{name}{length}" if name == "rsa" else name
        created = _when(str(key.get("date", ""))) or datetime.fromtimestamp(0, tz=timezone.utc)
        keys.append(PgpKeyInfo(
            fingerprint=str(key["fingerprint"]),
            uids=tuple(str(uid) for uid in key.get("uids", [])),
            algorithm=algorithm,
            created=created,
            expires=_when(str(key.get("expires", ""))),
            has_secret=key["fingerprint"] in secret_fingerprints,
        ))
    return keys


def decryption_key_expiry(keys: DecryptionKeys, home: Path, now: float | None = None
                          ) -> CredentialExpiry | None:
    """When the next usable key ends (None: it never does); with no usable key, when the last
    expired one ended. Its ``soon`` says whether doctor and fetch must warn."""
    moment = now if now is not None else time.time()
    extend = (f"`gpg --homedir {home} --quick-set-expire FINGERPRINT 2y` (and `... FINGERPRINT "
              "2y '*'` for the subkeys), then send the provider the updated public key "
              "(`reportsync keys pgp export-public`)")
    if keys.usable:
        soonest = min(keys.usable, key=lambda key: key.expires if key.expires is not None
                      else float("inf"))
        if soonest.expires is None:
            return None
        days = int((soonest.expires - moment) // DAY)
        day = datetime.fromtimestamp(soonest.expires, tz=timezone.utc).strftime("%Y-%m-%d")
        return CredentialExpiry(
            kind=PGP, subject=soonest.fingerprint, expires_at=soonest.expires, days_left=days,
            finding=f"PGP secret key {soonest.fingerprint} expires on {day}, in {days} days; "
            "after that the provider cannot encrypt reports to it",
            remedy="Extend it now: " + extend.replace("FINGERPRINT", soonest.fingerprint) + ".")
    ended = [key for key in keys.expired if key.expires is not None]
    if not ended:
        return None
    last = max(ended, key=lambda key: key.expires or 0.0)
    assert last.expires is not None
    days = int((last.expires - moment) // DAY)
    day = datetime.fromtimestamp(last.expires, tz=timezone.utc).strftime("%Y-%m-%d")
    return CredentialExpiry(
        kind=PGP, subject=last.fingerprint, expires_at=last.expires, days_left=days,
        finding=f"PGP secret key {last.fingerprint} expired on {day} ({-days} days ago): the "
        "provider cannot encrypt new reports to it, and no other key in the GnuPG home can "
        "receive them",
        remedy="Extend it: " + extend.replace("FINGERPRINT", last.fingerprint) + ".")


def find_key(gpg: Gpg, selector: str | None, *, secret: bool = False) -> PgpKeyInfo:
    """The one key a selector (fingerprint, key id suffix, or email) names; the only key if None."""
    candidates = [key for key in list_pgp_keys(gpg) if key.has_secret or not secret]
    if selector:
        wanted = selector.upper().replace(" ", "")
        candidates = [key for key in candidates if key.fingerprint.endswith(wanted)
                      or any(selector.lower() in uid.lower() for uid in key.uids)]
    if not candidates:
        raise KeyProblemError(
            f"no {'secret ' if secret else ''}PGP key{f' matching {selector!r}' if selector else ''} "
            f"in {gpg.home}",
            remedy="Create one with `reportsync keys pgp generate` or import it with "
            "`reportsync keys pgp import FILE`.",
        )
    if len(candidates) > 1:
        listing = ", ".join(key.fingerprint for key in candidates)
        raise UsageError(f"several keys match: {listing}",
                         remedy="Name one by its fingerprint (--key FINGERPRINT).")
    return candidates[0]


def generate_pgp_key(
    gpg: Gpg,
    *,
    name: str,
    email: str,
    algorithm: str = DEFAULT_ALGORITHM,
    expire: str = "2y",
    passphrase: Secret | None,
    export_to: Path | None = None,
    force: bool = False,
) -> GeneratedPgpKey:
    if algorithm not in ALGORITHMS:
        raise UsageError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    if not EXPIRY_PATTERN.match(expire):
        raise UsageError(f"--expire {expire!r} is not an expiry",
                         remedy="Use e.g. 2y, 18m, 52w, 365d, or never.")
    if not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", email):
        raise UsageError(f"--email {email!r} is not an email address")
    if any(char in name for char in "<>\n"):
        raise UsageError("--name must not contain '<', '>' or a line break")
    existing = [key for key in list_pgp_keys(gpg) if key.has_secret]
    same_email = [key for key in existing
                  if any(f"<{email.lower()}>" in uid.lower() for uid in key.uids)]
    if same_email and not force:
        raise UsageError(
            f"a secret key for {email} already exists: {same_email[0].fingerprint}",
            remedy="Keep using it (`reportsync keys pgp export-public`), or pass --force to "
            "create another one (then send the provider the new public key).",
        )
    parameters: dict[str, str | int] = dict(ALGORITHMS[algorithm])
    # the usual shape: a primary key that signs and certifies ([SC], certify is implied) and a
    # subkey that only encrypts ([E]); gpg's batch default gives both every usage, and some
    # encryptors then encrypt to the primary key
    parameters.update(key_usage="sign", subkey_usage="encrypt")
    parameters.update(name_real=name, name_email=email,
                      expire_date="0" if expire == "never" else expire)
    if passphrase is not None:
        parameters["passphrase"] = passphrase.reveal()
    spec = gpg.raw.gen_key_input(no_protection=passphrase is None, **parameters)
    result = gpg.raw.gen_key(spec)
    if not result.fingerprint:
        raise KeyProblemError(f"gpg could not generate the key: {result.status or result.stderr[-200:]}")
    key = next(key for key in list_pgp_keys(gpg) if key.fingerprint == result.fingerprint)
    warnings = []
    if algorithm == "ed25519":
        warnings.append("ed25519 is an ECC key: check that your provider accepts ECC public keys "
                        "before you send it (many accept RSA only).")
    if algorithm == "rsa4096":
        warnings.append("every report costs one private-key operation; RSA 4096 is several times "
                        "slower than RSA 3072 for no practical gain against today's attacks.")
    if passphrase is None:
        warnings.append("the secret key is stored WITHOUT a passphrase: anyone who can read "
                        f"{gpg.home} can decrypt your statements. Keep that folder private and "
                        "back it up encrypted (`reportsync keys backup`).")
    if export_to is not None:
        write_public_key(gpg, key.fingerprint, export_to)
    return GeneratedPgpKey(
        key=key,
        protected=passphrase is not None,
        exported_to=export_to,
        gnupg_home=gpg.home,
        warnings=tuple(warnings),
        other_secret_keys=tuple(other.fingerprint for other in existing),
    )


def export_public_key(gpg: Gpg, fingerprint: str) -> str:
    armored = str(gpg.raw.export_keys(fingerprint, armor=True))
    if "BEGIN PGP PUBLIC KEY BLOCK" not in armored:
        raise KeyProblemError(f"gpg exported nothing for {fingerprint}")
    return armored


def export_public(gpg: Gpg, selector: str | None, out: Path | None) -> ExportedKey:
    """The public key of the one secret key ``selector`` names, written to ``out`` if given."""
    key = find_key(gpg, selector, secret=True)
    armored = export_public_key(gpg, key.fingerprint)
    if out is not None:
        _write_armored(out, armored)
    return ExportedKey(fingerprint=key.fingerprint, path=out, armored=armored)


def _write_armored(path: Path, armored: str) -> None:
    from reportsync.fsutil import write_atomically

    write_atomically(path, armored.encode("ascii"), mode=0o644)


def write_public_key(gpg: Gpg, fingerprint: str, path: Path) -> Path:
    _write_armored(path, export_public_key(gpg, fingerprint))
    return path


def import_key_file(gpg: Gpg, path: Path, passphrase: Secret | None = None) -> ImportReport:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", path=str(path)) from None
    return import_key_data(gpg, data, passphrase=passphrase, origin=str(path))


def import_key_data(gpg: Gpg, data: bytes, *, passphrase: Secret | None = None,
                    origin: str = "input") -> ImportReport:
    result = gpg.raw.import_keys(data, passphrase=passphrase.reveal() if passphrase else None,
                                 extra_args=["--pinentry-mode", "loopback"])
    fingerprints = tuple(dict.fromkeys(str(fpr) for fpr in (result.fingerprints or []) if fpr))
    if not fingerprints:
        raise KeyProblemError(f"{origin}: no OpenPGP key found or imported",
                              path=origin, remedy="Check that the file is an exported PGP key.")
    warnings = tuple(str(item.get("text", "")) for item in getattr(result, "results", [])
                     if item.get("problem") not in (None, "0", 0))
    return ImportReport(
        origin=origin,
        fingerprints=fingerprints,
        secret_imported=int(getattr(result, "sec_imported", 0) or 0),
        public_imported=int(getattr(result, "imported", 0) or 0),
        unchanged=int(getattr(result, "unchanged", 0) or 0),
        warnings=warnings,
    )
