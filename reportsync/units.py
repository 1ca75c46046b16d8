"""Sizes and durations written once: every module that needs a day, a GiB or a threshold takes
it from here, so two modules can never disagree about it."""

from __future__ import annotations

# --- durations (seconds) -------------------------------------------------------------------------

DAY = 86400.0
"""Seconds in a day; ages and horizons are counted in days of this length (no calendar, no DST)."""

EXPIRY_WARN_DAYS = 30
"""A credential (the PGP key reports are encrypted to, an SSH certificate) that ends sooner than
this is warned about by ``fetch`` and ``doctor``."""

MAX_BACKOFF = 30.0
"""The longest wait between two attempts of a retried network step."""

# --- sizes (bytes) -------------------------------------------------------------------------------

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

MAX_PLAINTEXT_DEFAULT = 2 * GiB
"""``settings.max_plaintext_bytes``' default: decryption stops past this (compression bombs)."""

HASH_CHUNK = MiB
"""How much of a file is read at a time to hash or copy it."""

SYNC_EVERY = 8 * MiB
"""A big file being written (a download, or a plaintext gpg writes) is flushed to disk behind
the writer in steps of this, so the fsync that makes it durable at the end has little left
(256 MiB in one fsync: 0.53 s on the benchmark machine, 0.08 s after such steps). 8 MiB: on the
256 MiB rows, end to end, it beat 32 MiB on the download (1.89 s against 2.14 s, faster in 5 of
5 pairs) and matched it on the decryption; one flush at the end was slower on both, 4 MiB no
better than 8 (docs/performance.md, "Head start, the ledger read behind the listing...")."""


def human_bytes(count: float) -> str:
    """``count`` bytes for a person: ``512 B``, ``1.5 KB``, ``2.0 GB`` (powers of 1024)."""
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < KiB or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= KiB
    return f"{count} B"  # pragma: no cover
