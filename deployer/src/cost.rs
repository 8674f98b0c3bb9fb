//! Monthly cost estimate of the chosen resources, printed by `plan`. Pure; us-east-1 on-demand
//! list prices (other regions differ by a few percent), usage-based items at this stack's scale.

use serde::Serialize;

use crate::config::VaultMode;
use crate::spec::Spec;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CostLine {
    pub item: String,
    pub usd_per_month: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Estimate {
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

pub fn estimate(spec: &Spec) -> Estimate {
    let mut lines = vec![
        CostLine {
            item: "KMS key (rotation on)".into(),
            usd_per_month: 1.0,
        },
        CostLine {
            item: "connection secret".into(),
            usd_per_month: 0.40,
        },
        CostLine {
            item: "Lambda + EventBridge schedule (runs every 30 min, ~1 s at 128 MB)".into(),
            usd_per_month: 0.01,
        },
        CostLine {
            item: "CloudWatch Logs (~10 MB/month)".into(),
            usd_per_month: 0.01,
        },
    ];
    if spec.cfg.notification_email.is_some() {
        lines.push(CostLine {
            item: "SNS topic + email".into(),
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
        lines.push(CostLine {
            item: "TLS key secret".into(),
            usd_per_month: 0.40,
        });
    }
    let total = lines.iter().map(|l| l.usd_per_month).sum::<f64>();
    Estimate {
        lines,
        total_usd_per_month: (total * 100.0).round() / 100.0,
        note: "plus $0.40 a month per replicated secret and $0.05 per 10,000 API calls; us-east-1 list prices",
    }
}

pub fn render(e: &Estimate) -> String {
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
        let ec2 = super::estimate(&spec("vault_inbound_cidr = \"10.0.0.0/8\""));
        assert!(
            ec2.total_usd_per_month > 15.0 && ec2.total_usd_per_month < 30.0,
            "{ec2:?}"
        );
        let ext = super::estimate(&spec(
            "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v:8200\"",
        ));
        assert!(ext.total_usd_per_month < 2.0);
        assert!(super::render(&ext).contains("total"));
    }
}
