//! The Vault network, without a NAT gateway: a VPC with one public subnet (internet gateway) for
//! the Vault instance, the replicator Lambda in the same subnet reaching AWS APIs through VPC
//! interface endpoints, and security groups that open Vault's port 8200 only to the replicator and
//! to `vault_inbound_cidr`. Every piece found by its `Name` and stack tags.
//!
//! [`observe`] reads what is there into [`Seen`]; [`diff`] is pure and says, piece by piece, what
//! differs from the spec; [`apply`] makes it so; [`destroy`] removes it innermost first.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, Filter, IpPermission, IpRange, Ipv6Range, NetworkInterfaceStatus,
    ResourceType, Tag, TagSpecification, UserIdGroupPair, VpcAttributeName, VpcEndpointType,
};

use super::{Ctx, DeployError, delete, gone_ok, missing};
use crate::change::{Action, Change, Fields, UNKNOWN};
use crate::clients::Clients;
use crate::config::VaultMode;
use crate::policy::{canonical, parse_returned};
use crate::spec::{Group, STACK_TAG, SUBNET_CIDR, Spec, VAULT_PORT, VPC_CIDR};

const VPC: &str = "vpc";
const IGW: &str = "internet gateway";
const SUBNET: &str = "subnet";
const ROUTE_TABLE: &str = "route table";
const GROUP: &str = "security group";
const ENDPOINT: &str = "vpc endpoint";
pub const INTERFACES_KIND: &str = "network interfaces";

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
pub struct Seen {
    pub vpc: Option<SeenVpc>,
    pub igw: Option<SeenGateway>,
    pub subnet: Option<SeenSubnet>,
    pub route_table: Option<SeenRouteTable>,
    pub groups: BTreeMap<Group, SeenGroup>,
    /// Live endpoints by service name.
    pub endpoints: BTreeMap<String, SeenEndpoint>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenVpc {
    pub id: String,
    pub cidr: String,
    pub dns_hostnames: bool,
    pub dns_support: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenGateway {
    pub id: String,
    /// The VPCs it is attached to (none after a create that was cut short).
    pub attached_to: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenSubnet {
    pub id: String,
    pub cidr: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRouteTable {
    pub id: String,
    /// Target of the `0.0.0.0/0` route.
    pub default_route: Option<String>,
    /// Subnets associated with it.
    pub subnets: Vec<String>,
}

/// A security group and its rules, each as `tcp/PORT from|to SOURCE`, sorted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenGroup {
    pub id: String,
    pub ingress: Vec<String>,
    pub egress: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenEndpoint {
    pub id: String,
    pub private_dns: bool,
    pub security_groups: Vec<String>,
    /// Canonical JSON of its policy.
    pub policy: String,
}

impl Seen {
    pub fn ids(&self) -> Network {
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

fn filters(spec: &Spec, name: &str) -> Vec<Filter> {
    vec![
        Filter::builder()
            .name(format!("tag:{STACK_TAG}"))
            .values(spec.stack())
            .build(),
        Filter::builder().name("tag:Name").values(name).build(),
    ]
}

fn tag_spec(spec: &Spec, kind: ResourceType, name: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(
            spec.named_tags(name)
                .into_iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

fn service_prefix(spec: &Spec) -> &'static str {
    if spec.id.partition == "aws-cn" {
        "cn.com.amazonaws"
    } else {
        "com.amazonaws"
    }
}

/// Endpoint services the Lambda needs: Secrets Manager only. Failure notices leave through the
/// function's on-failure destination, which Lambda delivers from outside the VPC.
pub fn endpoint_services(spec: &Spec) -> Vec<String> {
    vec![format!(
        "{}.{}.secretsmanager",
        service_prefix(spec),
        spec.id.region
    )]
}

/// Every endpoint service the stack has ever made: the wanted ones, and SNS (an earlier version
/// made one; it is removed).
fn endpoint_services_all(spec: &Spec) -> Vec<String> {
    let mut all = endpoint_services(spec);
    all.push(format!("{}.{}.sns", service_prefix(spec), spec.id.region));
    all
}

/// A group's rules as `tcp/PORT from|to SOURCE` lines, sorted.
fn rule_lines(perms: &[IpPermission], dir: &str) -> Vec<String> {
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

/// Reads everything the stack has in the network.
pub async fn observe(c: &Clients, spec: &Spec) -> Result<Seen, DeployError> {
    let name = spec.vault_name();
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
                .values(spec.stack())
                .build(),
        )
        .send()
        .await
        .ctx("DescribeSecurityGroups", spec.stack())?;
    for group in Group::ALL {
        let gname = spec.security_group_name(group);
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
        for service in endpoint_services_all(spec) {
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

/// The rules a group should have, as (ingress, egress) text in the form [`SeenGroup`] renders,
/// given the ids known so far (a rule naming a group not made yet is [`UNKNOWN`]).
fn wanted_rules(spec: &Spec, group: Group, ids: &Network) -> (String, String) {
    let sorted = |mut r: Vec<String>| {
        r.sort();
        r.join("; ")
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
            let ingress = match (&spec.cfg.vault, repl) {
                (VaultMode::Ec2 { inbound_cidr, .. }, Some(repl)) => sorted(vec![
                    format!("tcp/{VAULT_PORT} from {inbound_cidr}"),
                    format!("tcp/{VAULT_PORT} from {repl}"),
                ]),
                _ => UNKNOWN.into(),
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
                _ => UNKNOWN.into(),
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
                _ => UNKNOWN.into(),
            };
            (ingress, "(none)".into())
        }
    }
}

fn rules_text(rules: &[String]) -> String {
    if rules.is_empty() {
        "(none)".into()
    } else {
        rules.join("; ")
    }
}

fn on_off(on: bool) -> String {
    if on { "enabled" } else { "disabled" }.into()
}

/// What must change for the network to be the spec's, piece by piece, in apply order. Pure.
pub fn diff(spec: &Spec, seen: &Seen) -> Result<Vec<Change>, DeployError> {
    let name = spec.vault_name();
    let wanted = spec.deploys_vault();
    let ids = seen.ids();
    let known = |id: &Option<String>| id.clone().unwrap_or_else(|| UNKNOWN.into());
    let mut changes = Vec::new();

    let want = vec![
        ("cidr", VPC_CIDR.into()),
        ("dns_hostnames", on_off(true)),
        ("dns_support", on_off(true)),
    ];
    let have = seen.vpc.as_ref().map(|v| {
        vec![
            ("cidr", v.cidr.clone()),
            ("dns_hostnames", on_off(v.dns_hostnames)),
            ("dns_support", on_off(v.dns_support)),
        ]
    });
    changes.push(piece(VPC, &name, wanted, &want, have.as_ref()));

    let want = vec![("attached_to", known(&ids.vpc))];
    let have = seen
        .igw
        .as_ref()
        .map(|g| vec![("attached_to", g.attached_to.join(","))]);
    changes.push(piece(IGW, &name, wanted, &want, have.as_ref()));

    let want = vec![("cidr", SUBNET_CIDR.into())];
    let have = seen.subnet.as_ref().map(|s| vec![("cidr", s.cidr.clone())]);
    changes.push(piece(SUBNET, &name, wanted, &want, have.as_ref()));

    let want = vec![
        ("default_route", known(&ids.igw)),
        ("subnet", known(&ids.subnet)),
    ];
    let have = seen.route_table.as_ref().map(|r| {
        vec![
            (
                "default_route",
                r.default_route.clone().unwrap_or_else(|| "(none)".into()),
            ),
            ("subnet", r.subnets.join(",")),
        ]
    });
    changes.push(piece(ROUTE_TABLE, &name, wanted, &want, have.as_ref()));

    for group in Group::ALL {
        let (ingress, egress) = wanted_rules(spec, group, &ids);
        let want = vec![("ingress", ingress), ("egress", egress)];
        let have = seen.groups.get(&group).map(|g| {
            vec![
                ("ingress", rules_text(&g.ingress)),
                ("egress", rules_text(&g.egress)),
            ]
        });
        let gname = spec.security_group_name(group);
        changes.push(piece(GROUP, &gname, wanted, &want, have.as_ref()));
    }

    let policy = canonical(&spec.secretsmanager_endpoint_policy()?);
    let needed = endpoint_services(spec);
    for service in endpoint_services_all(spec) {
        let want = vec![
            ("private_dns", on_off(true)),
            (
                "security_groups",
                known(&ids.groups.get(&Group::Endpoints).cloned()),
            ),
            ("policy", policy.clone()),
        ];
        let have = seen.endpoints.get(&service).map(|e| {
            vec![
                ("private_dns", on_off(e.private_dns)),
                ("security_groups", e.security_groups.join(",")),
                ("policy", e.policy.clone()),
            ]
        });
        let wanted = wanted && needed.contains(&service);
        changes.push(piece(ENDPOINT, &service, wanted, &want, have.as_ref()));
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

fn field<'a>(changes: &'a [Change], kind: &str, name: &str) -> Option<&'a Change> {
    changes.iter().find(|c| c.kind == kind && c.name == name)
}

/// Creates or repairs what the changes say, in order; returns the ids.
pub async fn apply(
    c: &Clients,
    spec: &Spec,
    mut net: Network,
    changes: &[Change],
) -> Result<Network, DeployError> {
    let VaultMode::Ec2 { inbound_cidr, .. } = &spec.cfg.vault else {
        return Ok(net);
    };
    let name = spec.vault_name();
    let wants = |kind: &str, n: &str| field(changes, kind, n).filter(|ch| ch.changes_anything());

    if let Some(ch) = wants(VPC, &name) {
        if net.vpc.is_none() {
            let out = c
                .ec2
                .create_vpc()
                .cidr_block(VPC_CIDR)
                .tag_specifications(tag_spec(spec, ResourceType::Vpc, &name))
                .send()
                .await
                .ctx("CreateVpc", &name)?;
            net.vpc = out.vpc().and_then(|v| v.vpc_id()).map(str::to_owned);
        }
        let vpc = net
            .vpc
            .clone()
            .ok_or_else(|| missing("CreateVpc", "VpcId"))?;
        let on = AttributeBooleanValue::builder().value(true).build();
        if ch.touches("dns_support") {
            c.ec2
                .modify_vpc_attribute()
                .vpc_id(&vpc)
                .enable_dns_support(on.clone())
                .send()
                .await
                .ctx("ModifyVpcAttribute", &vpc)?;
        }
        if ch.touches("dns_hostnames") {
            c.ec2
                .modify_vpc_attribute()
                .vpc_id(&vpc)
                .enable_dns_hostnames(on)
                .send()
                .await
                .ctx("ModifyVpcAttribute", &vpc)?;
        }
    }
    let vpc = net.vpc.clone().ok_or_else(|| missing("network", "VPC"))?;

    if wants(IGW, &name).is_some() {
        if net.igw.is_none() {
            let out = c
                .ec2
                .create_internet_gateway()
                .tag_specifications(tag_spec(spec, ResourceType::InternetGateway, &name))
                .send()
                .await
                .ctx("CreateInternetGateway", &name)?;
            net.igw = out
                .internet_gateway()
                .and_then(|g| g.internet_gateway_id())
                .map(str::to_owned);
        }
        let igw = net
            .igw
            .clone()
            .ok_or_else(|| missing("CreateInternetGateway", "InternetGatewayId"))?;
        c.ec2
            .attach_internet_gateway()
            .internet_gateway_id(&igw)
            .vpc_id(&vpc)
            .send()
            .await
            .ctx("AttachInternetGateway", &igw)?;
    }

    if wants(SUBNET, &name).is_some() && net.subnet.is_none() {
        let azs = c
            .ec2
            .describe_availability_zones()
            .send()
            .await
            .ctx("DescribeAvailabilityZones", &spec.id.region)?;
        let az = azs
            .availability_zones()
            .first()
            .and_then(|z| z.zone_name())
            .map(str::to_owned);
        let out = c
            .ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(SUBNET_CIDR)
            .set_availability_zone(az)
            .tag_specifications(tag_spec(spec, ResourceType::Subnet, &name))
            .send()
            .await
            .ctx("CreateSubnet", &name)?;
        net.subnet = out.subnet().and_then(|s| s.subnet_id()).map(str::to_owned);
    }
    let subnet = net
        .subnet
        .clone()
        .ok_or_else(|| missing("network", "subnet"))?;
    let igw = net
        .igw
        .clone()
        .ok_or_else(|| missing("network", "internet gateway"))?;

    if let Some(ch) = wants(ROUTE_TABLE, &name) {
        let fresh = net.route_table.is_none();
        if fresh {
            let out = c
                .ec2
                .create_route_table()
                .vpc_id(&vpc)
                .tag_specifications(tag_spec(spec, ResourceType::RouteTable, &name))
                .send()
                .await
                .ctx("CreateRouteTable", &name)?;
            net.route_table = out
                .route_table()
                .and_then(|r| r.route_table_id())
                .map(str::to_owned);
        }
        let rtb = net
            .route_table
            .clone()
            .ok_or_else(|| missing("CreateRouteTable", "RouteTableId"))?;
        if ch.touches("default_route") {
            let had_route = ch.fields.iter().any(|f| {
                f.field == "default_route" && f.from.as_deref().is_some_and(|v| v != "(none)")
            });
            if had_route {
                c.ec2
                    .replace_route()
                    .route_table_id(&rtb)
                    .destination_cidr_block("0.0.0.0/0")
                    .gateway_id(&igw)
                    .send()
                    .await
                    .ctx("ReplaceRoute", &rtb)?;
            } else {
                c.ec2
                    .create_route()
                    .route_table_id(&rtb)
                    .destination_cidr_block("0.0.0.0/0")
                    .gateway_id(&igw)
                    .send()
                    .await
                    .ctx("CreateRoute", &rtb)?;
            }
        }
        if ch.touches("subnet") {
            c.ec2
                .associate_route_table()
                .route_table_id(&rtb)
                .subnet_id(&subnet)
                .send()
                .await
                .ctx("AssociateRouteTable", &rtb)?;
        }
    }

    // The replicator's group first: the others' rules name it.
    for group in [Group::Replicator, Group::Vault, Group::Endpoints] {
        let gname = spec.security_group_name(group);
        let Some(ch) = wants(GROUP, &gname) else {
            continue;
        };
        if net.group(group).is_none() {
            let out = c
                .ec2
                .create_security_group()
                .group_name(&gname)
                .description(group.about())
                .vpc_id(&vpc)
                .tag_specifications(tag_spec(spec, ResourceType::SecurityGroup, &gname))
                .send()
                .await
                .ctx("CreateSecurityGroup", &gname)?;
            let id = out
                .group_id()
                .ok_or_else(|| missing("CreateSecurityGroup", "GroupId"))?;
            net.groups.insert(group, id.to_owned());
        }
        if ch.touches("ingress") {
            Box::pin(set_rules(c, &net, inbound_cidr, group, Direction::Ingress)).await?;
        }
    }
    // Egress once all three groups exist (the replicator's names the other two).
    for group in Group::ALL {
        let gname = spec.security_group_name(group);
        if wants(GROUP, &gname).is_some_and(|ch| ch.touches("egress")) {
            Box::pin(set_rules(c, &net, inbound_cidr, group, Direction::Egress)).await?;
        }
    }

    // Boxed: the endpoint calls' futures would make this one too large for a thread's stack.
    Box::pin(apply_endpoints(c, spec, &net, changes, &vpc, &subnet)).await?;
    Ok(net)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

/// The rules `group` needs in one direction, as EC2 permissions ([`wanted_rules`] says the same
/// as text, for the diff).
fn permissions(
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

/// Replaces a group's rules in one direction wholesale: revokes what is there, authorises what
/// is wanted.
async fn set_rules(
    c: &Clients,
    net: &Network,
    inbound_cidr: &str,
    group: Group,
    direction: Direction,
) -> Result<(), DeployError> {
    let id = net
        .group(group)
        .ok_or_else(|| missing("network", "security group"))?;
    let wanted = permissions(net, inbound_cidr, group, direction)?;
    let groups = c
        .ec2
        .describe_security_groups()
        .group_ids(id)
        .send()
        .await
        .ctx("DescribeSecurityGroups", id)?;
    let existing = groups
        .security_groups()
        .first()
        .map(|g| match direction {
            Direction::Ingress => g.ip_permissions().to_vec(),
            Direction::Egress => g.ip_permissions_egress().to_vec(),
        })
        .unwrap_or_default();
    match direction {
        Direction::Ingress => {
            if !existing.is_empty() {
                c.ec2
                    .revoke_security_group_ingress()
                    .group_id(id)
                    .set_ip_permissions(Some(existing))
                    .send()
                    .await
                    .ctx("RevokeSecurityGroupIngress", id)?;
            }
            if !wanted.is_empty() {
                c.ec2
                    .authorize_security_group_ingress()
                    .group_id(id)
                    .set_ip_permissions(Some(wanted))
                    .send()
                    .await
                    .ctx("AuthorizeSecurityGroupIngress", id)?;
            }
        }
        Direction::Egress => {
            if !existing.is_empty() {
                c.ec2
                    .revoke_security_group_egress()
                    .group_id(id)
                    .set_ip_permissions(Some(existing))
                    .send()
                    .await
                    .ctx("RevokeSecurityGroupEgress", id)?;
            }
            if !wanted.is_empty() {
                c.ec2
                    .authorize_security_group_egress()
                    .group_id(id)
                    .set_ip_permissions(Some(wanted))
                    .send()
                    .await
                    .ctx("AuthorizeSecurityGroupEgress", id)?;
            }
        }
    }
    Ok(())
}

/// Creates, repairs or removes the VPC endpoints the changes name.
async fn apply_endpoints(
    c: &Clients,
    spec: &Spec,
    net: &Network,
    changes: &[Change],
    vpc: &str,
    subnet: &str,
) -> Result<(), DeployError> {
    let sg_end_id = net
        .group(Group::Endpoints)
        .ok_or_else(|| missing("network", "endpoint security group"))?;
    for service in endpoint_services_all(spec) {
        let Some(ch) = field(changes, ENDPOINT, &service) else {
            continue;
        };
        let policy = canonical(&spec.secretsmanager_endpoint_policy()?);
        // Only the policy drifted: set it again in place.
        let policy_only = ch.fields.iter().all(|f| f.field == "policy");
        match ch.action {
            Action::Update if policy_only => {
                let id = endpoint_ids(c, vpc, &service)
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| missing("DescribeVpcEndpoints", "VpcEndpointId"))?;
                c.ec2
                    .modify_vpc_endpoint()
                    .vpc_endpoint_id(&id)
                    .policy_document(&policy)
                    .send()
                    .await
                    .ctx("ModifyVpcEndpoint", &service)?;
            }
            Action::Create => {
                c.ec2
                    .create_vpc_endpoint()
                    .vpc_id(vpc)
                    .service_name(&service)
                    .vpc_endpoint_type(VpcEndpointType::Interface)
                    .subnet_ids(subnet)
                    .security_group_ids(sg_end_id)
                    .private_dns_enabled(true)
                    .policy_document(&policy)
                    .tag_specifications(tag_spec(spec, ResourceType::VpcEndpoint, &service))
                    .send()
                    .await
                    .ctx("CreateVpcEndpoint", &service)?;
            }
            Action::Update | Action::Delete => {
                delete_endpoints(c, vpc, &service).await?;
                if ch.action == Action::Update {
                    return Err(DeployError::NotReady {
                        what: format!("vpc endpoint {service}"),
                        detail: "it was changed by hand and has been deleted; run up again to recreate it".into(),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The ids of the VPC's live endpoints of `service` (not those being deleted).
async fn endpoint_ids(c: &Clients, vpc: &str, service: &str) -> Result<Vec<String>, DeployError> {
    let eps = c
        .ec2
        .describe_vpc_endpoints()
        .filters(Filter::builder().name("vpc-id").values(vpc).build())
        .filters(
            Filter::builder()
                .name("service-name")
                .values(service)
                .build(),
        )
        .send()
        .await
        .ctx("DescribeVpcEndpoints", service)?;
    Ok(eps
        .vpc_endpoints()
        .iter()
        .filter(|e| !matches!(e.state().map(|s| s.as_str()), Some("deleted" | "deleting")))
        .filter_map(|e| e.vpc_endpoint_id())
        .map(str::to_owned)
        .collect())
}

async fn delete_endpoints(c: &Clients, vpc: &str, service: &str) -> Result<(), DeployError> {
    let ids = endpoint_ids(c, vpc, service).await?;
    if !ids.is_empty() {
        c.ec2
            .delete_vpc_endpoints()
            .set_vpc_endpoint_ids(Some(ids))
            .send()
            .await
            .ctx("DeleteVpcEndpoints", service)?;
    }
    Ok(())
}

/// How Lambda describes the network interfaces it makes for a function in a VPC.
const LAMBDA_ENI: &str = "AWS Lambda VPC ENI";

/// After the function is deleted, Lambda releases its network interfaces in the replicator's
/// security group, which can take many minutes and needs the replicator role's EC2 permissions
/// (so this runs before the role is deleted). Until they are gone neither the security group nor
/// the subnet can be deleted. Deletes the released ("available") ones itself and waits for the
/// rest, up to `release_wait`. Never touches an interface Lambda did not make.
pub async fn release_lambda_interfaces(
    c: &Clients,
    spec: &Spec,
) -> Result<Option<Change>, DeployError> {
    let sg_repl = spec.security_group_name(Group::Replicator);
    let groups = c
        .ec2
        .describe_security_groups()
        .set_filters(Some(filters(spec, &sg_repl)))
        .send()
        .await
        .ctx("DescribeSecurityGroups", &sg_repl)?;
    let Some(group) = groups.security_groups().first().and_then(|g| g.group_id()) else {
        return Ok(None);
    };
    let deadline = tokio::time::Instant::now() + c.backoff.release_wait;
    let (mut released, mut attempt) = (0, 0);
    loop {
        let mut in_use = Vec::new();
        let mut pages = c
            .ec2
            .describe_network_interfaces()
            .filters(Filter::builder().name("group-id").values(group).build())
            .into_paginator()
            .items()
            .send();
        while let Some(eni) = pages.next().await {
            let eni = eni.ctx("DescribeNetworkInterfaces", &sg_repl)?;
            let (Some(id), true) = (
                eni.network_interface_id(),
                eni.description().unwrap_or("").starts_with(LAMBDA_ENI),
            ) else {
                continue;
            };
            if eni.status() == Some(&NetworkInterfaceStatus::Available) {
                delete(
                    "DeleteNetworkInterface",
                    id,
                    c.ec2
                        .delete_network_interface()
                        .network_interface_id(id)
                        .send(),
                )
                .await?;
                released += 1;
            } else {
                in_use.push(id.to_owned());
            }
        }
        if in_use.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(DeployError::NotReady {
                what: format!("Lambda's network interfaces in {sg_repl}"),
                detail: format!(
                    "{} still in use ({}) {} min after the function was deleted; run destroy again later",
                    in_use.len(),
                    in_use.join(", "),
                    c.backoff.release_wait.as_secs() / 60
                ),
            });
        }
        if attempt % 6 == 0 {
            tracing::info!(
                "waiting for Lambda to release {} network interface(s) in {sg_repl}; this can take up to {} minutes",
                in_use.len(),
                c.backoff.release_wait.as_secs() / 60
            );
        }
        tokio::time::sleep(c.backoff.delay(attempt)).await;
        attempt += 1;
    }
    Ok((released > 0).then(|| {
        Change::new(INTERFACES_KIND, &sg_repl, Action::Delete)
            .with_note(format!("{released} released by Lambda, deleted"))
    }))
}

/// Deletes the network, innermost first. Only pieces with the stack's tags are found at all.
pub async fn destroy(c: &Clients, spec: &Spec) -> Result<Vec<Change>, DeployError> {
    let seen = observe(c, spec).await?;
    let net = seen.ids();
    let mut done = Vec::new();
    let name = spec.vault_name();
    if let Some(vpc) = &net.vpc {
        for service in seen.endpoints.keys() {
            delete_endpoints(c, vpc, service).await?;
            done.push(Change::new(ENDPOINT, service, Action::Delete));
        }
    }
    // Rules referencing the replicator group go first, or it cannot be deleted.
    for group in [Group::Vault, Group::Endpoints, Group::Replicator] {
        let gname = spec.security_group_name(group);
        if let Some(id) = net.group(group) {
            // The Lambda's network interfaces linger a while after the function is deleted.
            gone_ok(
                super::retry_on(c.backoff, &["DependencyViolation"], || async {
                    c.ec2
                        .delete_security_group()
                        .group_id(id)
                        .send()
                        .await
                        .map(|_| ())
                        .ctx("DeleteSecurityGroup", &gname)
                })
                .await,
            )?;
            done.push(Change::new(GROUP, gname, Action::Delete));
        }
    }
    if let Some(rtb) = &net.route_table {
        let tables = c
            .ec2
            .describe_route_tables()
            .route_table_ids(rtb)
            .send()
            .await
            .ctx("DescribeRouteTables", rtb)?;
        for a in tables.route_tables().iter().flat_map(|t| t.associations()) {
            if let (Some(id), false) = (a.route_table_association_id(), a.main().unwrap_or(false)) {
                delete(
                    "DisassociateRouteTable",
                    rtb,
                    c.ec2.disassociate_route_table().association_id(id).send(),
                )
                .await?;
            }
        }
        delete(
            "DeleteRouteTable",
            rtb,
            c.ec2.delete_route_table().route_table_id(rtb).send(),
        )
        .await?;
        done.push(Change::new(ROUTE_TABLE, &name, Action::Delete));
    }
    if let Some(subnet) = &net.subnet {
        gone_ok(
            super::retry_on(c.backoff, &["DependencyViolation"], || async {
                c.ec2
                    .delete_subnet()
                    .subnet_id(subnet)
                    .send()
                    .await
                    .map(|_| ())
                    .ctx("DeleteSubnet", subnet)
            })
            .await,
        )?;
        done.push(Change::new(SUBNET, &name, Action::Delete));
    }
    if let Some(igw) = &net.igw {
        // Only where it is attached: an `up` cut short between create and attach leaves it free.
        for vpc in seen.igw.iter().flat_map(|g| &g.attached_to) {
            delete(
                "DetachInternetGateway",
                igw,
                c.ec2
                    .detach_internet_gateway()
                    .internet_gateway_id(igw)
                    .vpc_id(vpc)
                    .send(),
            )
            .await?;
        }
        delete(
            "DeleteInternetGateway",
            igw,
            c.ec2
                .delete_internet_gateway()
                .internet_gateway_id(igw)
                .send(),
        )
        .await?;
        done.push(Change::new(IGW, &name, Action::Delete));
    }
    if let Some(vpc) = &net.vpc {
        delete("DeleteVpc", vpc, c.ec2.delete_vpc().vpc_id(vpc).send()).await?;
        done.push(Change::new(VPC, &name, Action::Delete));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::spec;

    const EC2: &str = "stack_name = \"s\"\nvault_inbound_cidr = \"203.0.113.0/24\"\n";
    const EXTERNAL: &str = "stack_name = \"s\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"https://vault.example.com:8200\"\n";

    fn rules(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| (*l).to_owned()).collect()
    }

    /// The network as `up` leaves it.
    fn converged(spec: &Spec) -> Seen {
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
                    policy: canonical(&spec.secretsmanager_endpoint_policy().unwrap()),
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
            (format!("vpc endpoint {sns}"), Action::Absent),
        ])
        .collect();
        assert_eq!(actions(&changes), expected);
        // Rules naming groups not made yet are shown as known after apply, not as a guess.
        let vault = one(&changes, GROUP, "s-vault");
        let ingress = vault.fields.iter().find(|f| f.field == "ingress").unwrap();
        assert_eq!(ingress.to.as_deref(), Some(UNKNOWN));
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
                    rules_text(&rule_lines(&perms, dir)),
                    text,
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
            "tcp/8200 from 2001:db8::/32; tcp/8200 from sg-r"
        );
    }
}
