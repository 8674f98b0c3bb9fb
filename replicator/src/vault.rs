//! Vault / OpenBao HTTP client for what a sync needs: token or AppRole login (renewed before
//! expiry), KV v2 LIST, metadata reads, bulk `detailed-metadata` listing and exact-version data
//! reads. Does network I/O; never logs a token or a value.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::sync::Mutex;

use contract::KV_UPGRADING;
use contract::secret::SecretString;

/// Counts requests by kind, for the run report and the benchmark.
#[derive(Debug, Default)]
pub struct VaultCounters {
    pub logins: AtomicU64,
    pub lists: AtomicU64,
    pub detailed_lists: AtomicU64,
    pub metadata_reads: AtomicU64,
    pub value_reads: AtomicU64,
    /// Requests sent again after a transient answer (see [`VaultError::is_transient`]).
    pub retries: AtomicU64,
}

tokio::task_local! {
    /// The counters of the runs being polled, outermost first, when they asked for their own
    /// ([`counting`]).
    static RUN_COUNTS: Arc<[Arc<VaultCounters>]>;
}

/// Runs `f` with its own Vault request counters besides the client's: two runs under way at
/// once in one process each count only their own requests and value reads. A count within
/// another (a rule's within its run) counts in both.
pub async fn counting<F: std::future::Future>(counters: Arc<VaultCounters>, f: F) -> F::Output {
    let mut all = RUN_COUNTS
        .try_with(|outer| outer.to_vec())
        .unwrap_or_default();
    all.push(counters);
    RUN_COUNTS.scope(all.into(), f).await
}

impl VaultCounters {
    /// One more of `which`, here and in the run's own counters.
    fn add(&self, which: fn(&VaultCounters) -> &AtomicU64) {
        which(self).fetch_add(1, Ordering::Relaxed);
        let _ = RUN_COUNTS.try_with(|runs| {
            for run in runs.iter() {
                which(run).fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// The counts since the last `take`, and zero again: one process runs many syncs (a warm
    /// Lambda), each reporting its own.
    pub fn take(&self) -> BTreeMap<&'static str, u64> {
        let t = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        BTreeMap::from([
            ("login", t(&self.logins)),
            ("list", t(&self.lists)),
            ("list_detailed_metadata", t(&self.detailed_lists)),
            ("read_metadata", t(&self.metadata_reads)),
            ("read_value", t(&self.value_reads)),
            ("retry", t(&self.retries)),
        ])
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        BTreeMap::from([
            ("login", self.logins.load(Ordering::Relaxed)),
            ("list", self.lists.load(Ordering::Relaxed)),
            (
                "list_detailed_metadata",
                self.detailed_lists.load(Ordering::Relaxed),
            ),
            ("read_metadata", self.metadata_reads.load(Ordering::Relaxed)),
            ("read_value", self.value_reads.load(Ordering::Relaxed)),
            ("retry", self.retries.load(Ordering::Relaxed)),
        ])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot reach Vault at {address} ({op}): {source}")]
    Unreachable {
        address: String,
        op: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Vault denied {op}: permission denied (check the token or AppRole policy)")]
    PermissionDenied { op: String },
    #[error("Vault answered {status} to {op}: {}", errors.join("; "))]
    Status {
        op: String,
        status: u16,
        errors: Vec<String>,
    },
    #[error("unexpected answer from Vault to {op}: {detail}")]
    Decode { op: String, detail: String },
    #[error("Vault login at auth/{mount} failed: {detail}")]
    Login { mount: String, detail: String },
    #[error("invalid Vault TLS settings: {0}")]
    Tls(String),
    #[error("{0}")]
    NotKv2(String),
}

impl VaultError {
    /// A short stable name for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "vault_unreachable",
            Self::PermissionDenied { .. } => "vault_permission_denied",
            Self::Status { .. } => "vault_error",
            Self::Decode { .. } => "vault_bad_response",
            Self::Login { .. } => "vault_login_failed",
            Self::Tls(_) => "vault_tls",
            Self::NotKv2(_) => "vault_mount_not_kv2",
        }
    }

    /// An answer worth one more try: rate limited, a server error, a sealed or standby node
    /// (503), or a KV v2 mount that is still upgrading its storage (400 with that message, for
    /// a moment after the mount is enabled or upgraded from KV v1).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, errors, .. } => match status {
                429 | 500 | 502 | 503 | 504 => true,
                400 => errors.iter().any(|e| e.contains(KV_UPGRADING)),
                _ => false,
            },
            _ => false,
        }
    }
}

/// Pauses before each retry of a transient answer: four tries over about 2 s in all.
const RETRY_PAUSES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_millis(1600),
];

/// How the client logs in: the one shape for flags, the connection secret and the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VaultLogin {
    /// A fixed token (the sample's mode).
    Token(SecretString),
    /// AppRole: logs in, and logs in again when the token nears expiry.
    AppRole {
        mount: String,
        role_id: String,
        secret_id: SecretString,
    },
    /// AWS IAM auth: a signed `sts:GetCallerIdentity` proves the process's IAM role (with the
    /// credentials given by [`VaultClient::with_aws_credentials`]).
    AwsIam {
        mount: String,
        role: String,
        server_id: Option<String>,
        sts: crate::aws_auth::StsEndpoint,
    },
}

#[derive(Debug)]
struct CachedToken {
    token: SecretString,
    /// When to log in again (`None`: never expires).
    refresh_at: Option<Instant>,
}

/// Metadata of one KV v2 secret, as far as a sync needs it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct SecretMetadata {
    pub current_version: u64,
    #[serde(default)]
    pub versions: BTreeMap<String, VersionMetadata>,
    /// Free-form metadata (`null` when none): `description` and `tag:NAME` shape the replica.
    #[serde(default)]
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct VersionMetadata {
    #[serde(default)]
    pub created_time: String,
    #[serde(default)]
    pub deletion_time: String,
    #[serde(default)]
    pub destroyed: bool,
}

/// One folder's listing.
#[derive(Debug, Default)]
pub struct Listing {
    /// Child names; folders end with `/`.
    pub keys: Vec<String>,
    /// Metadata of each child secret, when the server listed it in bulk.
    pub metadata: BTreeMap<String, SecretMetadata>,
}

/// What reading one exact version gave.
#[derive(Debug)]
pub enum VersionRead {
    /// The key/value data, serialised as the JSON object the sample stores.
    Value(SecretString),
    /// The version was deleted or destroyed since it was listed.
    Gone,
}

/// The keys of a secret's value (the JSON object [`VersionRead::Value`] holds), each as its own
/// value: a string as it is, anything else as JSON. Sorted by key.
pub fn split_keys(value: &SecretString) -> Result<BTreeMap<String, SecretString>, String> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(value.expose())
        .map_err(|_| "the version's data is not a JSON object".to_owned())?;
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, SecretString::new(text))
        })
        .collect())
}

#[derive(Debug)]
pub struct VaultClient {
    http: reqwest::Client,
    address: String,
    auth: VaultLogin,
    /// Signs the AWS IAM login.
    aws_credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    /// Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace` on every request.
    namespace: Option<String>,
    /// The namespace the login is made in: `namespace`, but for a client made
    /// [`for_namespace`](Self::for_namespace), which logs in where its parent does.
    login_namespace: Option<String>,
    /// Shared with the clients made for other namespaces: one login serves them all.
    token: Arc<Mutex<Option<CachedToken>>>,
    pub counters: Arc<VaultCounters>,
}

/// An error answer that is Vault's own: the `errors` key is there (possibly empty).
#[derive(Deserialize)]
struct VaultErrors {
    errors: Vec<String>,
}

#[derive(Deserialize)]
struct MountData {
    r#type: String,
    #[serde(default)]
    options: Option<MountOptions>,
}

#[derive(Deserialize)]
struct MountOptions {
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize)]
struct TokenLookup {
    #[serde(default)]
    period: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Deserialize)]
struct ListData {
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    key_info: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct DataRead {
    data: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct LoginResponse {
    auth: LoginAuth,
}

#[derive(Deserialize)]
struct LoginAuth {
    client_token: SecretString,
    #[serde(default)]
    lease_duration: u64,
}

pub use contract::vault_http::{MAX_BODY, json_problem};
use contract::vault_http::{MAX_ERROR_BODY, error_messages, read_capped};

/// Reads and parses a JSON answer of at most [`MAX_BODY`] bytes.
async fn read_json<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    op: &str,
) -> Result<T, VaultError> {
    read_json_capped(resp, op, MAX_BODY).await
}

/// Reads and parses a JSON answer of at most `cap` bytes.
async fn read_json_capped<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    op: &str,
    cap: u64,
) -> Result<T, VaultError> {
    let decode = |detail: String| VaultError::Decode {
        op: op.to_owned(),
        detail,
    };
    let body = read_capped(resp, cap).await.map_err(decode)?;
    serde_json::from_slice(&body).map_err(|e| decode(json_problem(&e)))
}

/// Percent-encodes a KV path for a URL, keeping `/` between segments.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// When to renew a token that lives `ttl`: at two thirds of its life, but at least 5 s early.
fn refresh_after(ttl: Duration) -> Duration {
    let two_thirds = ttl.mul_f64(2.0 / 3.0);
    two_thirds.min(ttl.saturating_sub(Duration::from_secs(5)))
}

impl VaultClient {
    /// Builds the client. `ca_pem` is trusted *instead of* the system roots when given;
    /// certificate verification is never turned off.
    pub fn new(
        address: &str,
        auth: VaultLogin,
        ca_pem: Option<&str>,
        concurrency: usize,
    ) -> Result<Self, VaultError> {
        let http = contract::vault_http::client(
            ca_pem,
            contract::vault_http::Timeouts {
                connect: Duration::from_secs(5),
                request: Duration::from_secs(30),
            },
            concurrency,
        )
        .map_err(VaultError::Tls)?;
        Ok(Self {
            http,
            address: address.trim_end_matches('/').to_owned(),
            auth,
            aws_credentials: None,
            namespace: None,
            login_namespace: None,
            token: Arc::new(Mutex::new(None)),
            counters: Arc::new(VaultCounters::default()),
        })
    }

    /// The AWS credentials that sign an AWS IAM login.
    pub fn with_aws_credentials(
        mut self,
        credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    ) -> Self {
        self.aws_credentials = credentials;
        self
    }

    /// Sends every request, login included, in `namespace` (`X-Vault-Namespace`); none or an
    /// empty one: the root namespace.
    pub fn in_namespace(mut self, namespace: Option<&str>) -> Self {
        self.namespace = contract::namespace(namespace);
        self.login_namespace.clone_from(&self.namespace);
        self
    }

    /// This client reading in `namespace` (none: the root): the same connections, login and
    /// token (made, and renewed, in this client's namespace) and counters.
    pub fn for_namespace(&self, namespace: Option<&str>) -> Self {
        Self {
            http: self.http.clone(),
            address: self.address.clone(),
            auth: self.auth.clone(),
            aws_credentials: self.aws_credentials.clone(),
            namespace: contract::namespace(namespace),
            login_namespace: self.login_namespace.clone(),
            token: self.token.clone(),
            counters: self.counters.clone(),
        }
    }

    /// A request to `url`, in the client's namespace.
    fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        Self::in_ns(self.http.request(method, url), self.namespace.as_deref())
    }

    fn in_ns(req: reqwest::RequestBuilder, namespace: Option<&str>) -> reqwest::RequestBuilder {
        match namespace {
            Some(ns) => req.header("X-Vault-Namespace", ns),
            None => req,
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// A valid token: the fixed one, or a cached AppRole login renewed before it expires.
    async fn token(&self) -> Result<SecretString, VaultError> {
        if let VaultLogin::Token(t) = &self.auth {
            return Ok(t.clone());
        }
        let mut cached = self.token.lock().await;
        if let Some(c) = cached.as_ref()
            && c.refresh_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(c.token.clone());
        }
        let fresh = match &self.auth {
            VaultLogin::Token(t) => return Ok(t.clone()),
            VaultLogin::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                let body =
                    serde_json::json!({ "role_id": role_id, "secret_id": secret_id.expose() });
                self.login(mount, &body).await?
            }
            VaultLogin::AwsIam {
                mount,
                role,
                server_id,
                sts,
            } => {
                use aws_credential_types::provider::ProvideCredentials;
                let no_credentials = |detail: String| VaultError::Login {
                    mount: mount.clone(),
                    detail: format!("no AWS credentials to sign the IAM login: {detail}"),
                };
                let creds = self
                    .aws_credentials
                    .as_ref()
                    .ok_or_else(|| no_credentials("none configured".into()))?
                    .provide_credentials()
                    .await
                    .map_err(|e| no_credentials(e.to_string()))?;
                let body = crate::aws_auth::login_body(
                    &creds,
                    role,
                    server_id.as_deref(),
                    sts,
                    std::time::SystemTime::now(),
                )
                .map_err(|detail| VaultError::Login {
                    mount: mount.clone(),
                    detail,
                })?;
                self.login(mount, &body).await?
            }
        };
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// `POST auth/<mount>/login` with `body`; the token and when to renew it.
    async fn login(
        &self,
        mount: &str,
        body: &serde_json::Value,
    ) -> Result<CachedToken, VaultError> {
        self.counters.add(|c| &c.logins);
        let op = format!("login at auth/{mount}");
        let url = format!("{}/v1/auth/{}/login", self.address, encode_path(mount));
        let started = Instant::now();
        let resp = Self::in_ns(
            self.http.request(Method::POST, &url),
            self.login_namespace.as_deref(),
        )
        .json(body)
        .send()
        .await
        .map_err(|source| self.unreachable(&op, source))?;
        let status = resp.status();
        if let Some(detail) = contract::vault_http::redirect_problem(&resp) {
            return Err(VaultError::Decode {
                op: op.to_owned(),
                detail,
            });
        }
        if !status.is_success() {
            let errors = error_messages(resp).await;
            return Err(VaultError::Login {
                mount: mount.to_owned(),
                detail: format!("HTTP {}: {}", status.as_u16(), errors.join("; ")),
            });
        }
        let login: LoginResponse = read_json(resp, &op).await.map_err(|e| VaultError::Login {
            mount: mount.to_owned(),
            detail: format!("unreadable answer: {e}"),
        })?;
        let refresh_at = (login.auth.lease_duration > 0)
            .then(|| started + refresh_after(Duration::from_secs(login.auth.lease_duration)));
        tracing::debug!(
            mount,
            ttl_s = login.auth.lease_duration,
            "logged in to Vault"
        );
        Ok(CachedToken {
            token: login.auth.client_token,
            refresh_at,
        })
    }

    fn unreachable(&self, op: &str, source: reqwest::Error) -> VaultError {
        VaultError::Unreachable {
            address: self.address.clone(),
            op: op.to_owned(),
            source,
        }
    }

    /// Runs `attempt` again after a transient answer (see [`VaultError::is_transient`]),
    /// pausing per [`RETRY_PAUSES`]; the last answer is returned as is.
    async fn retrying<T, F, Fut>(&self, attempt: F) -> Result<T, VaultError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, VaultError>>,
    {
        let mut pauses = RETRY_PAUSES.iter();
        loop {
            match attempt().await {
                Err(e) if e.is_transient() => {
                    let Some(pause) = pauses.next() else {
                        return Err(e);
                    };
                    tracing::debug!(error = %e, "transient Vault answer; trying again");
                    self.counters.add(|c| &c.retries);
                    tokio::time::sleep(*pause).await;
                }
                other => return other,
            }
        }
    }

    /// Sends one request, again after a transient answer; `Ok(None)` for a 404 whose body has
    /// no errors (a missing path).
    async fn call(
        &self,
        method: Method,
        api_path: &str,
        op: &str,
    ) -> Result<Option<reqwest::Response>, VaultError> {
        self.retrying(|| self.call_once(method.clone(), api_path, op, None))
            .await
    }

    async fn call_once(
        &self,
        method: Method,
        api_path: &str,
        op: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Option<reqwest::Response>, VaultError> {
        let token = self.token().await?;
        let url = format!("{}/v1/{}", self.address, api_path);
        let mut req = self
            .request(method, &url)
            .header("X-Vault-Token", token.expose())
            .header("X-Vault-Request", "true");
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| self.unreachable(op, source))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Some(resp));
        }
        if let Some(detail) = contract::vault_http::redirect_problem(&resp) {
            return Err(VaultError::Decode {
                op: op.to_owned(),
                detail,
            });
        }
        let body = read_capped(resp, MAX_ERROR_BODY).await.unwrap_or_default();
        // Vault always answers an error with `{"errors": [...]}`.
        let vault_errors = serde_json::from_slice::<VaultErrors>(&body)
            .ok()
            .map(|b| b.errors);
        match (status, vault_errors) {
            // A missing path: Vault's 404 with no error text.
            (StatusCode::NOT_FOUND, Some(errors)) if errors.is_empty() => Ok(None),
            // A 404 from something that is not Vault must not look like an empty folder.
            (StatusCode::NOT_FOUND, None) => Err(VaultError::Decode {
                op: op.to_owned(),
                detail: format!(
                    "HTTP 404 with a body that is not Vault's; is {} a Vault server (without a path after the port)?",
                    self.address
                ),
            }),
            (StatusCode::FORBIDDEN, _) => Err(VaultError::PermissionDenied { op: op.to_owned() }),
            (_, errors) => Err(VaultError::Status {
                op: op.to_owned(),
                status: status.as_u16(),
                errors: errors.unwrap_or_default(),
            }),
        }
    }

    /// Logs in (or checks the fixed token is accepted): what a rotation's test step asks of a
    /// new credential.
    pub async fn log_in(&self) -> Result<(), VaultError> {
        self.token().await.map(|_| ())
    }

    /// `POST <api_path>` with a JSON body, sent once (a retry of a request that mints something
    /// could mint it twice); the answer's `data`, `None` for an answer without a body. A missing
    /// path is an error here.
    pub async fn write<T: serde::de::DeserializeOwned>(
        &self,
        api_path: &str,
        body: &serde_json::Value,
        op: &str,
    ) -> Result<Option<T>, VaultError> {
        let Some(resp) = self
            .call_once(Method::POST, api_path, op, Some(body))
            .await?
        else {
            return Err(VaultError::Status {
                op: op.to_owned(),
                status: 404,
                errors: vec!["no such path".into()],
            });
        };
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let envelope: Envelope<T> = read_json(resp, op).await?;
        Ok(Some(envelope.data))
    }

    /// The secrets engine at `mount`, as `sys/internal/ui/mounts/<mount>` tells any token that
    /// may use it: (type, KV version). `None` when the token may not ask.
    pub async fn mount_kind(
        &self,
        mount: &str,
    ) -> Result<Option<(String, Option<String>)>, VaultError> {
        let op = format!("read sys/internal/ui/mounts/{mount}");
        let api = format!("sys/internal/ui/mounts/{}", encode_path(mount));
        let resp = match self.call(Method::GET, &api, &op).await {
            Ok(Some(resp)) => resp,
            Ok(None) | Err(VaultError::PermissionDenied { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let body: Envelope<MountData> = read_json(resp, &op).await?;
        Ok(Some((
            body.data.r#type,
            body.data.options.and_then(|o| o.version),
        )))
    }

    fn list_method() -> Method {
        // "LIST" is a valid token; from_bytes cannot fail on it.
        Method::from_bytes(b"LIST").unwrap_or(Method::GET)
    }

    /// With a fixed token that is periodic (a scoped token from `vault-init --auth token`):
    /// renews it, so it lives a period from every run instead of dying a period after it was
    /// made. `Ok(false)` for any other token (no period, not renewable) or login.
    pub async fn renew_periodic_token(&self) -> Result<bool, VaultError> {
        if !matches!(self.auth, VaultLogin::Token(_)) {
            return Ok(false);
        }
        let op = "look up the token";
        let Some(resp) = self.call(Method::GET, "auth/token/lookup-self", op).await? else {
            return Ok(false);
        };
        let body: Envelope<TokenLookup> = read_json(resp, op).await?;
        if body.data.period == 0 || !body.data.renewable {
            return Ok(false);
        }
        self.call(Method::POST, "auth/token/renew-self", "renew the token")
            .await?;
        Ok(true)
    }

    /// `LIST <mount>/metadata/<folder>`: the folder's children; empty when the folder is missing.
    pub async fn list(&self, mount: &str, folder: &str) -> Result<Listing, VaultError> {
        self.counters.add(|c| &c.lists);
        let op = format!("LIST {mount}/metadata/{folder}");
        let path = format!("{}/metadata/{}", encode_path(mount), encode_path(folder));
        let Some(resp) = self.call(Self::list_method(), &path, &op).await? else {
            return Ok(Listing::default());
        };
        let body: Envelope<ListData> = read_json(resp, &op).await?;
        Ok(Listing {
            keys: body.data.keys,
            metadata: BTreeMap::new(),
        })
    }

    /// OpenBao's bulk listing, `LIST <mount>/detailed-metadata/<folder>`: children with their
    /// metadata in one call. `Ok(None)` when the server does not offer it (HashiCorp Vault) or
    /// the policy does not allow it; the caller then reads metadata one secret at a time.
    pub async fn list_detailed(
        &self,
        mount: &str,
        folder: &str,
    ) -> Result<Option<Listing>, VaultError> {
        self.counters.add(|c| &c.detailed_lists);
        let op = format!("LIST {mount}/detailed-metadata/{folder}");
        let path = format!(
            "{}/detailed-metadata/{}",
            encode_path(mount),
            encode_path(folder)
        );
        let resp = match self.call(Self::list_method(), &path, &op).await {
            Ok(Some(resp)) => resp,
            Ok(None) => return Ok(Some(Listing::default())),
            Err(VaultError::PermissionDenied { .. }) => return Ok(None),
            Err(VaultError::Status { status, .. }) if [400, 404, 405].contains(&status) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let body: Envelope<ListData> = read_json(resp, &op).await?;
        let mut metadata = BTreeMap::new();
        for (key, info) in body.data.key_info {
            if key.ends_with('/') {
                continue;
            }
            let meta: SecretMetadata =
                serde_json::from_value(info).map_err(|e| VaultError::Decode {
                    op: op.clone(),
                    detail: format!("metadata of {key}: {}", json_problem(&e)),
                })?;
            metadata.insert(key, meta);
        }
        Ok(Some(Listing {
            keys: body.data.keys,
            metadata,
        }))
    }

    /// `GET <mount>/metadata/<path>`; `None` when the secret does not exist.
    pub async fn read_metadata(
        &self,
        mount: &str,
        path: &str,
    ) -> Result<Option<SecretMetadata>, VaultError> {
        self.counters.add(|c| &c.metadata_reads);
        let op = format!("read {mount}/metadata/{path}");
        let api = format!("{}/metadata/{}", encode_path(mount), encode_path(path));
        let Some(resp) = self.call(Method::GET, &api, &op).await? else {
            return Ok(None);
        };
        let body: Envelope<SecretMetadata> = read_json(resp, &op).await?;
        Ok(Some(body.data))
    }

    /// `GET <mount>/data/<path>?version=N`: exactly version N, never a newer one.
    /// An answer over `cap` bytes is refused unread (no replica can hold more than a small
    /// multiple of what AWS accepts).
    pub async fn read_version(
        &self,
        mount: &str,
        path: &str,
        version: u64,
        cap: u64,
    ) -> Result<VersionRead, VaultError> {
        self.counters.add(|c| &c.value_reads);
        let op = format!("read {mount}/data/{path} version {version}");
        let api = format!(
            "{}/data/{}?version={version}",
            encode_path(mount),
            encode_path(path)
        );
        self.retrying(|| self.read_version_once(&api, &op, cap))
            .await
    }

    async fn read_version_once(
        &self,
        api: &str,
        op: &str,
        cap: u64,
    ) -> Result<VersionRead, VaultError> {
        let op = op.to_owned();
        let token = self.token().await?;
        let resp = self
            .request(Method::GET, &format!("{}/v1/{}", self.address, api))
            .header("X-Vault-Token", token.expose())
            .header("X-Vault-Request", "true")
            .send()
            .await
            .map_err(|source| self.unreachable(&op, source))?;
        let status = resp.status();
        // A deleted or destroyed version answers 404 with the metadata in the body.
        if status == StatusCode::NOT_FOUND {
            return Ok(VersionRead::Gone);
        }
        if status == StatusCode::FORBIDDEN {
            return Err(VaultError::PermissionDenied { op });
        }
        if !status.is_success() {
            let errors = error_messages(resp).await;
            return Err(VaultError::Status {
                op,
                status: status.as_u16(),
                errors,
            });
        }
        let body: Envelope<DataRead> = read_json_capped(resp, &op, cap).await?;
        match body.data.data {
            None => Ok(VersionRead::Gone),
            Some(map) => {
                let json = serde_json::to_string(&map).map_err(|e| VaultError::Decode {
                    op,
                    detail: json_problem(&e),
                })?;
                Ok(VersionRead::Value(SecretString::new(json)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_raw_strings_and_json() {
        let v = SecretString::new(r#"{"user":"app","port":5432,"tls":{"on":true}}"#.to_owned());
        let keys = split_keys(&v).unwrap();
        let shown: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        assert_eq!(
            shown,
            [("port", "5432"), ("tls", r#"{"on":true}"#), ("user", "app")]
        );
        assert!(split_keys(&SecretString::new("[1]".to_owned())).is_err());
    }

    #[test]
    fn paths_are_percent_encoded_per_segment() {
        assert_eq!(encode_path("a/b c/d%"), "a/b%20c/d%25");
        assert_eq!(encode_path("db-1/x_y.z~"), "db-1/x_y.z~");
    }

    #[test]
    fn tokens_are_renewed_before_they_expire() {
        assert_eq!(
            refresh_after(Duration::from_secs(3600)),
            Duration::from_secs(2400)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(9)),
            Duration::from_secs(4)
        );
        assert_eq!(refresh_after(Duration::from_secs(3)), Duration::ZERO);
    }
}
