"""The runner's "API probe" (info) sides: reportsync's transport and pgp APIs without the CLI.

Each task runs as a process of its own, timed like every other command:
``python -m benchmarks.probe TASK 'JSON-KWARGS'``. Every task connects (or starts gpg) itself, so
its time includes the interpreter start and the login, like the standard tool it is compared
with; there is no ledger, no fsync and no hashing, which is what the CLI rows add on top.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reportsync.config import SourceConfig, parse_config
from reportsync.pgp import Gpg, plaintext_name
from reportsync.transports import open_transport


def source_config(table: dict[str, Any]) -> SourceConfig:
    """A SourceConfig from a ``[sources.NAME]`` table (download/output dirs are not used here)."""
    full = {"download_dir": "/nonexistent/d", "output_dir": "/nonexistent/o", "include": ["*"],
            **table}
    return parse_config({"sources": {"bench": full}}).sources["bench"]


def get_one(table: dict[str, Any], name: str, out: str) -> int:
    """Connect, download one file to ``out``, disconnect; the number of bytes written."""
    with open_transport(source_config(table)) as transport, open(out, "wb") as handle:
        return transport.download(name, handle)


def get_all(table: dict[str, Any], out_dir: str) -> int:
    """Connect, list, download every file one after the other on that connection; file count."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    with open_transport(source_config(table)) as transport:
        for remote in sorted(transport.list_files(), key=lambda item: item.name):
            with open(folder / remote.name, "wb") as handle:
                transport.download(remote.name, handle)
            count += 1
    return count


def list_only(table: dict[str, Any]) -> int:
    """Connect, list the folder, disconnect: the bare listing a no-op fetch cannot avoid."""
    with open_transport(source_config(table)) as transport:
        return len(transport.list_files())


def decrypt_one(home: str, encrypted: str, out: str) -> int:
    """reportsync's Gpg.decrypt of one file (its checks included); plaintext bytes."""
    gpg = Gpg(binary="gpg", home=Path(home), passphrase=None)
    return gpg.decrypt(Path(encrypted), Path(out)).size


def decrypt_all(home: str, in_dir: str, out_dir: str) -> int:
    """Gpg.decrypt of every ``*.gpg`` in ``in_dir`` into ``out_dir``, one after the other."""
    gpg = Gpg(binary="gpg", home=Path(home), passphrase=None)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for encrypted in sorted(Path(in_dir).glob("*.gpg")):
        gpg.decrypt(encrypted, folder / plaintext_name(encrypted.name))
        count += 1
    return count


TASKS: dict[str, Callable[..., int]] = {
    "get_one": get_one,
    "get_all": get_all,
    "list_only": list_only,
    "decrypt_one": decrypt_one,
    "decrypt_all": decrypt_all,
}


def run_task(task: str, kwargs: dict[str, Any]) -> int:
    return TASKS[task](**kwargs)


def probe_argv(task: str, kwargs: dict[str, Any]) -> list[str]:
    """The command line that runs ``task`` standalone (for the profiler)."""
    return [sys.executable, "-m", "benchmarks.probe", task, json.dumps(kwargs)]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in TASKS:
        print(f"usage: python -m benchmarks.probe {{{','.join(TASKS)}}} JSON-KWARGS",
              file=sys.stderr)
        return 2
    print(run_task(argv[0], json.loads(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
