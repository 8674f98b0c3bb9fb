//! `replicator watch`: change-driven replication on any Vault. It follows Vault's file audit log
//! (paths in plain text, values hashed), picks the successful requests that change a KV v2
//! secret under the replicated mount and path, and after a short debounce syncs exactly those
//! secrets. A full sync at start and every reconcile interval catches anything missed.
//!
//! [`AuditFilter`] is pure; [`Tail`] and [`Offset`] read and write files; [`run`] is the loop.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// KV v2 endpoints whose successful writes change a secret's data, versions or metadata.
const KV2_CHANGES: &[&str] = &["data", "metadata", "delete", "undelete", "destroy"];

/// Picks, from audit log lines, the KV v2 secrets whose successful requests changed them.
#[derive(Clone, Debug)]
pub struct AuditFilter {
    mount: String,
    /// The replicated sub-path (empty: the whole mount).
    path: String,
    /// Namespace path as Vault logs it (`team/`); `None` for the root namespace.
    namespace: Option<String>,
}

impl AuditFilter {
    pub fn new(mount: &str, path: &str, namespace: Option<&str>) -> Self {
        Self {
            mount: mount.trim_matches('/').to_owned(),
            path: path.trim_matches('/').to_owned(),
            namespace: contract::namespace(namespace).map(|n| format!("{n}/")),
        }
    }

    /// The secret's path inside the mount that `line` says was changed: a response entry
    /// without error, of a create, update, patch or delete on one of the mount's KV v2
    /// endpoints, in the watched namespace. `None` for any other line (reads, other mounts,
    /// failures, the request entries, lines that are not JSON).
    pub fn changed_path(&self, line: &str) -> Option<String> {
        let entry: AuditEntry = serde_json::from_str(line).ok()?;
        if entry.r#type != "response" || !entry.error.is_empty() {
            return None;
        }
        let request = entry.request?;
        if !matches!(
            request.operation.as_str(),
            "create" | "update" | "patch" | "delete"
        ) {
            return None;
        }
        let namespace = request
            .namespace
            .and_then(|n| n.path)
            .filter(|p| !p.is_empty());
        if namespace != self.namespace {
            return None;
        }
        let rest = request.path.strip_prefix(&self.mount)?.strip_prefix('/')?;
        let (endpoint, path) = rest.split_once('/')?;
        let path = path.trim_matches('/');
        let inside = self.path.is_empty()
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|r| r.starts_with('/'));
        (KV2_CHANGES.contains(&endpoint) && !path.is_empty() && inside).then(|| path.to_owned())
    }
}

#[derive(Deserialize)]
struct AuditEntry {
    #[serde(default)]
    r#type: String,
    #[serde(default)]
    error: String,
    request: Option<AuditRequest>,
}

#[derive(Deserialize)]
struct AuditRequest {
    #[serde(default)]
    operation: String,
    #[serde(default)]
    path: String,
    namespace: Option<AuditNamespace>,
}

#[derive(Deserialize)]
struct AuditNamespace {
    path: Option<String>,
}

/// Where the watcher is in the log: the file (by inode) and the offset after the last complete
/// line it handed out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offset {
    pub inode: u64,
    pub offset: u64,
}

impl Offset {
    /// The offset saved in `state`, if there is a readable one.
    pub fn load(state: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(state).ok()?).ok()
    }

    /// Saves it whole or not at all (a new file renamed over the old one).
    pub fn save(&self, state: &Path) -> std::io::Result<()> {
        let tmp = state.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).unwrap_or_default())?;
        std::fs::rename(tmp, state)
    }
}

fn inode(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

/// Follows a log file that is appended to, rotated (renamed away, a new file in its place) or
/// truncated: complete lines only, each once.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    file: Option<std::fs::File>,
    at: Offset,
    /// The start of a line not yet complete.
    partial: Vec<u8>,
}

impl Tail {
    /// Starts at `from` when it is the same file and not past its end; otherwise at the end of
    /// the file (what came before is the start-up full sync's business). A missing file is
    /// waited for.
    pub fn open(path: &Path, from: Option<Offset>) -> Self {
        let mut tail = Self {
            path: path.to_owned(),
            file: None,
            at: Offset::default(),
            partial: Vec::new(),
        };
        if let Ok(file) = std::fs::File::open(path)
            && let Ok(meta) = file.metadata()
        {
            let here = inode(&meta);
            let offset = match from {
                Some(o) if o.inode == here && o.offset <= meta.len() => o.offset,
                _ => meta.len(),
            };
            tail.at = Offset {
                inode: here,
                offset,
            };
            tail.file = Some(file);
        }
        tail
    }

    /// Where the next line starts.
    pub fn position(&self) -> Offset {
        self.at
    }

    /// The complete lines written since the last call.
    pub fn read_lines(&mut self) -> std::io::Result<Vec<String>> {
        let mut lines = Vec::new();
        // What is left in the file being read (a rotated one is read to its end first).
        self.drain(&mut lines)?;
        match std::fs::metadata(&self.path) {
            Ok(meta) if self.file.is_none() || inode(&meta) != self.at.inode => {
                // Rotated (or created): the new file from its start.
                self.file = Some(std::fs::File::open(&self.path)?);
                self.at = Offset {
                    inode: inode(&meta),
                    offset: 0,
                };
                self.partial.clear();
                self.drain(&mut lines)?;
            }
            Ok(meta) if meta.len() < self.at.offset + self.partial.len() as u64 => {
                // Truncated in place: from its start again. (A truncation followed, before the
                // next look, by as many bytes as were read looks like no change: the reconcile
                // sync covers that case.)
                self.at.offset = 0;
                self.partial.clear();
                self.drain(&mut lines)?;
            }
            _ => {}
        }
        Ok(lines)
    }

    fn drain(&mut self, lines: &mut Vec<String>) -> std::io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.seek(SeekFrom::Start(self.at.offset + self.partial.len() as u64))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        self.partial.extend_from_slice(&buf);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.at.offset += line.len() as u64;
            lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
        }
        Ok(())
    }
}

/// Paths seen and not yet synced, with when the first and the last arrived.
#[derive(Debug, Default)]
pub struct Batch {
    paths: BTreeSet<String>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Batch {
    pub fn add(&mut self, path: String, now: Instant) {
        self.paths.insert(path);
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// Due when nothing new came for `quiet`, or the first has waited `longest`.
    pub fn due(&self, now: Instant, quiet: Duration, longest: Duration) -> bool {
        match (self.first, self.last) {
            (Some(first), Some(last)) => now - last >= quiet || now - first >= longest,
            _ => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn take(&mut self) -> Vec<String> {
        self.first = None;
        self.last = None;
        std::mem::take(&mut self.paths).into_iter().collect()
    }
}

/// `250ms`, `30s`, `10m`, `1h`: a whole number and its unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: use ms, s, m or h (e.g. 10m)"))?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 10m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    if d.is_zero() {
        return Err(format!("{text:?} must be more than zero"));
    }
    Ok(d)
}

/// How the watcher runs.
#[derive(Clone, Debug)]
pub struct WatchSettings {
    pub audit_log: PathBuf,
    pub state_file: PathBuf,
    pub reconcile_interval: Duration,
    /// Quiet time that ends a batch.
    pub debounce: Duration,
    /// The longest a change waits while others keep coming.
    pub longest_wait: Duration,
    pub poll: Duration,
}

/// What one batch, or one full sync, did: the report (the Lambda's answer in invoke mode).
#[derive(Debug)]
pub enum Ran {
    Full(serde_json::Value),
    Paths(Vec<String>, serde_json::Value),
}

impl Ran {
    /// Whether the run failed (its report has failures, or the function failed).
    pub fn failed(&self) -> bool {
        let report = match self {
            Ran::Full(r) | Ran::Paths(_, r) => r,
        };
        report["function_error"].is_string()
            || report["failures"].as_array().is_some_and(|f| !f.is_empty())
    }
}

/// Where the changes go.
#[derive(Debug)]
pub enum Delivery {
    /// Synced by this process.
    InProcess(Box<crate::run::Replicator>),
    /// Sent to the replicator function (`{"paths": [...]}`, or `{}` for a full sync), which
    /// syncs them: the watcher itself holds no Vault or Secrets Manager access.
    Invoke {
        lambda: aws_sdk_lambda::Client,
        function: String,
    },
}

impl Delivery {
    async fn full(&self, progress: &crate::progress::Progress) -> serde_json::Value {
        match self {
            Delivery::InProcess(r) => to_value(&r.run(None, progress).await),
            Delivery::Invoke { lambda, function } => {
                invoke(lambda, function, serde_json::json!({})).await
            }
        }
    }

    async fn paths(
        &self,
        paths: &[String],
        progress: &crate::progress::Progress,
    ) -> serde_json::Value {
        match self {
            Delivery::InProcess(r) => to_value(&r.run_paths(paths, None, progress).await),
            Delivery::Invoke { lambda, function } => {
                invoke(lambda, function, serde_json::json!({ "paths": paths })).await
            }
        }
    }
}

/// Invokes the function and waits for its report; a failed invocation or run is a report
/// with `function_error` (and the run's notice as `error`).
async fn invoke(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    event: serde_json::Value,
) -> serde_json::Value {
    let sent = lambda
        .invoke()
        .function_name(function)
        .invocation_type(aws_sdk_lambda::types::InvocationType::RequestResponse)
        .payload(aws_sdk_lambda::primitives::Blob::new(event.to_string()))
        .send()
        .await;
    match sent {
        Ok(out) => {
            let body: serde_json::Value = out
                .payload()
                .and_then(|p| serde_json::from_slice(p.as_ref()).ok())
                .unwrap_or_default();
            match out.function_error() {
                Some(kind) => serde_json::json!({
                    "function_error": kind,
                    "error": body["errorMessage"],
                }),
                None => body,
            }
        }
        Err(e) => serde_json::json!({
            "function_error": "Invoke",
            "error": contract::sdk::AwsError::from_sdk("Invoke", function, e).to_string(),
        }),
    }
}

fn to_value(report: &crate::report::Report) -> serde_json::Value {
    serde_json::to_value(report).unwrap_or_default()
}

/// `watch`'s own flags (the sync's come beside them).
#[derive(Clone, Debug, clap::Args)]
pub struct WatchArgs {
    /// Vault's file audit log (the `file_path` of its file audit device).
    #[arg(long, env = "REPLICATOR_AUDIT_LOG")]
    pub audit_log: PathBuf,

    /// Where the position in the log is kept across restarts [default:
    /// $STATE_DIRECTORY/watch.offset under systemd, else ./replicator-watch.offset].
    #[arg(long, env = "REPLICATOR_STATE_FILE")]
    pub state_file: Option<PathBuf>,

    /// How often the full sync runs, the backstop for anything missed.
    #[arg(long, env = "REPLICATOR_RECONCILE_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub reconcile_interval: Duration,

    /// Quiet time that ends a batch of changes.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub debounce: Duration,

    /// Send each batch to this replicator function (`{"paths": [...]}`) instead of syncing
    /// here: the watcher then needs only `lambda:InvokeFunction` on it.
    #[arg(long, env = "REPLICATOR_INVOKE_FUNCTION")]
    pub invoke_function: Option<String>,

    /// One report per batch on stdout.
    #[arg(long, value_enum, default_value = "text")]
    pub output: crate::config::OutputFormat,
}

impl WatchArgs {
    pub fn settings(&self) -> WatchSettings {
        WatchSettings {
            audit_log: self.audit_log.clone(),
            state_file: self.state_file.clone().unwrap_or_else(|| {
                std::env::var_os("STATE_DIRECTORY")
                    .map(|d| PathBuf::from(d).join("watch.offset"))
                    .unwrap_or_else(|| "replicator-watch.offset".into())
            }),
            reconcile_interval: self.reconcile_interval,
            debounce: self.debounce,
            longest_wait: Duration::from_secs(1),
            poll: Duration::from_millis(50),
        }
    }

    /// Where the changes go: the function named, or this process with `sync`'s settings.
    pub fn delivery(
        &self,
        sync: &crate::config::SyncArgs,
        aws: &aws_types::SdkConfig,
    ) -> Result<Delivery, crate::config::ConfigError> {
        Ok(match &self.invoke_function {
            Some(function) => Delivery::Invoke {
                lambda: aws_sdk_lambda::Client::new(aws),
                function: function.clone(),
            },
            None => Delivery::InProcess(Box::new(crate::run::Replicator::new(sync, aws)?)),
        })
    }
}

/// Follows the log until SIGTERM or SIGINT: a full sync first and every reconcile interval, a
/// targeted sync of each batch. The batch under way finishes, and the changes seen but not
/// synced yet are synced, before it returns.
pub async fn run(
    delivery: &Delivery,
    filter: &AuditFilter,
    settings: &WatchSettings,
    mut emit: impl FnMut(Ran),
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let progress = crate::progress::Progress::default();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tail = Tail::open(&settings.audit_log, Offset::load(&settings.state_file));
    emit(Ran::Full(delivery.full(&progress).await));
    let mut batch = Batch::default();
    let mut poll = tokio::time::interval(settings.poll);
    let mut reconcile = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.reconcile_interval,
        settings.reconcile_interval,
    );
    let mut saved = tail.position();
    loop {
        tokio::select! {
            _ = poll.tick() => {
                let now = Instant::now();
                match tail.read_lines() {
                    Ok(lines) => {
                        for path in lines.iter().filter_map(|l| filter.changed_path(l)) {
                            batch.add(path, now);
                        }
                    }
                    Err(e) => tracing::warn!("reading {}: {e}", settings.audit_log.display()),
                }
                if batch.due(now, settings.debounce, settings.longest_wait) {
                    let paths = batch.take();
                    let report = delivery.paths(&paths, &progress).await;
                    emit(Ran::Paths(paths, report));
                }
                // Only what is synced counts as read: a restart reads the rest again.
                if batch.is_empty() && tail.position() != saved {
                    saved = tail.position();
                    if let Err(e) = saved.save(&settings.state_file) {
                        tracing::warn!("saving {}: {e}", settings.state_file.display());
                    }
                }
            }
            _ = reconcile.tick() => emit(Ran::Full(delivery.full(&progress).await)),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // The lines written until now, and the changes seen but not synced yet.
    let now = Instant::now();
    for path in tail
        .read_lines()
        .unwrap_or_default()
        .iter()
        .filter_map(|l| filter.changed_path(l))
    {
        batch.add(path, now);
    }
    if !batch.is_empty() {
        let paths = batch.take();
        let report = delivery.paths(&paths, &progress).await;
        emit(Ran::Paths(paths, report));
    }
    tail.position().save(&settings.state_file)
}

/// `watch` as a command, for both binaries (`replicator watch`, and `bootstrap watch` beside
/// Vault on the stack's instance): one line per run on stdout, JSON or text. Exit 0 when
/// stopped by a signal, 1 when it could not start.
pub async fn main(sync: &crate::config::SyncArgs, args: &WatchArgs) -> u8 {
    let json = args.output == crate::config::OutputFormat::Json;
    use std::io::Write;
    // The mount and path as a sync resolves them (checked even when the function syncs).
    let settings = match sync.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let aws = crate::aws::load_sdk_config().await;
    let delivery = match args.delivery(sync, &aws) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let emit = |ran: Ran| {
        let failed = ran.failed();
        let (paths, mut report) = match ran {
            Ran::Full(r) => (None, r),
            Ran::Paths(p, r) => (Some(p), r),
        };
        let line = if json {
            report["scope"] = serde_json::json!(if paths.is_some() { "paths" } else { "full" });
            if let Some(p) = &paths {
                report["paths"] = serde_json::json!(p);
            }
            format!("{report}\n")
        } else {
            let count = |k: &str| report[k].as_u64().unwrap_or(0);
            format!(
                "{}: created {}, updated {}, unchanged {}, deleted {}{}\n",
                paths.map_or_else(|| "full sync".to_owned(), |p| p.join(", ")),
                count("created"),
                count("updated"),
                count("unchanged"),
                count("deleted"),
                if failed { " — FAILED" } else { "" }
            )
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
    };
    let filter = AuditFilter::new(
        &settings.rule.mount,
        &settings.rule.path,
        sync.vault_namespace.as_deref(),
    );
    match run(&delivery, &filter, &args.settings(), emit).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(kind: &str, operation: &str, path: &str, error: &str, ns: Option<&str>) -> String {
        let mut request = serde_json::json!({"operation": operation, "path": path});
        if let Some(ns) = ns {
            request["namespace"] = serde_json::json!({"id": "x1", "path": ns});
        } else {
            request["namespace"] = serde_json::json!({"id": "root"});
        }
        serde_json::json!({"type": kind, "error": error, "request": request}).to_string()
    }

    #[test]
    fn only_successful_changes_of_the_mounts_kv2_secrets_are_picked() {
        let f = AuditFilter::new("kv/", "", None);
        let changed = |kind, op, path, error| f.changed_path(&line(kind, op, path, error, None));
        for (op, path, want) in [
            ("create", "kv/data/app/db", "app/db"),
            ("update", "kv/data/app/db", "app/db"),
            ("patch", "kv/data/app/db", "app/db"),
            ("delete", "kv/data/app/db", "app/db"),
            ("update", "kv/delete/app/db", "app/db"),
            ("update", "kv/undelete/app/db", "app/db"),
            ("update", "kv/destroy/app/db", "app/db"),
            ("update", "kv/metadata/app/db", "app/db"),
            ("delete", "kv/metadata/app/db", "app/db"),
        ] {
            assert_eq!(
                changed("response", op, path, "").as_deref(),
                Some(want),
                "{op} {path}"
            );
        }
        for (kind, op, path, error) in [
            ("request", "create", "kv/data/a", ""),
            ("response", "create", "kv/data/a", "permission denied"),
            ("response", "read", "kv/data/a", ""),
            ("response", "list", "kv/metadata/", ""),
            ("response", "create", "kv2/data/a", ""),
            ("response", "create", "kvx/data/a", ""),
            ("response", "update", "kv/config", ""),
            ("response", "create", "kv/data/", ""),
            ("response", "update", "sys/mounts/kv", ""),
        ] {
            assert_eq!(
                changed(kind, op, path, error),
                None,
                "{kind} {op} {path} {error}"
            );
        }
        assert_eq!(f.changed_path("not json"), None);
        // With a sub-path, only what is under it.
        let apps = AuditFilter::new("kv", "/apps/", None);
        let at = |path| apps.changed_path(&line("response", "create", path, "", None));
        assert_eq!(at("kv/data/apps/web").as_deref(), Some("apps/web"));
        assert_eq!(at("kv/data/appsx/web"), None);
        assert_eq!(at("kv/data/other/web"), None);
        assert_eq!(at("kv/data/apps"), None);
        assert_eq!(f.changed_path("{}"), None);
    }

    #[test]
    fn a_namespace_is_matched_as_vault_logs_it() {
        let team = AuditFilter::new("kv", "", Some("/team/"));
        let root = AuditFilter::new("kv", "", None);
        let in_team = line("response", "create", "kv/data/a", "", Some("team/"));
        let in_root = line("response", "create", "kv/data/a", "", None);
        assert_eq!(team.changed_path(&in_team).as_deref(), Some("a"));
        assert_eq!(team.changed_path(&in_root), None);
        assert_eq!(root.changed_path(&in_team), None);
        assert_eq!(root.changed_path(&in_root).as_deref(), Some("a"));
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn the_tail_hands_out_whole_lines_once_through_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        append(&log, "old 1\nold 2\n");
        // From the end: what was there is the start-up sync's.
        let mut tail = Tail::open(&log, None);
        assert!(tail.read_lines().unwrap().is_empty());
        append(&log, "a\nb");
        assert_eq!(tail.read_lines().unwrap(), ["a"]);
        append(&log, "\n");
        assert_eq!(tail.read_lines().unwrap(), ["b"]);
        // Resumed from a saved position: nothing again, nothing lost.
        let at = tail.position();
        append(&log, "c\n");
        let mut resumed = Tail::open(&log, Some(at));
        assert_eq!(resumed.read_lines().unwrap(), ["c"]);
        // Rotated: the old file's last lines, then the new file's.
        append(&log, "d\n");
        std::fs::rename(&log, dir.path().join("audit.log.1")).unwrap();
        append(&dir.path().join("audit.log.1"), "e\n");
        append(&log, "f\n");
        assert_eq!(resumed.read_lines().unwrap(), ["d", "e", "f"]);
        append(&log, "a longer line\n");
        assert_eq!(resumed.read_lines().unwrap(), ["a longer line"]);
        // Truncated in place (shorter than what was read when next looked at): from its start.
        std::fs::write(&log, "").unwrap();
        append(&log, "g\n");
        assert_eq!(resumed.read_lines().unwrap(), ["g"]);
        // A saved position of another file is not trusted: from the end.
        let stale = Offset {
            inode: 1,
            offset: 0,
        };
        let mut other = Tail::open(&log, Some(stale));
        assert!(other.read_lines().unwrap().is_empty());
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["10", "m", "10 d", "0s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_offset_is_saved_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("watch.offset");
        assert_eq!(Offset::load(&state), None);
        let at = Offset {
            inode: 42,
            offset: 1234,
        };
        at.save(&state).unwrap();
        assert_eq!(Offset::load(&state), Some(at));
        std::fs::write(&state, "{").unwrap();
        assert_eq!(Offset::load(&state), None, "a torn file is not trusted");
    }

    #[test]
    fn a_batch_is_due_after_a_quiet_spell_or_its_longest_wait() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = Batch::default();
        assert!(!b.due(t0, ms(200), ms(1000)));
        b.add("a".into(), t0);
        assert!(!b.due(t0 + ms(100), ms(200), ms(1000)));
        assert!(b.due(t0 + ms(200), ms(200), ms(1000)));
        // Changes that keep coming: due at the longest wait all the same.
        for i in 1..=10 {
            b.add(format!("p{i}"), t0 + ms(i * 100));
        }
        assert!(b.due(t0 + ms(1000), ms(200), ms(1000)));
        b.add("a".into(), t0 + ms(1000));
        assert_eq!(b.take().len(), 11, "each path once");
        assert!(b.is_empty() && !b.due(t0 + ms(5000), ms(200), ms(1000)));
    }
}
