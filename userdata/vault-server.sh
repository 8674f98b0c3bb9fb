#!/usr/bin/env bash
# Boot script of the Vault server on Amazon Linux 2023, rendered by `deployer up`.
# It holds no secret: the TLS key is read from Secrets Manager with the instance's role.
# Placeholders: {{vault_version}} {{region}} {{tls_secret_id}} {{public_ip}} {{private_ip}}, and
# the files beside this one in userdata/: {{fetch_script}} {{watch_unit}} {{audit_logrotate}}
# {{rotate_service}} {{rotate_timer}}
set -euo pipefail
exec > >(tee -a /var/log/vault-bootstrap.log) 2>&1

readonly VAULT_VERSION="{{vault_version}}"
readonly REGION="{{region}}"
readonly TLS_SECRET_ID="{{tls_secret_id}}"
readonly PUBLIC_IP="{{public_ip}}"
readonly PRIVATE_IP="{{private_ip}}"

# 1. Vault, pinned, from HashiCorp's signed package repository (creates the vault user and unit).
#    The repository's signing key is trusted by the fingerprint HashiCorp publishes
#    (https://www.hashicorp.com/trust/security), never on first use: rpm's database and the
#    repository's gpgkey hold that key alone, re-exported from what gpg checked.
readonly HASHICORP_KEY_FINGERPRINT="798AEC654E5C15428C8E42EEAA16FCBCA621E701"
readonly HASHICORP_KEY=/etc/pki/rpm-gpg/RPM-GPG-KEY-hashicorp

# trust_key FILE DEST FINGERPRINT: writes to DEST the key with that fingerprint, only when FILE
# holds exactly one primary key and it is that one (a second key beside it is refused too). What
# is written is the key as gpg imported it, exported again: public packets only, subkeys only
# with valid bindings, nothing else the file may carry.
trust_key() {
  local file=$1 dest=$2 want=$3 home got
  home=$(mktemp -d)
  got=$(GNUPGHOME="${home}" gpg --batch --with-colons --show-keys "${file}" 2>/dev/null \
    | awk -F: '$1 == "pub" { primary = 1; next } $1 == "fpr" && primary { print $10; primary = 0 }' \
    | paste -sd, -) || true
  if [[ "${got}" != "${want}" ]]; then
    rm -rf "${home}"
    echo "refused: the package signing key ${file} holds ${got:-no key}, not exactly ${want}" >&2
    return 1
  fi
  mkdir -p "$(dirname "${dest}")"
  if ! GNUPGHOME="${home}" gpg --batch --quiet --import "${file}" 2>/dev/null \
    || ! GNUPGHOME="${home}" gpg --batch --armor --export --export-options export-minimal \
      "${want}" >"${dest}.new" \
    || [[ ! -s "${dest}.new" ]]; then
    rm -rf "${home}" "${dest}.new"
    echo "refused: the package signing key ${want} could not be imported from ${file}" >&2
    return 1
  fi
  rm -rf "${home}"
  chmod 0644 "${dest}.new"
  mv "${dest}.new" "${dest}"
}

dnf install -y -q dnf-plugins-core
curl -fsS --proto '=https' https://rpm.releases.hashicorp.com/gpg -o /run/hashicorp.gpg
trust_key /run/hashicorp.gpg "${HASHICORP_KEY}" "${HASHICORP_KEY_FINGERPRINT}"
rm -f /run/hashicorp.gpg
rpm --import "${HASHICORP_KEY}"
dnf config-manager --add-repo https://rpm.releases.hashicorp.com/AmazonLinux/hashicorp.repo
sed -i -e "s|^gpgkey=.*|gpgkey=file://${HASHICORP_KEY}|" -e 's/^gpgcheck=.*/gpgcheck=1/' \
  /etc/yum.repos.d/hashicorp.repo
dnf install -y -q "vault-${VAULT_VERSION}"

# 2. TLS material from Secrets Manager, readable only by this instance's role. The audit log is
#    readable by the group vault-audit: the change watcher's only access to anything of
#    Vault's. Its directory is root's (logrotate, run as root, works in no directory another
#    user can write); Vault appends to the file made here, and to the one logrotate makes.
groupadd --system --force vault-audit
usermod -a -G vault-audit vault
install -d -o vault -g vault -m 0750 /opt/vault/tls /opt/vault/data
install -d -o root -g vault-audit -m 0750 /var/log/vault
install -o vault -g vault-audit -m 0640 /dev/null /var/log/vault/audit.log
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
#    (file /var/log/vault/audit.log, mode 0640, enabled through the API once a token exists).
install -d /etc/systemd/system/vault.service.d
cat > /etc/systemd/system/vault.service.d/restart.conf <<UNIT
[Service]
Restart=on-failure
RestartSec=5
UNIT
systemctl daemon-reload
systemctl enable --now vault
echo "vault ${VAULT_VERSION} started on https://${PUBLIC_IP}:8200 (sealed until deployer vault-init)"

# 5. The audit log, rotated by size before it can fill the disk (Vault refuses every request
#    when it cannot write its only audit device): checked every 5 minutes, Vault reopens the
#    file on reload (SIGHUP).
dnf install -y -q logrotate
install -d /var/lib/logrotate /usr/local/etc
cat > /usr/local/etc/vault-audit.logrotate <<'LOGROTATE'
{{audit_logrotate}}
LOGROTATE
cat > /etc/systemd/system/vault-audit-rotate.service <<'SERVICE'
{{rotate_service}}
SERVICE
cat > /etc/systemd/system/vault-audit-rotate.timer <<'TIMER'
{{rotate_timer}}
TIMER
chmod 0644 /usr/local/etc/vault-audit.logrotate

# 6. The change watcher (see its unit): the replicator's binary, fetched from the watcher's
#    function by vault-replicator-fetch and run only if its digest is the one `deployer up`
#    wrote; as its own user, which reads the audit log and nothing else of Vault's.
install -d -m 0755 /usr/local/libexec
cat > /usr/local/libexec/vault-replicator-fetch <<'FETCH'
{{fetch_script}}
FETCH
chmod 0755 /usr/local/libexec/vault-replicator-fetch
cat > /etc/systemd/system/vault-replicator-watch.service <<'UNIT'
{{watch_unit}}
UNIT
systemctl daemon-reload
systemctl enable --now vault-audit-rotate.timer vault-replicator-watch
