//! A security group's rules, two ways from one definition: as `tcp/PORT from|to SOURCE` text,
//! which the diff compares with what EC2 holds, and as EC2 permissions, which `apply` sets. Pure.

use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, UserIdGroupPair};

use super::Network;
use crate::change::FieldValue;
use crate::desired::NetworkSpec;
use crate::resources::{DeployError, missing};
use crate::spec::{Group, VAULT_PORT};

/// A group's rules as `tcp/PORT from|to SOURCE` lines, sorted.
pub(super) fn rule_lines(perms: &[IpPermission], dir: &str) -> Vec<String> {
    let mut r = Vec::new();
    for p in perms {
        let port = format!(
            "{}/{}",
            p.ip_protocol().unwrap_or("?"),
            p.from_port().unwrap_or(0)
        );
        let sources = p
            .ip_ranges()
            .iter()
            .filter_map(|x| x.cidr_ip())
            .chain(p.ipv6_ranges().iter().filter_map(|x| x.cidr_ipv6()))
            .chain(p.user_id_group_pairs().iter().filter_map(|x| x.group_id()));
        r.extend(sources.map(|s| format!("{port} {dir} {s}")));
    }
    r.sort();
    r
}

/// The rules a group should have, as (ingress, egress) text in the form [`SeenGroup`] renders,
/// given the ids known so far (a rule naming a group not made yet is
/// known after apply).
pub(super) fn wanted_rules(
    spec: &NetworkSpec,
    group: Group,
    ids: &Network,
) -> (FieldValue, FieldValue) {
    let sorted = |mut r: Vec<String>| {
        r.sort();
        FieldValue::from(r.join("; "))
    };
    let (vault, repl, end) = (
        ids.group(Group::Vault),
        ids.group(Group::Replicator),
        ids.group(Group::Endpoints),
    );
    match group {
        // Vault's API: the replicator and `vault_inbound_cidr` only; it reaches packages and
        // AWS over HTTPS.
        Group::Vault => {
            let ingress = match (&spec.inbound_cidr, repl) {
                (Some(inbound_cidr), Some(repl)) => sorted(vec![
                    format!("tcp/{VAULT_PORT} from {inbound_cidr}"),
                    format!("tcp/{VAULT_PORT} from {repl}"),
                ]),
                _ => FieldValue::AfterApply,
            };
            (ingress, "tcp/443 to 0.0.0.0/0".into())
        }
        // The replicator starts every connection: to Vault and to the endpoints.
        Group::Replicator => {
            let egress = match (vault, end) {
                (Some(vault), Some(end)) => sorted(vec![
                    format!("tcp/{VAULT_PORT} to {vault}"),
                    format!("tcp/443 to {end}"),
                ]),
                _ => FieldValue::AfterApply,
            };
            ("(none)".into(), egress)
        }
        // The replicator calls AWS through the endpoints, and so does the Vault instance at
        // boot (private DNS sends it there too) to fetch its TLS key. They start nothing.
        Group::Endpoints => {
            let ingress = match (repl, vault) {
                (Some(repl), Some(vault)) => sorted(vec![
                    format!("tcp/443 from {repl}"),
                    format!("tcp/443 from {vault}"),
                ]),
                _ => FieldValue::AfterApply,
            };
            (ingress, "(none)".into())
        }
    }
}

pub(super) fn rules_text(rules: &[String]) -> String {
    if rules.is_empty() {
        "(none)".into()
    } else {
        rules.join("; ")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    Ingress,
    Egress,
}

/// The rules `group` needs in one direction, as EC2 permissions ([`wanted_rules`] says the same
/// as text, for the diff).
pub(super) fn permissions(
    net: &Network,
    inbound_cidr: &str,
    group: Group,
    direction: Direction,
) -> Result<Vec<IpPermission>, DeployError> {
    let id = |g: Group| {
        net.group(g)
            .map(str::to_owned)
            .ok_or_else(|| missing("network", "security group"))
    };
    let tcp = |port: i32| {
        IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(port)
            .to_port(port)
    };
    let pair = |g: String| UserIdGroupPair::builder().group_id(g).build();
    Ok(match (group, direction) {
        (Group::Vault, Direction::Ingress) => {
            let p = tcp(VAULT_PORT).user_id_group_pairs(pair(id(Group::Replicator)?));
            let p = if inbound_cidr.contains(':') {
                p.ipv6_ranges(
                    Ipv6Range::builder()
                        .cidr_ipv6(inbound_cidr)
                        .description("vault_inbound_cidr")
                        .build(),
                )
            } else {
                p.ip_ranges(
                    IpRange::builder()
                        .cidr_ip(inbound_cidr)
                        .description("vault_inbound_cidr")
                        .build(),
                )
            };
            vec![p.build()]
        }
        (Group::Vault, Direction::Egress) => vec![
            tcp(443)
                .ip_ranges(
                    IpRange::builder()
                        .cidr_ip("0.0.0.0/0")
                        .description("packages and AWS APIs, HTTPS")
                        .build(),
                )
                .build(),
        ],
        (Group::Replicator, Direction::Egress) => vec![
            tcp(VAULT_PORT)
                .user_id_group_pairs(pair(id(Group::Vault)?))
                .build(),
            tcp(443)
                .user_id_group_pairs(pair(id(Group::Endpoints)?))
                .build(),
        ],
        (Group::Endpoints, Direction::Ingress) => vec![
            tcp(443)
                .user_id_group_pairs(pair(id(Group::Replicator)?))
                .user_id_group_pairs(pair(id(Group::Vault)?))
                .build(),
        ],
        (Group::Replicator, Direction::Ingress) | (Group::Endpoints, Direction::Egress) => {
            Vec::new()
        }
    })
}
