//! The Lambda entry: each invocation runs one sync and returns the report, or an error when the
//! run failed so Lambda's error metrics see it. An event `{"paths": [...]}` (from the change
//! watcher) syncs only those Vault paths; `{"scope": true}` answers where the sync reads in
//! Vault (mount, path, namespace) and syncs nothing; `{"status": true}` answers where each secret
//! stands ([`crate::status`]) from a dry run; any other (the schedule's) syncs everything;
//! `"accept_vault_rollback": true` (from `deployer sync-now --accept-vault-rollback`) lets that
//! one run replicate a Vault that is behind AWS; `"notice_topic": "<SNS topic ARN>"` (from
//! `deployer sync-now`, a synchronous invocation the on-failure destination never sees) has a
//! failed run publish its notice there itself. Each run prints its metrics on stdout as one
//! CloudWatch Embedded Metric Format document ([`crate::metrics`]).

use aws_types::SdkConfig;
use clap::Parser;

use crate::run::Replicator;
use lambda_runtime::{Error, LambdaEvent};

use crate::config::SyncArgs;

/// The Lambda's configuration: the same settings as `replicator sync`, from the environment only.
#[derive(Debug, Parser)]
#[command(name = "bootstrap", no_binary_name = true)]
pub struct LambdaArgs {
    #[command(flatten)]
    pub sync: SyncArgs,
    /// This function serves the change watcher (which may invoke it with any event): it refuses
    /// `accept_vault_rollback`, an operator's word given through the sync function only.
    #[arg(long, env = contract::env::SERVES_WATCHER, default_value_t = false, action = clap::ArgAction::Set)]
    pub serves_watcher: bool,
    /// Paused by `deployer pause`: every sync is refused until `deployer resume`.
    #[arg(long, env = contract::env::PAUSED, default_value_t = false, action = clap::ArgAction::Set)]
    pub paused: bool,
}

impl LambdaArgs {
    /// Reads the environment; the error names the variable to fix.
    pub fn from_env() -> Result<Self, String> {
        Self::try_parse_from(std::iter::empty::<String>()).map_err(|e| {
            let rendered = e.render().to_string();
            let what = rendered
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .collect::<Vec<_>>()
                .join(" ");
            let what = what.trim_start_matches("error: ");
            match variable_of(&e) {
                Some(var) => format!("invalid Lambda environment: {var}: {what}"),
                None => format!("invalid Lambda environment: {what}"),
            }
        })
    }
}

/// The environment variable behind the flag a parse error names (`--deletion-policy <…>` →
/// `REPLICATOR_DELETION_POLICY`): the Lambda has no command line, only variables.
fn variable_of(e: &clap::Error) -> Option<String> {
    use clap::CommandFactory as _;
    use clap::error::{ContextKind, ContextValue};
    let ContextValue::String(flag) = e.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let long = flag.split_whitespace().next()?.strip_prefix("--")?;
    LambdaArgs::command()
        .get_arguments()
        .find(|a| a.get_long() == Some(long))?
        .get_env()
        .map(|v| v.to_string_lossy().into_owned())
}

/// The function as this process serves it.
#[derive(Debug)]
pub struct Function {
    pub replicator: Replicator,
    /// See [`LambdaArgs::serves_watcher`].
    pub serves_watcher: bool,
    /// The `Stack` dimension of the run's metrics.
    pub stack: String,
    /// See [`LambdaArgs::paused`].
    pub paused: bool,
}

/// The process's replicator, from the environment: built once, reused by every invocation. A
/// bad environment is kept as its error, which every invocation reports.
pub fn from_env(aws: &SdkConfig) -> Result<Function, String> {
    let args = LambdaArgs::from_env()?;
    let replicator =
        Replicator::new(&args.sync, aws).map_err(|e| format!("invalid Lambda environment: {e}"))?;
    Ok(Function {
        replicator,
        serves_watcher: args.serves_watcher,
        paused: args.paused,
        // The stack (`--stack`) is also its metrics' `Stack` dimension [default: the
        // function's name].
        stack: args
            .sync
            .stack
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok())
            .unwrap_or_default(),
    })
}

/// Handles one invocation.
pub async fn handle(
    event: LambdaEvent<serde_json::Value>,
    function: &Result<Function, String>,
) -> Result<serde_json::Value, Error> {
    let function = function.as_ref().map_err(|e| Error::from(e.clone()))?;
    let replicator = &function.replicator;
    // A change watcher asks where to look (`{"scope": true}`): the function's own mount, path
    // and namespace, so the two can never disagree; with many rules, `{"scopes": [...]}`.
    if event.payload.get("scope") == Some(&serde_json::Value::Bool(true)) {
        let scopes = replicator
            .scopes()
            .await
            .map_err(|e| Error::from(e.to_string()))?;
        return Ok(match &scopes[..] {
            [one] => serde_json::to_value(one)?,
            _ => serde_json::json!({ "scopes": scopes }),
        });
    }
    // `deployer status --secrets` asks where each secret stands: a dry run, nothing written,
    // no value read, no metrics (its counts would be plans).
    if event.payload.get("status") == Some(&serde_json::Value::Bool(true)) {
        if function.serves_watcher {
            return Err(Error::from(
                "refused: this function serves the change watcher; ask the sync function (deployer status --secrets)",
            ));
        }
        let request = crate::run::Request {
            dry_run: true,
            ..Default::default()
        };
        let report = replicator
            .run_request(&request, &crate::progress::Progress::default())
            .await;
        return Ok(crate::status::answer(&report));
    }
    if function.paused {
        return Err(Error::from(
            "paused by `deployer pause`: nothing is synced until `deployer resume` (which runs a full sync)",
        ));
    }
    tracing::info!(request_id = %event.context.request_id, "sync started");
    // Start no write the invocation could not finish: stop a margin before its deadline, and
    // leave the rest to the next run (a first sync of 100,000 secrets takes longer than
    // Lambda's 15 minutes at 50 writes a second).
    let budget = Some(std::time::Duration::from_secs(time_budget(
        event.context.deadline,
        std::time::SystemTime::now(),
    )));
    let progress = crate::progress::Progress::default();
    let request = request_of(&event.payload, budget).map_err(Error::from)?;
    let notice_topic = notice_topic_of(&event.payload).map_err(Error::from)?;
    if request.accept_vault_rollback && function.serves_watcher {
        return Err(Error::from(
            "refused: this function serves the change watcher; accept a Vault rollback through the sync function (deployer sync-now --accept-vault-rollback)",
        ));
    }
    let report = replicator.run_request(&request, &progress).await;
    // The run's metrics, as EMF documents on stdout (the function's log): the same counts as
    // the report, one document per rule (a rules document's rules, each by its name).
    // A dry run's counts are plans: no metrics.
    if !report.dry_run {
        let change_driven = request.paths.is_some() || request.changes.is_some();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let one = replicator.settings().rule.name.as_deref();
        let each: Vec<(&crate::report::Report, &str)> = if report.rules.is_empty() {
            vec![(&report, one.unwrap_or(crate::metrics::RULE))]
        } else {
            report
                .rules
                .iter()
                .map(|r| (r, r.rule.as_deref().unwrap_or(crate::metrics::RULE)))
                .collect()
        };
        // Every rule's document says whether the run as a whole was a full sync that
        // succeeded: one rule cut short or failing keeps the stack's alarm of no full sync on.
        let full = crate::metrics::full_sync_succeeded(&report, change_driven);
        for (of, rule) in each {
            let kind = crate::metrics::kind(of, change_driven);
            println!(
                "{}",
                crate::metrics::document(of, &function.stack, rule, kind, full, now_ms)
            );
        }
    }
    tracing::info!(
        created = report.created,
        updated = report.updated,
        unchanged = report.unchanged,
        deleted = report.deleted,
        skipped = report.skipped,
        conflicts = report.conflicts.len(),
        failures = report.failures.len(),
        duration_ms = report.duration_ms,
        "sync finished"
    );
    if report.failed() {
        // The error is what the on-failure destination carries to the failure topic: the same
        // capped notice a shell run publishes, names and error texts only.
        let arn = event.context.invoked_function_arn.as_str();
        let (region, account) = (
            arn.split(':').nth(3).unwrap_or("unknown"),
            arn.split(':').nth(4).unwrap_or("unknown"),
        );
        let notice = report.notice(account, region);
        if let Some(topic) = notice_topic
            && let Err(e) = replicator.publish_notice(topic, &notice).await
        {
            tracing::error!("cannot publish the failure notice: {e}");
        }
        return Err(Error::from(notice));
    }
    Ok(serde_json::to_value(&report)?)
}

/// What an invocation asks for: the paths it names (or everything), and whether it accepts a
/// Vault that is behind AWS (`"accept_vault_rollback": true`, a boolean).
pub fn request_of(
    event: &serde_json::Value,
    max_duration: Option<std::time::Duration>,
) -> Result<crate::run::Request, String> {
    let accept_vault_rollback = match event.get("accept_vault_rollback") {
        None => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => {
            return Err("invalid event: \"accept_vault_rollback\" must be true or false".into());
        }
    };
    let paths = paths_of(event)?;
    let changes = changes_of(event)?;
    if paths.is_some() && changes.is_some() {
        return Err("invalid event: \"paths\" or \"changes\", not both".into());
    }
    if accept_vault_rollback && (paths.is_some() || changes.is_some()) {
        return Err(
            "invalid event: \"accept_vault_rollback\" is a full sync's word, never a change-driven run's (no \"paths\" or \"changes\")".into(),
        );
    }
    Ok(crate::run::Request {
        paths,
        changes,
        accept_vault_rollback,
        max_duration,
        dry_run: false,
    })
}

/// Where a synchronous caller asks a failed run's notice to go (`"notice_topic"`, an SNS topic
/// ARN); the role may publish to the stack's topic only, whatever the event names.
pub fn notice_topic_of(event: &serde_json::Value) -> Result<Option<&str>, String> {
    match event.get("notice_topic") {
        None => Ok(None),
        Some(serde_json::Value::String(t)) if t.starts_with("arn:") && t.contains(":sns:") => {
            Ok(Some(t))
        }
        Some(_) => Err("invalid event: \"notice_topic\" must be an SNS topic ARN".into()),
    }
}

/// The most paths one invocation takes (a watcher's batch is far smaller).
pub const MAX_PATHS: usize = 10_000;

/// The paths an invocation names (`{"paths": ["app/db", ...]}`: Vault paths inside the mount,
/// never values), or `None` for a full sync (the schedule's event, or anything else).
pub fn paths_of(event: &serde_json::Value) -> Result<Option<Vec<String>>, String> {
    let Some(paths) = event.get("paths") else {
        return Ok(None);
    };
    let bad = || "invalid event: \"paths\" must be an array of Vault paths (strings)".to_owned();
    let paths = paths.as_array().ok_or_else(bad)?;
    if paths.len() > MAX_PATHS {
        return Err(format!(
            "invalid event: {} paths, over {MAX_PATHS}",
            paths.len()
        ));
    }
    paths
        .iter()
        .map(|p| p.as_str().map(str::to_owned).ok_or_else(bad))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The changes an invocation names (`{"changes": [{"namespace": "team", "mount": "kv",
/// "path": "app/db"}, ...]}`: a watcher following many rules; never values), or none.
pub fn changes_of(event: &serde_json::Value) -> Result<Option<Vec<crate::run::Change>>, String> {
    let Some(changes) = event.get("changes") else {
        return Ok(None);
    };
    let bad = || {
        "invalid event: \"changes\" must be an array of {\"mount\", \"path\"} objects, each with its \"namespace\" unless the root's".to_owned()
    };
    let changes = changes.as_array().ok_or_else(bad)?;
    if changes.len() > MAX_PATHS {
        return Err(format!(
            "invalid event: {} changes, over {MAX_PATHS}",
            changes.len()
        ));
    }
    changes
        .iter()
        .map(|c| serde_json::from_value(c.clone()).map_err(|_| bad()))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Seconds a run may start writes for, given the invocation's deadline (milliseconds since the
/// epoch): what is left, less a margin of a fifth of it, at most 10 s, for the writes under way
/// and the answer.
pub fn time_budget(deadline_ms: u64, now: std::time::SystemTime) -> u64 {
    let now_ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let left = deadline_ms.saturating_sub(now_ms);
    let margin = (left / 5).min(10_000);
    (left - margin) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_notice_topic_is_an_sns_topic_arn_or_nothing() {
        use serde_json::json;
        let arn = "arn:aws:sns:us-east-1:123456789012:s-replicator-failures";
        assert_eq!(notice_topic_of(&json!({})), Ok(None));
        assert_eq!(
            notice_topic_of(&json!({"notice_topic": arn})),
            Ok(Some(arn))
        );
        for bad in [
            json!(true),
            json!("s-replicator-failures"),
            json!("arn:aws:s3:::b"),
        ] {
            assert!(notice_topic_of(&json!({"notice_topic": bad})).is_err());
        }
    }

    #[test]
    fn an_event_with_paths_asks_for_those_and_any_other_for_everything() {
        use serde_json::json;
        let scheduled = json!({"source": "aws.events", "detail-type": "Scheduled Event"});
        assert_eq!(paths_of(&scheduled), Ok(None));
        assert_eq!(
            paths_of(&json!({"paths": ["app/db", "b"]})),
            Ok(Some(vec!["app/db".to_owned(), "b".to_owned()]))
        );
        for bad in [json!({"paths": "app/db"}), json!({"paths": [1]})] {
            assert!(paths_of(&bad).unwrap_err().contains("array of Vault paths"));
        }
        let many = json!({"paths": vec!["p"; MAX_PATHS + 1]});
        assert!(paths_of(&many).unwrap_err().contains("over"));
    }

    #[test]
    fn an_event_with_changes_names_each_ones_namespace_and_mount() {
        use serde_json::json;
        let changes = json!({"changes": [
            {"namespace": "team", "mount": "kv", "path": "app/db"},
            {"mount": "kv", "path": "web"},
        ]});
        let got = request_of(&changes, None).unwrap().changes.unwrap();
        assert_eq!(got[0].namespace.as_deref(), Some("team"));
        assert_eq!(
            (got[1].namespace.as_deref(), got[1].path.as_str()),
            (None, "web")
        );
        for bad in [
            json!({"changes": "kv/web"}),
            json!({"changes": [{"path": "web"}]}),
            json!({"changes": [{"mount": "kv", "path": 1}]}),
        ] {
            assert!(changes_of(&bad).unwrap_err().contains("array of"), "{bad}");
        }
        let both = request_of(&json!({"changes": [], "paths": []}), None);
        assert!(both.unwrap_err().contains("not both"));
        let rollback = request_of(&json!({"changes": [], "accept_vault_rollback": true}), None);
        assert!(rollback.unwrap_err().contains("full sync"));
    }

    #[test]
    fn accepting_a_vault_rollback_is_the_events_explicit_word() {
        use serde_json::json;
        let accept = |e| request_of(&e, None).map(|r| r.accept_vault_rollback);
        assert_eq!(accept(json!({})), Ok(false));
        assert_eq!(accept(json!({"accept_vault_rollback": true})), Ok(true));
        assert_eq!(accept(json!({"accept_vault_rollback": false})), Ok(false));
        assert!(accept(json!({"accept_vault_rollback": "yes"})).is_err());
        // A change-driven run never rolls back.
        let both = request_of(
            &json!({"paths": ["a"], "accept_vault_rollback": true}),
            None,
        );
        assert!(both.unwrap_err().contains("full sync"));
    }

    #[test]
    fn the_budget_keeps_a_margin_before_the_deadline() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |s: u64| 1_000_000 + s * 1000;
        assert_eq!(time_budget(at(900), now), 890, "15 minutes: 10 s margin");
        assert_eq!(time_budget(at(120), now), 110);
        assert_eq!(time_budget(at(20), now), 16, "a fifth of what is left");
        assert_eq!(time_budget(at(0), now), 0);
        assert_eq!(time_budget(999_000, now), 0, "past the deadline");
    }
}
