# Shared set-up for scripts/demo and scripts/test: system packages, a virtualenv, the package.
# Sourced, not run. Installs only what is missing; says what it does.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPORTSYNC_VENV:-$REPO_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

need_system_packages() {
    local missing=()
    command -v gpg >/dev/null 2>&1 || missing+=(gnupg)
    [ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1 || missing+=(openssh-server)
    command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
    # the benchmarks' FTP peers and standard tools (tests skip the vsftpd peer without it)
    [ -x /usr/sbin/vsftpd ] || command -v vsftpd >/dev/null 2>&1 || missing+=(vsftpd)
    command -v lftp >/dev/null 2>&1 || missing+=(lftp)
    if [ ${#missing[@]} -eq 0 ]; then return 0; fi
    if command -v apt-get >/dev/null 2>&1; then
        local sudo=""
        if [ "$(id -u)" != 0 ]; then
            if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
                echo "missing: ${missing[*]} (install them; no root or sudo here)" >&2; return 1
            fi
        fi
        echo "installing: ${missing[*]}"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    elif command -v brew >/dev/null 2>&1; then
        [[ " ${missing[*]} " == *" gnupg "* ]] && brew install gnupg
        [[ " ${missing[*]} " == *" lftp "* ]] && brew install lftp
        echo "note: macOS ships sshd at /usr/sbin/sshd; missing: ${missing[*]}" >&2
    else
        echo "missing: ${missing[*]}; install them with your package manager" >&2
        return 1
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
