"""The secret keys of a GnuPG home, and the passphrase probe on a throwaway copy of it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reportsync.errors import DecryptionError, KeyProblemError, ReportsyncError
from reportsync.fsutil import remove_quietly
from reportsync.pgp.homes import copy_home, discard_home, scratch_home

if TYPE_CHECKING:
    from reportsync.pgp.gpg import Gpg


def gpg_timestamp(raw: object) -> float | None:
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


def key_ends(primary_expires: float | None, encrypting: list[float | None]) -> float | None:
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
    scratch = scratch_home()
    probe_home = scratch / "g"
    try:
        copy_home(gpg.home, probe_home)
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
        discard_home(gpg.binary, probe_home, gpg.environ)
        shutil.rmtree(scratch, ignore_errors=True)
    return PassphraseProbe(tuple(refused), tuple(problems), time.monotonic() - started)
