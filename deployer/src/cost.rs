//! Monthly cost estimate of the chosen resources, printed by `plan`. Pure; us-east-1 on-demand
//! list prices (other regions differ by a few percent), usage-based items at this stack's scale.

use serde::Serialize;

use crate::config::VaultMode;
use crate::spec::Spec;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub(crate) struct CostLine {
    pub item: String,
    pub usd_per_month: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub(crate) struct Estimate {
    pub lines: Vec<CostLine>,
    pub total_usd_per_month: f64,
    pub note: &'static str,
}

const HOURS: f64 = 730.0;

fn instance_hourly(instance_type: &str) -> Option<f64> {
    Some(match instance_type {
        "t3.nano" => 0.0052,
        "t3.micro" => 0.0104,
        "t3.small" => 0.0208,
        "t3.medium" => 0.0416,
        "t3a.micro" => 0.0094,
        "t3a.small" => 0.0188,
        "t4g.micro" => 0.0084,
        "t4g.small" => 0.0168,
        "t2.micro" => 0.0116,
        _ => return None,
    })
}

/// Lambda's price per GB-second (x86) and per request.
const LAMBDA_GB_SECOND: f64 = 0.000_016_666_7;
const LAMBDA_REQUEST: f64 = 0.000_000_2;
/// Secrets Manager's price per API call.
const SM_CALL: f64 = 0.05 / 10_000.0;

/// Seconds of a scheduled run that changes nothing, for `secrets` replicas: measured by the
/// sync benchmark (10,000 secrets: 4.96 s with the ranged listing) and rounded up.
pub(crate) fn noop_seconds(secrets: usize) -> f64 {
    0.5 + secrets as f64 * 0.0005
}

/// What the schedule costs a month for `counts` replicas of each sync: the Lambda runs, and
/// the Secrets Manager calls each run makes (the connection secret, and each sync's
/// ListSecrets, 100 names a page).
pub(crate) fn schedule_lines(spec: &Spec, counts: &[usize]) -> Vec<CostLine> {
    let secrets: usize = counts.iter().sum();
    let schedule = &spec.cfg.schedule;
    let Some(runs) = crate::schedule::runs_per_month(schedule) else {
        return vec![CostLine {
            item: format!("Lambda runs of {schedule} (not estimated for this cron form)"),
            usd_per_month: 0.0,
        }];
    };
    let seconds = noop_seconds(secrets);
    let gb = f64::from(spec.cfg.lambda_memory_mb) / 1024.0;
    let lambda = runs * (seconds * gb * LAMBDA_GB_SECOND + LAMBDA_REQUEST);
    let calls = 1 + counts.iter().map(|s| s.div_ceil(100).max(1)).sum::<usize>();
    vec![
        CostLine {
            item: format!(
                "Lambda: {schedule}, ~{runs:.0} runs a month of ~{seconds:.1} s at {} MB for {secrets} secrets (no-op runs, as measured; free tier not counted)",
                spec.cfg.lambda_memory_mb
            ),
            usd_per_month: lambda,
        },
        CostLine {
            item: format!("Secrets Manager calls of those runs (~{calls} a run)"),
            usd_per_month: runs * calls as f64 * SM_CALL,
        },
    ]
}

/// The monthly estimate, the schedule's lines for `secrets` replicas.
/// The custom metrics the function's metrics documents make: 9 names (`LagSeconds` included)
/// for each rule, and the stack's `Failed` and `FullSyncsSucceeded`.
fn metrics_of(spec: &Spec) -> usize {
    9 * spec.syncs().len() + 2
}

pub(crate) fn estimate(spec: &Spec, secrets: usize) -> Estimate {
    estimate_syncs(spec, &[secrets])
}

/// The monthly estimate for `counts` replicas of each of the stack's syncs (in the order of
/// [`Spec::syncs`]): with `[[sync]]` rules, a line per rule for its replica regions.
pub(crate) fn estimate_syncs(spec: &Spec, counts: &[usize]) -> Estimate {
    let mut lines = vec![
        CostLine {
            item: "KMS key (rotation on)".into(),
            usd_per_month: 1.0,
        },
        CostLine {
            item: "connection secret".into(),
            usd_per_month: 0.40,
        },
    ];
    if spec.rotates_secret_id() {
        // Rotation itself is free; a few invocations a month cost nothing worth a line.
        lines.push(CostLine {
            item: format!(
                "rotator secret (secret id rotated every {} days)",
                spec.cfg.secret_id_rotation_days
            ),
            usd_per_month: 0.40,
        });
    }
    lines.extend(schedule_lines(spec, counts));
    let alarms = crate::resources::monitoring::wanted(&spec.monitoring_spec()).len();
    lines.extend([
        CostLine {
            item: "CloudWatch Logs (~10 MB/month)".into(),
            usd_per_month: 0.01,
        },
        CostLine {
            item: format!("{alarms} CloudWatch alarms (standard resolution)"),
            usd_per_month: alarms as f64 * 0.10,
        },
    ]);
    if spec.cfg.dashboard {
        lines.push(CostLine {
            item:
                "CloudWatch dashboard (the first 3 of an account are free; dashboard = false: none)"
                    .into(),
            usd_per_month: 3.0,
        });
    }
    lines.extend([
        CostLine {
            item: format!(
                "{} CloudWatch metrics from the runs' metrics documents (9 for each rule, 2 for the stack's alarms; the first 10 of an account are free)",
                metrics_of(spec)
            ),
            usd_per_month: metrics_of(spec) as f64 * 0.30,
        },
    ]);
    for (view, &secrets) in spec.syncs().iter().zip(counts) {
        let regions = view.cfg.replicator.replica_regions.len();
        let rule = view
            .sync_name()
            .map(|n| format!("rule {n}: "))
            .unwrap_or_default();
        if regions > 0 {
            // Each replica region holds a copy of every replica, priced as a secret of its own.
            lines.push(CostLine {
                item: format!(
                    "{rule}replica regions: {regions} × {secrets} secrets × $0.40 (replica secrets are priced as secrets)"
                ),
                usd_per_month: (regions * secrets) as f64 * 0.40,
            });
        } else if !rule.is_empty() {
            lines.push(CostLine {
                item: format!("{rule}{secrets} secrets under {}/", view.write_prefix()),
                usd_per_month: 0.0,
            });
        }
    }
    if spec.cfg.notification_email.is_some() {
        lines.push(CostLine {
            item: "SNS topic + email".into(),
            usd_per_month: 0.0,
        });
    }
    if let Some(bus) = &spec.cfg.events_bus {
        lines.push(CostLine {
            item: format!("change events on the bus {bus} ($1.00 per million replicated changes)"),
            usd_per_month: 0.0,
        });
    }
    if let VaultMode::Ec2 { instance_type, .. } = &spec.cfg.vault {
        match instance_hourly(instance_type) {
            Some(h) => lines.push(CostLine {
                item: format!("EC2 {instance_type} for Vault"),
                usd_per_month: h * HOURS,
            }),
            None => lines.push(CostLine {
                item: format!("EC2 {instance_type} for Vault (price not in table)"),
                usd_per_month: 0.0,
            }),
        }
        lines.push(CostLine {
            item: "EBS gp3 8 GiB root volume".into(),
            usd_per_month: 0.64,
        });
        lines.push(CostLine {
            item: "public IPv4 address (Elastic IP)".into(),
            usd_per_month: 0.005 * HOURS,
        });
        // Secrets Manager's only: notices leave through the on-failure destination.
        lines.push(CostLine {
            item: "1 VPC interface endpoint (Secrets Manager) in one AZ (instead of a NAT gateway, ~$33)"
                .into(),
            usd_per_month: 0.01 * HOURS,
        });
        if spec.assumes_roles_here() {
            lines.push(CostLine {
                item: "1 VPC interface endpoint (STS: the function assumes each rule's role) in one AZ"
                    .into(),
                usd_per_month: 0.01 * HOURS,
            });
        }
        if spec.event_bus_arn().is_some() {
            lines.push(CostLine {
                item: "1 VPC interface endpoint (EventBridge: the change events) in one AZ".into(),
                usd_per_month: 0.01 * HOURS,
            });
        }
        lines.push(CostLine {
            item: "TLS key secret".into(),
            usd_per_month: 0.40,
        });
    }
    let total = lines.iter().map(|l| l.usd_per_month).sum::<f64>();
    Estimate {
        lines,
        total_usd_per_month: (total * 100.0).round() / 100.0,
        note: "plus $0.40 a month per replicated secret and $0.05 per 10,000 calls of writes; us-east-1 list prices",
    }
}

pub(crate) fn render(e: &Estimate) -> String {
    let mut out = String::from("Estimated monthly cost:\n");
    for l in &e.lines {
        out.push_str(&format!("  ${:>7.2}  {}\n", l.usd_per_month, l.item));
    }
    out.push_str(&format!(
        "  ${:>7.2}  total ({})\n",
        e.total_usd_per_month, e.note
    ));
    out
}

#[cfg(test)]
mod tests {
    use crate::spec::tests::spec;

    #[test]
    fn vault_on_ec2_costs_far_less_than_the_samples_nat_gateway_design() {
        let ec2 = super::estimate(&spec("vault_inbound_cidr = \"10.0.0.0/8\""), 100);
        assert!(
            ec2.total_usd_per_month > 15.0 && ec2.total_usd_per_month < 30.0,
            "{ec2:?}"
        );
        let ext = super::estimate(
            &spec("deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\""),
            100,
        );
        // The key, the connection, logs, two alarms, the dashboard ($3) and the runs' metrics
        // ($3.30).
        assert!(ext.total_usd_per_month < 10.0, "{ext:?}");
        assert!(super::render(&ext).contains("total"));
        let without = super::estimate(
            &spec(
                "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"\ndashboard = false",
            ),
            100,
        );
        let saved = ext.total_usd_per_month - without.total_usd_per_month;
        assert!((saved - 3.0).abs() < 0.001, "{saved}");
    }

    #[test]
    fn the_rotator_secret_is_priced_only_with_rotation() {
        let ext = "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"\n";
        let on = super::estimate(&spec(ext), 100).total_usd_per_month;
        let off = super::estimate(&spec(&format!("{ext}secret_id_rotation_days = 0\n")), 100)
            .total_usd_per_month;
        assert!((on - off - 0.40).abs() < 1e-9, "{on} {off}");
    }

    #[test]
    fn each_replica_region_prices_a_copy_of_every_replica() {
        let ext = "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"\n";
        let plain = super::estimate(&spec(ext), 100).total_usd_per_month;
        let two = super::estimate(
            &spec(&format!(
                "{ext}replica_regions = [\"cn-northwest-1\", \"ap-east-1\"]\n"
            )),
            100,
        );
        assert!(
            (two.total_usd_per_month - plain - 80.0).abs() < 0.01,
            "{two:?}"
        );
    }

    #[test]
    fn the_schedule_line_follows_the_schedule_the_memory_and_the_secrets() {
        let ext = "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"\n";
        let cost = |extra: &str, secrets: usize| -> f64 {
            super::schedule_lines(&spec(&format!("{ext}{extra}")), &[secrets])
                .iter()
                .map(|l| l.usd_per_month)
                .sum()
        };
        let half_hourly = cost("", 1_000);
        let minutely = cost("schedule = \"rate(1 minute)\"\n", 1_000);
        assert!(
            (minutely / half_hourly - 30.0).abs() < 0.1,
            "{minutely} {half_hourly}"
        );
        // rate(1 minute) over 10,000 secrets: the calls dominate, about $22 a month.
        let big = cost("schedule = \"rate(1 minute)\"\n", 10_000);
        assert!(big > 20.0 && big < 30.0, "{big}");
        let lines = super::schedule_lines(
            &spec(&format!("{ext}schedule = \"rate(1 minute)\"\n")),
            &[10_000],
        );
        assert!(
            lines[0]
                .item
                .contains("~43776 runs a month of ~5.5 s at 128 MB for 10000 secrets"),
            "{}",
            lines[0].item
        );
        assert!(lines[1].item.contains("~101 a run"), "{}", lines[1].item);
        assert!(cost("lambda_memory_mb = 256\n", 1_000) > half_hourly);
    }

    #[test]
    fn with_rules_each_rule_is_priced_for_its_own_replicas_and_listing() {
        let ext = "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"\n";
        let rules = spec(&format!("{ext}{}", crate::spec::tests::RULES));
        let e = super::estimate_syncs(&rules, &[10, 20, 30]);
        let items: Vec<&str> = e.lines.iter().map(|l| l.item.as_str()).collect();
        assert!(
            items.contains(&"rule payments: 10 secrets under pay/"),
            "{items:?}"
        );
        assert!(
            items.contains(&"rule team-b: 30 secrets under b/"),
            "{items:?}"
        );
        let regions = e
            .lines
            .iter()
            .find(|l| {
                l.item
                    .starts_with("rule web-prod: replica regions: 1 × 20 secrets")
            })
            .unwrap_or_else(|| panic!("{items:?}"));
        assert!((regions.usd_per_month - 8.0).abs() < 1e-9);
        // Each rule lists its own prefix: a page each, beside the connection secret's read.
        let calls = super::schedule_lines(&rules, &[10, 20, 30]);
        assert!(calls[1].item.contains("~4 a run"), "{}", calls[1].item);
        // The same 60 replicas as one sync cost the same schedule, one listing fewer pages.
        let one = super::schedule_lines(&spec(ext), &[60]);
        assert!(one[1].item.contains("~2 a run"), "{}", one[1].item);
        assert!(one[0].item.contains("for 60 secrets"), "{}", one[0].item);
        assert!(
            calls[0].item.contains("for 60 secrets"),
            "{}",
            calls[0].item
        );
    }
}
