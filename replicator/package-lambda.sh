#!/usr/bin/env bash
# Builds the Lambda artifact: a static x86_64 musl `bootstrap` (runtime provided.al2023), zipped.
# Usage: replicator/package-lambda.sh [OUT.zip]   (default: target/lambda/replicator.zip)
# Needs: the Rust target x86_64-unknown-linux-musl and musl-tools (apt) for ring's C parts.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
out=${1:-target/lambda/replicator.zip}
if ! command -v musl-gcc >/dev/null; then
  echo "musl-gcc is missing: apt-get install -y musl-tools" >&2
  exit 1
fi
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  echo "the musl target is missing: rustup target add x86_64-unknown-linux-musl" >&2
  exit 1
fi
CC_x86_64_unknown_linux_musl=musl-gcc \
  cargo build -p replicator --bin bootstrap --no-default-features --profile lambda --target x86_64-unknown-linux-musl --locked
bin="$target_dir/x86_64-unknown-linux-musl/lambda/bootstrap"
mkdir -p "$(dirname "$out")"
rm -f "$out"
# The zip holds one executable file named `bootstrap` at its root, mode 0755.
python3 - "$bin" "$out" <<'PY'
import sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
info = zipfile.ZipInfo("bootstrap", date_time=(2020, 1, 1, 0, 0, 0))
info.external_attr = 0o100755 << 16
info.compress_type = zipfile.ZIP_DEFLATED
with open(src, "rb") as f, zipfile.ZipFile(dst, "w") as z:
    z.writestr(info, f.read(), compresslevel=9)
PY
echo "$out ($(stat -c %s "$out") bytes; bootstrap $(stat -c %s "$bin") bytes)"
