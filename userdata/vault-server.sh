#!/usr/bin/env bash
# Boot script of the Vault server on Amazon Linux 2023, rendered by `deployer up`.
# It holds no secret: the TLS key is read from Secrets Manager with the instance's role.
# Placeholders: {{vault_version}} {{region}} {{tls_secret_id}} {{public_ip}} {{private_ip}}
#               {{function_name}} {{prefix}}
set -euo pipefail
exec > >(tee -a /var/log/vault-bootstrap.log) 2>&1

readonly VAULT_VERSION="{{vault_version}}"
readonly REGION="{{region}}"
readonly TLS_SECRET_ID="{{tls_secret_id}}"
readonly PUBLIC_IP="{{public_ip}}"
readonly PRIVATE_IP="{{private_ip}}"
readonly FUNCTION_NAME="{{function_name}}"
readonly PREFIX="{{prefix}}"

# 1. Vault, pinned, from HashiCorp's signed package repository (creates the vault user and unit).
dnf install -y -q dnf-plugins-core
dnf config-manager --add-repo https://rpm.releases.hashicorp.com/AmazonLinux/hashicorp.repo
dnf install -y -q "vault-${VAULT_VERSION}"

# 2. TLS material from Secrets Manager, readable only by this instance's role.
install -d -o vault -g vault -m 0750 /opt/vault/tls /opt/vault/data /var/log/vault
umask 077
aws secretsmanager get-secret-value --region "${REGION}" --secret-id "${TLS_SECRET_ID}" \
  --query SecretString --output text > /opt/vault/tls/material.json
python3 - <<'PY'
import json, os
m = json.load(open("/opt/vault/tls/material.json"))
for name, key in (("vault.crt", "certificate"), ("ca.crt", "ca_certificate"), ("vault.key", "private_key")):
    with open(os.path.join("/opt/vault/tls", name), "w") as f:
        f.write(m[key])
os.remove("/opt/vault/tls/material.json")
PY
cat /opt/vault/tls/ca.crt >> /opt/vault/tls/vault.crt
chown vault:vault /opt/vault/tls/*
chmod 0640 /opt/vault/tls/vault.crt /opt/vault/tls/ca.crt
chmod 0600 /opt/vault/tls/vault.key

# 3. Configuration: integrated raft storage, TLS only, UI on.
cat > /etc/vault.d/vault.hcl <<HCL
ui            = true
disable_mlock = true
api_addr      = "https://${PUBLIC_IP}:8200"
cluster_addr  = "https://${PRIVATE_IP}:8201"

storage "raft" {
  path    = "/opt/vault/data"
  node_id = "vault-1"
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "${PRIVATE_IP}:8201"
  tls_cert_file   = "/opt/vault/tls/vault.crt"
  tls_key_file    = "/opt/vault/tls/vault.key"
  tls_min_version = "tls12"
}
HCL
chown root:vault /etc/vault.d/vault.hcl
chmod 0640 /etc/vault.d/vault.hcl

# 4. A service that restarts on failure and survives reboots. It starts sealed;
#    `deployer vault-init` initialises and unseals it, and turns the audit log on
#    (file /var/log/vault/audit.log, enabled through the API once a token exists).
install -d /etc/systemd/system/vault.service.d
cat > /etc/systemd/system/vault.service.d/restart.conf <<UNIT
[Service]
Restart=on-failure
RestartSec=5
UNIT
systemctl daemon-reload
systemctl enable --now vault
echo "vault ${VAULT_VERSION} started on https://${PUBLIC_IP}:8200 (sealed until deployer vault-init)"

# 5. The change watcher: the replicator function's own binary, run as `bootstrap watch`. It
#    follows the audit log that vault-init turns on and sends the paths that change (never a
#    value) to the function, which syncs them within seconds; the schedule stays the backstop.
#    Its binary comes from the function's code, which does not exist before `up` ends: the unit
#    tries again every 30 s until it does. Its role may invoke and read that one function only.
cat > /usr/local/bin/vault-replicator-fetch <<'FETCH'
#!/usr/bin/env bash
set -euo pipefail
url=$(aws lambda get-function --region "$1" --function-name "$2" --query Code.Location --output text)
tmp=$(mktemp -d)
trap 'rm -rf "${tmp}"' EXIT
curl -fsSL "${url}" -o "${tmp}/code.zip"
python3 -m zipfile -e "${tmp}/code.zip" "${tmp}"
install -m 0755 "${tmp}/bootstrap" /usr/local/bin/vault-replicator-watch
FETCH
chmod 0755 /usr/local/bin/vault-replicator-fetch
cat > /etc/systemd/system/vault-replicator-watch.service <<UNIT
[Unit]
Description=Vault change watcher: sends the changed paths to ${FUNCTION_NAME}
After=vault.service network-online.target
Wants=network-online.target

[Service]
User=vault
Group=vault
Environment=AWS_REGION=${REGION}
StateDirectory=vault-replicator-watch
ExecStartPre=+/usr/local/bin/vault-replicator-fetch ${REGION} ${FUNCTION_NAME}
ExecStart=/usr/local/bin/vault-replicator-watch watch --prefix ${PREFIX} --invoke-function ${FUNCTION_NAME} --audit-log /var/log/vault/audit.log
Restart=always
RestartSec=30
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now vault-replicator-watch
