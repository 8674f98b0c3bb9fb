//! The Vault network, without a NAT gateway: a VPC with one public subnet (internet gateway) for
//! the Vault instance, the replicator Lambda in the same subnet reaching AWS APIs through VPC
//! interface endpoints, and security groups that open Vault's port 8200 only to the replicator and
//! to `vault_inbound_cidr`. Every piece found by its `Name` and stack tags.
//!
//! [`observe`] reads what is there into [`Seen`]; [`diff`] is pure and says, piece by piece, what
//! differs from the spec; [`apply`] makes it so; [`destroy`] removes it innermost first. The
//! security group rules, as text for the diff and as EC2 permissions, live in `rules`.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, Filter, ResourceType, Tag, TagSpecification, VpcAttributeName,
};

mod apply;
mod rules;
mod teardown;

pub(crate) use apply::apply;
pub(crate) use teardown::{destroy, release_lambda_interfaces};

use super::{Ctx, DeployError};
use crate::change::{Action, Change, Field, FieldValue, Fields};
use crate::clients::Clients;
use crate::desired::NetworkSpec;
use crate::policy::{canonical, parse_returned};
use crate::spec::{Group, STACK_TAG, SUBNET_CIDR, VPC_CIDR};

use rules::{rule_lines, rules_text, wanted_rules};

pub(super) const VPC: &str = "vpc";
pub(super) const IGW: &str = "internet gateway";
pub(super) const SUBNET: &str = "subnet";
pub(super) const ROUTE_TABLE: &str = "route table";
pub(super) const GROUP: &str = "security group";
pub(super) const ENDPOINT: &str = "vpc endpoint";
pub(crate) const INTERFACES_KIND: &str = "network interfaces";

/// Ids of the network pieces that exist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    pub vpc: Option<String>,
    pub igw: Option<String>,
    pub subnet: Option<String>,
    pub route_table: Option<String>,
    pub groups: BTreeMap<Group, String>,
}

impl Network {
    pub fn group(&self, group: Group) -> Option<&str> {
        self.groups.get(&group).map(String::as_str)
    }
}

/// Everything the stack has in the network, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    pub vpc: Option<SeenVpc>,
    pub igw: Option<SeenGateway>,
    pub subnet: Option<SeenSubnet>,
    pub route_table: Option<SeenRouteTable>,
    pub groups: BTreeMap<Group, SeenGroup>,
    /// Live endpoints by service name.
    pub endpoints: BTreeMap<String, SeenEndpoint>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeenVpc {
    pub id: String,
    pub cidr: String,
    pub dns_hostnames: bool,
    pub dns_support: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeenGateway {
    pub id: String,
    /// The VPCs it is attached to (none after a create that was cut short).
    pub attached_to: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeenSubnet {
    pub id: String,
    pub cidr: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeenRouteTable {
    pub id: String,
    /// Target of the `0.0.0.0/0` route.
    pub default_route: Option<String>,
    /// Subnets associated with it.
    pub subnets: Vec<String>,
}

/// A security group and its rules, each as `tcp/PORT from|to SOURCE`, sorted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeenGroup {
    pub id: String,
    pub ingress: Vec<String>,
    pub egress: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeenEndpoint {
    pub id: String,
    pub private_dns: bool,
    pub security_groups: Vec<String>,
    /// Canonical JSON of its policy.
    pub policy: String,
}

impl Seen {
    pub(crate) fn ids(&self) -> Network {
        Network {
            vpc: self.vpc.as_ref().map(|v| v.id.clone()),
            igw: self.igw.as_ref().map(|g| g.id.clone()),
            subnet: self.subnet.as_ref().map(|s| s.id.clone()),
            route_table: self.route_table.as_ref().map(|r| r.id.clone()),
            groups: self
                .groups
                .iter()
                .map(|(g, s)| (*g, s.id.clone()))
                .collect(),
        }
    }
}

pub(super) fn filters(spec: &NetworkSpec, name: &str) -> Vec<Filter> {
    vec![
        Filter::builder()
            .name(format!("tag:{STACK_TAG}"))
            .values(spec.owner.stack())
            .build(),
        Filter::builder().name("tag:Name").values(name).build(),
    ]
}

pub(super) fn tag_spec(spec: &NetworkSpec, kind: ResourceType, name: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(
            spec.owner
                .named_tags(name)
                .into_iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

/// Reads everything the stack has in the network.
pub(crate) async fn observe(c: &Clients, spec: &NetworkSpec) -> Result<Seen, DeployError> {
    let name = spec.name.clone();
    let mut seen = Seen::default();

    let vpcs = c
        .ec2
        .describe_vpcs()
        .set_filters(Some(filters(spec, &name)))
        .send()
        .await
        .ctx("DescribeVpcs", &name)?;
    if let Some((vpc, id)) = vpcs
        .vpcs()
        .first()
        .and_then(|v| v.vpc_id().map(|id| (v, id)))
    {
        let dns = |attr| async move {
            c.ec2
                .describe_vpc_attribute()
                .vpc_id(id)
                .attribute(attr)
                .send()
                .await
                .ctx("DescribeVpcAttribute", id)
        };
        let on = |v: Option<&AttributeBooleanValue>| v.and_then(|b| b.value()).unwrap_or(false);
        seen.vpc = Some(SeenVpc {
            id: id.to_owned(),
            cidr: vpc.cidr_block().unwrap_or_default().to_owned(),
            dns_hostnames: on(dns(VpcAttributeName::EnableDnsHostnames)
                .await?
                .enable_dns_hostnames()),
            dns_support: on(dns(VpcAttributeName::EnableDnsSupport)
                .await?
                .enable_dns_support()),
        });
    }

    let igws = c
        .ec2
        .describe_internet_gateways()
        .set_filters(Some(filters(spec, &name)))
        .send()
        .await
        .ctx("DescribeInternetGateways", &name)?;
    seen.igw = igws.internet_gateways().first().and_then(|g| {
        Some(SeenGateway {
            id: g.internet_gateway_id()?.to_owned(),
            attached_to: g
                .attachments()
                .iter()
                .filter_map(|a| a.vpc_id().map(str::to_owned))
                .collect(),
        })
    });

    let subnets = c
        .ec2
        .describe_subnets()
        .set_filters(Some(filters(spec, &name)))
        .send()
        .await
        .ctx("DescribeSubnets", &name)?;
    seen.subnet = subnets.subnets().first().and_then(|s| {
        Some(SeenSubnet {
            id: s.subnet_id()?.to_owned(),
            cidr: s.cidr_block().unwrap_or_default().to_owned(),
        })
    });

    let rtbs = c
        .ec2
        .describe_route_tables()
        .set_filters(Some(filters(spec, &name)))
        .send()
        .await
        .ctx("DescribeRouteTables", &name)?;
    seen.route_table = rtbs.route_tables().first().and_then(|r| {
        Some(SeenRouteTable {
            id: r.route_table_id()?.to_owned(),
            default_route: r
                .routes()
                .iter()
                .find(|rt| rt.destination_cidr_block() == Some("0.0.0.0/0"))
                .and_then(|rt| rt.gateway_id())
                .map(str::to_owned),
            subnets: r
                .associations()
                .iter()
                .filter_map(|a| a.subnet_id().map(str::to_owned))
                .collect(),
        })
    });

    let groups = c
        .ec2
        .describe_security_groups()
        .filters(
            Filter::builder()
                .name(format!("tag:{STACK_TAG}"))
                .values(spec.owner.stack())
                .build(),
        )
        .send()
        .await
        .ctx("DescribeSecurityGroups", spec.owner.stack())?;
    for group in Group::ALL {
        let gname = spec.group_name(group);
        let found = groups.security_groups().iter().find(|g| {
            g.tags()
                .iter()
                .any(|t| t.key() == Some("Name") && t.value() == Some(gname.as_str()))
        });
        if let Some((g, id)) = found.and_then(|g| g.group_id().map(|id| (g, id))) {
            seen.groups.insert(
                group,
                SeenGroup {
                    id: id.to_owned(),
                    ingress: rule_lines(g.ip_permissions(), "from"),
                    egress: rule_lines(g.ip_permissions_egress(), "to"),
                },
            );
        }
    }

    if let Some(vpc) = seen.vpc.as_ref().map(|v| v.id.clone()) {
        for service in spec.endpoints_ever.clone() {
            let eps = c
                .ec2
                .describe_vpc_endpoints()
                .filters(Filter::builder().name("vpc-id").values(&vpc).build())
                .filters(
                    Filter::builder()
                        .name("service-name")
                        .values(&service)
                        .build(),
                )
                .send()
                .await
                .ctx("DescribeVpcEndpoints", &service)?;
            let live = eps
                .vpc_endpoints()
                .iter()
                .find(|e| !matches!(e.state().map(|s| s.as_str()), Some("deleted" | "deleting")));
            if let Some((e, id)) = live.and_then(|e| e.vpc_endpoint_id().map(|id| (e, id))) {
                seen.endpoints.insert(
                    service,
                    SeenEndpoint {
                        id: id.to_owned(),
                        private_dns: e.private_dns_enabled() == Some(true),
                        security_groups: e
                            .groups()
                            .iter()
                            .filter_map(|g| g.group_id().map(str::to_owned))
                            .collect(),
                        policy: e
                            .policy_document()
                            .and_then(parse_returned)
                            .map(|v| canonical(&v))
                            .unwrap_or_default(),
                    },
                );
            }
        }
    }
    Ok(seen)
}

fn on_off(on: bool) -> String {
    if on { "enabled" } else { "disabled" }.into()
}

/// What must change for the network to be the spec's, piece by piece, in apply order. Pure.
pub(crate) fn diff(spec: &NetworkSpec, seen: &Seen) -> Result<Vec<Change>, DeployError> {
    let name = spec.name.clone();
    let wanted = spec.wanted();
    let ids = seen.ids();
    let known = |id: &Option<String>| FieldValue::from(id.clone());
    let mut changes = Vec::new();

    let want = vec![
        (Field::Cidr, VPC_CIDR.into()),
        (Field::DnsHostnames, on_off(true).into()),
        (Field::DnsSupport, on_off(true).into()),
    ];
    let have = seen.vpc.as_ref().map(|v| {
        vec![
            (Field::Cidr, v.cidr.clone().into()),
            (Field::DnsHostnames, on_off(v.dns_hostnames).into()),
            (Field::DnsSupport, on_off(v.dns_support).into()),
        ]
    });
    changes.push(piece(VPC, &name, wanted, &want, have.as_ref()));

    let want = vec![(Field::AttachedTo, known(&ids.vpc))];
    let have = seen
        .igw
        .as_ref()
        .map(|g| vec![(Field::AttachedTo, g.attached_to.join(",").into())]);
    changes.push(piece(IGW, &name, wanted, &want, have.as_ref()));

    let want = vec![(Field::Cidr, SUBNET_CIDR.into())];
    let have = seen
        .subnet
        .as_ref()
        .map(|s| vec![(Field::Cidr, s.cidr.clone().into())]);
    changes.push(piece(SUBNET, &name, wanted, &want, have.as_ref()));

    let want = vec![
        (Field::DefaultRoute, known(&ids.igw)),
        (Field::Subnet, known(&ids.subnet)),
    ];
    let have = seen.route_table.as_ref().map(|r| {
        vec![
            (
                Field::DefaultRoute,
                r.default_route
                    .clone()
                    .unwrap_or_else(|| "(none)".into())
                    .into(),
            ),
            (Field::Subnet, r.subnets.join(",").into()),
        ]
    });
    changes.push(piece(ROUTE_TABLE, &name, wanted, &want, have.as_ref()));

    for group in Group::ALL {
        let (ingress, egress) = wanted_rules(spec, group, &ids);
        let want = vec![(Field::Ingress, ingress), (Field::Egress, egress)];
        let have = seen.groups.get(&group).map(|g| {
            vec![
                (Field::Ingress, rules_text(&g.ingress).into()),
                (Field::Egress, rules_text(&g.egress).into()),
            ]
        });
        let gname = spec.group_name(group);
        changes.push(piece(GROUP, &gname, wanted, &want, have.as_ref()));
    }

    for service in &spec.endpoints_ever {
        // An endpoint not wanted has no policy to want (EventBridge's names the bus).
        let policy = spec.endpoints.get(service).filter(|_| wanted);
        let wanted = policy.is_some();
        let policy = policy.map(canonical).unwrap_or_default();
        let want = vec![
            (Field::PrivateDns, on_off(true).into()),
            (
                Field::SecurityGroups,
                known(&ids.groups.get(&Group::Endpoints).cloned()),
            ),
            (Field::Policy, policy.clone().into()),
        ];
        let have = seen.endpoints.get(service).map(|e| {
            vec![
                (Field::PrivateDns, on_off(e.private_dns).into()),
                (Field::SecurityGroups, e.security_groups.join(",").into()),
                (Field::Policy, e.policy.clone().into()),
            ]
        });
        changes.push(piece(ENDPOINT, service, wanted, &want, have.as_ref()));
    }
    Ok(changes)
}

/// The change of one piece: wanted or not, seen or not.
fn piece(
    kind: &'static str,
    name: &str,
    wanted: bool,
    want: &Fields,
    seen: Option<&Fields>,
) -> Change {
    match (wanted, seen) {
        (true, _) => Change::diff(kind, name, want, seen),
        (false, Some(_)) => Change::new(kind, name, Action::Delete),
        (false, None) => Change::new(kind, name, Action::Absent),
    }
}

pub(super) fn field<'a>(changes: &'a [Change], kind: &str, name: &str) -> Option<&'a Change> {
    changes.iter().find(|c| c.kind == kind && c.name == name)
}

#[cfg(test)]
mod tests {
    use super::rules::{Direction, permissions};
    use super::*;
    use crate::policy::canonical;

    fn spec(toml: &str) -> NetworkSpec {
        crate::spec::tests::spec(toml).network_spec().unwrap()
    }

    const EC2: &str = "stack_name = \"s\"\nvault_inbound_cidr = \"203.0.113.0/24\"\n";
    const EXTERNAL: &str = "stack_name = \"s\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"https://vault.example.com:8200\"\n";

    fn rules(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| (*l).to_owned()).collect()
    }

    /// The network as `up` leaves it.
    fn converged(spec: &NetworkSpec) -> Seen {
        let group = |id: &str, ingress: &[&str], egress: &[&str]| SeenGroup {
            id: id.into(),
            ingress: rules(ingress),
            egress: rules(egress),
        };
        Seen {
            vpc: Some(SeenVpc {
                id: "vpc-1".into(),
                cidr: VPC_CIDR.into(),
                dns_hostnames: true,
                dns_support: true,
            }),
            igw: Some(SeenGateway {
                id: "igw-1".into(),
                attached_to: vec!["vpc-1".into()],
            }),
            subnet: Some(SeenSubnet {
                id: "subnet-1".into(),
                cidr: SUBNET_CIDR.into(),
            }),
            route_table: Some(SeenRouteTable {
                id: "rtb-1".into(),
                default_route: Some("igw-1".into()),
                subnets: vec!["subnet-1".into()],
            }),
            groups: BTreeMap::from([
                (
                    Group::Vault,
                    group(
                        "sg-v",
                        &["tcp/8200 from 203.0.113.0/24", "tcp/8200 from sg-r"],
                        &["tcp/443 to 0.0.0.0/0"],
                    ),
                ),
                (
                    Group::Replicator,
                    group("sg-r", &[], &["tcp/443 to sg-e", "tcp/8200 to sg-v"]),
                ),
                (
                    Group::Endpoints,
                    group("sg-e", &["tcp/443 from sg-r", "tcp/443 from sg-v"], &[]),
                ),
            ]),
            endpoints: BTreeMap::from([(
                "cn.com.amazonaws.cn-north-1.secretsmanager".to_owned(),
                SeenEndpoint {
                    id: "vpce-1".into(),
                    private_dns: true,
                    security_groups: vec!["sg-e".into()],
                    policy: (spec
                        .endpoints
                        .get("cn.com.amazonaws.cn-north-1.secretsmanager"))
                    .map(canonical)
                    .unwrap_or_default(),
                },
            )]),
        }
    }

    fn actions(changes: &[Change]) -> Vec<(String, Action)> {
        changes
            .iter()
            .map(|c| (format!("{} {}", c.kind, c.name), c.action))
            .collect()
    }

    fn one<'a>(changes: &'a [Change], kind: &str, name: &str) -> &'a Change {
        changes
            .iter()
            .find(|c| c.kind == kind && c.name == name)
            .unwrap()
    }

    fn touched(change: &Change) -> Vec<&str> {
        change.fields.iter().map(|f| f.field.as_str()).collect()
    }

    #[test]
    fn an_empty_account_gets_every_piece_in_apply_order_and_no_sns_endpoint() {
        let s = spec(EC2);
        let changes = diff(&s, &Seen::default()).unwrap();
        let sm = "cn.com.amazonaws.cn-north-1.secretsmanager";
        let sns = "cn.com.amazonaws.cn-north-1.sns";
        let expected: Vec<(String, Action)> = [
            ("vpc s-vault", Action::Create),
            ("internet gateway s-vault", Action::Create),
            ("subnet s-vault", Action::Create),
            ("route table s-vault", Action::Create),
            ("security group s-vault", Action::Create),
            ("security group s-replicator", Action::Create),
            ("security group s-endpoints", Action::Create),
        ]
        .into_iter()
        .map(|(n, a)| (n.to_owned(), a))
        .chain([
            (format!("vpc endpoint {sm}"), Action::Create),
            (
                "vpc endpoint cn.com.amazonaws.cn-north-1.sts".to_owned(),
                Action::Absent,
            ),
            (
                "vpc endpoint cn.com.amazonaws.cn-north-1.events".to_owned(),
                Action::Absent,
            ),
            (format!("vpc endpoint {sns}"), Action::Absent),
        ])
        .collect();
        assert_eq!(actions(&changes), expected);
        // Rules naming groups not made yet are shown as known after apply, not as a guess.
        let vault = one(&changes, GROUP, "s-vault");
        let ingress = vault
            .fields
            .iter()
            .find(|f| f.field == Field::Ingress)
            .unwrap();
        assert_eq!(ingress.to, Some(FieldValue::AfterApply));
    }

    #[test]
    fn the_network_up_leaves_is_unchanged() {
        let s = spec(EC2);
        let changes = diff(&s, &converged(&s)).unwrap();
        let moving: Vec<_> = changes.iter().filter(|c| c.changes_anything()).collect();
        assert!(moving.is_empty(), "{moving:#?}");
    }

    #[test]
    fn each_drift_is_an_update_of_that_field_alone() {
        let s = spec(EC2);
        let sm = "cn.com.amazonaws.cn-north-1.secretsmanager";
        type Drift = fn(&mut Seen);
        let cases: [(Drift, &str, &str, &[&str]); 8] = [
            (
                |n| n.vpc.as_mut().unwrap().dns_hostnames = false,
                VPC,
                "s-vault",
                &["dns_hostnames"],
            ),
            (
                |n| n.igw.as_mut().unwrap().attached_to.clear(),
                IGW,
                "s-vault",
                &["attached_to"],
            ),
            (
                |n| n.route_table.as_mut().unwrap().default_route = None,
                ROUTE_TABLE,
                "s-vault",
                &["default_route"],
            ),
            (
                |n| {
                    let g = n.groups.get_mut(&Group::Vault).unwrap();
                    g.ingress.push("tcp/22 from 0.0.0.0/0".into());
                },
                GROUP,
                "s-vault",
                &["ingress"],
            ),
            (
                |n| {
                    let g = n.groups.get_mut(&Group::Replicator).unwrap();
                    g.egress = vec!["-1/0 to 0.0.0.0/0".into()];
                },
                GROUP,
                "s-replicator",
                &["egress"],
            ),
            (
                |n| {
                    let g = n.groups.get_mut(&Group::Replicator).unwrap();
                    g.ingress = vec!["tcp/443 from 10.0.0.0/8".into()];
                },
                GROUP,
                "s-replicator",
                &["ingress"],
            ),
            (
                |n| {
                    let e = n.endpoints.values_mut().next().unwrap();
                    e.policy = "{}".into();
                },
                ENDPOINT,
                sm,
                &["policy"],
            ),
            (
                |n| {
                    let e = n.endpoints.values_mut().next().unwrap();
                    e.private_dns = false;
                },
                ENDPOINT,
                sm,
                &["private_dns"],
            ),
        ];
        for (drift, kind, name, fields) in cases {
            let mut seen = converged(&s);
            drift(&mut seen);
            let changes = diff(&s, &seen).unwrap();
            let moving: Vec<_> = changes.iter().filter(|c| c.changes_anything()).collect();
            assert_eq!(moving.len(), 1, "{kind} {name}: {moving:#?}");
            assert_eq!(moving[0].action, Action::Update, "{kind} {name}");
            assert_eq!((moving[0].kind, moving[0].name.as_str()), (kind, name));
            assert_eq!(touched(moving[0]), fields, "{kind} {name}");
        }
    }

    #[test]
    fn an_endpoint_an_earlier_version_made_is_deleted() {
        let s = spec(EC2);
        let mut seen = converged(&s);
        let mut sns = seen.endpoints.values().next().unwrap().clone();
        sns.id = "vpce-sns".into();
        seen.endpoints
            .insert("cn.com.amazonaws.cn-north-1.sns".into(), sns);
        let changes = diff(&s, &seen).unwrap();
        let ch = one(&changes, ENDPOINT, "cn.com.amazonaws.cn-north-1.sns");
        assert_eq!(ch.action, Action::Delete);
    }

    #[test]
    fn an_external_vault_removes_what_is_there_and_wants_nothing_else() {
        let s = spec(EXTERNAL);
        let changes = diff(&s, &Seen::default()).unwrap();
        assert!(changes.iter().all(|c| c.action == Action::Absent));
        let mut leftover = converged(&s);
        leftover.groups.remove(&Group::Endpoints);
        let changes = diff(&s, &leftover).unwrap();
        let deleted: Vec<_> = changes
            .iter()
            .filter(|c| c.action == Action::Delete)
            .map(|c| format!("{} {}", c.kind, c.name))
            .collect();
        assert_eq!(
            deleted,
            [
                "vpc s-vault",
                "internet gateway s-vault",
                "subnet s-vault",
                "route table s-vault",
                "security group s-vault",
                "security group s-replicator",
                "vpc endpoint cn.com.amazonaws.cn-north-1.secretsmanager",
            ]
        );
        assert_eq!(one(&changes, GROUP, "s-endpoints").action, Action::Absent);
    }

    #[test]
    fn permissions_say_what_the_diff_wants() {
        let s = spec(EC2);
        let net = converged(&s).ids();
        for group in Group::ALL {
            let (ingress, egress) = wanted_rules(&s, group, &net);
            for (direction, text, dir) in [
                (Direction::Ingress, ingress, "from"),
                (Direction::Egress, egress, "to"),
            ] {
                let perms = permissions(&net, "203.0.113.0/24", group, direction).unwrap();
                assert_eq!(
                    Some(rules_text(&rule_lines(&perms, dir)).as_str()),
                    text.known(),
                    "{group:?} {dir}"
                );
            }
        }
    }

    #[test]
    fn an_ipv6_inbound_range_is_an_ipv6_rule() {
        let s = spec("stack_name = \"s\"\nvault_inbound_cidr = \"2001:db8::/32\"\n");
        let net = converged(&s).ids();
        let perms = permissions(&net, "2001:db8::/32", Group::Vault, Direction::Ingress).unwrap();
        assert_eq!(
            rule_lines(&perms, "from"),
            ["tcp/8200 from 2001:db8::/32", "tcp/8200 from sg-r"]
        );
        assert_eq!(
            wanted_rules(&s, Group::Vault, &net).0,
            "tcp/8200 from 2001:db8::/32; tcp/8200 from sg-r".into()
        );
    }
}
