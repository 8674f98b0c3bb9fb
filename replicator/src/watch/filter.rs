//! Which audit log lines name a change of a replicated secret, and whether the log can be read
//! at all: a file audit device with `format = "jsonx"` or a `prefix`, or lines that name the
//! mount only in another namespace, match nothing, and the watcher says so. Pure.

use serde::Deserialize;

/// KV v2 endpoints whose successful writes change a secret's data, versions or metadata.
const KV2_CHANGES: &[&str] = &["data", "metadata", "delete", "undelete", "destroy"];

/// What one line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Not a JSON audit entry (another format, a prefix, a torn line).
    NotJson,
    /// A JSON entry that changes nothing the watcher follows.
    Other,
    /// A change of the mount's secret, in another namespace than the one followed.
    OtherNamespace(String),
    /// A change of this secret (its path inside the mount).
    Change(String),
}

/// Picks, from audit log lines, the KV v2 secrets whose successful requests changed them.
#[derive(Clone, Debug)]
pub struct AuditFilter {
    mount: String,
    /// The replicated sub-path (empty: the whole mount).
    path: String,
    /// Namespace path as Vault logs it (`team/`); `None` for the root namespace.
    namespace: Option<String>,
    /// `"<mount>/`: a line without it names nothing under the mount, and is not parsed.
    needle: Option<Vec<u8>>,
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

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

impl AuditFilter {
    pub fn new(mount: &str, path: &str, namespace: Option<&str>) -> Self {
        let mount = mount.trim_matches('/').to_owned();
        // A mount JSON would escape cannot be looked for as it is written.
        let plain = mount
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        Self {
            needle: plain.then(|| format!("\"{mount}/").into_bytes()),
            mount,
            path: path.trim_matches('/').to_owned(),
            namespace: contract::namespace(namespace).map(|n| format!("{n}/")),
        }
    }

    /// The namespace followed, as Vault logs it (`team/`), or `None` for the root.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// What `line` is: the secret's path inside the mount for a response entry without error,
    /// of a create, update, patch or delete on one of the mount's KV v2 endpoints under the
    /// replicated path, in the followed namespace. Lines that cannot name the mount are told
    /// apart without parsing them (most of a busy log).
    pub fn classify(&self, line: &[u8]) -> Line {
        let start = line.iter().position(|b| !b.is_ascii_whitespace());
        if start.is_none_or(|at| line[at] != b'{') {
            return Line::NotJson;
        }
        if let Some(needle) = &self.needle
            && !contains(line, needle)
        {
            return Line::Other;
        }
        let Ok(entry) = serde_json::from_slice::<AuditEntry>(line) else {
            return Line::NotJson;
        };
        if entry.r#type != "response" || !entry.error.is_empty() {
            return Line::Other;
        }
        let Some(request) = entry.request else {
            return Line::Other;
        };
        if !matches!(
            request.operation.as_str(),
            "create" | "update" | "patch" | "delete"
        ) {
            return Line::Other;
        }
        let Some(path) = self.under_mount(&request.path) else {
            return Line::Other;
        };
        let namespace = request
            .namespace
            .and_then(|n| n.path)
            .filter(|p| !p.is_empty());
        if namespace != self.namespace {
            return Line::OtherNamespace(namespace.unwrap_or_else(|| "(root)".into()));
        }
        Line::Change(path)
    }

    /// The secret a request path changes (`<mount>/<endpoint>/<path>`), when it is one of the
    /// KV v2 endpoints that change a secret and under the replicated path.
    fn under_mount(&self, request_path: &str) -> Option<String> {
        let rest = request_path.strip_prefix(&self.mount)?.strip_prefix('/')?;
        let (endpoint, path) = rest.split_once('/')?;
        let path = path.trim_matches('/');
        let inside = self.path.is_empty()
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|r| r.starts_with('/'));
        (KV2_CHANGES.contains(&endpoint) && !path.is_empty() && inside).then(|| path.to_owned())
    }

    /// The path a line says was changed, if it does.
    pub fn changed_path(&self, line: &str) -> Option<String> {
        match self.classify(line.as_bytes()) {
            Line::Change(path) => Some(path),
            _ => None,
        }
    }
}

/// What a watcher follows: the scopes of the rules its sync serves. With one scope a change is
/// named by its path inside the mount, as before there were rules; with many, by its namespace,
/// mount and path (a [`Change`](crate::run::Change) as JSON, [`Follow::change`] reads it back),
/// and the sync sends it to every rule it falls in.
#[derive(Clone, Debug)]
pub struct Follow {
    filters: Vec<AuditFilter>,
}

impl Follow {
    pub fn new(scopes: &[crate::run::VaultScope]) -> Self {
        Self {
            filters: scopes
                .iter()
                .map(|s| AuditFilter::new(&s.mount, &s.path, s.namespace.as_deref()))
                .collect(),
        }
    }

    /// Whether a change is named by its namespace and mount too.
    pub fn qualified(&self) -> bool {
        self.filters.len() > 1
    }

    /// What `line` is to any of the scopes: a change of one (named as [`Follow`] says), else a
    /// change of a followed mount in another namespace, else nothing followed.
    pub fn classify(&self, line: &[u8]) -> Line {
        let mut elsewhere = None;
        for filter in &self.filters {
            match filter.classify(line) {
                Line::Change(path) if self.qualified() => {
                    let change = crate::run::Change {
                        namespace: filter
                            .namespace
                            .as_deref()
                            .and_then(|n| contract::namespace(Some(n))),
                        mount: filter.mount.clone(),
                        path,
                    };
                    return Line::Change(serde_json::to_string(&change).unwrap_or_default());
                }
                Line::Change(path) => return Line::Change(path),
                Line::NotJson => return Line::NotJson,
                Line::OtherNamespace(ns) => elsewhere = Some(ns),
                Line::Other => {}
            }
        }
        elsewhere.map_or(Line::Other, Line::OtherNamespace)
    }

    /// The change a qualified name stands for (none: not one, such as a path saved by a watcher
    /// that followed one scope).
    pub fn change(name: &str) -> Option<crate::run::Change> {
        serde_json::from_str(name).ok()
    }

    /// The mounts followed, for a warning: `kv (namespace team)`, ….
    fn describe(&self) -> (String, String) {
        let mounts: Vec<&str> = self.filters.iter().map(|f| f.mount.as_str()).collect();
        let namespaces: Vec<&str> = self
            .filters
            .iter()
            .map(|f| f.namespace.as_deref().unwrap_or("root"))
            .collect();
        (mounts.join(", "), namespaces.join(", "))
    }
}

/// What the lines of one spell said, to tell a log the watcher cannot read from a quiet one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Health {
    pub lines: u64,
    pub not_json: u64,
    pub changes: u64,
    /// Changes of the mount in other namespaces (the first one seen).
    pub other_namespace: u64,
    pub seen_namespace: Option<String>,
}

impl Health {
    pub fn count(&mut self, line: &Line) {
        self.lines += 1;
        match line {
            Line::NotJson => self.not_json += 1,
            Line::Change(_) => self.changes += 1,
            Line::OtherNamespace(ns) => {
                self.other_namespace += 1;
                self.seen_namespace.get_or_insert_with(|| ns.clone());
            }
            Line::Other => {}
        }
    }

    pub fn add(&mut self, other: &Health) {
        self.lines += other.lines;
        self.not_json += other.not_json;
        self.changes += other.changes;
        self.other_namespace += other.other_namespace;
        if self.seen_namespace.is_none() {
            self.seen_namespace.clone_from(&other.seen_namespace);
        }
    }

    /// What to say about a spell in which lines were read but none could ever match: every
    /// line unreadable, or changes of the mount only in another namespace.
    pub fn warning(&self, follow: &Follow) -> Option<String> {
        if self.lines > 0 && self.not_json == self.lines {
            return Some(format!(
                "none of the {} audit log lines read is a JSON audit entry: the file audit device must write format = \"json\" with no prefix (jsonx and prefixed lines are not read)",
                self.lines
            ));
        }
        if self.other_namespace > 0 && self.changes == 0 {
            return Some(format!(
                "{} changes of mount {} were in namespace {} and none in the namespace followed ({}): set the namespace the sync uses (the connection secret's vaultNamespace, or --vault-namespace)",
                self.other_namespace,
                follow.describe().0,
                self.seen_namespace.as_deref().unwrap_or("?"),
                follow.describe().1
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            root.classify(in_team.as_bytes()),
            Line::OtherNamespace("team/".into())
        );
    }

    #[test]
    fn a_log_the_watcher_cannot_read_is_said_within_the_spell() {
        let f = Follow::new(&[scope("kv", "", None)]);
        let mut h = Health::default();
        for l in [
            "<AuditRequest><type>response</type></AuditRequest>".to_owned(),
            format!(
                "vault: {}",
                line("response", "create", "kv/data/a", "", None)
            ),
        ] {
            h.count(&f.classify(l.as_bytes()));
        }
        assert!(h.warning(&f).unwrap().contains("format = \"json\""));
        // Changes only in another namespace.
        let mut h = Health::default();
        let team = line("response", "create", "kv/data/a", "", Some("team/"));
        h.count(&f.classify(team.as_bytes()));
        h.count(&f.classify(line("response", "read", "kv/data/a", "", None).as_bytes()));
        let w = h.warning(&f).unwrap();
        assert!(w.contains("team/") && w.contains("root"), "{w}");
        // A quiet log, or one with changes of ours: nothing to say.
        let mut h = Health::default();
        h.count(&f.classify(line("response", "read", "x/data/a", "", None).as_bytes()));
        assert_eq!(h.warning(&f), None);
        h.count(&f.classify(line("response", "create", "kv/data/a", "", None).as_bytes()));
        assert_eq!(h.warning(&f), None);
    }

    fn scope(mount: &str, path: &str, namespace: Option<&str>) -> crate::run::VaultScope {
        crate::run::VaultScope {
            mount: mount.into(),
            path: path.into(),
            namespace: namespace.map(str::to_owned),
        }
    }

    #[test]
    fn with_many_scopes_a_change_names_its_namespace_and_mount() {
        let one = Follow::new(&[scope("kv", "app", None)]);
        let db = line("response", "create", "kv/data/app/db", "", None);
        assert_eq!(one.classify(db.as_bytes()), Line::Change("app/db".into()));
        let many = Follow::new(&[
            scope("kv", "app", None),
            scope("kv", "", Some("team")),
            scope("other", "", None),
        ]);
        let named = |l: String| match many.classify(l.as_bytes()) {
            Line::Change(name) => Follow::change(&name),
            _ => None,
        };
        let change = |ns: Option<&str>, mount: &str, path: &str| crate::run::Change {
            namespace: ns.map(str::to_owned),
            mount: mount.into(),
            path: path.into(),
        };
        assert_eq!(named(db), Some(change(None, "kv", "app/db")));
        let team = line("response", "create", "kv/data/x", "", Some("team/"));
        assert_eq!(named(team), Some(change(Some("team"), "kv", "x")));
        let other = line("response", "update", "other/metadata/y", "", None);
        assert_eq!(named(other), Some(change(None, "other", "y")));
        // Outside every scope: the root's kv outside app/, a namespace nobody follows.
        assert_eq!(
            named(line("response", "create", "kv/data/web", "", None)),
            None
        );
        let elsewhere = line("response", "create", "other/data/y", "", Some("ops/"));
        assert_eq!(
            many.classify(elsewhere.as_bytes()),
            Line::OtherNamespace("ops/".into())
        );
        // A path saved by a watcher of one scope is no change of many.
        assert_eq!(Follow::change("app/db"), None);
    }
}
