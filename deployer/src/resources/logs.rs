//! The log group of each of the stack's functions, with retention, created before the function
//! so its retention applies from the first run.

use super::{Ctx, DeployError, delete};
use crate::change::{Action, Change, Field, Fields};
use crate::clients::Clients;
use crate::desired::{LogGroupSpec, Owner};

pub(crate) const KIND: &str = "log group";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LogGroupState {
    pub retention_days: Option<i32>,
}

fn fields(retention: Option<i32>) -> Fields {
    vec![(
        Field::RetentionDays,
        retention
            .map(|d| d.to_string())
            .unwrap_or_else(|| "never expire".into())
            .into(),
    )]
}

pub(crate) async fn observe(
    c: &Clients,
    want: &LogGroupSpec,
) -> Result<Option<LogGroupState>, DeployError> {
    let name = want.name.clone();
    let out = c
        .logs
        .describe_log_groups()
        .log_group_name_prefix(&name)
        .send()
        .await
        .ctx("DescribeLogGroups", &name)?;
    Ok(out
        .log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some(name.as_str()))
        .map(|g| LogGroupState {
            retention_days: g.retention_in_days(),
        }))
}

/// A function the stack no longer has keeps its logs until `destroy` (they are its history).
pub(crate) fn diff(want: &LogGroupSpec, seen: Option<&LogGroupState>) -> Change {
    let name = want.name.clone();
    if !want.wanted {
        return Change::new(KIND, name, Action::Absent);
    }
    let wanted = fields(Some(want.retention_days));
    Change::diff(
        KIND,
        name,
        &wanted,
        seen.map(|s| fields(s.retention_days)).as_ref(),
    )
}

pub(crate) async fn apply(
    c: &Clients,
    want: &LogGroupSpec,
    change: &Change,
) -> Result<LogGroupState, DeployError> {
    let name = want.name.clone();
    if change.action == Action::Create {
        c.logs
            .create_log_group()
            .log_group_name(&name)
            .set_tags(Some(want.owner.tags().into_iter().collect()))
            .send()
            .await
            .ctx("CreateLogGroup", &name)?;
    }
    if change.touches(Field::RetentionDays) {
        c.logs
            .put_retention_policy()
            .log_group_name(&name)
            .retention_in_days(want.retention_days)
            .send()
            .await
            .ctx("PutRetentionPolicy", &name)?;
    }
    Ok(LogGroupState {
        retention_days: Some(want.retention_days),
    })
}

pub(crate) async fn destroy(c: &Clients, want: &LogGroupSpec) -> Result<Change, DeployError> {
    let name = want.name.clone();
    if observe(c, want).await?.is_none() {
        return Ok(Change::new(KIND, name, Action::Absent));
    }
    let arn = want.arn.clone();
    let tags = c
        .logs
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .ctx("ListTagsForResource", &arn)?;
    let ours = tags.tags().is_some_and(|t| {
        t.get(crate::spec::STACK_TAG).map(String::as_str) == Some(want.owner.stack())
    });
    if !ours {
        return Ok(Change::new(KIND, name, Action::Absent)
            .with_note("exists without this stack's tag; left alone"));
    }
    delete(
        "DeleteLogGroup",
        &name,
        c.logs.delete_log_group().log_group_name(&name).send(),
    )
    .await?;
    Ok(Change::new(KIND, name, Action::Delete))
}

/// How far back `status` looks for each sync's last run.
pub(crate) const LAST_RUN_WINDOW: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 3600);

/// The last run of one sync, from the metrics document (EMF) the sync function printed for
/// it: names and counts only.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub(crate) struct LastRun {
    /// The rule's name; `default` for the one sync of the top-level keys.
    pub rule: String,
    /// When it ran, RFC 3339 (UTC).
    pub at: String,
    /// `full`, `change-driven` or `partial`.
    pub kind: String,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub failed: u64,
}

impl LastRun {
    /// One metrics document of the stack `stack`, or `None` for any other line.
    fn of(message: &str, stack: &str) -> Option<Self> {
        let doc: serde_json::Value = serde_json::from_str(message.trim()).ok()?;
        if doc["Stack"] != stack || !doc["_aws"]["CloudWatchMetrics"].is_array() {
            return None;
        }
        let ms = doc["_aws"]["Timestamp"].as_i64()?;
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
        let at = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        let count = |k: &str| doc[k].as_u64().unwrap_or(0);
        // Printed on a terminal: only what the function writes (a rule's name is a-z, 0-9, -;
        // a kind one of three), never a forged line's other text.
        let kind = doc["Kind"].as_str()?;
        if !["full", "change-driven", "partial"].contains(&kind) {
            return None;
        }
        let rule = doc["Rule"].as_str()?;
        if rule != contract::metrics::DEFAULT_RULE && contract::check_rule_name(rule).is_err() {
            return None;
        }
        Some(Self {
            rule: rule.to_owned(),
            at,
            kind: kind.to_owned(),
            created: count("Created"),
            updated: count("Updated"),
            deleted: count("Deleted"),
            unchanged: count("Unchanged"),
            failed: count("Failed"),
        })
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "{} {}: {} created, {} updated, {} deleted, {} unchanged, {} failed",
            self.at,
            self.kind,
            self.created,
            self.updated,
            self.deleted,
            self.unchanged,
            self.failed
        )
    }
}

/// The last run of each sync within [`LAST_RUN_WINDOW`], by rule (`default`: the one sync), as the
/// functions that sync logged them. A log group not there yet holds none. Read over the last
/// hour first, then the last day, then the whole window, until every sync has one: a busy
/// schedule's week of documents is read only when some sync has not run lately.
pub(crate) async fn last_runs(
    c: &Clients,
    owner: &Owner,
    syncing: &[LogGroupSpec],
    rules: &[&str],
) -> Result<std::collections::BTreeMap<String, LastRun>, DeployError> {
    // The log groups of the functions that sync, those there already.
    let mut groups = Vec::new();
    for group in syncing {
        if observe(c, group).await?.is_some() {
            groups.push(group.name.clone());
        }
    }
    let mut found = Default::default();
    for window in [3_600, 86_400, LAST_RUN_WINDOW.as_secs()] {
        found = last_runs_within(c, owner, &groups, std::time::Duration::from_secs(window)).await?;
        if rules.iter().all(|w| found.contains_key(*w)) {
            break;
        }
    }
    Ok(found)
}

async fn last_runs_within(
    c: &Clients,
    owner: &Owner,
    groups: &[String],
    window: std::time::Duration,
) -> Result<std::collections::BTreeMap<String, LastRun>, DeployError> {
    let mut last: std::collections::BTreeMap<String, (i64, LastRun)> = Default::default();
    let since = std::time::SystemTime::now()
        .checked_sub(window)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    for group in groups {
        let mut pages = c
            .logs
            .filter_log_events()
            .log_group_name(group)
            .start_time(since)
            .filter_pattern("CloudWatchMetrics")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.ctx("FilterLogEvents", group)?;
            for event in page.events() {
                let (Some(at), Some(run)) = (
                    event.timestamp(),
                    event.message().and_then(|m| LastRun::of(m, owner.stack())),
                ) else {
                    continue;
                };
                match last.get(&run.rule) {
                    Some((seen, _)) if *seen >= at => {}
                    _ => {
                        last.insert(run.rule.clone(), (at, run));
                    }
                }
            }
        }
    }
    Ok(last.into_iter().map(|(k, (_, run))| (k, run)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::touched;
    use crate::spec::Duty;
    use crate::spec::tests::spec;

    #[test]
    fn retention_is_the_one_field_and_never_expire_is_drift() {
        let s = spec(
            "stack_name = \"s\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"\nnotification_email = \"ops@example.com\"\n",
        );
        let days = s.cfg.log_retention_days;
        assert_eq!(
            diff(&s.log_group_spec(Duty::Sync), None).action,
            Action::Create
        );
        assert_eq!(
            diff(&s.log_group_spec(Duty::Watch), None).action,
            Action::Absent,
            "no stack Vault"
        );
        let kept = LogGroupState {
            retention_days: Some(days),
        };
        assert_eq!(
            diff(&s.log_group_spec(Duty::Sync), Some(&kept)).action,
            Action::Unchanged
        );
        let forever = LogGroupState {
            retention_days: None,
        };
        let ch = diff(&s.log_group_spec(Duty::Sync), Some(&forever));
        assert_eq!(
            (ch.action, touched(&ch)),
            (Action::Update, vec!["retention_days"])
        );
        assert_eq!(ch.fields[0].from.as_deref(), Some("never expire"));
    }

    #[test]
    fn a_last_run_is_read_from_the_stacks_metrics_documents_only() {
        let doc = r#"{"_aws":{"Timestamp":1764979200000,"CloudWatchMetrics":[{"Namespace":"VaultSecretsReplicator","Dimensions":[["Stack","Rule"]],"Metrics":[]}]},"Stack":"s","Rule":"payments","Kind":"full","Created":2,"Updated":1,"Deleted":0,"Unchanged":7,"Failed":1,"ValuesRead":3,"DurationMs":12}"#;
        let run = super::LastRun::of(doc, "s").unwrap();
        assert_eq!(run.rule, "payments");
        assert_eq!(
            run.line(),
            "2025-12-06T00:00:00Z full: 2 created, 1 updated, 0 deleted, 7 unchanged, 1 failed"
        );
        // Another stack's document, a report line, a value-free log line: none is a run.
        assert!(super::LastRun::of(doc, "other").is_none());
        assert!(super::LastRun::of(r#"{"Stack":"s","created":1}"#, "s").is_none());
        assert!(super::LastRun::of("sync finished CloudWatchMetrics", "s").is_none());
        // A forged document with text the function never writes is no run.
        for forged in [
            doc.replace(r#""Kind":"full""#, r#""Kind":"\u001b[2Jall good""#),
            doc.replace(r#""Rule":"payments""#, r#""Rule":"\u001b[31m""#),
        ] {
            assert!(super::LastRun::of(&forged, "s").is_none(), "{forged}");
        }
    }
}
