"""Private copies of a GnuPG home, each for a gpg-agent of its own.

Two users: the passphrase probe (``keys.probe_passphrase``: an agent with nothing cached, so only
the configured passphrase can unlock the key) and the workers of a ``DecryptionPool`` (one agent
serialises every private-key operation, so a second worker needs a second agent, and an agent
serves exactly one home).

Why a copy is safe, and why it is a copy rather than links to the real files: gpg and gpg-agent
write files of a home in place during a decryption. The trustdb is rewritten record by record
(``gpg: checking the trustdb`` on a signature check), and gpg-agent rewrites a secret key file
when it converts a key stored in an older format; both under lock files that belong to the home
the writer runs on. A hard link would let the copy's gpg write the real home's trustdb or key
under a lock the real home's gpg never sees. With copies, whatever gpg writes in a copy stays
there and is thrown away with it: keyring and trustdb writes stay in the real home (worker 0 of
a pool runs on the real home itself, as ``Gpg.decrypt`` does). A copy is a snapshot: a key
imported into the real home while a pool runs reaches only the real home's worker, and the next
pool.

A pool's copies live inside the real home (``<home>/.rs-agent-<pid>-<n>``, 0700, the keys
0600 as in the home): the private keys never leave the folder they are kept in. Each is removed
with its agent stopped when the pool closes; one left by a killed run (its pid no longer
running) is removed the next time a pool starts on that home.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from reportsync.fsutil import IS_POSIX, PRIVATE_DIR_MODE
from reportsync.pgp.binary import kill_agent

log = logging.getLogger(__name__)

AGENT_HOME_PREFIX = ".rs-agent-"
# what a copy leaves out: the agent's sockets and lock files (they belong to the running agent
# of the real home), the random seed (each gpg keeps its own), and the copies themselves
_NOT_COPIED = shutil.ignore_patterns("S.*", "*.lock", ".#*", "random_seed", f"{AGENT_HOME_PREFIX}*")
# Without /run/user/UID, gpg-agent puts its sockets into the home itself, and a Unix socket's
# path has a limit of about 107 bytes (``S.gpg-agent.browser`` is the longest name it uses).
_SOCKET_PATH_LIMIT = 100
_NUMBERS = itertools.count(1)


def copy_home(home: Path, target: Path) -> None:
    """Copy the GnuPG home ``home`` into the (empty, private) folder ``target``."""
    shutil.copytree(home, target, ignore=_NOT_COPIED, dirs_exist_ok=True)
    if IS_POSIX:
        target.chmod(PRIVATE_DIR_MODE)


def discard_home(binary: str, home: Path, environ: Mapping[str, str] | None = None) -> None:
    """Stop the agent of a copied home, then remove the copy."""
    if home.exists():
        kill_agent(binary, home, environ)
    shutil.rmtree(home, ignore_errors=True)


def scratch_home() -> Path:
    """A new private folder for a throwaway home, with a short path (the agent's sockets)."""
    return Path(tempfile.mkdtemp(prefix="rs-pp-"))  # mkdtemp: 0700


def agent_home(binary: str, home: Path, environ: Mapping[str, str] | None = None) -> Path | None:
    """A copy of ``home`` inside it for a pool worker's own agent, or None where that cannot be
    had (no POSIX, a home too deep for the agent's sockets, a home reportsync cannot write)."""
    if not IS_POSIX:
        return None
    remove_stale_agent_homes(binary, home, environ)
    while True:
        clone = home / f"{AGENT_HOME_PREFIX}{os.getpid()}-{next(_NUMBERS)}"
        if len(os.fsencode(clone / "S.gpg-agent.browser")) > _SOCKET_PATH_LIMIT \
                and not Path(f"/run/user/{os.getuid()}").is_dir():
            log.info("decrypting with one gpg-agent: the GnuPG home %s is too deep for a second "
                     "agent's sockets", home)
            return None
        try:
            clone.mkdir(mode=PRIVATE_DIR_MODE)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            log.info("decrypting with one gpg-agent: cannot create a folder in %s (%s)", home, exc)
            return None
    try:
        copy_home(home, clone)
    except OSError as exc:
        log.info("decrypting with one gpg-agent: cannot copy %s (%s)", home, exc)
        discard_home(binary, clone, environ)
        return None
    return clone


def remove_stale_agent_homes(binary: str, home: Path,
                             environ: Mapping[str, str] | None = None) -> list[str]:
    """Remove the pool copies in ``home`` whose process is gone (a run that was killed)."""
    removed: list[str] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(home):
            if not entry.name.startswith(AGENT_HOME_PREFIX) or \
                    not entry.is_dir(follow_symlinks=False):
                continue
            pid = entry.name[len(AGENT_HOME_PREFIX):].partition("-")[0]
            if pid.isdigit() and not _running(int(pid)):
                discard_home(binary, Path(entry.path), environ)
                removed.append(entry.name)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # POSIX only (this module never gets here elsewhere): no signal sent
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs, as somebody else
        return True
    return True
