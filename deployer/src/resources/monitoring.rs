//! The stack's CloudWatch alarms and dashboard, over the metrics its function prints in its log
//! (namespace `VaultSecretsReplicator`, the `Stack` dimension): failed runs, and no full sync
//! that succeeded within two schedule periods (no data counts as breaching); with Vault on EC2,
//! over what the change watcher beside it puts (`VaultSecretsReplicator/Host/<stack>`): the watcher
//! silent, the Vault host's disk filling. They notify the failure topic when there is one.
//! Found by name; an alarm is this stack's by its tag, the dashboard by the text widget that
//! names the stack.

use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Statistic, Tag};
use serde_json::{Value, json};

use super::{Ctx, DeployError, found};
use crate::change::{Action, Change, Field, Fields};
use crate::clients::Clients;
use crate::desired::MonitoringSpec;
use crate::policy::canonical;
use contract::metrics::{DISK_USED, FULL_SYNCS, NAMESPACE, WATCHER_ALIVE, host_namespace};

pub(crate) const ALARM_KIND: &str = "cloudwatch alarm";
pub(crate) const DASHBOARD_KIND: &str = "cloudwatch dashboard";

/// CloudWatch's longest alarm period.
const MAX_PERIOD: u32 = 86_400;
/// CloudWatch's longest alarm window (period × evaluation periods).
const MAX_WINDOW: u64 = 7 * 86_400;
/// The shortest window of the no-full-sync alarm: the metrics reach CloudWatch from the log a
/// little late.
const MIN_WINDOW: u64 = 900;

/// One alarm as wanted.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AlarmSpec {
    pub name: String,
    pub description: String,
    pub namespace: String,
    pub metric: &'static str,
    pub statistic: Statistic,
    pub period: u32,
    pub evaluation_periods: u32,
    pub threshold: f64,
    pub comparison: ComparisonOperator,
    /// `breaching` or `notBreaching`.
    pub treat_missing_data: &'static str,
    /// The failure topic, when there is one.
    pub actions: Vec<String>,
    /// Off while the stack is paused (`deployer pause`): no run is expected then.
    pub actions_enabled: bool,
}

impl AlarmSpec {
    fn fields(&self, stack: &str) -> Fields {
        vec![
            (
                Field::Metric,
                format!("{}/{} Stack={stack}", self.namespace, self.metric).into(),
            ),
            (Field::Statistic, self.statistic.as_str().into()),
            (
                Field::Period,
                format!("{} s x {}", self.period, self.evaluation_periods).into(),
            ),
            (
                Field::Threshold,
                format!("{} {}", self.comparison.as_str(), self.threshold).into(),
            ),
            (Field::MissingData, self.treat_missing_data.into()),
            (Field::Actions, self.actions.join(",").into()),
            (
                Field::ActionsEnabled,
                self.actions_enabled.to_string().into(),
            ),
            (Field::Description, self.description.clone().into()),
        ]
    }
}

/// An alarm as found.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AlarmState {
    pub fields: Fields,
    pub ours: bool,
}

/// How long the no-full-sync alarm waits: two of the schedule's longest gaps between runs (a
/// schedule whose gaps are not read, on some days only: CloudWatch's longest, 7 days), at
/// least a quarter of an hour.
fn no_full_sync_window(spec: &MonitoringSpec) -> u64 {
    crate::schedule::longest_gap_seconds(&spec.schedule)
        .map_or(MAX_WINDOW, |gap| gap.saturating_mul(2))
        .clamp(MIN_WINDOW, MAX_WINDOW)
}

/// The disk share used on the Vault host at which its alarm fires.
pub(crate) const DISK_THRESHOLD: f64 = 80.0;

/// The stack's alarms ([`every`] one it may have that its configuration wants).
pub(crate) fn wanted(spec: &MonitoringSpec) -> Vec<AlarmSpec> {
    every(spec)
        .into_iter()
        .filter(|a| is_wanted(spec, a))
        .collect()
}

/// Whether the configuration wants `alarm`, one of [`every`]: the host's only beside the
/// stack's own Vault.
fn is_wanted(spec: &MonitoringSpec, alarm: &AlarmSpec) -> bool {
    spec.vault_host || alarm.namespace == NAMESPACE
}

/// Every alarm the stack may have: failed runs (any failure in five minutes), and no full sync
/// that succeeded within two schedule periods (in periods CloudWatch accepts: a multiple of a
/// minute, at most a day each); with Vault on EC2, the change watcher silent for a quarter of
/// an hour and the Vault host's disk [`DISK_THRESHOLD`] full. `up` removes the ones not
/// [`wanted`].
pub(crate) fn every(spec: &MonitoringSpec) -> Vec<AlarmSpec> {
    let actions: Vec<String> = spec.topic_arn.iter().cloned().collect();
    let window = no_full_sync_window(spec);
    let (period, evaluation_periods) = if window <= u64::from(MAX_PERIOD) {
        (window.div_ceil(60) as u32 * 60, 1)
    } else {
        (MAX_PERIOD, window.div_ceil(u64::from(MAX_PERIOD)) as u32)
    };
    let actions_enabled = !spec.paused;
    vec![
        AlarmSpec {
            name: format!("{}-failed-runs", spec.owner.stack()),
            description: format!(
                "vault-secrets-replicator stack {}: a run failed to replicate a secret (the run's report, in the function's log, says which and why)",
                spec.owner.stack()
            ),
            namespace: NAMESPACE.to_owned(),
            metric: "Failed",
            statistic: Statistic::Sum,
            period: 300,
            evaluation_periods: 1,
            threshold: 1.0,
            comparison: ComparisonOperator::GreaterThanOrEqualToThreshold,
            treat_missing_data: "notBreaching",
            actions: actions.clone(),
            actions_enabled,
        },
        AlarmSpec {
            name: format!("{}-no-full-sync", spec.owner.stack()),
            description: format!(
                "vault-secrets-replicator stack {}: no full sync succeeded within two schedule periods ({}); a paused stack, a failing or a missing schedule",
                spec.owner.stack(),
                spec.schedule
            ),
            namespace: NAMESPACE.to_owned(),
            metric: FULL_SYNCS,
            statistic: Statistic::Sum,
            period,
            evaluation_periods,
            threshold: 1.0,
            comparison: ComparisonOperator::LessThanThreshold,
            treat_missing_data: "breaching",
            actions: actions.clone(),
            actions_enabled,
        },
        // The watcher runs whether or not the stack is paused: these stay on.
        AlarmSpec {
            name: format!("{}-watcher-silent", spec.owner.stack()),
            description: format!(
                "vault-secrets-replicator stack {}: the change watcher beside Vault has not read the audit log for 15 minutes, or not said so (its unit vault-replicator-watch on the Vault host, or the host itself, is down; changes then wait for the schedule)",
                spec.owner.stack()
            ),
            namespace: host_namespace(spec.owner.stack()),
            metric: WATCHER_ALIVE,
            statistic: Statistic::Sum,
            period: 300,
            evaluation_periods: 3,
            threshold: 1.0,
            comparison: ComparisonOperator::LessThanThreshold,
            treat_missing_data: "breaching",
            actions: actions.clone(),
            actions_enabled: true,
        },
        AlarmSpec {
            name: format!("{}-vault-disk", spec.owner.stack()),
            description: format!(
                "vault-secrets-replicator stack {}: the Vault host's disk (Vault's data and its audit log) is {DISK_THRESHOLD}% full or more: a full disk stops Vault, which refuses every request once it cannot write its audit log",
                spec.owner.stack()
            ),
            namespace: host_namespace(spec.owner.stack()),
            metric: DISK_USED,
            statistic: Statistic::Maximum,
            period: 300,
            evaluation_periods: 1,
            threshold: DISK_THRESHOLD,
            comparison: ComparisonOperator::GreaterThanOrEqualToThreshold,
            treat_missing_data: "notBreaching",
            actions,
            actions_enabled: true,
        },
    ]
}

pub(crate) async fn observe_alarms(
    c: &Clients,
    spec: &MonitoringSpec,
    wanted: &[AlarmSpec],
) -> Result<Vec<Option<AlarmState>>, DeployError> {
    let names: Vec<String> = wanted.iter().map(|a| a.name.clone()).collect();
    let out =
        c.cw.describe_alarms()
            .set_alarm_names(Some(names))
            .send()
            .await
            .ctx("DescribeAlarms", spec.owner.stack())?;
    let mut states = Vec::new();
    for want in wanted {
        let Some(a) = out
            .metric_alarms()
            .iter()
            .find(|a| a.alarm_name() == Some(want.name.as_str()))
        else {
            states.push(None);
            continue;
        };
        let ours = match a.alarm_arn() {
            Some(arn) => {
                let tags =
                    c.cw.list_tags_for_resource()
                        .resource_arn(arn)
                        .send()
                        .await
                        .ctx("ListTagsForResource", &want.name)?;
                super::has_stack_tag(
                    tags.tags()
                        .iter()
                        .map(|t| (t.key().unwrap_or(""), t.value().unwrap_or(""))),
                    spec.owner.stack(),
                )
            }
            None => false,
        };
        let dimension = a
            .dimensions()
            .iter()
            .map(|d| format!("{}={}", d.name().unwrap_or(""), d.value().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(",");
        let fields: Fields = vec![
            (
                Field::Metric,
                format!(
                    "{}/{} {dimension}",
                    a.namespace().unwrap_or(""),
                    a.metric_name().unwrap_or("")
                )
                .into(),
            ),
            (
                Field::Statistic,
                a.statistic().map(|s| s.as_str()).unwrap_or("").into(),
            ),
            (
                Field::Period,
                format!(
                    "{} s x {}",
                    a.period().unwrap_or(0),
                    a.evaluation_periods().unwrap_or(0)
                )
                .into(),
            ),
            (
                Field::Threshold,
                format!(
                    "{} {}",
                    a.comparison_operator().map(|o| o.as_str()).unwrap_or(""),
                    a.threshold().unwrap_or(f64::NAN)
                )
                .into(),
            ),
            (
                Field::MissingData,
                a.treat_missing_data().unwrap_or("missing").into(),
            ),
            (Field::Actions, a.alarm_actions().join(",").into()),
            (
                Field::ActionsEnabled,
                a.actions_enabled().unwrap_or(true).to_string().into(),
            ),
            (
                Field::Description,
                a.alarm_description().unwrap_or("").into(),
            ),
        ];
        states.push(Some(AlarmState { fields, ours }));
    }
    Ok(states)
}

pub(crate) fn diff_alarm(
    spec: &MonitoringSpec,
    want: &AlarmSpec,
    seen: Option<&AlarmState>,
) -> Change {
    match seen {
        Some(s) if !s.ours => Change::new(ALARM_KIND, &want.name, Action::Unchanged).with_note(
            "an alarm of this name without this stack's tag: left alone, so the stack has none of this kind (delete or rename that one)",
        ),
        _ => Change::diff(
            ALARM_KIND,
            &want.name,
            &want.fields(spec.owner.stack()),
            seen.map(|s| &s.fields),
        ),
    }
}

/// What `up` does about each alarm the stack may have ([`every`], as `seen`, in its order):
/// diffs a [`wanted`] one; deletes one this stack made that is no longer wanted (Vault no longer
/// on EC2); leaves the rest out.
pub(crate) fn diff_alarms(
    spec: &MonitoringSpec,
    seen: &[Option<AlarmState>],
) -> Vec<(AlarmSpec, Change)> {
    every(spec)
        .into_iter()
        .zip(seen)
        .filter_map(|(alarm, seen)| {
            let change = if is_wanted(spec, &alarm) {
                diff_alarm(spec, &alarm, seen.as_ref())
            } else if seen.as_ref().is_some_and(|s| s.ours) {
                Change::new(ALARM_KIND, &alarm.name, Action::Delete)
            } else {
                return None;
            };
            Some((alarm, change))
        })
        .collect()
}

/// Performs an alarm's change of [`diff_alarms`].
pub(crate) async fn apply_alarm_change(
    c: &Clients,
    spec: &MonitoringSpec,
    alarm: &AlarmSpec,
    change: &Change,
) -> Result<(), DeployError> {
    match change.action {
        Action::Delete => {
            c.cw.delete_alarms()
                .alarm_names(&alarm.name)
                .send()
                .await
                .ctx("DeleteAlarms", &alarm.name)?;
            Ok(())
        }
        _ => apply_alarm(c, spec, alarm).await,
    }
}

pub(crate) async fn apply_alarm(
    c: &Clients,
    spec: &MonitoringSpec,
    want: &AlarmSpec,
) -> Result<(), DeployError> {
    let tags: Vec<Tag> = spec
        .owner
        .tags()
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    c.cw.put_metric_alarm()
        .alarm_name(&want.name)
        .alarm_description(&want.description)
        .namespace(&want.namespace)
        .metric_name(want.metric)
        .dimensions(
            Dimension::builder()
                .name("Stack")
                .value(spec.owner.stack())
                .build(),
        )
        .statistic(want.statistic.clone())
        .period(want.period as i32)
        .evaluation_periods(want.evaluation_periods as i32)
        .threshold(want.threshold)
        .comparison_operator(want.comparison.clone())
        .treat_missing_data(want.treat_missing_data)
        .set_alarm_actions(Some(want.actions.clone()))
        .actions_enabled(want.actions_enabled)
        .set_tags(Some(tags))
        .send()
        .await
        .ctx("PutMetricAlarm", &want.name)?;
    Ok(())
}

/// The dashboard's name: the stack's.
pub(crate) fn dashboard_name(spec: &MonitoringSpec) -> String {
    spec.owner.stack().to_owned()
}

/// The line of the dashboard's text widget that marks it as this stack's.
fn marker(spec: &MonitoringSpec) -> String {
    format!(
        "vault-secrets-replicator stack {}: made by `deployer up`",
        spec.owner.stack()
    )
}

/// The dashboard: runs, their outcomes, the replication lag's percentiles, the values read and
/// the runs' duration, over the stack's metrics; the alarms' state.
pub(crate) fn dashboard_body(spec: &MonitoringSpec) -> Value {
    let region = &spec.region;
    let stack = spec.owner.stack();
    // The stack's own series (the alarms' metrics), and one line per rule of the others.
    let metric = |name: &str, stat: &str, label: &str| json!([NAMESPACE, name, "Stack", stack, {"stat": stat, "label": label}]);
    let per_rule = |id: &str, name: &str, stat: &str, label: &str| {
        json!({
            "id": id,
            "label": label,
            "expression": format!(
                "SEARCH('{{{NAMESPACE},Rule,Stack}} MetricName=\"{name}\" Stack=\"{stack}\"', '{stat}', 300)"
            )
        })
    };
    let widget = |x: u32, y: u32, title: &str, metrics: Vec<Value>| {
        json!({
            "type": "metric", "x": x, "y": y, "width": 12, "height": 6,
            "properties": {
                "title": title, "region": region, "view": "timeSeries",
                "period": 300, "metrics": metrics
            }
        })
    };
    let alarms: Vec<String> = wanted(spec)
        .iter()
        .map(|a| format!("{}{}", spec.alarm_arn_prefix, a.name))
        .collect();
    let mut widgets = vec![
        json!({
            "type": "text", "x": 0, "y": 0, "width": 24, "height": 2,
            "properties": {"markdown": format!(
                "## {}\nSchedule `{}`. Every number is from the runs' metrics documents (no secret value, no path).",
                marker(spec), spec.schedule
            )}
        }),
        widget(
            0,
            2,
            "Runs, and full syncs that succeeded",
            vec![
                per_rule("runs", "DurationMs", "SampleCount", "runs"),
                metric(FULL_SYNCS, "Maximum", "a full sync succeeded (1)"),
                metric("Failed", "Sum", "failed (every rule)"),
            ],
        ),
        widget(
            12,
            2,
            "Outcomes by rule",
            vec![
                per_rule("created", "Created", "Sum", "created"),
                per_rule("updated", "Updated", "Sum", "updated"),
                per_rule("deleted", "Deleted", "Sum", "deleted"),
                per_rule("failed", "Failed", "Sum", "failed"),
            ],
        ),
        widget(
            0,
            8,
            "Replication lag by rule (seconds, Vault's version to AWS)",
            vec![
                per_rule("p50", "LagSeconds", "p50", "p50"),
                per_rule("p90", "LagSeconds", "p90", "p90"),
                per_rule("p99", "LagSeconds", "p99", "p99"),
            ],
        ),
        widget(
            12,
            8,
            "Values read from Vault, and the runs' duration, by rule",
            vec![
                per_rule("values", "ValuesRead", "Sum", "values read"),
                per_rule("duration", "DurationMs", "p90", "duration p90 (ms)"),
            ],
        ),
    ];
    let mut y = 14;
    if spec.vault_host {
        let namespace = host_namespace(stack);
        let host = |name: &str, stat: &str, label: &str| json!([namespace, name, "Stack", stack, {"stat": stat, "label": label}]);
        widgets.push(widget(
            0,
            y,
            "The change watcher beside Vault",
            vec![host(WATCHER_ALIVE, "Sum", "minutes it read the audit log")],
        ));
        widgets.push(widget(
            12,
            y,
            "The Vault host's disk (% used)",
            vec![host(DISK_USED, "Maximum", "used (%)")],
        ));
        y += 6;
    }
    widgets.push(json!({
        "type": "alarm", "x": 0, "y": y, "width": 24, "height": 3,
        "properties": {"title": "Alarms", "alarms": alarms}
    }));
    json!({ "widgets": widgets })
}

/// The dashboard as found: its body, canonical, and whether it is this stack's.
pub(crate) async fn observe_dashboard(
    c: &Clients,
    spec: &MonitoringSpec,
) -> Result<Option<(String, bool)>, DeployError> {
    let name = dashboard_name(spec);
    let Some(out) = found(
        c.cw.get_dashboard()
            .dashboard_name(&name)
            .send()
            .await
            .ctx("GetDashboard", &name),
    )?
    else {
        return Ok(None);
    };
    let body = out.dashboard_body().unwrap_or_default();
    // This stack's: its first widget's text starts by naming it.
    let ours = serde_json::from_str::<Value>(body).is_ok_and(|v| {
        v["widgets"][0]["properties"]["markdown"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("## {}\n", marker(spec))))
    });
    let body = serde_json::from_str::<Value>(body)
        .map(|v| canonical(&v))
        .unwrap_or_else(|_| body.to_owned());
    Ok(Some((body, ours)))
}

pub(crate) fn diff_dashboard(spec: &MonitoringSpec, seen: Option<&(String, bool)>) -> Change {
    let want = vec![(Field::Body, canonical(&dashboard_body(spec)).into())];
    let have = seen.map(|(body, _)| vec![(Field::Body, body.clone().into())]);
    match seen {
        // Not wanted (`dashboard = false`): this stack's goes, anyone else's stays.
        Some((_, true)) if !spec.dashboard => {
            Change::new(DASHBOARD_KIND, dashboard_name(spec), Action::Delete)
        }
        _ if !spec.dashboard => {
            Change::new(DASHBOARD_KIND, dashboard_name(spec), Action::Absent)
        }
        Some((_, false)) => Change::new(DASHBOARD_KIND, dashboard_name(spec), Action::Unchanged)
            .with_note(
                "a dashboard of this name that this stack did not make: left alone, so the stack has none (delete or rename that one)",
            ),
        _ => Change::diff(DASHBOARD_KIND, dashboard_name(spec), &want, have.as_ref()),
    }
}

/// Performs the dashboard's change of [`diff_dashboard`]: puts it, or deletes this stack's.
pub(crate) async fn apply_dashboard(
    c: &Clients,
    spec: &MonitoringSpec,
    change: &Change,
) -> Result<(), DeployError> {
    let name = dashboard_name(spec);
    if change.action == Action::Delete {
        c.cw.delete_dashboards()
            .dashboard_names(&name)
            .send()
            .await
            .ctx("DeleteDashboards", &name)?;
        return Ok(());
    }
    c.cw.put_dashboard()
        .dashboard_name(&name)
        .dashboard_body(canonical(&dashboard_body(spec)))
        .send()
        .await
        .ctx("PutDashboard", &name)?;
    Ok(())
}

/// Turns the actions of this stack's alarms off while it is paused (`deployer pause`), and
/// on again (`deployer resume`): no run is expected while it is paused.
pub(crate) async fn set_paused(
    c: &Clients,
    spec: &MonitoringSpec,
    paused: bool,
) -> Result<(), DeployError> {
    let mut view = spec.clone();
    view.paused = paused;
    let wanted = wanted(&view);
    let seen = observe_alarms(c, &view, &wanted).await?;
    for (want, seen) in wanted.iter().zip(&seen) {
        if seen.as_ref().is_some_and(|s| s.ours) {
            apply_alarm(c, &view, want).await?;
        }
    }
    Ok(())
}

/// Deletes the alarms this stack tagged and its dashboard.
pub(crate) async fn destroy(
    c: &Clients,
    spec: &MonitoringSpec,
) -> Result<Vec<Change>, DeployError> {
    let all = every(spec);
    let seen = observe_alarms(c, spec, &all).await?;
    let mut changes = Vec::new();
    let mut ours = Vec::new();
    for (want, seen) in all.iter().zip(&seen) {
        changes.push(match seen {
            Some(s) if s.ours => {
                ours.push(want.name.clone());
                Change::new(ALARM_KIND, &want.name, Action::Delete)
            }
            Some(_) => Change::new(ALARM_KIND, &want.name, Action::Absent)
                .with_note("exists without this stack's tag; left alone"),
            // One the configuration never wanted is not worth a line.
            None if !is_wanted(spec, want) => continue,
            None => Change::new(ALARM_KIND, &want.name, Action::Absent),
        });
    }
    if !ours.is_empty() {
        c.cw.delete_alarms()
            .set_alarm_names(Some(ours))
            .send()
            .await
            .ctx("DeleteAlarms", spec.owner.stack())?;
    }
    let name = dashboard_name(spec);
    changes.push(match observe_dashboard(c, spec).await? {
        Some((_, true)) => {
            c.cw.delete_dashboards()
                .dashboard_names(&name)
                .send()
                .await
                .ctx("DeleteDashboards", &name)?;
            Change::new(DASHBOARD_KIND, &name, Action::Delete)
        }
        Some((_, false)) => Change::new(DASHBOARD_KIND, &name, Action::Absent)
            .with_note("not this stack's; left alone"),
        None => Change::new(DASHBOARD_KIND, &name, Action::Absent),
    });
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::touched;

    fn spec(toml: &str) -> MonitoringSpec {
        crate::spec::tests::spec(toml).monitoring_spec()
    }

    const EXTERNAL: &str = "stack_name = \"s\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"\n";

    #[test]
    fn the_no_full_sync_alarm_waits_two_schedule_periods_and_counts_silence_as_breaching() {
        let every_15 = wanted(&spec(&format!(
            "{EXTERNAL}schedule = \"cron(0/15 * * * ? *)\"\n"
        )));
        let none = &every_15[1];
        assert_eq!((none.period, none.evaluation_periods), (1800, 1));
        let window = |schedule: &str| {
            let a = &wanted(&spec(&format!("{EXTERNAL}schedule = \"{schedule}\"\n")))[1];
            (a.period, a.evaluation_periods)
        };
        // Office hours: the night is the longest gap (16 h), twice.
        assert_eq!(window("cron(0 9-17 * * ? *)"), (86_400, 2));
        // Longer than CloudWatch's 7 days, or gaps not read: 7 days.
        assert_eq!(window("rate(4 days)"), (86_400, 7));
        assert_eq!(window("cron(0 0 L * ? *)"), (86_400, 7));
        assert_eq!(window("cron(0 9 ? * MON-FRI *)"), (86_400, 7));
        // Every minute: at least a quarter of an hour, the metrics come late.
        assert_eq!(window("rate(1 minute)"), (900, 1));
        for schedule in ["rate(30 days)", "cron(0/5 * * * ? *)", "rate(12 hours)"] {
            let (p, n) = window(schedule);
            assert!(u64::from(p) * u64::from(n) <= MAX_WINDOW, "{schedule}");
        }
        assert_eq!(none.treat_missing_data, "breaching");
        assert_eq!(none.metric, FULL_SYNCS);
        assert_eq!(none.comparison, ComparisonOperator::LessThanThreshold);
        // A daily schedule: two periods of a day, both missing to alarm.
        let daily = wanted(&spec(&format!("{EXTERNAL}schedule = \"rate(1 day)\"\n")));
        assert_eq!((daily[1].period, daily[1].evaluation_periods), (86_400, 2));
        // Failed runs: any failure in five minutes; silence is fine.
        let failed = &every_15[0];
        assert_eq!((failed.metric, failed.period), ("Failed", 300));
        assert_eq!(failed.treat_missing_data, "notBreaching");
    }

    #[test]
    fn alarms_notify_the_topic_when_there_is_one_and_drift_is_each_field() {
        let quiet = wanted(&spec(EXTERNAL));
        assert!(
            quiet
                .iter()
                .all(|a| a.actions.is_empty() && a.actions_enabled)
        );
        let mut paused = spec(EXTERNAL);
        paused.paused = true;
        assert!(wanted(&paused).iter().all(|a| !a.actions_enabled));
        let s = spec(&format!(
            "{EXTERNAL}notification_email = \"ops@example.com\"\n"
        ));
        let loud = wanted(&s);
        assert!(
            loud.iter()
                .all(|a| a.actions == [s.topic_arn.clone().unwrap()])
        );
        let want = &loud[0];
        let made = AlarmState {
            fields: want.fields(s.owner.stack()),
            ours: true,
        };
        assert_eq!(diff_alarm(&s, want, Some(&made)).action, Action::Unchanged);
        assert_eq!(diff_alarm(&s, want, None).action, Action::Create);
        let mut drifted = made.clone();
        drifted.fields[3].1 = "GreaterThanOrEqualToThreshold 100".into();
        let ch = diff_alarm(&s, want, Some(&drifted));
        assert_eq!(touched(&ch), ["threshold"]);
        assert!(!ch.needs_confirmation(), "an alarm is not access");
    }

    #[test]
    fn with_vault_on_ec2_the_watcher_and_the_disk_have_alarms_that_pause_leaves_on() {
        const EC2: &str = "stack_name = \"s\"\nvault_inbound_cidr = \"203.0.113.0/24\"\n";
        let mut on_ec2 = spec(EC2);
        on_ec2.paused = true;
        let alarms = wanted(&on_ec2);
        let names: Vec<&str> = alarms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "s-failed-runs",
                "s-no-full-sync",
                "s-watcher-silent",
                "s-vault-disk"
            ]
        );
        let (silent, disk) = (&alarms[2], &alarms[3]);
        assert_eq!(
            (
                silent.namespace.as_str(),
                silent.metric,
                silent.treat_missing_data
            ),
            ("VaultSecretsReplicator/Host/s", WATCHER_ALIVE, "breaching")
        );
        assert_eq!((silent.period, silent.evaluation_periods), (300, 3));
        assert_eq!(
            (disk.metric, disk.threshold, disk.treat_missing_data),
            (DISK_USED, DISK_THRESHOLD, "notBreaching")
        );
        // Paused: no run is expected, but the watcher still runs and the disk still fills.
        assert!(!alarms[0].actions_enabled && !alarms[1].actions_enabled);
        assert!(silent.actions_enabled && disk.actions_enabled);
        let body = dashboard_body(&on_ec2).to_string();
        assert!(body.contains("\"WatcherAlive\",\"Stack\",\"s\""), "{body}");
        assert!(body.contains("alarm:s-vault-disk"), "{body}");
        assert!(
            !dashboard_body(&spec(EXTERNAL))
                .to_string()
                .contains("WatcherAlive")
        );

        // Moved to an external Vault: the host's alarms this stack made go; one it did not
        // make is left alone, an absent one is not mentioned.
        let external = spec(EXTERNAL);
        let all = every(&external);
        let mine = |a: &AlarmSpec| {
            Some(AlarmState {
                fields: a.fields("s"),
                ours: true,
            })
        };
        let seen = vec![mine(&all[0]), mine(&all[1]), mine(&all[2]), None];
        let plan: Vec<(String, Action)> = diff_alarms(&external, &seen)
            .into_iter()
            .map(|(a, c)| (a.name, c.action))
            .collect();
        assert_eq!(
            plan,
            [
                ("s-failed-runs".to_owned(), Action::Unchanged),
                ("s-no-full-sync".to_owned(), Action::Unchanged),
                ("s-watcher-silent".to_owned(), Action::Delete),
            ]
        );
        let foreign = vec![
            mine(&all[0]),
            mine(&all[1]),
            Some(AlarmState {
                fields: vec![],
                ours: false,
            }),
            None,
        ];
        assert_eq!(diff_alarms(&external, &foreign).len(), 2);
    }

    #[test]
    fn the_dashboard_graphs_the_stacks_metrics_and_names_the_stack() {
        let s = spec(EXTERNAL);
        let body = dashboard_body(&s).to_string();
        for part in [
            "MetricName=\\\"LagSeconds\\\"",
            "'p99'",
            "MetricName=\\\"ValuesRead\\\"",
            "\"Failed\",\"Stack\"",
            "\"FullSyncsSucceeded\",\"Stack\"",
            "vault-secrets-replicator stack s: made by `deployer up`",
            "alarm:s-no-full-sync",
        ] {
            assert!(body.contains(part), "{part} missing from {body}");
        }
        let ch = diff_dashboard(&s, Some(&(canonical(&dashboard_body(&s)), true)));
        assert_eq!(ch.action, Action::Unchanged);
        // `dashboard = false`: this stack's goes, anyone else's stays, none is made.
        let off = spec(&format!("{EXTERNAL}dashboard = false\n"));
        let ours = (canonical(&dashboard_body(&off)), true);
        assert_eq!(diff_dashboard(&off, Some(&ours)).action, Action::Delete);
        assert_eq!(diff_dashboard(&off, None).action, Action::Absent);
        assert_eq!(
            diff_dashboard(&off, Some(&("{}".into(), false))).action,
            Action::Absent
        );
        let foreign = diff_dashboard(&s, Some(&("{}".into(), false)));
        assert!(foreign.note.unwrap().contains("left alone"));
        assert_eq!(foreign.action, Action::Unchanged);
        // An alarm of the name someone else made: left alone too.
        let want = &wanted(&s)[0];
        let theirs = AlarmState {
            fields: vec![],
            ours: false,
        };
        assert_eq!(
            diff_alarm(&s, want, Some(&theirs)).action,
            Action::Unchanged
        );
    }
}
