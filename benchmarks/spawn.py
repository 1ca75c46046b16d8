"""Run one command, timed, and report its wall-clock time and peak RSS from ``os.wait4``.

    python -m benchmarks.spawn RESULT_JSON TIMEOUT_SECONDS -- COMMAND [ARG ...]

Every timed command of the runner, reportsync's and the standard tools' alike, goes through this
small process: the clock runs from just before the spawn to ``wait4`` returning, and
``ru_maxrss`` is the peak resident set of the command and of the children it waited for (gpg:
the maximum of the processes, not their sum; daemons such as gpg-agent are not counted).

Why a process of its own: Linux carries the high-water mark of the address space that ``exec``
replaces into the new program's ``ru_maxrss``, so a command spawned straight from the runner (a
large Python process) would report at least the runner's peak. Spawned from here, the floor is
this small interpreter's (about 10 MiB).

The command runs in a process group of its own; on the timeout, SIGTERM or SIGINT the whole group
is killed. Standard input, output and error are this process's. The result file gets
``{"seconds", "maxrss_kib", "returncode", "timed_out", "user_s", "sys_s"}`` (CPU seconds of
the command and its waited-for children); this process exits 0 when it could run
the command at all (the command's own exit code is in the file).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: python -m benchmarks.spawn RESULT_JSON TIMEOUT -- COMMAND [ARG ...]",
              file=sys.stderr)
        return 2
    result_path, timeout, command = Path(argv[0]), float(argv[1]), argv[3:]
    timed_out = False
    started = time.perf_counter()
    pid = os.posix_spawnp(command[0], command, dict(os.environ), setpgroup=0)

    def kill_group(signum: int, _frame: FrameType | None) -> None:
        nonlocal timed_out
        timed_out = timed_out or signum == signal.SIGALRM
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    for signum in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, kill_group)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    while True:
        try:
            _pid, status, usage = os.wait4(pid, 0)
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries wait4 itself
            continue
    seconds = time.perf_counter() - started
    signal.setitimer(signal.ITIMER_REAL, 0)
    # ru_maxrss is in KiB on Linux, in bytes on macOS
    maxrss_kib = usage.ru_maxrss // 1024 if sys.platform == "darwin" else usage.ru_maxrss
    result = {"seconds": seconds, "maxrss_kib": int(maxrss_kib),
              "returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out,
              "user_s": usage.ru_utime, "sys_s": usage.ru_stime}
    result_path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
