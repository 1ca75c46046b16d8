#!/usr/bin/env bash
# The benchmark runner (issue 8; docs/performance.md): installs what it needs like scripts/test,
# then `python -m benchmarks` with the arguments given (--quick, --reps N, --only KEYS, --profile N).
# Not part of the test suite or CI. Missing standard tools (sftp, lftp, curl) are installed with
# apt-get when root, otherwise reported as skipped in the table.
source "$(dirname "$0")/_bootstrap.sh"
need_system_packages
make_venv
cd "$REPO_ROOT"
exec "$VENV/bin/python" -m benchmarks "$@"
