//! The few Vault / OpenBao admin calls `vault-init` makes: init status, init, unseal, mounts,
//! policies, AppRole, audit, KV writes, token revocation. HTTPS with the stack's CA (verification
//! is never turned off). Network I/O; never logs a token, key or secret id.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use contract::KV_UPGRADING;
use contract::secret::SecretString;

#[derive(Debug, thiserror::Error)]
pub enum VaultAdminError {
    #[error("cannot reach Vault at {address} ({op}): {source}")]
    Unreachable {
        address: String,
        op: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("Vault answered {status} to {op}: {message}")]
    Status {
        op: &'static str,
        status: u16,
        message: String,
    },
    #[error("unexpected answer from Vault to {op}: {detail}")]
    Decode { op: &'static str, detail: String },
    #[error("Vault TLS settings: {0}")]
    Tls(String),
}

/// The file mode of the audit log: its group (vault-audit on the stack's host) reads it.
pub(crate) const AUDIT_MODE: &str = "0640";

/// What [`VaultAdmin::ensure_audit`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Audit {
    Enabled,
    On,
    /// On, writing its file with this mode: the change watcher cannot read it.
    OtherMode(String),
}

/// The unseal keys and root token of a fresh `init`. Shown or stored once, never logged.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct InitKeys {
    pub keys_base64: Vec<SecretString>,
    pub root_token: SecretString,
}

impl std::fmt::Debug for InitKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "InitKeys({} keys, root token: <redacted>)",
            self.keys_base64.len()
        )
    }
}

#[derive(Debug)]
pub(crate) struct VaultAdmin {
    http: reqwest::Client,
    pub address: String,
    token: Option<SecretString>,
    /// `X-Vault-Namespace` of every call but the server-wide ones ([`ROOT_ONLY`]).
    namespace: Option<String>,
}

/// Calls that concern the whole server, sent to the root namespace whatever the client's:
/// init, seal state, unseal, health, audit devices, the root token's revocation.
const ROOT_ONLY: &[&str] = &[
    "sys/init",
    "sys/seal-status",
    "sys/unseal",
    "sys/health",
    "sys/audit",
    "auth/token/revoke-self",
];

impl VaultAdmin {
    pub(crate) fn new(address: &str, ca_pem: Option<&str>) -> Result<Self, VaultAdminError> {
        // The client both programs use: no redirect is followed with the root token.
        let http = contract::vault_http::client(
            ca_pem,
            contract::vault_http::Timeouts {
                connect: Duration::from_secs(10),
                request: Duration::from_secs(60),
            },
            1,
        )
        .map_err(VaultAdminError::Tls)?;
        Ok(Self {
            http,
            address: address.trim_end_matches('/').to_owned(),
            token: None,
            namespace: None,
        })
    }

    /// Sends every call but the server-wide ones in `namespace` (none or empty: the root).
    pub(crate) fn in_namespace(mut self, namespace: Option<&str>) -> Self {
        self.namespace = contract::namespace(namespace);
        self
    }

    /// The same client and token, sending its calls in `namespace` instead.
    pub(crate) fn sibling(&self, namespace: Option<&str>) -> Self {
        Self {
            http: self.http.clone(),
            address: self.address.clone(),
            token: self.token.clone(),
            namespace: contract::namespace(namespace),
        }
    }

    /// Creates the client's namespace, level by level, where missing. Whether it did.
    pub(crate) async fn ensure_namespace(&self, path: &str) -> Result<bool, VaultAdminError> {
        let mut parent: Option<String> = None;
        let mut made = false;
        for level in path.trim_matches('/').split('/') {
            let at = |p: &Option<String>| Self {
                http: self.http.clone(),
                address: self.address.clone(),
                token: self.token.clone(),
                namespace: p.clone(),
            };
            let client = at(&parent);
            let exists = client
                .call(
                    Method::GET,
                    &format!("sys/namespaces/{level}"),
                    None,
                    "read namespace",
                )
                .await?
                .is_some();
            if !exists {
                client
                    .call(
                        Method::POST,
                        &format!("sys/namespaces/{level}"),
                        Some(json!({})),
                        "create namespace",
                    )
                    .await?;
                made = true;
            }
            parent = Some(match parent {
                Some(p) => format!("{p}/{level}"),
                None => level.to_owned(),
            });
        }
        Ok(made)
    }

    pub(crate) fn set_token(&mut self, token: SecretString) {
        self.token = Some(token);
    }

    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// One call; `Ok(None)` for 404 / 204.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        op: &'static str,
    ) -> Result<Option<Value>, VaultAdminError> {
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.address))
            .header("X-Vault-Request", "true");
        if let Some(t) = &self.token {
            req = req.header("X-Vault-Token", t.expose());
        }
        if let Some(ns) = &self.namespace
            && !ROOT_ONLY.iter().any(|p| path.starts_with(p))
        {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| VaultAdminError::Unreachable {
                address: self.address.clone(),
                op,
                source,
            })?;
        let status = resp.status();
        if let Some(detail) = contract::vault_http::redirect_problem(&resp) {
            return Err(VaultAdminError::Decode { op, detail });
        }
        if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        // A body cut short, or over the cap, is an error: never an empty answer (which would
        // read as "not initialised").
        let body = contract::vault_http::read_capped(resp, contract::vault_http::MAX_BODY)
            .await
            .map_err(|detail| VaultAdminError::Decode { op, detail })?;
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            let errors = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    v["errors"].as_array().map(|a| {
                        a.iter()
                            .filter_map(|e| e.as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                })
                .unwrap_or_default();
            return Err(VaultAdminError::Status {
                op,
                status: status.as_u16(),
                message: errors,
            });
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        // Never serde's own message: it can quote the input (a key, a token).
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| VaultAdminError::Decode {
                op,
                detail: contract::vault_http::json_problem(&e),
            })
    }

    pub(crate) async fn initialized(&self) -> Result<bool, VaultAdminError> {
        let v = self
            .call(Method::GET, "sys/init", None, "read init status")
            .await?
            .unwrap_or_default();
        Ok(v["initialized"].as_bool().unwrap_or(false))
    }

    pub(crate) async fn init(
        &self,
        shares: u8,
        threshold: u8,
    ) -> Result<InitKeys, VaultAdminError> {
        let v = self
            .call(
                Method::PUT,
                "sys/init",
                Some(json!({"secret_shares": shares, "secret_threshold": threshold})),
                "init",
            )
            .await?
            .unwrap_or_default();
        serde_json::from_value(v).map_err(|e| VaultAdminError::Decode {
            op: "init",
            detail: e.to_string(),
        })
    }

    /// (sealed, threshold, progress)
    pub(crate) async fn seal_status(&self) -> Result<(bool, u64), VaultAdminError> {
        let v = self
            .call(Method::GET, "sys/seal-status", None, "read seal status")
            .await?
            .unwrap_or_default();
        Ok((
            v["sealed"].as_bool().unwrap_or(true),
            v["t"].as_u64().unwrap_or(0),
        ))
    }

    /// Waits until Vault answers as the active node (raft elects itself a leader some moments
    /// after an unseal): polls `sys/health` every 200 ms, for `timeout` at most.
    pub(crate) async fn wait_active(&self, timeout: Duration) -> Result<(), VaultAdminError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let resp = self
                .http
                .get(format!("{}/v1/sys/health", self.address))
                .send()
                .await
                .map_err(|source| VaultAdminError::Unreachable {
                    address: self.address.clone(),
                    op: "read health",
                    source,
                })?;
            let status = resp.status().as_u16();
            if status == 200 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(VaultAdminError::Status {
                    op: "wait for the active node",
                    status,
                    message: "Vault did not become active in time (standby, sealed or still electing a leader)".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Submits one key; returns whether Vault is still sealed.
    pub(crate) async fn unseal(&self, key: &SecretString) -> Result<bool, VaultAdminError> {
        let v = self
            .call(
                Method::PUT,
                "sys/unseal",
                Some(json!({"key": key.expose()})),
                "unseal",
            )
            .await?
            .unwrap_or_default();
        Ok(v["sealed"].as_bool().unwrap_or(true))
    }

    /// The entry `entry` of a `sys/...` listing (newer servers nest it under `data`); `Null`
    /// when absent.
    async fn listed(
        &self,
        list_path: &str,
        entry: &str,
        op: &'static str,
    ) -> Result<Value, VaultAdminError> {
        let mut v = self
            .call(Method::GET, list_path, None, op)
            .await?
            .unwrap_or_default();
        let data = if v["data"].is_object() {
            v["data"].take()
        } else {
            v
        };
        Ok(data.get(entry).cloned().unwrap_or_default())
    }

    async fn has(
        &self,
        list_path: &str,
        entry: &str,
        op: &'static str,
    ) -> Result<bool, VaultAdminError> {
        Ok(!self.listed(list_path, entry, op).await?.is_null())
    }

    /// Enables KV v2 at `mount` unless something is mounted there; returns whether it did.
    /// Refuses a mount of another kind there (the replicator reads KV v2 only). Either way it
    /// returns once the mount serves requests: a new KV v2 mount upgrades itself first.
    pub(crate) async fn ensure_kv2(&self, mount: &str) -> Result<bool, VaultAdminError> {
        let existing = self
            .listed("sys/mounts", &format!("{mount}/"), "list mounts")
            .await?;
        let created = if existing.is_object() {
            let kind = existing["type"].as_str().unwrap_or("?");
            let version = existing["options"]["version"].as_str().unwrap_or("1");
            if kind != "kv" || version != "2" {
                return Err(VaultAdminError::Status {
                    op: "enable KV v2",
                    status: 400,
                    message: format!(
                        "{mount}/ is already mounted as {kind} (version {version}); the replicator reads KV v2 only: upgrade it (vault kv enable-versioning {mount}/) or choose another secrets_prefix"
                    ),
                });
            }
            false
        } else {
            self.call(
                Method::POST,
                &format!("sys/mounts/{mount}"),
                Some(json!({"type": "kv", "options": {"version": "2"}})),
                "enable KV v2",
            )
            .await?;
            true
        };
        self.wait_kv_ready(mount, Duration::from_secs(60)).await?;
        Ok(created)
    }

    /// Polls `<mount>/config` until it answers: a KV v2 mount answers 400 with
    /// [`KV_UPGRADING`] while it upgrades, for a moment after it is enabled.
    async fn wait_kv_ready(&self, mount: &str, timeout: Duration) -> Result<(), VaultAdminError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            match self
                .call(
                    Method::GET,
                    &format!("{mount}/config"),
                    None,
                    "wait for the KV v2 mount",
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(VaultAdminError::Status {
                    status: 400,
                    message,
                    ..
                }) if message.contains(KV_UPGRADING) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) async fn ensure_approle(&self) -> Result<bool, VaultAdminError> {
        if self
            .has("sys/auth", "approle/", "list auth methods")
            .await?
        {
            return Ok(false);
        }
        self.call(
            Method::POST,
            "sys/auth/approle",
            Some(json!({"type": "approle"})),
            "enable AppRole",
        )
        .await?;
        Ok(true)
    }

    /// Writes a policy; returns whether it changed.
    pub(crate) async fn ensure_policy(
        &self,
        name: &str,
        rules: &str,
    ) -> Result<bool, VaultAdminError> {
        let path = format!("sys/policies/acl/{name}");
        let current = self.call(Method::GET, &path, None, "read policy").await?;
        if current.as_ref().and_then(|v| v["data"]["policy"].as_str()) == Some(rules) {
            return Ok(false);
        }
        self.call(
            Method::PUT,
            &path,
            Some(json!({"policy": rules})),
            "write policy",
        )
        .await?;
        Ok(true)
    }

    /// Writes the AppRole role; returns whether it changed.
    pub(crate) async fn ensure_role(
        &self,
        role: &str,
        settings: Value,
    ) -> Result<bool, VaultAdminError> {
        let path = format!("auth/approle/role/{role}");
        let current = self
            .call(Method::GET, &path, None, "read AppRole role")
            .await?;
        if let Some(cur) = current {
            let same = settings
                .as_object()
                .is_some_and(|want| want.iter().all(|(k, v)| same_setting(&cur["data"][k], v)));
            if same {
                return Ok(false);
            }
        }
        self.call(Method::POST, &path, Some(settings), "write AppRole role")
            .await?;
        Ok(true)
    }

    /// The secret id lifetime (seconds, 0: never expires) of the AppRole role; `None` when the
    /// role does not exist yet.
    pub(crate) async fn role_secret_id_ttl(
        &self,
        role: &str,
    ) -> Result<Option<u64>, VaultAdminError> {
        let current = self
            .call(
                Method::GET,
                &format!("auth/approle/role/{role}"),
                None,
                "read AppRole role",
            )
            .await?;
        Ok(current.map(|v| v["data"]["secret_id_ttl"].as_u64().unwrap_or(0)))
    }

    pub(crate) async fn role_id(&self, role: &str) -> Result<String, VaultAdminError> {
        let v = self
            .call(
                Method::GET,
                &format!("auth/approle/role/{role}/role-id"),
                None,
                "read role id",
            )
            .await?
            .unwrap_or_default();
        v["data"]["role_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or(VaultAdminError::Decode {
                op: "read role id",
                detail: "no role_id".into(),
            })
    }

    /// A new secret id and its accessor (the accessor is not secret), carrying `metadata`
    /// (who made it, for whom: not secret).
    pub(crate) async fn new_secret_id_with_accessor(
        &self,
        role: &str,
        metadata: &std::collections::BTreeMap<String, String>,
    ) -> Result<(SecretString, String), VaultAdminError> {
        let v = self
            .call(
                Method::POST,
                &format!("auth/approle/role/{role}/secret-id"),
                Some(json!({"metadata": serde_json::to_string(metadata).unwrap_or_default()})),
                "create secret id",
            )
            .await?
            .unwrap_or_default();
        let bad = || VaultAdminError::Decode {
            op: "create secret id",
            detail: "no secret_id".into(),
        };
        let id = v["data"]["secret_id"]
            .as_str()
            .map(SecretString::from)
            .ok_or_else(bad)?;
        let accessor = v["data"]["secret_id_accessor"]
            .as_str()
            .ok_or_else(bad)?
            .to_owned();
        Ok((id, accessor))
    }

    pub(crate) async fn secret_id_accessor_exists(
        &self,
        role: &str,
        accessor: &str,
    ) -> Result<bool, VaultAdminError> {
        Ok(self.secret_id_metadata(role, accessor).await?.is_some())
    }

    /// The metadata of the secret id behind `accessor`; `None` when it is gone.
    pub(crate) async fn secret_id_metadata(
        &self,
        role: &str,
        accessor: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, VaultAdminError> {
        let found = match self
            .call(
                Method::POST,
                &format!("auth/approle/role/{role}/secret-id-accessor/lookup"),
                Some(json!({"secret_id_accessor": accessor})),
                "look up secret id accessor",
            )
            .await
        {
            Ok(v) => v,
            Err(VaultAdminError::Status {
                status: 400 | 404 | 500,
                ..
            }) => None,
            Err(e) => return Err(e),
        };
        Ok(found.filter(|v| v["data"].is_object()).map(|v| {
            v["data"]["metadata"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default()
        }))
    }

    /// The accessors of every secret id `role` has (none: an empty list).
    pub(crate) async fn secret_id_accessors(
        &self,
        role: &str,
    ) -> Result<Vec<String>, VaultAdminError> {
        let v = self
            .call(
                Method::GET,
                &format!("auth/approle/role/{role}/secret-id?list=true"),
                None,
                "list secret id accessors",
            )
            .await?
            .unwrap_or_default();
        Ok(v["data"]["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect())
    }

    /// Destroys the secret id behind `accessor`; `false` when it was already gone.
    pub(crate) async fn destroy_secret_id_accessor(
        &self,
        role: &str,
        accessor: &str,
    ) -> Result<bool, VaultAdminError> {
        if !self.secret_id_accessor_exists(role, accessor).await? {
            return Ok(false);
        }
        self.call(
            Method::POST,
            &format!("auth/approle/role/{role}/secret-id-accessor/destroy"),
            Some(json!({"secret_id_accessor": accessor})),
            "destroy secret id",
        )
        .await?;
        Ok(true)
    }

    /// Revokes the token behind `accessor`.
    pub(crate) async fn revoke_token_accessor(
        &self,
        accessor: &str,
    ) -> Result<(), VaultAdminError> {
        self.call(
            Method::POST,
            "auth/token/revoke-accessor",
            Some(json!({"accessor": accessor})),
            "revoke token",
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn token_accessor_exists(
        &self,
        accessor: &str,
    ) -> Result<bool, VaultAdminError> {
        match self
            .call(
                Method::POST,
                "auth/token/lookup-accessor",
                Some(json!({"accessor": accessor})),
                "look up token accessor",
            )
            .await
        {
            Ok(v) => Ok(v.is_some()),
            Err(VaultAdminError::Status {
                status: 400 | 403 | 404,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A periodic token with only `policy`, for the token mode, and its accessor.
    pub(crate) async fn scoped_token_with_accessor(
        &self,
        policy: &str,
        period: &str,
    ) -> Result<(SecretString, String), VaultAdminError> {
        let v = self
            .call(
                Method::POST,
                "auth/token/create-orphan",
                Some(json!({"policies": [policy], "period": period, "no_default_policy": true, "display_name": "replicator"})),
                "create token",
            )
            .await?
            .unwrap_or_default();
        let bad = || VaultAdminError::Decode {
            op: "create token",
            detail: "no client_token".into(),
        };
        let token = v["auth"]["client_token"]
            .as_str()
            .map(SecretString::from)
            .ok_or_else(bad)?;
        let accessor = v["auth"]["accessor"].as_str().ok_or_else(bad)?.to_owned();
        Ok((token, accessor))
    }

    /// Turns the file audit device on, its file readable by its group ([`AUDIT_MODE`]: the
    /// change watcher on the stack's Vault host reads it as a member of that group).
    /// `Ok(Audit::On)` when it was already so; a device at `file/` with another file mode is
    /// left as it is (turning audit off and on again is the operator's decision) and said.
    pub(crate) async fn ensure_audit(&self, file_path: &str) -> Result<Audit, VaultAdminError> {
        let existing = self
            .listed("sys/audit", "file/", "list audit devices")
            .await?;
        if existing.is_object() {
            let mode = existing["options"]["mode"].as_str().unwrap_or("0600");
            return Ok(if mode == AUDIT_MODE {
                Audit::On
            } else {
                Audit::OtherMode(mode.to_owned())
            });
        }
        self.call(
            Method::PUT,
            "sys/audit/file",
            Some(json!({"type": "file", "options": {"file_path": file_path, "mode": AUDIT_MODE}})),
            "enable audit",
        )
        .await?;
        Ok(Audit::Enabled)
    }

    /// Writes a KV v2 secret unless it exists; returns whether it wrote.
    pub(crate) async fn kv_put_once(
        &self,
        mount: &str,
        path: &str,
        data: Value,
    ) -> Result<bool, VaultAdminError> {
        if self
            .call(
                Method::GET,
                &format!("{mount}/metadata/{path}"),
                None,
                "read metadata",
            )
            .await?
            .is_some()
        {
            return Ok(false);
        }
        self.call(
            Method::POST,
            &format!("{mount}/data/{path}"),
            Some(json!({"data": data})),
            "write sample secret",
        )
        .await?;
        Ok(true)
    }

    pub(crate) async fn revoke_self(&self) -> Result<(), VaultAdminError> {
        self.call(
            Method::POST,
            "auth/token/revoke-self",
            None,
            "revoke the root token",
        )
        .await?;
        Ok(())
    }
}

/// Vault echoes durations as seconds and lists as arrays.
fn same_setting(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Number(n), Value::String(s)) => {
            parse_duration(s).is_some_and(|d| n.as_u64() == Some(d))
        }
        // An unset list reads back as null (or not at all).
        (Value::Null, Value::Array(b)) => b.is_empty(),
        (Value::Array(a), Value::Array(b)) => {
            // CIDRs compared by value: Vault prints a one-address CIDR as the bare address
            // (`203.0.113.7/32` reads back as `203.0.113.7`) and IPv6 in canonical form.
            let one = |v: &Value| match v.as_str() {
                Some(s) => {
                    let (ip, len) = s.split_once('/').unwrap_or((s, ""));
                    match ip.parse::<std::net::IpAddr>() {
                        Ok(ip) => {
                            let full = if ip.is_ipv4() { "32" } else { "128" };
                            format!("{ip}/{}", if len.is_empty() { full } else { len })
                        }
                        Err(_) => s.to_owned(),
                    }
                }
                None => v.to_string(),
            };
            let mut a: Vec<String> = a.iter().map(one).collect();
            let mut b: Vec<String> = b.iter().map(one).collect();
            a.sort();
            b.sort();
            a == b
        }
        _ => have == want,
    }
}

/// Seconds in `15m`, `1h`, `30s`, `0`.
pub(crate) fn parse_duration(s: &str) -> Option<u64> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-answer HTTP server on loopback: its URL, and what it received once it answered.
    async fn answering(answer: String) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let accepted = tokio::time::timeout(Duration::from_secs(2), listener.accept()).await;
            let Ok(Ok((mut conn, _))) = accepted else {
                return String::new();
            };
            let mut buf = vec![0; 8192];
            let n = conn.read(&mut buf).await.unwrap_or(0);
            let _ = conn.write_all(answer.as_bytes()).await;
            let _ = conn.shutdown().await;
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (url, served)
    }

    /// Issue: `vault-init --token` followed a redirect to another host with the root token.
    #[tokio::test]
    async fn the_root_token_never_follows_a_redirect_and_a_cut_answer_is_an_error() {
        let (elsewhere, seen) =
            answering("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".into()).await;
        let (vault, _) = answering(format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere}/v1/sys/init\r\ncontent-length: 0\r\n\r\n"
        ))
        .await;
        let mut admin = VaultAdmin::new(&vault, None).unwrap();
        admin.set_token(SecretString::from("root-token-0000".to_owned()));
        let err = admin.initialized().await.unwrap_err().to_string();
        assert!(err.contains("never followed"), "{err}");
        assert_eq!(seen.await.unwrap(), "", "nothing reached the other host");
        // An answer cut short reads as an error, not as "not initialised".
        let (vault, _) =
            answering("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"initialized\": tr".into())
                .await;
        let err = VaultAdmin::new(&vault, None)
            .unwrap()
            .initialized()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("cut short"), "{err}");
    }

    #[test]
    fn settings_compare_as_vault_echoes_them() {
        assert!(same_setting(&json!(900), &json!("15m")));
        assert!(!same_setting(&json!(900), &json!("1h")));
        assert!(same_setting(&json!(["b", "a"]), &json!(["a", "b"])));
        assert!(same_setting(&json!(null), &json!([])));
        assert!(same_setting(
            &json!(["203.0.113.7", "10.0.0.0/8"]),
            &json!(["10.0.0.0/8", "203.0.113.7/32"])
        ));
        assert!(same_setting(
            &json!(["2001:db8::1"]),
            &json!(["2001:db8::1/128"])
        ));
        assert!(same_setting(
            &json!(["2001:db8::/48"]),
            &json!(["2001:DB8:0::/48"])
        ));
        assert!(!same_setting(
            &json!(["203.0.113.7"]),
            &json!(["203.0.113.0/24"])
        ));
        assert_eq!(parse_duration("2h"), Some(7200));
        assert_eq!(parse_duration("x"), None);
        let k = InitKeys {
            keys_base64: vec!["k1".into()],
            root_token: "s.root".into(),
        };
        assert!(!format!("{k:?}").contains("s.root"));
    }
}
