"""DecryptionPool (issue 13, "decrypt many" and "decrypt big") against the real gpg.

Every file must get exactly the verdict ``Gpg.decrypt`` gives it alone (the same exception, the
same message and remedy, or the same bytes, hash and signature), whatever else shares its
``gpg --decrypt-files`` run; gpg writes only into files reportsync created in a private folder;
a copy of the GnuPG home for a second gpg-agent never touches the real home and leaves nothing.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reportsync import fsutil
from reportsync.config import Secret
from reportsync.errors import KeyProblemError, ReportsyncError
from reportsync.pgp import DecryptionPool, Gpg, homes
from reportsync.pgp import pool as pool_module
from tests.support import PgpIdentity, make_identity, processes, random_plain
from tests.test_gpg_hardening import no_mdc_message, public_key_file, signed_by
from tests.test_hardening_faults import tiny_filesystem
from tests.test_hardening_files import _signed_then_encrypted
from tests.test_hardening_support import gpg_cli

Outcome = tuple[Any, ...]


def outcome_of(call: Callable[[], Any], folder: Path | None = None) -> Outcome:
    """What a decryption ended with, in a form two ways of decrypting can be compared by (the
    output folder, named in some messages, as ``<out>``)."""
    try:
        decrypted = call()
    except ReportsyncError as error:
        message = error.message.replace(str(folder), "<out>") if folder else error.message
        return (type(error).__name__, message, error.remedy)
    data = decrypted.path.read_bytes()
    assert decrypted.sha256 == hashlib.sha256(data).hexdigest()
    assert decrypted.size == len(data)
    assert stat.S_IMODE(decrypted.path.stat().st_mode) == 0o600
    return ("ok", data, decrypted.signature, decrypted.signer)


def lone(gpg: Gpg, files: dict[str, Path], folder: Path, require_signer: str = "",
         ) -> dict[str, Outcome]:
    folder.mkdir(exist_ok=True)
    return {name: outcome_of(lambda path=path, name=name: gpg.decrypt(
                path, folder / f".rs-{name}.tmp", require_signer=require_signer), folder)
            for name, path in files.items()}


def pooled(pool: DecryptionPool, files: dict[str, Path], folder: Path,
           require_signer: str = "") -> dict[str, Outcome]:
    """All files queued at once (so a worker takes them into one run), then their outcomes."""
    folder.mkdir(exist_ok=True)
    futures = pool.submit_many([(path, folder / f".rs-{name}.tmp", require_signer)
                                for name, path in files.items()])
    return {name: outcome_of(future.result, folder)
            for name, future in zip(files, futures, strict=True)}


def write_all(folder: Path, messages: dict[str, bytes]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in messages.items():
        paths[name] = folder / f"{name}.pgp"
        paths[name].write_bytes(data)
    return paths


def mixed_messages(me: PgpIdentity, stranger: PgpIdentity, tmp_path: Path) -> dict[str, bytes]:
    flipped = bytearray(me.encrypt(b"<flipped/>" * 300))
    flipped[-5] ^= 0x01  # near the end: gpg has written the plaintext before it notices
    whole = me.encrypt(random_plain(60_000))
    return {
        "good": me.encrypt(b"<good/>" * 100),
        "armored": me.encrypt(b"<armored/>", armor=True),
        "signed": me.encrypt(b"<signed by me/>", sign=True),
        "corrupt": bytes(flipped),
        "truncated": whole[: len(whole) * 2 // 3],
        "no-mdc": no_mdc_message(me, "AES256", b"<no mdc/>"),
        "wrong-key": stranger.encrypt(b"<for somebody else/>"),
        "unknown-signer": signed_by(stranger.home, public_key_file(me, tmp_path), b"<theirs/>"),
        "bad-signature": _signed_then_encrypted(me, me.home, b"<altered after signing/>",
                                                tamper=True),
        "not-pgp": b"<xml>not encrypted at all</xml>\n" * 20,
        "empty": b"",
        "also-good": me.encrypt(random_plain(30_000)),
    }


def leftovers(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.name.startswith(".rs-"))


@pytest.mark.parametrize("required", [False, True], ids=["no-signature-required",
                                                         "signature-required"])
def test_a_batch_judges_each_file_as_gpg_decrypt_judges_it_alone(
    pgp_identity: PgpIdentity, other_pgp_identity: PgpIdentity, tmp_path: Path, required: bool,
) -> None:
    # Line of defence: batch._judge_all: verdict.judge on each file's own FILE_START … FILE_DONE
    # block; a verdict that depends on the exit code only from a run that can give it.
    files = write_all(tmp_path / "in", mixed_messages(pgp_identity, other_pgp_identity, tmp_path))
    gpg = Gpg(binary="gpg", home=pgp_identity.home, passphrase=None)
    require = pgp_identity.fingerprint if required else ""
    expected = lone(gpg, files, tmp_path / "lone", require)
    assert len({outcome[:2] for outcome in expected.values()}) >= 9, "the cases differ"
    out = tmp_path / "out"
    with DecryptionPool(gpg, workers=1) as pool:
        assert pooled(pool, files, out, require) == expected
        stats = pool.stats
    assert stats.runs >= 1 and stats.batched >= len(files), stats
    assert stats.alone == 0, "no file needed Gpg.decrypt"
    kept = {f".rs-{name}.tmp" for name, outcome in expected.items() if outcome[0] == "ok"}
    assert {entry.name for entry in out.iterdir()} == kept, "failures leave nothing"


def test_two_workers_each_with_an_agent_give_every_file_its_own_verdict(
    pgp_identity: PgpIdentity, other_pgp_identity: PgpIdentity, tmp_path: Path,
) -> None:
    # Line of defence: pool._take (fair shares, one output folder per run) and pool._lane (a
    # copy of the home with an agent of its own for worker 1).
    messages = mixed_messages(pgp_identity, other_pgp_identity, tmp_path)
    files = write_all(tmp_path / "in", {f"{name}-{copy}": data for copy in range(3)
                                        for name, data in messages.items()})
    gpg = Gpg(binary="gpg", home=pgp_identity.home, passphrase=None)
    expected = lone(gpg, files, tmp_path / "lone")
    with DecryptionPool(gpg, workers=2, batch_files=5) as pool:
        assert pooled(pool, files, tmp_path / "out") == expected
        stats = pool.stats
    assert stats.homes == 2, "the real home and one copy, each with its agent"
    assert leftovers(pgp_identity.home) == []


def test_a_compression_bomb_in_a_batch_fails_alone(pgp_identity: PgpIdentity,
                                                    tmp_path: Path) -> None:
    # Line of defence: batch._watch kills gpg when the file it writes passes the cap; the
    # other files of the run go into the next run; _Slot.finish checks the cap again on every
    # finished file (a file is refused exactly when its plaintext is larger than the cap).
    cap = 1024 * 1024
    bomb = gpg_cli(pgp_identity.home, "--trust-model", "always", "-z", "9", "-r",
                   pgp_identity.fingerprint, "--encrypt", data=bytes(64 * 1024 * 1024))
    files = write_all(tmp_path / "in", {
        "before": pgp_identity.encrypt(b"<before/>" * 1000),
        "bomb": bomb,
        "at-the-cap": pgp_identity.encrypt(random_plain(cap)),
        "one-byte-over": pgp_identity.encrypt(random_plain(cap + 1)),
        "after": pgp_identity.encrypt(b"<after/>" * 1000),
    })
    gpg = Gpg(binary="gpg", home=pgp_identity.home, passphrase=None, max_plaintext_bytes=cap)
    expected = lone(gpg, files, tmp_path / "lone")
    assert [name for name, outcome in expected.items() if outcome[0] != "ok"] == \
        ["bomb", "one-byte-over"]
    assert f"{cap}-byte cap" in expected["bomb"][1]
    out = tmp_path / "out"
    with DecryptionPool(gpg, workers=1) as pool:
        assert pooled(pool, files, out) == expected
    assert sorted(entry.name for entry in out.iterdir()) == \
        [".rs-after.tmp", ".rs-at-the-cap.tmp", ".rs-before.tmp"]


def test_a_planted_symlink_at_any_name_gpg_writes_is_never_followed(
    pgp_identity: PgpIdentity, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Line of defence: batch._Slot.prepare removes whatever is at an input's or output's name
    # (a link itself, never its target) and creates the output exclusively (O_EXCL|O_NOFOLLOW)
    # before gpg starts; gpg --yes then writes into that file. pool.submit's output (in the
    # report's folder) is replaced by a rename, which never follows a link either.
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    other = tmp_path / "other.pgp"
    other.write_bytes(pgp_identity.encrypt(b"<not the file that was submitted/>"))
    make_folder = fsutil.private_temp_folder

    def folder_with_traps(folder: Path) -> Path:
        made = make_folder(folder)
        for number in range(40):
            (made / f"p{number:07d}").symlink_to(victim)  # where gpg writes an output
            (made / f"p{number:07d}.gpg").symlink_to(other)  # where gpg reads an input
        (made / "dangling").symlink_to(tmp_path / "created-through-a-link")
        return made

    monkeypatch.setattr(pool_module, "private_temp_folder", folder_with_traps)
    reports = {f"r{index}": f"<report {index}/>".encode() * 50 for index in range(6)}
    files = write_all(tmp_path / "in", {name: pgp_identity.encrypt(data)
                                        for name, data in reports.items()})
    out = tmp_path / "out"
    out.mkdir()
    for name in files:
        (out / f".rs-{name}.tmp").symlink_to(victim)  # at the caller's temp name too
    gpg = Gpg(binary="gpg", home=pgp_identity.home, passphrase=None)
    with DecryptionPool(gpg, workers=1) as pool:
        results = pooled(pool, files, out)
    assert {name: result[1] for name, result in results.items()} == reports
    assert victim.read_bytes() == b"precious\n"
    assert not (tmp_path / "created-through-a-link").exists()
    for name in files:
        assert not (out / f".rs-{name}.tmp").is_symlink()


def test_disk_full_during_a_batch_is_a_storage_error_and_nothing_is_half_written(
    pgp_identity: PgpIdentity, tmp_path: Path,
) -> None:
    # Line of defence: gpg's words name the output it could not write (batch._gpg_named_output):
    # that file is decrypted again by Gpg.decrypt, whose own write sees ENOSPC
    # (StorageError "disk full", its temp deleted); a file whose flush fails is a StorageError
    # too (_Slot.finish). The files after it in the run are judged as they are alone.
    files = write_all(tmp_path / "in", {
        "small-1": pgp_identity.encrypt(b"<small 1/>" * 100),
        "too-big": pgp_identity.encrypt(random_plain(3 * 1024 * 1024)),
        "small-2": pgp_identity.encrypt(b"<small 2/>" * 100),
    })
    gpg = Gpg(binary="gpg", home=pgp_identity.home, passphrase=None)
    with tiny_filesystem(tmp_path / "small") as small:
        expected = lone(gpg, files, small / "lone")
        assert expected["too-big"][0] == "StorageError" and "disk full" in expected["too-big"][1]
        assert expected["small-1"][0] == expected["small-2"][0] == "ok"
        with DecryptionPool(gpg, workers=1) as pool:
            assert pooled(pool, files, small / "out") == expected
        assert sorted(entry.name for entry in (small / "out").iterdir()) == \
            [".rs-small-1.tmp", ".rs-small-2.tmp"], "no half file, no private folder"


def test_the_big_file_path_gives_what_the_pipe_gives_and_respects_the_cap(
    pgp_identity: PgpIdentity, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Line of defence: batch._watch with behind=True (a file at least big_file bytes runs
    # alone; its plaintext is hashed behind gpg and flushed every SYNC_EVERY bytes), the cap
    # checked on the growing file and once more when it is done.
    from reportsync.pgp import batch

    monkeypatch.setattr(batch, "SYNC_EVERY", 256 * 1024)
    plaintext = random_plain(6 * 1024 * 1024)
    files = write_all(tmp_path / "in", {
        "big": pgp_identity.encrypt(plaintext),
        "big-signed": pgp_identity.encrypt(plaintext, sign=True),
        "bomb": gpg_cli(pgp_identity.home, "--trust-model", "always", "-z", "9", "-r",
                        pgp_identity.fingerprint, "--encrypt", data=bytes(48 * 1024 * 1024)),
    })
    gpg = Gpg(binary="gpg", home=pgp_identity.home, passphrase=None,
              max_plaintext_bytes=8 * 1024 * 1024)
    expected = lone(gpg, files, tmp_path / "lone")
    assert expected["big"][1] == plaintext and "8388608-byte cap" in expected["bomb"][1]
    with DecryptionPool(gpg, workers=2, big_file=1024) as pool:
        assert pooled(pool, files, tmp_path / "out") == expected
        stats = pool.stats
    assert stats.runs == 3 and stats.alone == 0, "each file in a run of its own"
    assert leftovers(tmp_path / "out") == [".rs-big-signed.tmp", ".rs-big.tmp"]


def test_a_passphrase_reaches_every_gpg_through_its_stdin(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Line of defence: Gpg.start_decrypt_files writes the passphrase once per gpg process on
    # stdin (loopback pinentry); the copy's agent has nothing cached, so it is the passphrase
    # that unlocks the key there. A wrong one is the key problem Gpg.decrypt reports.
    identity = make_identity(tmp_path_factory.mktemp("pp") / "h", "pp@example.com",
                             passphrase="right horse")  # a short path: the agents' sockets
    try:
        files = write_all(tmp_path / "in", {f"r{index}": identity.encrypt(b"<r/>" * index)
                                            for index in range(1, 9)})
        for passphrase in ("right horse", "wrong horse"):
            identity.stop_agent()  # nothing cached anywhere
            gpg = Gpg(binary="gpg", home=identity.home, passphrase=Secret(passphrase))
            expected = lone(gpg, files, tmp_path / f"lone-{passphrase[0]}")
            identity.stop_agent()
            with DecryptionPool(gpg, workers=2, batch_files=2) as pool:
                assert pooled(pool, files, tmp_path / f"out-{passphrase[0]}") == expected
                assert pool.stats.homes == 2
            kinds = {outcome[0] for outcome in expected.values()}
            assert kinds == ({"ok"} if passphrase == "right horse" else {"KeyProblemError"})
        # a caller that met a key problem fails what is still queued at once
        gpg = Gpg(binary="gpg", home=identity.home, passphrase=Secret("wrong horse"))
        pool = DecryptionPool(gpg, workers=1)
        try:
            with pool._ready:  # nothing is taken until all are queued and the rest failed
                futures = pool.submit_many([(path, tmp_path / f".rs-{name}.q", "")
                                            for name, path in files.items()])
                error = KeyProblemError("the passphrase is wrong", remedy="Fix it.")
                assert pool.fail_pending(error) == len(files)
            failed = [future.exception() for future in futures]
            assert all(isinstance(each, KeyProblemError) and each.message == error.message
                       and each.remedy == error.remedy for each in failed)
            # each file its own copy: with_context on one never names it in another's line
            assert len({id(each) for each in failed}) == len(files) and error not in failed
        finally:
            pool.close()
    finally:
        identity.stop_agent()


def snapshot(home: Path) -> dict[str, str]:
    """Every file of a GnuPG home and its content, but the agent's sockets and gpg's seed."""
    found = {}
    for path in sorted(home.rglob("*")):
        if path.is_file() and not path.name.startswith("S.") and path.name != "random_seed":
            found[str(path.relative_to(home))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def agents_serving(home: Path) -> list[int]:
    return processes(lambda argv: argv[0].endswith(b"gpg-agent") and str(home).encode() in argv)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_an_agent_home_never_writes_the_real_home_and_leaves_nothing_behind(
    pgp_identity: PgpIdentity, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Line of defence: homes.agent_home copies the home (never links its files): what gpg and
    # the agent write there (here the trustdb check of a first signature) stays in the copy;
    # homes.discard_home stops its agent and removes it. And the copy's agent gets the same
    # allowlisted environment as every gpg child.
    monkeypatch.setenv("RS_POOL_SECRET_MARKER", "marker-Qz81")
    signed = tmp_path / "signed.pgp"
    signed.write_bytes(pgp_identity.encrypt(b"<signed/>", sign=True))
    real = snapshot(pgp_identity.home)
    gpg = Gpg(binary="gpg", home=pgp_identity.home, passphrase=None)
    copy = homes.agent_home(gpg.binary, pgp_identity.home)
    assert copy is not None and copy.parent == pgp_identity.home
    assert stat.S_IMODE(copy.stat().st_mode) == 0o700
    before = snapshot(copy)
    assert before == real, "the copy holds what the home holds"
    in_copy = gpg.sibling(copy)
    assert outcome_of(lambda: in_copy.decrypt(signed, tmp_path / "out"))[0] == "ok"
    assert snapshot(copy) != before, "gpg wrote in the copy (its trustdb)"
    assert snapshot(pgp_identity.home) == {**real, **{
        str(copy.relative_to(pgp_identity.home) / name): digest
        for name, digest in snapshot(copy).items()}}, "and nothing of the real home"
    agents = agents_serving(copy)
    assert agents, "the copy has an agent of its own"
    for pid in agents:
        assert b"marker-Qz81" not in Path(f"/proc/{pid}/environ").read_bytes()
    homes.discard_home(gpg.binary, copy)
    assert not copy.exists() and agents_serving(copy) == []
    assert snapshot(pgp_identity.home) == real


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_a_closed_pool_leaves_no_copy_no_agent_and_no_private_folder(
    pgp_identity: PgpIdentity, tmp_path: Path,
) -> None:
    # Line of defence: DecryptionPool.close (private folders removed, copies discarded with
    # their agents); homes.remove_stale_agent_homes for the copy of a run that was killed.
    stale = pgp_identity.home / f"{homes.AGENT_HOME_PREFIX}999999999-1"
    stale.mkdir(mode=0o700)
    (stale / "pubring.kbx").write_bytes(b"left by a killed run")
    files = write_all(tmp_path / "in", {f"r{index}": pgp_identity.encrypt(b"<r/>" * index)
                                        for index in range(1, 13)})
    gpg = Gpg(binary="gpg", home=pgp_identity.home, passphrase=None)
    out = tmp_path / "out"
    with DecryptionPool(gpg, workers=2, batch_files=3) as pool:
        results = pooled(pool, files, out)
        assert pool.stats.homes == 2
        copies = [path for path in pgp_identity.home.iterdir()
                  if path.name.startswith(homes.AGENT_HOME_PREFIX)]
        assert len(copies) == 1 and copies[0] != stale, "the stale copy is gone"
        assert [path for path in out.iterdir() if path.is_dir()], "the private folder, for now"
    assert all(result[0] == "ok" for result in results.values())
    assert leftovers(pgp_identity.home) == []
    assert agents_serving(copies[0]) == []
    assert leftovers(out) == sorted(f".rs-{name}.tmp" for name in files)


def test_ciphertexts_on_another_file_system_are_read_through_a_link_of_ours(
    pgp_identity: PgpIdentity, tmp_path: Path,
) -> None:
    # Line of defence: batch._link falls back to a symbolic link (to the ciphertext's absolute
    # path) where a hard link cannot cross file systems.
    with tiny_filesystem(tmp_path / "elsewhere", "4m") as elsewhere:
        files = write_all(elsewhere, {f"r{index}": pgp_identity.encrypt(b"<r/>" * index)
                                      for index in range(1, 5)})
        gpg = Gpg(binary="gpg", home=pgp_identity.home, passphrase=None)
        expected = lone(gpg, files, tmp_path / "lone")
        with DecryptionPool(gpg, workers=1) as pool:
            assert pooled(pool, files, tmp_path / "out") == expected
            assert pool.stats.alone == 0


def test_without_batches_the_pool_decrypts_each_file_alone(
    pgp_identity: PgpIdentity, other_pgp_identity: PgpIdentity, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Line of defence: the fallback where hard links, umask and pread are not to be had
    # (Windows): one worker, Gpg.decrypt for each file.
    monkeypatch.setattr(pool_module, "IS_POSIX", False)
    files = write_all(tmp_path / "in", mixed_messages(pgp_identity, other_pgp_identity, tmp_path))
    gpg = Gpg(binary="gpg", home=pgp_identity.home, passphrase=None)
    expected = lone(gpg, files, tmp_path / "lone")
    with DecryptionPool(gpg, workers=4) as pool:
        assert pool.workers == 1
        assert pooled(pool, files, tmp_path / "out") == expected
        assert pool.stats.runs == 0 and pool.stats.alone == len(files)


def test_a_private_folder_left_by_a_killed_run_is_removed_with_the_stale_temps(
    tmp_path: Path,
) -> None:
    # Line of defence: fsutil.remove_stale_temps removes reportsync's private folders (.rs-*.tmp)
    # with their contents; a symlink of that name goes itself, never what it points to.
    folder = tmp_path / "statements"
    folder.mkdir()
    private = fsutil.private_temp_folder(folder)
    assert private.parent == folder and private.name.endswith(".tmp")
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    (private / "p0000001").write_bytes(b"half a plaintext")
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "report.xml").write_bytes(b"<keep/>")
    os.symlink(kept, folder / ".rs-link.tmp")
    (folder / "report.xml").write_bytes(b"<archived/>")
    removed = fsutil.remove_stale_temps(folder, "tmp")
    assert sorted(removed) == sorted([private.name, ".rs-link.tmp"])
    assert sorted(entry.name for entry in folder.iterdir()) == ["report.xml"]
    assert (kept / "report.xml").read_bytes() == b"<keep/>"


def test_a_copy_of_the_home_where_gpg_fails_at_once_costs_no_file(
    pgp_identity: PgpIdentity, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Line of defence: pool._decrypt: a run that began no file (gpg failed at its start) sends
    # its files to Gpg.decrypt with the real home, and a worker whose copy so fails retires;
    # a copy where gpg cannot even start is never used (pool._lane).
    lane_init = pool_module._Lane.__init__

    def copy_that_breaks(lane: Any, gpg: Gpg, copy: Path | None) -> None:
        lane_init(lane, gpg, copy)
        if copy is not None:  # after python-gnupg's first look: gpg now exits at once there
            (copy / "gpg.conf").write_text("compliance nonsense\n")

    monkeypatch.setattr(pool_module._Lane, "__init__", copy_that_breaks)
    files = write_all(tmp_path / "in", {f"r{index}": pgp_identity.encrypt(b"<r/>" * index)
                                        for index in range(1, 21)})
    gpg = Gpg(binary="gpg", home=pgp_identity.home, passphrase=None)
    expected = lone(gpg, files, tmp_path / "lone")
    with DecryptionPool(gpg, workers=2, batch_files=2) as pool:
        assert pooled(pool, files, tmp_path / "out") == expected
        stats = pool.stats
    assert stats.homes == 2 and 1 <= stats.alone <= 2, stats
    assert "decrypting with one gpg-agent fewer" in caplog.text
    assert leftovers(pgp_identity.home) == []

    copy_home = homes.copy_home

    def copy_without_gpg(home: Path, target: Path) -> None:
        copy_home(home, target)
        (target / "gpg.conf").write_text("compliance nonsense\n")

    monkeypatch.setattr(pool_module._Lane, "__init__", lane_init)
    monkeypatch.setattr(homes, "copy_home", copy_without_gpg)
    with DecryptionPool(gpg, workers=2, batch_files=2) as pool:
        assert pooled(pool, files, tmp_path / "out2") == expected
        assert pool.stats.homes == 1 and pool.stats.alone == 0
    assert leftovers(pgp_identity.home) == []
