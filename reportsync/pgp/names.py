"""Which fetched files are PGP messages, and what their plaintext is called."""

from __future__ import annotations

from pathlib import Path

from reportsync.errors import DecryptionError

PGP_SUFFIXES = (".pgp", ".gpg", ".asc")
_ARMOR_HEADER = b"-----BEGIN PGP MESSAGE-----"


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

