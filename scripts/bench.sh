#!/usr/bin/env bash
# The end-to-end benchmark (issue 13; docs/performance.md): installs what scripts/test installs
# (gpg, sshd, vsftpd, lftp, the virtualenv), then runs `python -m benchmarks` with the arguments
# given (--only ROWS, --repeat N, --smoke, --profile N, ...). A full run took 85 minutes on a
# loaded 2-core machine (docs/performance.md).
# CI runs only `--smoke`, through tests/test_benchmarks.py. Standard tools still missing (sftp,
# lftp, curl) are installed with apt-get when root, otherwise their sides are reported as skipped.
source "$(dirname "$0")/_bootstrap.sh"
need_system_packages
make_venv
cd "$REPO_ROOT"
exec "$VENV/bin/python" -m benchmarks "$@"
