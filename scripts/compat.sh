#!/usr/bin/env bash
# Prove the supported versions: run the README's test command under every Python from 3.10 to
# 3.13 that this machine has, with the newest dependencies each resolves, and once more with
# the lowest versions pyproject.toml declares (uv's --resolution lowest-direct) on the oldest
# of them. Each run gets a fresh virtualenv in a temporary directory; a summary follows.
#
#   scripts/compat.sh              every Python found, then the lowest versions
#   scripts/compat.sh PYTHON...    only these interpreters (paths or names), then the lowest
#   COMPAT_LOWEST=0 scripts/compat.sh ...   without the lowest-versions run
#
# Pythons are looked for as python3.X on PATH and under pyenv's versions directory. uv is
# taken from PATH, or installed into the temporary directory. Extra pytest arguments can be
# given in PYTEST_ARGS. Exits non-zero if any run fails or no Python is found.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
unset PYTHONPATH VIRTUAL_ENV  # the runs must test what they installed, nothing else

work=$(mktemp -d "${TMPDIR:-/tmp}/agent-datastore-compat.XXXXXX")
trap 'rm -rf "$work"' EXIT

find_python() {  # a python3.X of this machine that runs, or nothing
    local minor=$1 found="" candidate
    # pyenv's shims are on PATH for every version but run only the selected ones
    for candidate in "$(command -v "python$minor" 2>/dev/null)" \
        "${PYENV_ROOT:-$HOME/.pyenv}/versions/$minor".*/bin/python; do
        if [[ -x "$candidate" ]] && "$candidate" -c '' >/dev/null 2>&1; then
            found=$candidate
        fi
    done
    [[ -n "$found" ]] && echo "$found"
}

pythons=()
if [[ $# -gt 0 ]]; then
    pythons=("$@")
else
    for minor in 3.10 3.11 3.12 3.13; do
        found=$(find_python "$minor") && pythons+=("$found")
    done
fi
if [[ ${#pythons[@]} -eq 0 ]]; then
    echo "compat: no Python 3.10 to 3.13 found" >&2
    exit 1
fi

summary=()
failed=0
begun=$(date +%s)

# run NAME PYTHON INSTALLER: a fresh venv, the package with its test extra, then the suite
run() {
    local name=$1 python=$2 installer=$3 venv="$work/$1" log="$work/$1.log"
    local started result line version
    started=$(date +%s)
    echo "== $name: $python" >&2
    if ! "$python" -m venv "$venv" >"$log" 2>&1; then
        result="venv failed"
    elif ! $installer "$venv" >>"$log" 2>&1; then
        result="install failed"
    else
        version=$("$venv/bin/python" -c 'import platform; print(platform.python_version())')
        # the README's test command runs pytest from the checkout; -p no:cacheprovider keeps
        # the runs from writing into it
        # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words
        if (cd "$root" && "$venv/bin/python" -m pytest -p no:cacheprovider ${PYTEST_ARGS:-}) \
            >>"$log" 2>&1; then
            result="passed"
        else
            result="FAILED"
        fi
    fi
    line=$(grep -E '(passed|failed|errors?)\b.* in [0-9.]+s' "$log" | tail -1 | tr -d '=' \
        | sed 's/^ *//; s/ *$//')
    if [[ "$result" != "passed" ]]; then
        failed=1
        echo "-- last lines of $name's log:" >&2
        tail -n 40 "$log" >&2
    fi
    summary+=("$(printf '%-8s %-13s %-7s %5ss %s' "$result" "$name" "${version:-?}" \
        "$(($(date +%s) - started))" "${line:-}")")
    {
        echo "-- $name installed:"
        "$venv/bin/python" -m pip freeze 2>/dev/null \
            | grep -iE '^(pymongo|pyjwt|click|httpx|starlette|uvicorn|prometheus.client|mongomock.ng|hypothesis|mockupdb|pytest|pytest.markdown.docs|pytest.timeout|schemathesis|matplotlib|py.spy|mypy|ruff)=='
    } >&2
}

pip_install() {  # the README's install: pip, newest versions
    "$1/bin/pip" install -e "$root[test]"
}

uv=$(command -v uv 2>/dev/null || true)
uv_install() {  # the lowest version of each direct dependency that pyproject.toml allows
    if [[ -z "$uv" ]]; then
        "$1/bin/pip" install uv && uv="$1/bin/uv"
    fi
    "$uv" pip install --python "$1/bin/python" --resolution lowest-direct -e "$root[test]"
}

for python in "${pythons[@]}"; do
    minor=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
        || minor="unknown"
    run "py$minor" "$python" pip_install
done
if [[ "${COMPAT_LOWEST:-1}" != 0 ]]; then
    run "lowest-deps" "${pythons[0]}" uv_install
fi

echo
echo "compat summary ($(date -u '+%Y-%m-%d %H:%M UTC'), $(($(date +%s) - begun)) s in all):"
printf '  %s\n' "${summary[@]}"
exit "$failed"
