"""Decryption speed of reportsync's pgp API against gpg itself, side by side, interleaved.

    python -m benchmarks.decrypt_pool [--count 2000] [--count-passphrase 200] [--reps 5]
                                      [--bits 2048 3072] [--passphrase no yes] [--big-mib 256]
                                      [--only small big] [--workers 2] [--batch 64] [--today]

- small: ``DecryptionPool`` over COUNT reports of ~20 KiB (each plaintext fsynced before its
  rename, renamed to its final name, one folder fsync at the end) against
  ``gpg --batch --yes --decrypt-files`` on the same files (no fsync at all);
- big: one BIG-MIB report through the pool (gpg writes our temp file, hashed and flushed behind
  it) against ``gpg -o FILE --decrypt`` followed by ``sync FILE``.

The ciphertexts are made like the end-to-end benchmark's (``--compress-algo none``) and stay in
the page cache; before each timed attempt the disk is synced, so no attempt pays for another's
writeback. The figure is each side's median; the ratio is gpg's median time over ours (> 1: we
are faster). Keys and data are kept under --root between invocations.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gnupg

from benchmarks.fixtures import report_text, write_random
from reportsync.config import Secret
from reportsync.fsutil import fsync_dir, place_file
from reportsync.pgp import DecryptionPool, Gpg

PASSPHRASE = "bench passphrase"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_home(root: Path, bits: int, passphrase: bool) -> tuple[Path, str]:
    home = root / f"h{bits}{'p' if passphrase else ''}"
    marker = home / "fingerprint"
    if marker.exists():
        return home, marker.read_text().strip()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True, mode=0o700)
    gpg = gnupg.GPG(gnupghome=str(home))
    key = gpg.gen_key(gpg.gen_key_input(
        name_real="reportsync bench", name_email="client@example.com", key_type="RSA",
        key_length=bits, expire_date=0, passphrase=PASSPHRASE if passphrase else None,
        no_protection=not passphrase))
    if not key.fingerprint:
        raise SystemExit(f"gpg could not generate an RSA {bits} key: {key.stderr}")
    marker.write_text(str(key.fingerprint))
    return home, str(key.fingerprint)


def encrypt(home: Path, fingerprint: str, paths: list[Path]) -> None:
    for start in range(0, len(paths), 500):
        subprocess.run(["gpg", "--homedir", str(home), "--batch", "--yes", "--trust-model",
                        "always", "--compress-algo", "none", "-r", fingerprint,
                        "--encrypt-files", *[str(path) for path in paths[start:start + 500]]],
                       check=True, capture_output=True)
    for path in paths:
        path.unlink()


def small_data(home: Path, fingerprint: str, count: int) -> Path:
    folder = home.parent / f"{home.name}-small-{count}"
    if len(list(folder.glob("*.gpg"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    rng = random.Random(8)
    paths = []
    for index in range(count):
        path = folder / f"r{index:05d}.xml"
        path.write_bytes(report_text(index, 20 * 1024, rng))
        paths.append(path)
    encrypt(home, fingerprint, paths)
    return folder


def big_data(home: Path, fingerprint: str, mib: int) -> Path:
    encrypted = home.parent / f"{home.name}-big-{mib}.bin.gpg"
    if not encrypted.exists():
        plain = encrypted.with_suffix("")
        write_random(plain, mib * 1024 * 1024)
        encrypt(home, fingerprint, [plain])
    return encrypted


def gpg_argv(home: Path, passphrase: bool, *args: str) -> list[str]:
    argv = ["gpg", "--homedir", str(home), "--batch", "--yes"]
    if passphrase:
        argv += ["--pinentry-mode", "loopback", "--passphrase-fd", "0"]
    return [*argv, *args]


def run_gpg(argv: list[str], passphrase: bool) -> None:
    subprocess.run(argv, input=(PASSPHRASE + "\n").encode() if passphrase else b"", check=True,
                   capture_output=True)


def pool_decrypt(gpg: Gpg, files: list[Path], out: Path, workers: int, batch: int) -> None:
    """What an executor does: hand every file in, place each plaintext as it comes (its bytes
    are durable already), one folder fsync for the names (docs/fetch.md, power cut)."""
    with DecryptionPool(gpg, workers, batch_files=batch) as pool:
        futures = [(pool.submit(path, out / f".rs-{index}.tmp"), path.stem)
                   for index, path in enumerate(files)]
        for future, name in futures:
            decrypted = future.result()
            place_file(decrypted.path, out, name, decrypted.sha256, sync_folder=False)
    fsync_dir(out)


def timed(attempt: Callable[[], None], reset: Callable[[], None]) -> float:
    reset()
    os.sync()
    started = time.monotonic()
    attempt()
    elapsed = time.monotonic() - started
    reset()
    return elapsed


def measure(sides: dict[str, tuple[Callable[[], None], Callable[[], None]]],
            reps: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:  # rotate the order
            attempt, reset = sides[name]
            times[name].append(timed(attempt, reset))
            log(f"  rep {rep + 1}: {name}: {times[name][-1]:.2f} s")
    return times


def report(title: str, times: dict[str, list[float]], baseline: str) -> None:
    base = statistics.median(times[baseline])
    print(f"{title}")
    for name, values in times.items():
        median = statistics.median(values)
        spread = ", ".join(f"{value:.2f}" for value in values)
        ratio = "" if name == baseline else f"  ratio {base / median:.2f}x"
        print(f"  {name:<34} median {median:6.2f} s  [{spread}]{ratio}")
    sys.stdout.flush()


def small_case(root: Path, bits: int, passphrase: bool, args: argparse.Namespace) -> None:
    home, fingerprint = make_home(root, bits, passphrase)
    source = small_data(home, fingerprint, args.count_passphrase if passphrase else args.count)
    files = sorted(source.glob("*.gpg"))
    gpg = Gpg(binary="gpg", home=home, passphrase=Secret(PASSPHRASE) if passphrase else None)
    work = root / "work"
    gpg_dir = work / "gpg"

    def gpg_reset() -> None:
        shutil.rmtree(gpg_dir, ignore_errors=True)
        gpg_dir.mkdir(parents=True)
        for path in files:
            os.link(path, gpg_dir / path.name)

    def gpg_side() -> None:
        run_gpg(gpg_argv(home, passphrase, "--decrypt-files",
                         *[str(gpg_dir / path.name) for path in files]), passphrase)

    def ours_reset() -> None:
        shutil.rmtree(work / "ours", ignore_errors=True)
        (work / "ours").mkdir(parents=True)

    sides: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
        "gpg --decrypt-files": (gpg_side, gpg_reset)}
    for workers in args.workers:
        for batch in args.batch:
            sides[f"DecryptionPool w={workers} b={batch}"] = (
                lambda w=workers, b=batch: pool_decrypt(gpg, files, work / "ours", w, b),
                ours_reset)
    run_gpg(gpg_argv(home, passphrase, "-o", "/dev/null", "--decrypt", str(files[0])),
            passphrase)  # the real home's agent is up (and has the passphrase) for both sides
    log(f"small: {len(files)} files, RSA {bits}, passphrase {'yes' if passphrase else 'no'}")
    times = measure(sides, args.reps)
    report(f"{len(files)} x 20 KiB, RSA {bits}, {'with' if passphrase else 'no'} passphrase",
           times, "gpg --decrypt-files")


def big_case(root: Path, bits: int, passphrase: bool, args: argparse.Namespace) -> None:
    home, fingerprint = make_home(root, bits, passphrase)
    encrypted = big_data(home, fingerprint, args.big_mib)
    gpg = Gpg(binary="gpg", home=home, passphrase=Secret(PASSPHRASE) if passphrase else None)
    work = root / "work"

    def reset() -> None:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)

    def gpg_side() -> None:
        run_gpg(gpg_argv(home, passphrase, "-o", str(work / "big.bin"), "--decrypt",
                         str(encrypted)), passphrase)
        subprocess.run(["sync", str(work / "big.bin")], check=True)

    def ours() -> None:
        pool_decrypt(gpg, [encrypted], work, 1, 1)

    def today() -> None:
        gpg.decrypt(encrypted, work / "big.bin")

    sides: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
        "gpg -o FILE && sync FILE": (gpg_side, reset),
        "DecryptionPool (gpg writes, hashed behind)": (ours, reset),
    }
    if args.today:
        sides["Gpg.decrypt (pipe, today)"] = (today, reset)
    log(f"big: {args.big_mib} MiB, RSA {bits}")
    times = measure(sides, args.reps)
    report(f"one {args.big_mib} MiB report, RSA {bits}", times, "gpg -o FILE && sync FILE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "rs-decbench")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--count-passphrase", type=int, default=200,
                        help="files with a passphrase-protected key: gpg-agent derives the key "
                        "again for every file (~0.4 s of CPU each here), so 2,000 take ~15 min")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--bits", type=int, nargs="+", default=[2048, 3072])
    parser.add_argument("--passphrase", nargs="+", choices=["no", "yes"], default=["no", "yes"])
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--batch", type=int, nargs="+", default=[64])
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--only", nargs="+", choices=["small", "big"], default=["small", "big"])
    parser.add_argument("--today", action="store_true", help="also time Gpg.decrypt (big)")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    try:
        if "small" in args.only:
            for bits in args.bits:
                for passphrase in args.passphrase:
                    small_case(args.root, bits, passphrase == "yes", args)
        if "big" in args.only:
            big_case(args.root, args.bits[0], False, args)
    finally:
        for home in args.root.glob("h*"):
            if home.is_dir():
                subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                               capture_output=True, check=False)
        print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
