#!/usr/bin/env bash
# Installs the change watcher's binary on the stack's Vault host: the code of the watcher's
# function, run only when its SHA-256 is the digest `deployer up` wrote when it uploaded it.
# The digest is a SecureString under the stack's key, which only the key's users can write (the
# instance role can only decrypt it, and no other key); whoever may update the function's code
# does not choose what runs here. Run by the vault-replicator-watch unit before the watcher, as
# the unit's own user, into the unit's own state directory: never as root, never elsewhere.
#
# Usage: vault-replicator-fetch REGION FUNCTION DIGEST_PARAMETER
# Reads STATE_DIRECTORY (set by systemd); leaves STATE_DIRECTORY/bootstrap, or exits non-zero
# and leaves nothing new to run.
set -euo pipefail

if [[ $# -ne 3 ]]; then
  echo "usage: vault-replicator-fetch REGION FUNCTION DIGEST_PARAMETER" >&2
  exit 64
fi
readonly REGION="$1" FUNCTION="$2" DIGEST_PARAMETER="$3"
readonly DIR="${STATE_DIRECTORY:?run from the vault-replicator-watch unit (StateDirectory=)}"
umask 077

refuse() {
  echo "vault-replicator-fetch: refused: $*; the watcher does not run this code" >&2
  exit 1
}

# 1. The digest `deployer up` wrote, only as a SecureString: a plain String anyone with
#    ssm:PutParameter could write, and one under another key does not decrypt here.
read -r type want < <(aws ssm get-parameter --region "${REGION}" --name "${DIGEST_PARAMETER}" \
  --with-decryption --query '[Parameter.Type, Parameter.Value]' --output text)
if [[ "${type}" != "SecureString" ]]; then
  refuse "${DIGEST_PARAMETER} is a ${type}, not a SecureString under the stack's key (run deployer up)"
fi
if [[ ! "${want}" =~ ^[0-9a-f]{64}$ ]]; then
  refuse "${DIGEST_PARAMETER} holds no SHA-256 (run deployer up)"
fi

# 2. The function's code, unless the zip kept from the last start is that one; checked before
#    anything in it is unpacked.
if ! echo "${want}  ${DIR}/code.zip" | sha256sum --check --status 2>/dev/null; then
  url=$(aws lambda get-function --region "${REGION}" --function-name "${FUNCTION}" \
    --query Code.Location --output text)
  rm -f "${DIR}/code.zip.new"
  curl --fail --silent --show-error --location --proto '=https' --max-time 300 \
    --output "${DIR}/code.zip.new" "${url}"
  got=$(sha256sum "${DIR}/code.zip.new" | cut -d' ' -f1)
  if [[ "${got}" != "${want}" ]]; then
    rm -f "${DIR}/code.zip.new"
    refuse "the code of ${FUNCTION} (sha256 ${got}) is not what deployer up uploaded (${want})"
  fi
  mv -f "${DIR}/code.zip.new" "${DIR}/code.zip"
fi

# 3. Its one file, `bootstrap`, from the checked zip, put in place at once.
python3 -I - "${DIR}/code.zip" "${DIR}/bootstrap.new" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("bootstrap"))
os.chmod(sys.argv[2], 0o700)
PY
mv -f "${DIR}/bootstrap.new" "${DIR}/bootstrap"
echo "vault-replicator-fetch: the watcher's code is the one deployer up uploaded (sha256 ${want})"
