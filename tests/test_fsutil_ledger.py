from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from reportsync.errors import LedgerVersionError, StorageError, UnsafeNameError
from reportsync.fsutil import (
    check_remote_name,
    ensure_private_dir,
    place_file,
    printable,
    remote_name_problem,
    versioned_name,
)
from reportsync.ledger import SCHEMA_VERSION, Ledger


@pytest.mark.parametrize("name", [
    "../etc/passwd", "a/b.pgp", "a\\b.pgp", "..", ".", "", "x\x00y.pgp", "x\ny.pgp", "x\x1b[31m.pgp",
    "a" * 256 + ".pgp", ".hidden.pgp", "é" * 128 + ".pgp", "a..b.pgp",
    # issue 11.4: C1 controls, bidirectional controls, Unicode line separators
    "c1\x85.pgp", "csi\x9b31m.pgp", "c1-end\x9f.pgp", "del\x7f.pgp", "rtl-\u202egnp.lmx",
    "lre\u202a.pgp", "rle\u202b.pgp", "pdf\u202c.pgp", "lro\u202d.pgp", "lri\u2066.pgp",
    "rli\u2067.pgp", "fsi\u2068.pgp", "pdi\u2069.pgp", "lrm\u200e.pgp", "rlm\u200f.pgp",
    "alm\u061c.pgp", "ls\u2028.pgp", "ps\u2029.pgp",
    # issue 11.2: bytes that were not UTF-8, as the transports decode them (surrogateescape)
    b"bad\xff.pgp".decode("utf-8", "surrogateescape"),
])
def test_hostile_remote_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        check_remote_name(name)


@pytest.mark.parametrize("name", ["U1234567.Activity_Daily.20261102.20261102.xml.pgp",
                                  "report with spaces.csv.gpg", "é.pgp", "a" * 251 + ".pgp",
                                  "日本語の報告.xml.pgp", "عربي.xml.pgp", "x\u00a0nbsp.pgp"])
def test_ordinary_names_pass(name: str) -> None:
    check_remote_name(name)


def test_the_quick_pass_of_a_name_never_lets_a_refused_one_through() -> None:
    # check_remote_name passes most names after one regex scan (issue 13: a per-character
    # generator per check cost seconds at 50,000 names); every other name gets every check
    characters = [*range(0x3000), *range(0xD800, 0xE000), *range(0xFE00, 0x10000), 0x1F600,
                  0x10FFFF]
    names = [f"r{chr(code)}x.pgp" for code in characters]
    names += [chr(code) + "r.pgp" for code in characters[:0x300]]
    names += ["", ".", "..", "a..b", ".x", "x.", "a" * 251 + ".pgp", "a" * 252 + ".pgp",
              "é" * 127, "é" * 128, "日" * 85, "日" * 86, "\U0001f600" * 63, "\U0001f600" * 64,
              "a:b.pgp"]
    for name in names:
        problem = remote_name_problem(name)
        try:
            check_remote_name(name)
        except UnsafeNameError as refused:
            assert problem is not None and refused.message.endswith(problem), repr(name)
        else:
            assert problem is None, repr(name)


def test_a_whole_listing_is_passed_at_once_only_when_every_name_would_pass_alone() -> None:
    # listing.select scans 50,000 names joined (issue 13); any name the quick pass of one name
    # would not pass makes the whole scan say "check each", whichever its place in the listing
    from reportsync.fsutil import _plainly_safe, plainly_safe_names

    plain = ["a.pgp", "b|c.pgp", "é.pgp", "x."]
    assert plainly_safe_names(plain) and plainly_safe_names([]) and plainly_safe_names(["a"])
    characters = [*range(0x300), *range(0xD800, 0xDC10), *range(0x2000, 0x2070), 0xFEFF]
    odd = [f"r{chr(code)}x.pgp" for code in characters]
    odd += ["", ".", "..", "a..b", ".x", "x.", "|", "a|", "|a", "a||b", "a|.b", "a" * 251 + ".pgp",
            "a" * 252 + ".pgp", "é" * 128, "日" * 86, "\U0001f600" * 64, "a:b.pgp", "./x"]
    for name in odd:
        alone = _plainly_safe(name)
        for listing in ([name], [name, *plain], [*plain, name], [plain[0], name, plain[1]]):
            if plainly_safe_names(listing):
                assert alone, (repr(name), listing)
    assert not plainly_safe_names(["a.", ".b"]) and not plainly_safe_names(["a.", "", "b"])
    assert not plainly_safe_names(["a.", ".b"]) and _plainly_safe("a.") and not _plainly_safe(".b")


@pytest.mark.parametrize(("name", "shown"), [
    ("plain.xml.pgp", "'plain.xml.pgp'"),
    ("é.pgp", "'é.pgp'"),
    ("esc\x1b[31m.pgp", "'esc\\x1b[31m.pgp'"),
    ("del\x7f", "'del\\x7f'"),
    ("c1\x85", "'c1\\x85'"),
    ("csi\x9b31m", "'csi\\x9b31m'"),
    ("rtl-\u202egnp.lmx", "'rtl-\\u202egnp.lmx'"),
    ("isolate\u2066x", "'isolate\\u2066x'"),
    ("mark\u200fx", "'mark\\u200fx'"),
    ("ls\u2028x", "'ls\\u2028x'"),
    ("zero\u200bwidth", "'zero\\u200bwidth'"),
    ("nb\u00a0sp", "'nb\\xa0sp'"),
    (b"bad\xff".decode("utf-8", "surrogateescape"), "'bad\\udcff'"),
])
def test_printable_escapes_every_character_a_terminal_would_not_show_as_it_is(
    name: str, shown: str,
) -> None:
    # issue 11.4: printable escaped only C0 and DEL; a U+202E in a name printed reordered
    assert printable(name) == shown
    assert printable(name, quote=False) == (name if name.isprintable() else shown)


def test_printable_output_is_always_printable() -> None:
    every_kind = "".join(chr(code) for code in range(0x3000)) + "\u202e\u2066\ufeff\U000e0041"
    for char in every_kind:
        for text in (char, f"a{char}b"):
            assert printable(text).isprintable(), ascii(text)
            assert printable(text, quote=False).isprintable(), ascii(text)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_existing_folders_are_never_re_moded(tmp_path: Path) -> None:
    # issue 11.3: the old code tightened every existing folder to 0700 (output_dir = "/" made
    # / 0700; a 1777 folder became 1700)
    for mode in (0o755, 0o750, 0o1777, 0o2775):
        folder = tmp_path / f"existing-{mode:o}"
        folder.mkdir()
        folder.chmod(mode)
        assert ensure_private_dir(folder, "sources.x.output_dir") == folder
        assert mode_of(folder) == mode, f"{mode:04o} became {mode_of(folder):04o}"


def test_created_folders_and_their_created_parents_are_0700(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    base.chmod(0o755)
    old_umask = os.umask(0o002)  # a loose umask must not loosen them, nor re-mode ``base``
    try:
        nested = ensure_private_dir(base / "a" / "b" / "c")
    finally:
        os.umask(old_umask)
    assert nested.is_dir()
    for folder in (base / "a", base / "a" / "b", nested):
        assert mode_of(folder) == 0o700, folder
    assert mode_of(base) == 0o755, "the parent that existed keeps its mode"


def test_a_folder_anyone_can_write_to_without_the_sticky_bit_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(StorageError) as refused:
        ensure_private_dir(shared, "sources.broker.output_dir")
    assert refused.value.exit_code == 7
    assert f"sources.broker.output_dir: {shared} can be written to by anyone" in \
        refused.value.message
    assert f"chmod o-w {shared}" in refused.value.remedy
    with pytest.raises(StorageError, match="would create"):
        ensure_private_dir(shared / "new" / "deeper", "settings.state_dir")
    assert list(shared.iterdir()) == [], "nothing is created in it"
    assert mode_of(shared) == 0o777, "refused, not re-moded"
    shared.chmod(0o1777)  # like /tmp: others cannot remove or rename what is ours
    assert ensure_private_dir(shared / "mine").is_dir()
    assert mode_of(shared) == 0o1777


def test_a_file_in_the_way_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match=r"settings\.state_dir: .*file is not a folder"):
        ensure_private_dir(tmp_path / "file" / "sub", "settings.state_dir")


def test_a_folder_another_worker_creates_meanwhile_is_used_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # parallel fetch workers archive their first files at once into an output_dir that does not
    # exist yet: the one that looks second must use the folder the first just made
    target = tmp_path / "statements"
    real_is_dir = Path.is_dir

    def another_worker_makes_it_just_after(self: Path) -> bool:
        answer = real_is_dir(self)
        if self == target and not answer and not os.path.lexists(target):
            target.mkdir(mode=0o700)
        return answer

    monkeypatch.setattr(Path, "is_dir", another_worker_makes_it_just_after)
    assert ensure_private_dir(target, "sources.s.output_dir") == target
    monkeypatch.undo()
    assert target.is_dir() and stat.S_IMODE(target.stat().st_mode) == 0o700


def test_place_file_never_replaces_different_content(tmp_path: Path) -> None:
    def temp_with(data: bytes) -> tuple[Path, str]:
        temp = tmp_path / ".tmp"
        temp.write_bytes(data)
        return temp, hashlib.sha256(data).hexdigest()

    temp, digest = temp_with(b"one")
    first = place_file(temp, tmp_path, "r.xml", digest)
    assert first == tmp_path / "r.xml"
    temp, digest = temp_with(b"one")
    assert place_file(temp, tmp_path, "r.xml", digest) == first, "the same content is idempotent"
    temp, digest = temp_with(b"two")
    second = place_file(temp, tmp_path, "r.xml", digest)
    assert second == tmp_path / "r.v2.xml"
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"
    assert versioned_name("noext", 3) == "noext.v3"


def _place_all_at_once(folder: Path, contents: list[bytes], name: str) -> dict[int, Path]:
    """Every content placed as ``name`` by its own thread, all released at the same moment."""
    temps = []
    for index, data in enumerate(contents):
        temp = folder / f".rs-{index}.tmp"
        temp.write_bytes(data)
        temps.append((temp, hashlib.sha256(data).hexdigest()))
    start = threading.Barrier(len(contents))
    placed: dict[int, Path] = {}

    def place(index: int) -> None:
        start.wait()
        temp, digest = temps[index]
        placed[index] = place_file(temp, folder, name, digest)

    threads = [threading.Thread(target=place, args=(index,)) for index in range(len(contents))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return placed


@pytest.mark.parametrize("hard_links", [True, False], ids=["hard-links", "no-hard-links"])
def test_concurrent_placers_of_different_content_each_keep_their_own_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hard_links: bool,
) -> None:
    # issue 11.1: --jobs workers whose remote names decrypt to one name (X.xml.pgp, X.xml.gpg,
    # X.xml.asc) placed their reports at the same moment; a check-then-rename let one replace
    # the other. Every content must survive, each under a name of its own.
    if not hard_links:  # as on FAT or some network shares: the O_EXCL claim takes over
        def no_hard_links(*args: object, **kwargs: object) -> None:
            raise OSError(errno.EPERM, "Operation not permitted")
        monkeypatch.setattr(os, "link", no_hard_links)
    placers = 8
    for round_number in range(15):
        folder = tmp_path / f"round{round_number}"
        folder.mkdir()
        contents = [f"report {round_number}.{index}".encode() * 100 for index in range(placers)]
        placed = _place_all_at_once(folder, contents, "X.xml")
        assert len(placed) == placers, "every placer finished"
        assert len(set(placed.values())) == placers, f"two placers got one name: {placed}"
        for index, path in placed.items():
            assert path.read_bytes() == contents[index], f"{path.name} was replaced"
        names = sorted(path.name for path in folder.iterdir())
        assert names == sorted(path.name for path in placed.values()), "no temp left behind"
        assert "X.xml" in names and "X.v2.xml" in names


def test_ledger_schema_unique_versions_and_failures(tmp_path: Path) -> None:
    with Ledger(tmp_path / "state" / "ledger.sqlite3") as ledger:
        assert ledger.schema_version == SCHEMA_VERSION
        run = ledger.start_run("fetch", 1)
        ids = ledger.see_files("s", [("a.pgp", 10, 100), ("b.pgp", 20, 200)])
        again = ledger.see_files("s", [("a.pgp", 10, 100)])
        assert again[("a.pgp", 10, 100)] == ids[("a.pgp", 10, 100)]
        assert ledger.count("remote_files") == 2
        assert ledger.record_failure("s", "a.pgp", ids[("a.pgp", 10, 100)], run, "archive", "bad") == 1
        assert ledger.record_failure("s", "a.pgp", ids[("a.pgp", 10, 100)], run, "archive", "bad") == 2
        assert len(ledger.open_failures("s")) == 1
        ledger.record_download(ids[("a.pgp", 10, 100)], run, tmp_path / "a.pgp", 10, "0" * 64)
        ledger.record_download(ids[("a.pgp", 10, 100)], run, tmp_path / "a.pgp", 10, "0" * 64)
        ledger.record_archived(ids[("a.pgp", 10, 100)], run, tmp_path / "a", 5, "1" * 64,
                               decrypted=True, signer=None)
        assert ledger.count("downloads") == 1 and ledger.count("archived") == 1
        assert ledger.open_failures("s") == [], "archiving resolves the file's failures"
        records = ledger.versions_by_key("s")
        assert records[("a.pgp", 10, 100)].archived
        assert not records[("b.pgp", 20, 200)].archived
        ledger.finish_run(run, 0, {"archived": 1})
        assert ledger.integrity_check() == "ok"
    db = sqlite3.connect(tmp_path / "state" / "ledger.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    gone = db.execute("SELECT name FROM remote_files WHERE gone_at IS NOT NULL").fetchall()
    assert gone == [("b.pgp",)], "a version no longer listed is marked gone"


def test_ledger_from_a_newer_version_or_garbage_is_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite3"
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    db.close()
    # exit 2 (not 7: nothing is wrong with the storage), naming both versions; as on PostgreSQL
    with pytest.raises(LedgerVersionError, match="newer reportsync") as refused:
        Ledger(newer)
    assert refused.value.exit_code == 2
    assert f"schema {SCHEMA_VERSION + 5}" in refused.value.message
    assert f"reads schema {SCHEMA_VERSION}" in refused.value.message
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="damaged"):
        Ledger(garbage)
