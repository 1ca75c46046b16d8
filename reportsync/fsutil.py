"""Local file handling: private folders, atomic placement, safe names, hashing.

The platform-specific parts (POSIX modes, directory fsync) are named here and nowhere else.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from reportsync.errors import ConfigError, StorageError, UnsafeNameError
from reportsync.units import HASH_CHUNK

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
MAX_NAME_BYTES = 255
IS_POSIX = os.name == "posix"
TEMP_PREFIX = ".rs-"
# Never follow a symbolic link planted where reportsync creates a file (POSIX; Windows has no
# such flag, and creating symlinks there needs a privilege).
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_BINARY = getattr(os, "O_BINARY", 0)
O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # POSIX; Windows has no FIFOs to block on
CRASH_ENV = "REPORTSYNC_TEST_CRASH_AT"
"""Test-only fault injector: the process SIGKILLs itself at the named point (see crash_point)."""


def ensure_private_dir(path: Path, config_key: str | None = None) -> Path:
    """Make sure the folder ``path`` exists and is safe to write into; returns it.

    What is missing is created one folder at a time, each 0700 (the missing parents too). An
    existing folder is never re-moded, not even one this user could tighten (``output_dir = "/"``
    must not turn ``/`` into 0700). The folder written into, the one that existed or the one the
    first missing folder is created in, is refused (StorageError) when everyone can write to it
    without the sticky bit (``shared_folder_problem``). ``config_key`` names the setting in the
    message.
    """
    try:
        missing: list[Path] = []
        folder = path
        while not folder.is_dir():  # follows a symlink to a folder, like every later write
            if os.path.lexists(folder):
                if folder.is_dir():
                    break  # made just now by another worker of this run: it exists, not ours
                raise StorageError(
                    f"{_setting(config_key)}{folder} is not a folder", path=str(folder),
                    remedy=f"Move {folder} away, or change {config_key or 'the path'} in the "
                    "config.")
            missing.append(folder)
            if folder.parent == folder:
                break
            folder = folder.parent
        _refuse_shared(folder, config_key, creating=missing[-1] if missing else None)
        for created in reversed(missing):
            try:
                created.mkdir(mode=PRIVATE_DIR_MODE)
            except FileExistsError:  # made meanwhile by someone else: it existed, not ours
                if not created.is_dir():
                    raise
                _refuse_shared(created, config_key, creating=None)
                continue
            if IS_POSIX:
                created.chmod(PRIVATE_DIR_MODE)  # ours, just made: the umask may have narrowed it
    except OSError as exc:
        raise storage_error(exc, path, config_key) from None
    return path


def shared_folder_problem(folder: Path, config_key: str | None = None, *,
                          creating: Path | None = None) -> StorageError | None:
    """Why reportsync must not write into ``folder``: everyone can write to it and it has no
    sticky bit, so another user could rename, replace or delete what reportsync keeps there
    (a folder with the sticky bit, like /tmp, is accepted). None when it is fine, or where
    mode bits do not apply. ``creating`` is the folder reportsync was about to make in it.
    """
    if not mode_bits_apply():
        return None
    mode = folder.stat().st_mode
    if not mode & stat.S_IWOTH or mode & stat.S_ISVTX:
        return None
    where = f" (reportsync would create {creating} in it)" if creating is not None else ""
    setting = f"set {config_key} to" if config_key else "use"
    return StorageError(
        f"{_setting(config_key)}{folder} can be written to by anyone (mode "
        f"{stat.S_IMODE(mode):04o}, no sticky bit){where}: another user could replace or delete "
        "what reportsync keeps there; refused",
        path=str(folder),
        remedy=f"chmod o-w {folder}, or {setting} a folder of your own.",
    )


def _refuse_shared(folder: Path, config_key: str | None, *, creating: Path | None) -> None:
    problem = shared_folder_problem(folder, config_key, creating=creating)
    if problem is not None:
        raise problem


def _setting(config_key: str | None) -> str:
    return f"{config_key}: " if config_key else ""


def storage_error(exc: OSError, path: Path, config_key: str | None = None) -> StorageError:
    """An OSError on a local path, in words that say what to do; ``config_key`` (the setting
    the path comes from, ``settings.state_dir``) leads the message and is named in the remedy."""
    key = _setting(config_key)
    change = f"change {config_key}" if config_key else "change the path in the config"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"{key}disk full while writing {path}", path=str(path),
                            remedy="Free space on that disk; nothing half-written was kept.")
    if exc.errno == errno.EROFS:
        return StorageError(f"{key}{path} is on a read-only file system", path=str(path),
                            remedy=f"Mount it writable, or {change} to a writable folder.")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StorageError(f"{key}permission denied: {path}", path=str(path),
                            remedy=f"Fix the folder's owner or permissions, or {change}.")
    return StorageError(f"{key}cannot write {path}: {exc.strerror or exc}", path=str(path))


def remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass  # best effort: the caller is already handling a failure


def mode_bits_apply() -> bool:
    """Whether file permissions are POSIX mode bits (on Windows they are ACLs: not checked)."""
    return IS_POSIX


def too_open(path: Path) -> int | None:
    """The permission bits of ``path`` if group or others have any access to it, else None.

    OpenSSH's rule for private keys (mode & 077); None where mode bits do not apply.
    """
    if not mode_bits_apply():
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    return mode if mode & 0o077 else None


def require_private_file(path: Path, config_key: str, what: str) -> None:
    """Refuse a secret-bearing file that group or others can access, in OpenSSH's words.

    ``what`` says what the file holds ("private key", "password"). A missing or unreadable file
    is left to the caller, which reports it with its own message.
    """
    try:
        mode = too_open(path)
    except OSError:
        return
    if mode is None:
        return
    raise ConfigError(
        [f"{config_key}: Permissions {mode:04o} for '{path}' are too open. It is required that "
         f"your {what} files are NOT accessible by others. This {what} file will be ignored."],
        path=str(path),
        remedy=f"chmod 600 {path}",
    )


def crash_point(name: str) -> None:
    """TEST-ONLY fault injector: SIGKILL this process at the point ``name`` when the environment
    variable REPORTSYNC_TEST_CRASH_AT names it. The tests use it to prove that a run killed at
    that exact moment is reconciled by the next one; unset (always, in real use) it does nothing."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


# Characters that reorder how the rest of a line is shown (``rtl-\u202egnp.lmx`` displays as
# ``rtl-xml.png``): the embeddings, overrides and isolates, and the implicit marks.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                          "\u2066\u2067\u2068\u2069")
# Unicode's own line and paragraph separators: a line break to Python and to some viewers.
LINE_SEPARATORS = frozenset("\u2028\u2029")


def _is_control(char: str) -> bool:
    """C0, DEL and C1 (U+0080-U+009F, e.g. U+0085, a line break to some terminals)."""
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F


def _is_undecodable(char: str) -> bool:
    """A byte that was not UTF-8: transports decode names with ``surrogateescape``, which turns
    each such byte into a lone surrogate U+DC80-U+DCFF (and a lone surrogate is never text)."""
    return 0xD800 <= ord(char) <= 0xDFFF


def check_remote_name(name: str) -> None:
    """Refuse a server-supplied name that could escape the folder or confuse a terminal."""
    if _plainly_safe(name):
        return
    problem = remote_name_problem(name)
    if problem:
        raise UnsafeNameError(f"refused remote file name {printable(name)}: it {problem}")


# Every character a check of ``remote_name_problem`` looks for, as one class: a name without any
# (nearly every name) is passed by one scan in C, not a Python call per character and check.
_SUSPECT_CHAR = re.compile(
    "[\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff"  # controls C0, DEL, C1; lone surrogates
    + re.escape("".join(sorted(BIDI_CONTROLS | LINE_SEPARATORS | {"/", "\\", ":"}))) + "]")


def _plainly_safe(name: str) -> bool:
    """True only for a name ``remote_name_problem`` has nothing against (the common case, in a
    few cheap string operations); False sends the name through every check."""
    return (bool(name) and _SUSPECT_CHAR.search(name) is None and ".." not in name
            and not name.startswith(".")
            # a character is at most 4 bytes in UTF-8 (and no surrogate is left to encode)
            and (len(name) * 4 <= MAX_NAME_BYTES or len(name.encode()) <= MAX_NAME_BYTES))


def plainly_safe_names(names: Sequence[str]) -> bool:
    """True only when ``_plainly_safe`` passes every one of ``names``, by a few scans of them all
    joined (in C: a listing of 50,000 names); False says nothing (check each name then). Joined
    by "|": a name that starts with "." shows as "|." or at the start, and no check can match
    across a separator that is neither "." nor a suspect character."""
    if not names:
        return True
    joined = "|".join(names)
    return (_SUSPECT_CHAR.search(joined) is None and ".." not in joined
            and "|." not in joined and not joined.startswith(".")
            and min(map(len, names)) > 0 and max(map(len, names)) * 4 <= MAX_NAME_BYTES)


def remote_name_problem(name: str) -> str | None:
    """What is wrong with a server-supplied name (the end of the refusal's sentence), or None."""
    if not name or name in (".", ".."):
        return "is empty or a folder reference"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if ".." in name:
        return "contains '..'"
    if any(_is_undecodable(char) for char in name):
        return "is not valid UTF-8"
    if any(_is_control(char) or char in LINE_SEPARATORS for char in name):
        return "contains a NUL or control character"
    if any(char in BIDI_CONTROLS for char in name):
        return "contains a bidirectional-override character (it would show reordered)"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    if name.startswith("."):
        return "starts with '.' (hidden files and reportsync's temp names are not fetched)"
    if ":" in name and not IS_POSIX:
        return "contains ':' (a Windows stream separator)"
    return None


def contained_path(folder: Path, name: str) -> Path:
    """``folder / name``, after proving that it names an entry directly inside ``folder``.

    The last line of defence against a server-supplied name: the name is checked again, then the
    joined path is normalised (every ``..``, separator and platform quirk applied) and must still
    be a direct child of the folder, under exactly this name.
    """
    check_remote_name(name)
    base = os.path.abspath(folder)
    joined = os.path.normpath(os.path.join(base, name))
    if os.path.dirname(joined) != base or os.path.basename(joined) != name:
        raise UnsafeNameError(f"refused remote file name {printable(name)}: it resolves to "
                              f"{printable(joined)}, outside {base}")
    return folder / name


def regular_file_info(path: Path) -> os.stat_result | None:
    """``lstat`` of ``path`` if it is a regular file (not a symlink, folder or device), else None."""
    try:
        info = path.lstat()
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


class NotARegularFileError(OSError):
    """A path that names a folder, a named pipe, a socket or a device where a file is expected."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(errno.EINVAL, f"{kind}, not a regular file", str(path))
        self.kind = kind


def file_kind(mode: int) -> str:
    """What a ``st_mode`` names, in words for a message ("a named pipe (FIFO)")."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def read_regular_file(path: Path) -> bytes:
    """The bytes of ``path``, which must be a regular file (a symlink to one is fine).

    Anything else is refused with NotARegularFileError, without blocking: opening a FIFO for
    reading waits for a writer, so it is opened non-blocking (POSIX) and checked before a read.
    """
    mode = path.stat().st_mode  # first, as a socket cannot even be opened
    if not stat.S_ISREG(mode):
        raise NotARegularFileError(path, file_kind(mode))
    descriptor = os.open(path, os.O_RDONLY | O_NONBLOCK | O_BINARY)
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFileError(path, file_kind(mode))
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(descriptor)


def open_private_new(path: Path, *, readable: bool = False) -> int:
    """Create ``path`` (mode 0600) for writing (and reading, with ``readable``); fails if
    anything, even a dangling symlink, is already there, so a planted link is never written
    through."""
    access = os.O_RDWR if readable else os.O_WRONLY
    return os.open(path, access | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_BINARY,
                   PRIVATE_FILE_MODE)


def open_private_resumable(path: Path) -> int:
    """Open ``path`` for writing without truncating it (a resumable download), creating it 0600.

    Anything there that is not a regular file (a planted symlink, a folder) is removed first;
    the open itself refuses to follow a link that appears in between.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(path))
        path.unlink()  # removes a link itself, never its target
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | O_NOFOLLOW | O_BINARY, PRIVATE_FILE_MODE)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return descriptor


def remove_stale_temps(folder: Path, *kinds: str,
                       keep: Collection[str] | Callable[[], Collection[str]] = frozenset()
                       ) -> list[str]:
    """Delete reportsync's own hidden temp files (``.rs-*.<kind>``, each of ``kinds``, found by
    one listing of the folder) in ``folder`` except ``keep``: left by a run that was killed.
    Only called under the run lock. Returns the names removed.

    ``keep`` may be a function that makes it: it is called only when the folder holds a temp
    file of those kinds (a run after a clean one finds none, and need not derive 50,000 names).
    A folder of that name is a private decryption folder (``private_temp_folder``) and goes with
    everything in it; a symlink of that name is removed itself, never what it points to."""
    removed: list[str] = []
    suffixes = tuple(f".{kind}" for kind in kinds)
    try:
        # names only (no per-entry objects): the folder may hold every report ever fetched
        stale = [name for name in os.listdir(folder)
                 if name.startswith(TEMP_PREFIX) and name.endswith(suffixes)]
    except OSError:
        return removed
    if not stale:
        return removed
    kept: Collection[str] = keep() if callable(keep) else keep
    for name in stale:
        if name in kept:
            continue
        path = folder / name
        try:
            is_folder = stat.S_ISDIR(path.lstat().st_mode)
        except OSError:
            continue  # gone meanwhile
        if is_folder:
            shutil.rmtree(path, ignore_errors=True)
        else:
            remove_quietly(path)
        removed.append(name)
    return removed


def private_temp_folder(folder: Path) -> Path:
    """A new private folder (0700, a random name ``.rs-*.tmp``) inside ``folder``: on the same
    file system, so what is made in it can be renamed into ``folder`` atomically; nobody else
    can create, replace or read anything in it. ``remove_stale_temps(folder, "tmp")`` removes
    one left by a killed run."""
    try:
        return Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=folder))
    except OSError as exc:
        raise storage_error(exc, folder) from None


def sync_data(descriptor: int) -> None:
    """Make a file's bytes (and its size) durable: ``fdatasync`` where there is one (it skips
    metadata such as the modification time), else ``fsync`` (macOS, Windows)."""
    getattr(os, "fdatasync", os.fsync)(descriptor)


def printable(name: str, *, quote: bool = True) -> str:
    """A name (remote or local) safe to put in a message, a log line or a terminal.

    Every character that is not printable as it is comes out as an escape: C0, DEL, C1, the
    bidirectional controls (``\\u202e``), invisible format characters, odd spaces, Unicode line
    separators, and the bytes that were not UTF-8 (``\\udcff`` for the byte 0xff); ``repr``
    escapes exactly the characters ``str.isprintable`` rejects, and quotes. A printable name is
    quoted too, unless ``quote`` is False (for lines that show names bare).
    """
    if name.isprintable():
        return f"'{name}'" if quote else name
    return repr(name)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename durable. Windows cannot open folders; there the rename is already durable
    enough (NTFS journals metadata)."""
    if not IS_POSIX:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def versioned_name(name: str, number: int) -> str:
    """``a.b.xml`` → ``a.b.v2.xml``: a distinct name that keeps the file type."""
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        return f"{name}.v{number}"
    return f"{stem}.v{number}.{suffix}"


def place_file(temp: Path, folder: Path, name: str, sha256: str, *,
               sync_folder: bool = True) -> Path:
    """Move ``temp`` into ``folder`` as ``name``, never replacing different content.

    Safe against concurrent placers (the ``--jobs`` workers): each final name is claimed
    atomically, so two files can never both be given one name. If ``name`` already holds the
    same bytes, the temp replaces it (idempotent after a crash: no ``.v2`` copy of identical
    content); if it holds other bytes, the new file gets the first free ``.vN`` name. Returns
    the final path. The folder is fsynced, so the name is durable, unless ``sync_folder`` is
    False: then the caller fsyncs it (once for a batch) before anything records the file.
    """
    try:
        return _place(temp, folder, name, sha256, _claim_by_link, sync_folder)
    except _NoHardLinks:
        # the claim file is empty until the temp replaces it: this process's placers take turns,
        # so none of them ever compares its report with a claim of another
        with _PLACING_WITHOUT_LINKS:
            return _place(temp, folder, name, sha256, _claim_by_exclusive_create, sync_folder)


def _place(temp: Path, folder: Path, name: str, sha256: str,
           claim: Callable[[Path, Path], bool], sync_folder: bool) -> Path:
    number = 1
    candidate = contained_path(folder, name)
    try:
        while not claim(temp, candidate):
            # only a regular file with the same bytes is replaced; a symlink (wherever it
            # points), a folder or anything else counts as taken and is never read or written
            # through. Replacing is safe: a placer racing with this one can only ever have
            # replaced that file by identical bytes, never by others.
            if regular_file_info(candidate) is not None and sha256_file(candidate) == sha256:
                os.replace(temp, candidate)
                break
            number += 1
            candidate = contained_path(folder, versioned_name(name, number))
        if sync_folder:
            fsync_dir(folder)
    except OSError as exc:
        raise storage_error(exc, candidate) from None
    return candidate


class _NoHardLinks(Exception):
    """This file system (or platform) cannot make hard links: claim names another way."""


# errno values of a hard link the file system does not support (FAT, some network shares)
_NO_HARD_LINK_ERRNOS = frozenset((
    errno.EPERM, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP), errno.ENOSYS,
    errno.EXDEV, errno.EMLINK, errno.EINVAL, errno.EACCES,
))
_PLACING_WITHOUT_LINKS = threading.Lock()


def _claim_by_link(temp: Path, target: Path) -> bool:
    """Give ``temp`` the name ``target`` unless something (even a dangling symlink) has it.

    True when the name is now ``temp``'s (and ``temp`` is gone), False when it was taken. A hard
    link checks and names in one atomic step (it fails with EEXIST where a rename would silently
    replace), so of two concurrent claims, in any processes, exactly one wins.
    """
    try:
        os.link(temp, target)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno in _NO_HARD_LINK_ERRNOS:
            raise _NoHardLinks() from exc
        raise
    remove_quietly(temp)
    return True


def _claim_by_exclusive_create(temp: Path, target: Path) -> bool:
    """``_claim_by_link`` without hard links: an empty 0600 file created with O_EXCL holds the
    name until the temp is renamed over it. Atomic against other processes too, except that one
    could see the empty claim for a moment (and take it for an empty report of its own)."""
    try:
        os.close(open_private_new(target))
    except FileExistsError:
        return False
    try:
        os.replace(temp, target)
    except OSError:
        remove_quietly(target)
        raise
    return True


@contextmanager
def private_temp(folder: Path, name: str) -> Iterator[Path]:
    """A temp path beside the target (same file system, so the final rename is atomic).

    Removed on exit unless the caller renamed it away.
    """
    temp = folder / temp_name(name, "tmp")
    try:
        yield temp
    finally:
        remove_quietly(temp)


def temp_name(key: str, kind: str) -> str:
    """A hidden, fixed-length name derived from ``key``: fits any file system's name limit, and
    the same key always gives the same name (which is what lets a download resume)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return f"{TEMP_PREFIX}{digest}.{kind}"


def make_private(path: Path) -> None:
    if IS_POSIX:
        path.chmod(PRIVATE_FILE_MODE)


def write_atomically(path: Path, data: bytes, *, mode: int = PRIVATE_FILE_MODE) -> Path:
    """Write ``data`` to ``path`` via a temp file beside it: readers see the old file or the whole
    new one, never a part. The file gets ``mode`` from the moment it exists."""
    folder = path.parent
    temp = folder / temp_name(f"{path.name}\0{os.getpid()}", "tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0),
                             mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if IS_POSIX:
            temp.chmod(mode)  # the umask may have narrowed it; never widened beyond ``mode``
        os.replace(temp, path)
        fsync_dir(folder)
    except OSError as exc:
        remove_quietly(temp)
        raise storage_error(exc, path) from None
    return path


def enlarge_pipe(fd: int, size: int) -> None:
    """Ask for a pipe buffer of ``size`` bytes (Linux ``F_SETPIPE_SZ``); elsewhere, or when the
    system refuses (a per-user limit), the pipe keeps its default: only slower, never wrong."""
    try:
        import fcntl
    except ImportError:  # Windows
        return
    setter = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setter is None:  # macOS, the BSDs
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, setter, size)
