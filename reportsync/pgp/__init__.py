"""PGP decryption over the real gpg: only what gpg reports as good is trusted.

The rooms of this package:

- ``names``: which fetched files are PGP messages, and what their plaintext is called.
- ``verdict``: ``judge``, the one set of rules a decryption is trusted by (gpg's status lines of
  one file), and how a report was signed.
- ``gpg``: ``Gpg``, one GnuPG home; ``Gpg.decrypt`` decrypts one file through a pipe.
- ``keys``: the home's secret keys, and the passphrase probe on a throwaway copy of the home.
- ``homes``: private copies of a GnuPG home (the passphrase probe's, a pool worker's).
- ``batch``: one ``gpg --decrypt-files`` run over files in a private folder, each file judged by
  its own status block; ``pool``: ``DecryptionPool``, the queue that feeds such runs to one
  gpg-agent per worker.
"""

from reportsync.pgp.binary import (
    GPG_TIMEOUT,
    GpgBinary,
    gpg_not_found,
    gpg_version_line,
    gpgconf_for,
    inspect_gpg,
    kill_agent,
)
from reportsync.pgp.gpg import DECRYPT_ARGS, PIPE_CHUNK, Gpg, check_passphrase
from reportsync.pgp.keys import (
    PROBE_TEXT,
    DecryptionKey,
    DecryptionKeys,
    PassphraseProbe,
    probe_passphrase,
)
from reportsync.pgp.names import PGP_SUFFIXES, looks_like_pgp, needs_decryption, plaintext_name
from reportsync.pgp.pool import DecryptionPool
from reportsync.pgp.verdict import SIGNATURE_STATES, Decrypted, judge, signature_status, status_lines

__all__ = [
    "DECRYPT_ARGS", "GPG_TIMEOUT", "PGP_SUFFIXES", "PIPE_CHUNK",
    "PROBE_TEXT", "SIGNATURE_STATES", "Decrypted", "DecryptionKey", "DecryptionKeys",
    "DecryptionPool", "Gpg",
    "GpgBinary", "PassphraseProbe", "check_passphrase", "gpg_not_found", "gpg_version_line",
    "gpgconf_for", "inspect_gpg", "judge", "kill_agent", "looks_like_pgp", "needs_decryption",
    "plaintext_name", "probe_passphrase", "signature_status", "status_lines",
]
