//! CloudWatch Embedded Metric Format: one JSON document per Lambda run, printed on stdout (the
//! function's log), which CloudWatch turns into metrics with no `PutMetricData` call and no
//! endpoint. Its counts are the run's report's. Pure.

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::plan::Step;
use crate::report::Report;

pub(crate) use contract::metrics::{DEFAULT_RULE as RULE, NAMESPACE};
/// The most values one EMF metric carries.
pub(crate) const MAX_VALUES: usize = crate::report::MAX_LAGS;

/// What a run was: every secret, the paths a change named, or cut short by its deadline.
pub(crate) fn kind(report: &Report, change_driven: bool) -> &'static str {
    match (report.partial, change_driven) {
        (true, _) => "partial",
        (false, true) => "change-driven",
        (false, false) => "full",
    }
}

/// Whether the whole run (every rule of it) was a full sync that succeeded: not
/// change-driven, not cut short by its deadline, no failure, not a dry run.
pub(crate) fn full_sync_succeeded(run: &Report, change_driven: bool) -> bool {
    !change_driven && !run.partial && !run.failed() && !run.dry_run
}

/// Seconds from the Vault version a write copied (its `created_time`) to `now`, for a step
/// that replicated a new Vault version (a secret created, or updated to Vault's newer
/// version); `None` for any other (tags only, an adoption, an overwrite, a rollback, a
/// restore: their version is not new), or a time Vault wrote in another form.
pub(crate) fn lag_of(step: &Step, now: SystemTime) -> Option<f64> {
    use crate::plan::{UpdateReason, Write};
    let target = match step {
        Step::Create { target }
        | Step::Update {
            target,
            reason: UpdateReason::NewVersion,
            write: Write::Value | Write::Stage,
            restore: false,
            ..
        } => target,
        _ => return None,
    };
    let crate::model::Stamp::Instant { secs, nanos } =
        crate::model::Stamp::new(&target.created_time)
    else {
        return None;
    };
    let now = now.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    let then = secs as f64 + f64::from(nanos) / 1e9;
    Some((now.as_secs_f64() - then).max(0.0))
}

/// The EMF document of one run: `stack` and `rule` as dimensions (and for `Failed` and
/// `FullSyncsSucceeded`, `stack` alone: the deployer's alarms watch the stack's whole), the report's counts, its
/// duration, the values read, whether the run (all its rules) was a full sync that succeeded
/// (the alarm of no full sync counts these), and each write's lag (the first [`MAX_VALUES`]); the kind of run as a
/// property. Names and numbers only.
pub(crate) fn document(
    report: &Report,
    stack: &str,
    rule: &str,
    kind: &str,
    full_sync_succeeded: bool,
    now_ms: u64,
) -> Value {
    let count = |name: &str| json!({"Name": name, "Unit": "Count"});
    let mut metrics = vec![
        count("Created"),
        count("Updated"),
        count("Deleted"),
        count("Unchanged"),
        count("Failed"),
        count("ValuesRead"),
        json!({"Name": "DurationMs", "Unit": "Milliseconds"}),
        count(contract::metrics::FULL_SYNCS),
    ];
    let mut doc = json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [],
        },
        "Stack": stack,
        "Rule": rule,
        "Kind": kind,
        "Created": report.created,
        "Updated": report.updated,
        "Deleted": report.deleted,
        "Unchanged": report.unchanged,
        "Failed": report.failures.len(),
        "ValuesRead": report.values_read,
        "DurationMs": report.duration_ms,
        contract::metrics::FULL_SYNCS: u8::from(full_sync_succeeded),
    });
    if !report.lags.is_empty() {
        metrics.push(json!({"Name": "LagSeconds", "Unit": "Seconds"}));
        let shown: Vec<f64> = report
            .lags
            .iter()
            .take(MAX_VALUES)
            .map(|l| (l * 1000.0).round() / 1000.0)
            .collect();
        doc["LagSeconds"] = json!(shown);
        doc["LagsMeasured"] = json!(report.lags_measured.max(shown.len() as u64));
    }
    // Every metric by stack and rule; the two the stack's alarms watch by stack alone too
    // (each metric of a dimension set is a custom metric CloudWatch charges for).
    doc["_aws"]["CloudWatchMetrics"] = json!([
        {
            "Namespace": NAMESPACE,
            "Dimensions": [["Stack", "Rule"]],
            "Metrics": metrics,
        },
        {
            "Namespace": NAMESPACE,
            "Dimensions": [["Stack"]],
            "Metrics": [count("Failed"), count(contract::metrics::FULL_SYNCS)],
        },
    ]);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Problem;

    #[test]
    fn the_document_carries_the_reports_counts_under_the_namespace() {
        let report = Report {
            created: 2,
            updated: 1,
            unchanged: 7,
            deleted: 1,
            values_read: 3,
            duration_ms: 1234,
            failures: vec![Problem::new("a", "vault_error", "x")],
            lags: vec![0.5; MAX_VALUES + 5],
            lags_measured: 300,
            ..Report::default()
        };
        let d = document(&report, "s", "default", "full", false, 42);
        let m = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], NAMESPACE);
        assert_eq!(m["Dimensions"], json!([["Stack", "Rule"]]));
        let stack = &d["_aws"]["CloudWatchMetrics"][1];
        assert_eq!(stack["Dimensions"], json!([["Stack"]]));
        assert_eq!(
            stack["Metrics"],
            json!([{"Name": "Failed", "Unit": "Count"}, {"Name": "FullSyncsSucceeded", "Unit": "Count"}])
        );
        let names: Vec<&str> = m["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["Name"].as_str().unwrap())
            .collect();
        for n in names.iter().filter(|n| **n != "LagSeconds") {
            assert!(d[*n].is_number(), "{n}");
        }
        assert!(names.contains(&"LagSeconds"));
        assert_eq!(
            (&d["Created"], &d["Failed"], &d["DurationMs"]),
            (&json!(2), &json!(1), &json!(1234))
        );
        assert_eq!(d["LagSeconds"].as_array().unwrap().len(), MAX_VALUES);
        assert_eq!(d["LagsMeasured"], 300);
        assert_eq!(
            (&d["Stack"], &d["Rule"], &d["Kind"]),
            (&json!("s"), &json!("default"), &json!("full"))
        );
        // No lag measured: no lag metric (an empty array is not a value).
        let quiet = document(&Report::default(), "s", "default", "full", true, 42);
        assert!(quiet.get("LagSeconds").is_none());
        // The run's, as the caller says it (every rule's document the same).
        assert_eq!(d["FullSyncsSucceeded"], 0);
        assert_eq!(quiet["FullSyncsSucceeded"], 1);
        assert!(full_sync_succeeded(&Report::default(), false));
        let cut = Report {
            partial: true,
            ..Report::default()
        };
        assert!(!full_sync_succeeded(&cut, false), "cut short");
        assert!(!full_sync_succeeded(&report, false), "failed");
        assert!(
            !full_sync_succeeded(&Report::default(), true),
            "change-driven"
        );
    }

    #[test]
    fn lag_is_measured_only_for_a_new_vault_version_replicated() {
        use crate::plan::{Target, UpdateReason, Write};
        let target = Target {
            name: "p/a".into(),
            vault_path: "a".into(),
            version: 2,
            created_time: "2026-12-05T10:00:00Z".into(),
            token: "t".into(),
            key: None,
            tags: Default::default(),
            description: String::new(),
            metadata_ignored: vec![],
        };
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_464_830);
        let update = |reason, write, restore| Step::Update {
            target: Box::new(target.clone()),
            arn: "arn".into(),
            reason,
            restore,
            write,
            expect_current: None,
            changes: Box::default(),
        };
        let create = Step::Create {
            target: Box::new(target.clone()),
        };
        assert_eq!(lag_of(&create, now), Some(30.0));
        assert_eq!(
            lag_of(&update(UpdateReason::NewVersion, Write::Value, false), now),
            Some(30.0)
        );
        for not_new in [
            update(UpdateReason::Metadata, Write::None, false),
            update(UpdateReason::NewVersion, Write::None, false),
            update(UpdateReason::Overwrite, Write::Value, false),
            update(UpdateReason::Adopt, Write::Value, false),
            update(UpdateReason::NewVersion, Write::Value, true),
        ] {
            assert_eq!(lag_of(&not_new, now), None, "{not_new:?}");
        }
    }

    #[test]
    fn a_run_is_full_change_driven_or_partial() {
        let mut r = Report::default();
        assert_eq!(kind(&r, false), "full");
        assert_eq!(kind(&r, true), "change-driven");
        r.partial = true;
        assert_eq!(kind(&r, false), "partial");
    }
}
