# Shared set-up for scripts/demo and scripts/test: system packages, a virtualenv, the package.
# Sourced, not run. Installs only what is missing; says what it does.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPORTSYNC_VENV:-$REPO_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

# PostgreSQL's initdb/pg_ctl/postgres, where tests/servers/postgres.py looks for them (Debian keeps
# them out of PATH, in /usr/lib/postgresql/<version>/bin).
have_postgres_server() {
    local dir
    dir="$(pg_config --bindir 2>/dev/null || true)"
    for dir in "$dir" /usr/lib/postgresql/*/bin "$(dirname "$(command -v initdb 2>/dev/null || echo /x/y)")"; do
        [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ] && return 0
    done
    return 1
}

need_system_packages() {
    local missing=() optional=()
    command -v gpg >/dev/null 2>&1 || missing+=(gnupg)
    [ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1 || missing+=(openssh-server)
    command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
    have_postgres_server || missing+=(postgresql)
    # Wanted, not required: the vsftpd peer test and the benchmarks' smoke run use them (and say
    # so when they are absent); CI images get them installed here.
    [ -x /usr/sbin/vsftpd ] || command -v vsftpd >/dev/null 2>&1 || optional+=(vsftpd)
    command -v lftp >/dev/null 2>&1 || optional+=(lftp)
    if [ ${#missing[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ]; then return 0; fi
    if command -v apt-get >/dev/null 2>&1; then
        local sudo=""
        if [ "$(id -u)" != 0 ]; then
            if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
                if [ ${#optional[@]} -gt 0 ]; then
                    echo "note: not installed (no root or sudo here): ${optional[*]:-}" >&2
                fi
                if [ ${#missing[@]} -eq 0 ]; then return 0; fi
                echo "missing: ${missing[*]:-} (install them; no root or sudo here)" >&2; return 1
            fi
        fi
        echo "installing: ${missing[*]:-} ${optional[*]:-}"
        # Debian starts a daemon on install (vsftpd would listen on port 21 of every
        # interface); without a policy of the machine's own, forbid that for this install.
        local policy=/usr/sbin/policy-rc.d made_policy=""
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
            $sudo chmod 755 "$policy"
            made_policy=1
        fi
        local status=0
        { $sudo apt-get update -qq &&
          DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
            ${missing[@]+"${missing[@]}"} ${optional[@]+"${optional[@]}"} >/dev/null; } || status=$?
        if [ -n "$made_policy" ]; then $sudo rm -f "$policy"; fi
        return $status
    elif command -v brew >/dev/null 2>&1; then
        [[ " ${missing[*]:-} " == *" gnupg "* ]] && brew install gnupg
        [[ " ${missing[*]:-} " == *" postgresql "* ]] && brew install postgresql
        [[ " ${optional[*]:-} " == *" lftp "* ]] && brew install lftp
        echo "note: macOS ships sshd at /usr/sbin/sshd; missing: ${missing[*]:-} ${optional[*]:-}" >&2
    else
        echo "missing: ${missing[*]:-} ${optional[*]:-}; install them with your package manager" >&2
        if [ ${#missing[@]} -gt 0 ]; then return 1; fi
    fi
}

make_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating virtualenv $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    # (grep drops pip notices about index locations configured on some machines)
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$REPO_ROOT[dev]" \
        2> >(grep -v "^WARNING: Location .file://" >&2)
}
