//! The run report (JSON and text) and the SNS failure notice. Pure formatting; never a value.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::plan::Step;

/// `text`, or its first `chars` characters and `…`.
pub fn cut(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_owned()
    } else {
        let kept: String = text.chars().take(chars).collect();
        format!("{kept}…")
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The most lags one report holds (the metrics carry them).
pub const MAX_LAGS: usize = 100;

pub use contract::report::{Problem, Summary};

/// What one run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The rule this report is of: each rule's own report in a rules document's run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub dry_run: bool,
    /// The deadline came before every write was started: `remaining` are left for the next run.
    /// A success, not a failure.
    pub partial: bool,
    pub remaining: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub skipped: u64,
    /// Secrets in Vault the sync does not select (include/exclude, opt-in or -out), with no
    /// replica.
    pub excluded: u64,
    pub conflicts: Vec<Problem>,
    pub failures: Vec<Problem>,
    /// Done, but worth a look (a name like an ARN suffix); never fails the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Problem>,
    /// Replicated secrets whose Vault source is gone, kept by policy or by the breaker.
    pub orphans: Vec<String>,
    /// With `--dry-run`: every decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Vec<Step>>,
    pub values_read: u64,
    /// Change events put on the bus (`--events-bus`).
    #[serde(skip_serializing_if = "is_zero")]
    pub events_put: u64,
    pub bulk_metadata: bool,
    pub vault_requests: BTreeMap<String, u64>,
    pub aws_requests: BTreeMap<String, u64>,
    pub duration_ms: u64,
    /// Seconds from each written Vault version to its write being recorded (for the metrics):
    /// the first [`MAX_LAGS`], and how many there were.
    #[serde(skip)]
    pub lags: Vec<f64>,
    #[serde(skip)]
    pub lags_measured: u64,
    /// With a rules document: each rule's own report (the counts and problems above are
    /// theirs together, each problem naming its rule).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Report>,
}

impl Report {
    /// A run fails when anything failed; conflicts alone are reported, not failed.
    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    /// The secrets written (a dry run: that would be): created, updated or deleted.
    pub fn writes(&self) -> u64 {
        self.created + self.updated + self.deleted
    }

    /// A report for a run that stopped before planning.
    pub fn fatal(kind: &str, message: impl Into<String>) -> Self {
        Self {
            failures: vec![Problem::new("", kind, message)],
            ..Self::default()
        }
    }

    /// Adds a rule's report to this run's: its counts and problems (each naming the rule),
    /// and the report itself to [`Self::rules`].
    pub fn absorb(&mut self, mut rule: Report) {
        let named = |problems: &[Problem]| -> Vec<Problem> {
            problems
                .iter()
                .map(|p| Problem {
                    rule: rule.rule.clone(),
                    ..p.clone()
                })
                .collect()
        };
        self.conflicts.extend(named(&rule.conflicts));
        self.failures.extend(named(&rule.failures));
        self.warnings.extend(named(&rule.warnings));
        self.partial |= rule.partial;
        self.remaining += rule.remaining;
        self.created += rule.created;
        self.updated += rule.updated;
        self.unchanged += rule.unchanged;
        self.deleted += rule.deleted;
        self.skipped += rule.skipped;
        self.excluded += rule.excluded;
        self.orphans.extend(rule.orphans.iter().cloned());
        if let Some(plan) = &rule.plan {
            self.plan
                .get_or_insert_with(Vec::new)
                .extend(plan.iter().cloned());
        }
        self.bulk_metadata |= rule.bulk_metadata;
        self.events_put += rule.events_put;
        self.lags_measured += rule.lags_measured;
        let room = MAX_LAGS.saturating_sub(self.lags.len());
        self.lags.extend(rule.lags.drain(..).take(room));
        self.rules.push(rule);
    }

    /// The report in brief, as whoever reads it back sees it.
    pub fn summary(&self) -> Summary {
        Summary {
            created: self.created,
            updated: self.updated,
            unchanged: self.unchanged,
            deleted: self.deleted,
            skipped: self.skipped,
            partial: self.partial,
            dry_run: self.dry_run,
            conflicts: self.conflicts.clone(),
            failures: self.failures.clone(),
            function_error: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Human summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if let Some(plan) = &self.plan {
            for step in plan {
                let (sign, what) = match step {
                    Step::Create { target } => {
                        ('+', format!("create (version {})", target.version))
                    }
                    Step::Update {
                        target,
                        reason,
                        restore,
                        ..
                    } => (
                        '~',
                        format!(
                            "update to version {} ({}){}",
                            target.version,
                            serde_json::to_value(reason)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default(),
                            if *restore { ", restore first" } else { "" }
                        ),
                    ),
                    Step::Expand { source, .. } => (
                        '~',
                        format!(
                            "read version {} and replicate each key",
                            source.source.version
                        ),
                    ),
                    Step::Delete { guard, .. } => (
                        '-',
                        match guard {
                            crate::plan::Guard::After(after) if !after.is_empty() => {
                                "delete, once the replica that replaces it is written".to_owned()
                            }
                            _ => "delete".to_owned(),
                        },
                    ),
                    Step::Unchanged { .. } => (' ', "unchanged".to_owned()),
                    Step::Keep { why, .. } => ('!', format!("keep: {why}")),
                    Step::Skip { .. } => (' ', "skip: deleted in Vault".to_owned()),
                    Step::Conflict { message, .. } => ('!', format!("conflict: {message}")),
                    Step::Invalid { message, .. } => ('x', format!("invalid: {message}")),
                    Step::VaultFailed { message, .. } => ('x', format!("failed: {message}")),
                };
                let _ = writeln!(out, "{sign} {}  {what}", step.name());
            }
        }
        let _ = writeln!(out, "{}", self.summary().line());
        if self.excluded > 0 {
            let _ = writeln!(
                out,
                "{} secret(s) in Vault not selected by the sync (include/exclude, opt-in or -out)",
                self.excluded
            );
        }
        if self.partial {
            let _ = writeln!(
                out,
                "partial: the deadline came with {} write(s) not started; the next run goes on",
                self.remaining
            );
        }
        for p in &self.conflicts {
            let _ = writeln!(out, "conflict {} [{}]: {}", p.name, p.kind, p.message);
        }
        for name in &self.orphans {
            let _ = writeln!(
                out,
                "orphan {name}: its Vault secret is gone or not selected; kept"
            );
        }
        for p in &self.warnings {
            let _ = writeln!(out, "warning {} [{}]: {}", p.name, p.kind, p.message);
        }
        for p in &self.failures {
            let name = if p.name.is_empty() { "run" } else { &p.name };
            let rule = p
                .rule
                .as_deref()
                .map(|r| format!(" (rule {r})"))
                .unwrap_or_default();
            let _ = writeln!(out, "FAILED {name}{rule} [{}]: {}", p.kind, p.message);
        }
        out
    }

    /// The SNS notice: account, region, what failed and why. Names and error texts only, and
    /// always far under SNS's 256 KB: the first [`NOTICE_LISTED`] failures, each error text cut
    /// at [`NOTICE_MESSAGE_CHARS`], then how many more there are, by kind.
    pub fn notice(&self, account: &str, region: &str) -> String {
        let cut = |text: &str| cut(text, NOTICE_MESSAGE_CHARS);
        let listed: Vec<_> = self
            .failures
            .iter()
            .take(NOTICE_LISTED)
            .map(|p| {
                serde_json::json!({
                    "secretName": cut(&p.name),
                    "kind": p.kind,
                    "error": cut(&p.message),
                })
            })
            .collect();
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &self.failures {
            *by_kind.entry(p.kind.as_str()).or_default() += 1;
        }
        let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let mut text = format!(
            "Account: {account}, Region: {region}. vault-secrets-replicator run {}failed ({} created, {} updated, {} deleted before the failures). Failed to create/update the following secrets: {}",
            self.rule
                .as_deref()
                .map(|r| format!("of rule {r} "))
                .unwrap_or_default(),
            self.created,
            self.updated,
            self.deleted,
            serde_json::Value::Array(listed)
        );
        if self.failures.len() > NOTICE_LISTED {
            let _ = write!(
                text,
                " … and {} more not listed; {} failures in all: {}. The run's report (Lambda's log, or `--output json`) lists every one.",
                self.failures.len() - NOTICE_LISTED,
                self.failures.len(),
                kinds.join(", ")
            );
        }
        text
    }
}

/// How long the same failure is not notified again: a batch the watcher tries again with
/// backoff, or a run after run that fails the same way, sends one notice, not one a minute.
pub const NOTICE_QUIET: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Remembers the notices sent within [`NOTICE_QUIET`], by what failed (names and kinds, not
/// counts, request ids or times).
#[derive(Debug, Default)]
pub struct NoticeGate {
    sent: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl NoticeGate {
    /// Whether `notice` is to be sent now: not the same failure as one sent within
    /// [`NOTICE_QUIET`]. Records it when it is.
    pub fn admits(&self, notice: &str, now: std::time::Instant) -> bool {
        let key = failure_key(notice);
        let mut sent = self
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sent.retain(|_, at| now.duration_since(*at) < NOTICE_QUIET);
        if sent.contains_key(&key) {
            return false;
        }
        sent.insert(key, now);
        true
    }
}

/// What failed, as a notice says it: without the counts before the list (they change from run
/// to run), and with each request id and time (a function's timeout or crash names its
/// request) made one mark, so that the same failure is the same key. Names stay as they are.
fn failure_key(notice: &str) -> String {
    let what = notice
        .find("Failed to create/update")
        .map_or(notice, |at| &notice[at..]);
    let volatile = |word: &str| {
        word.len() >= 8
            && word.bytes().any(|b| b.is_ascii_digit())
            && word
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b"-:.TZ".contains(&b))
    };
    what.split(' ')
        .map(|word| if volatile(word) { "#" } else { word })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How many failures the SNS notice lists by name.
pub const NOTICE_LISTED: usize = 50;
/// How long an error text (or name) in the notice may be, in characters.
pub const NOTICE_MESSAGE_CHARS: usize = 300;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_read_back_from_the_json_is_the_reports_own() {
        let mut r = Report {
            created: 3,
            updated: 2,
            unchanged: 7,
            skipped: 1,
            partial: true,
            ..Report::default()
        };
        r.conflicts.push(Problem::new("a", "foreign", "not ours"));
        let mut failed = Problem::new("b", "value_too_large", "big");
        failed.rule = Some("web".into());
        r.failures.push(failed);
        let read = Summary::of(&serde_json::to_value(&r).unwrap());
        assert_eq!(read, r.summary());
        assert!(r.to_text().contains(&r.summary().line()));
    }

    #[test]
    fn notice_names_account_region_and_failures() {
        let mut r = Report::fatal("vault_unreachable", "cannot reach Vault at https://v:8200");
        r.failures
            .push(Problem::new("p/a", "value_too_large", "70000 bytes"));
        let n = r.notice("123456789012", "eu-west-1");
        assert!(n.starts_with("Account: 123456789012, Region: eu-west-1."));
        assert!(n.contains("\"secretName\":\"p/a\""));
        assert!(n.contains("vault_unreachable"));
        assert!(r.failed());
    }

    #[test]
    fn the_notice_stays_under_the_sns_limit_whatever_fails() {
        const SNS_MAX_BYTES: usize = 256 * 1024;
        let mut r = Report::default();
        for i in 0..10_000 {
            // Long, multi-byte, with characters JSON escapes to six bytes.
            let name = format!("p/{i}/{}", "é\u{1}".repeat(1000));
            let kind = if i % 2 == 0 {
                "invalid_name"
            } else {
                "value_too_large"
            };
            r.failures
                .push(Problem::new(name, kind, "ü\u{2}".repeat(5000)));
        }
        let n = r.notice("123456789012", "eu-west-1");
        assert!(n.len() < SNS_MAX_BYTES, "{} bytes", n.len());
        assert!(n.starts_with(
            "Account: 123456789012, Region: eu-west-1. vault-secrets-replicator run failed"
        ));
        assert!(n.ends_with("… and 9950 more not listed; 10000 failures in all: 5000 invalid_name, 5000 value_too_large. The run's report (Lambda's log, or `--output json`) lists every one."), "{}", &n[n.len() - 300..]);
        let listed = n.matches("\"secretName\"").count();
        assert_eq!(listed, NOTICE_LISTED);
    }

    #[test]
    fn a_crash_notified_again_with_another_request_id_is_the_same_failure() {
        let gate = NoticeGate::default();
        let t0 = std::time::Instant::now();
        let crash = |id: &str, at: &str| format!("{at} {id} Task timed out after 900.02 seconds");
        assert!(gate.admits(
            &crash(
                "1f0c6a52-33b1-4c8e-9a1e-1d2c3b4a5f60",
                "2026-12-05T08:00:01.123Z"
            ),
            t0
        ));
        assert!(!gate.admits(
            &crash(
                "7d2e9b10-0a4f-4f55-8c3e-aa00bb11cc22",
                "2026-12-05T08:01:02.456Z"
            ),
            t0 + std::time::Duration::from_secs(60)
        ));
        // Two failures in turn are each sent once, not every time the other one was.
        assert!(gate.admits("vault_unreachable: sealed", t0));
        assert!(!gate.admits(
            &crash(
                "aa00bb11-0a4f-4f55-8c3e-1d2c3b4a5f60",
                "2026-12-05T08:02:00.000Z"
            ),
            t0 + std::time::Duration::from_secs(120)
        ));
        assert!(!gate.admits(
            "vault_unreachable: sealed",
            t0 + std::time::Duration::from_secs(180)
        ));
        // Another failure is another notice.
        assert!(gate.admits("vault_login_failed: invalid secret id", t0));
    }

    #[test]
    fn the_same_failure_is_notified_once_a_quarter_hour() {
        let gate = NoticeGate::default();
        let t0 = std::time::Instant::now();
        let notice = |created: u64, kind: &str| {
            let mut r = Report::fatal(kind, "down");
            r.created = created;
            r.notice("1", "r")
        };
        assert!(gate.admits(&notice(0, "vault_unreachable"), t0));
        assert!(!gate.admits(&notice(3, "vault_unreachable"), t0 + NOTICE_QUIET / 2));
        assert!(gate.admits(&notice(0, "aws_throttled"), t0 + NOTICE_QUIET / 2));
        assert!(gate.admits(&notice(0, "vault_unreachable"), t0 + NOTICE_QUIET));
    }

    #[test]
    fn text_summary_counts_and_lists_problems() {
        let r = Report {
            created: 2,
            conflicts: vec![Problem::new("p/x", "foreign", "not ours")],
            ..Report::default()
        };
        let t = r.to_text();
        assert!(t.contains("created 2, updated 0"), "{t}");
        assert!(t.contains("conflict p/x [foreign]"));
        assert!(!r.failed());
    }
}
