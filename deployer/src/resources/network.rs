//! The Vault network, without a NAT gateway: a VPC with one public subnet (internet gateway) for
//! the Vault instance, the replicator Lambda in the same subnet reaching AWS APIs through VPC
//! interface endpoints, and security groups that open Vault's port 8200 only to the replicator and
//! to `vault_inbound_cidr`. Every piece found by its `Name` and stack tags.

use aws_sdk_ec2::types::{
    AttributeBooleanValue, Filter, IpPermission, IpRange, Ipv6Range, NetworkInterfaceStatus,
    ResourceType, Tag, TagSpecification, UserIdGroupPair, VpcAttributeName, VpcEndpointType,
};

use super::{Ctx, DeployError, delete, gone_ok, missing};
use crate::change::{Action, Change, Fields, UNKNOWN};
use crate::clients::Clients;
use crate::config::VaultMode;
use crate::policy::{canonical, parse_returned};
use crate::spec::{STACK_TAG, Spec};

pub const VPC_CIDR: &str = "10.42.0.0/16";
pub const SUBNET_CIDR: &str = "10.42.0.0/24";
/// Vault's fixed private address: its certificate names it before the instance exists.
pub const VAULT_PRIVATE_IP: &str = "10.42.0.10";
pub const VAULT_PORT: i32 = 8200;

/// Ids of the network pieces that exist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    pub vpc: Option<String>,
    pub igw: Option<String>,
    /// The VPCs the internet gateway is attached to (none after a create that was cut short).
    pub igw_attached: Vec<String>,
    pub subnet: Option<String>,
    pub route_table: Option<String>,
    pub sg_vault: Option<String>,
    pub sg_replicator: Option<String>,
    pub sg_endpoints: Option<String>,
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

pub fn sg_names(spec: &Spec) -> [String; 3] {
    let s = spec.stack();
    [
        format!("{s}-vault"),
        format!("{s}-replicator"),
        format!("{s}-endpoints"),
    ]
}

/// Endpoint services the Lambda needs: Secrets Manager only. Failure notices leave through the
/// function's on-failure destination, which Lambda delivers from outside the VPC (an SNS
/// endpoint made by an earlier version is removed).
pub fn endpoint_services(spec: &Spec) -> Vec<String> {
    let region = &spec.id.region;
    let prefix = if spec.id.partition == "aws-cn" {
        "cn.com.amazonaws"
    } else {
        "com.amazonaws"
    };
    vec![format!("{prefix}.{region}.secretsmanager")]
}

/// Reads everything the stack has in the network.
pub async fn observe(c: &Clients, spec: &Spec) -> Result<(Network, Vec<Change>), DeployError> {
    let name = spec.vault_name();
    let mut net = Network::default();
    let mut changes = Vec::new();
    let want_vault = matches!(spec.cfg.vault, VaultMode::Ec2 { .. });

    let vpcs = c
        .ec2
        .describe_vpcs()
        .set_filters(Some(filters(spec, &name)))
        .send()
        .await
        .ctx("DescribeVpcs", &name)?;
    let vpc = vpcs.vpcs().first();
    net.vpc = vpc.and_then(|v| v.vpc_id()).map(str::to_owned);
    let mut seen_vpc: Option<Fields> = None;
    if let Some(id) = &net.vpc {
        let dns = |attr| async move {
            c.ec2
                .describe_vpc_attribute()
                .vpc_id(id)
                .attribute(attr)
                .send()
                .await
                .ctx("DescribeVpcAttribute", id)
        };
        let hostnames = dns(VpcAttributeName::EnableDnsHostnames).await?;
        let support = dns(VpcAttributeName::EnableDnsSupport).await?;
        let on = |v: Option<&AttributeBooleanValue>| {
            if v.and_then(|b| b.value()).unwrap_or(false) {
                "enabled"
            } else {
                "disabled"
            }
            .to_owned()
        };
        seen_vpc = Some(vec![
            (
                "cidr",
                vpc.and_then(|v| v.cidr_block())
                    .unwrap_or_default()
                    .to_owned(),
            ),
            ("dns_hostnames", on(hostnames.enable_dns_hostnames())),
            ("dns_support", on(support.enable_dns_support())),
        ]);
    }
    let want: Fields = vec![
        ("cidr", VPC_CIDR.into()),
        ("dns_hostnames", "enabled".into()),
        ("dns_support", "enabled".into()),
    ];
    changes.push(piece("vpc", &name, want_vault, &want, seen_vpc.as_ref()));

    let igws = c
        .ec2
        .describe_internet_gateways()
        .set_filters(Some(filters(spec, &name)))
        .send()
        .await
        .ctx("DescribeInternetGateways", &name)?;
    let igw = igws.internet_gateways().first();
    net.igw = igw.and_then(|g| g.internet_gateway_id()).map(str::to_owned);
    net.igw_attached = igw
        .map(|g| {
            g.attachments()
                .iter()
                .filter_map(|a| a.vpc_id().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let attached = igw
        .map(|g| {
            g.attachments()
                .iter()
                .filter_map(|a| a.vpc_id())
                .collect::<Vec<_>>()
                .join(",")
        })
        .map(|a| vec![("attached_to", a)]);
    let want = vec![(
        "attached_to",
        net.vpc.clone().unwrap_or_else(|| UNKNOWN.into()),
    )];
    changes.push(piece(
        "internet gateway",
        &name,
        want_vault,
        &want,
        attached.as_ref(),
    ));

    let subnets = c
        .ec2
        .describe_subnets()
        .set_filters(Some(filters(spec, &name)))
        .send()
        .await
        .ctx("DescribeSubnets", &name)?;
    let subnet = subnets.subnets().first();
    net.subnet = subnet.and_then(|s| s.subnet_id()).map(str::to_owned);
    let seen = subnet.map(|s| vec![("cidr", s.cidr_block().unwrap_or_default().to_owned())]);
    changes.push(piece(
        "subnet",
        &name,
        want_vault,
        &vec![("cidr", SUBNET_CIDR.into())],
        seen.as_ref(),
    ));

    let rtbs = c
        .ec2
        .describe_route_tables()
        .set_filters(Some(filters(spec, &name)))
        .send()
        .await
        .ctx("DescribeRouteTables", &name)?;
    let rtb = rtbs.route_tables().first();
    net.route_table = rtb.and_then(|r| r.route_table_id()).map(str::to_owned);
    let seen = rtb.map(|r| {
        let default = r
            .routes()
            .iter()
            .find(|rt| rt.destination_cidr_block() == Some("0.0.0.0/0"))
            .and_then(|rt| rt.gateway_id())
            .unwrap_or("(none)")
            .to_owned();
        let assoc = r
            .associations()
            .iter()
            .filter_map(|a| a.subnet_id())
            .collect::<Vec<_>>()
            .join(",");
        vec![("default_route", default), ("subnet", assoc)]
    });
    let want = vec![
        (
            "default_route",
            net.igw.clone().unwrap_or_else(|| UNKNOWN.into()),
        ),
        (
            "subnet",
            net.subnet.clone().unwrap_or_else(|| UNKNOWN.into()),
        ),
    ];
    changes.push(piece(
        "route table",
        &name,
        want_vault,
        &want,
        seen.as_ref(),
    ));

    let [sg_vault, sg_repl, sg_end] = sg_names(spec);
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
    let find = |n: &str| {
        groups.security_groups().iter().find(|g| {
            g.tags()
                .iter()
                .any(|t| t.key() == Some("Name") && t.value() == Some(n))
        })
    };
    let rules = |perms: &[IpPermission], dir: &str| -> String {
        let mut r = Vec::new();
        for p in perms {
            let port = format!(
                "{}/{}",
                p.ip_protocol().unwrap_or("?"),
                p.from_port().unwrap_or(0)
            );
            r.extend(
                p.ip_ranges()
                    .iter()
                    .filter_map(|x| x.cidr_ip())
                    .map(|c| format!("{port} {dir} {c}")),
            );
            r.extend(
                p.ipv6_ranges()
                    .iter()
                    .filter_map(|x| x.cidr_ipv6())
                    .map(|c| format!("{port} {dir} {c}")),
            );
            r.extend(
                p.user_id_group_pairs()
                    .iter()
                    .filter_map(|x| x.group_id())
                    .map(|c| format!("{port} {dir} {c}")),
            );
        }
        r.sort();
        if r.is_empty() {
            "(none)".into()
        } else {
            r.join("; ")
        }
    };
    let vault_g = find(&sg_vault);
    let repl_g = find(&sg_repl);
    let end_g = find(&sg_end);
    net.sg_vault = vault_g.and_then(|g| g.group_id()).map(str::to_owned);
    net.sg_replicator = repl_g.and_then(|g| g.group_id()).map(str::to_owned);
    net.sg_endpoints = end_g.and_then(|g| g.group_id()).map(str::to_owned);
    let repl_ref = net
        .sg_replicator
        .clone()
        .unwrap_or_else(|| "replicator group".into());
    let vault_rules = match &spec.cfg.vault {
        VaultMode::Ec2 { inbound_cidr, .. } => {
            let mut r = [
                format!("tcp/{VAULT_PORT} from {inbound_cidr}"),
                format!("tcp/{VAULT_PORT} from {repl_ref}"),
            ];
            r.sort();
            if net.sg_replicator.is_some() {
                r.join("; ")
            } else {
                UNKNOWN.into()
            }
        }
        VaultMode::External { .. } => String::new(),
    };
    // The replicator calls AWS through the endpoints, and so does the Vault instance at boot
    // (private DNS sends it there too) to fetch its TLS key.
    let end_rules = match (&net.sg_replicator, &net.sg_vault) {
        (Some(repl), Some(vault)) => {
            let mut r = [
                format!("tcp/443 from {repl}"),
                format!("tcp/443 from {vault}"),
            ];
            r.sort();
            r.join("; ")
        }
        _ => UNKNOWN.into(),
    };
    // Egress: each group reaches only what it must. The Vault instance fetches packages and
    // calls AWS over HTTPS; the replicator reaches Vault and the endpoints; the endpoints
    // start nothing.
    let repl_egress = match (&net.sg_vault, &net.sg_endpoints) {
        (Some(vault), Some(end)) => {
            let mut r = [
                format!("tcp/{VAULT_PORT} to {vault}"),
                format!("tcp/443 to {end}"),
            ];
            r.sort();
            r.join("; ")
        }
        _ => UNKNOWN.into(),
    };
    for (gname, g, want_rules, want_egress) in [
        (
            &sg_vault,
            vault_g,
            vault_rules,
            "tcp/443 to 0.0.0.0/0".to_owned(),
        ),
        (&sg_repl, repl_g, "(none)".to_owned(), repl_egress),
        (&sg_end, end_g, end_rules, "(none)".to_owned()),
    ] {
        let seen = g.map(|g| {
            vec![
                ("ingress", rules(g.ip_permissions(), "from")),
                ("egress", rules(g.ip_permissions_egress(), "to")),
            ]
        });
        changes.push(piece(
            "security group",
            gname,
            want_vault,
            &vec![("ingress", want_rules), ("egress", want_egress)],
            seen.as_ref(),
        ));
    }

    for service in endpoint_services_all(spec) {
        let wanted = want_vault && endpoint_services(spec).contains(&service);
        let seen = match &net.vpc {
            Some(vpc) => {
                let eps = c
                    .ec2
                    .describe_vpc_endpoints()
                    .filters(Filter::builder().name("vpc-id").values(vpc).build())
                    .filters(
                        Filter::builder()
                            .name("service-name")
                            .values(&service)
                            .build(),
                    )
                    .send()
                    .await
                    .ctx("DescribeVpcEndpoints", &service)?;
                eps.vpc_endpoints()
                    .iter()
                    .find(|e| {
                        !matches!(e.state().map(|s| s.as_str()), Some("deleted" | "deleting"))
                    })
                    .map(|e| {
                        vec![
                            (
                                "private_dns",
                                if e.private_dns_enabled() == Some(true) {
                                    "enabled"
                                } else {
                                    "disabled"
                                }
                                .to_owned(),
                            ),
                            (
                                "security_groups",
                                e.groups()
                                    .iter()
                                    .filter_map(|g| g.group_id())
                                    .collect::<Vec<_>>()
                                    .join(","),
                            ),
                            (
                                "policy",
                                e.policy_document()
                                    .and_then(parse_returned)
                                    .map(|v| canonical(&v))
                                    .unwrap_or_default(),
                            ),
                        ]
                    })
            }
            None => None,
        };
        let want = vec![
            ("private_dns", "enabled".into()),
            (
                "security_groups",
                net.sg_endpoints.clone().unwrap_or_else(|| UNKNOWN.into()),
            ),
            ("policy", canonical(&spec.secretsmanager_endpoint_policy()?)),
        ];
        changes.push(piece(
            "vpc endpoint",
            &service,
            wanted,
            &want,
            seen.as_ref(),
        ));
    }
    Ok((net, changes))
}

fn endpoint_services_all(spec: &Spec) -> Vec<String> {
    let region = &spec.id.region;
    let prefix = if spec.id.partition == "aws-cn" {
        "cn.com.amazonaws"
    } else {
        "com.amazonaws"
    };
    vec![
        format!("{prefix}.{region}.secretsmanager"),
        format!("{prefix}.{region}.sns"),
    ]
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

    if let Some(ch) = wants("vpc", &name) {
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

    if wants("internet gateway", &name).is_some() {
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

    if wants("subnet", &name).is_some() && net.subnet.is_none() {
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

    if let Some(ch) = wants("route table", &name) {
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

    let [sg_vault, sg_repl, sg_end] = sg_names(spec);
    for (gname, slot, about) in [
        (&sg_repl, 1, "vault-secrets-replicator Lambda"),
        (
            &sg_vault,
            0,
            "Vault API: the replicator and vault_inbound_cidr only",
        ),
        (&sg_end, 2, "VPC endpoints: HTTPS from the replicator"),
    ] {
        let Some(ch) = wants("security group", gname) else {
            continue;
        };
        let current = [&net.sg_vault, &net.sg_replicator, &net.sg_endpoints][slot].clone();
        let id = match current {
            Some(id) => id,
            None => {
                let out = c
                    .ec2
                    .create_security_group()
                    .group_name(gname)
                    .description(about)
                    .vpc_id(&vpc)
                    .tag_specifications(tag_spec(spec, ResourceType::SecurityGroup, gname))
                    .send()
                    .await
                    .ctx("CreateSecurityGroup", gname)?;
                out.group_id()
                    .ok_or_else(|| missing("CreateSecurityGroup", "GroupId"))?
                    .to_owned()
            }
        };
        match slot {
            0 => net.sg_vault = Some(id.clone()),
            1 => net.sg_replicator = Some(id.clone()),
            _ => net.sg_endpoints = Some(id.clone()),
        }
        if slot == 1 || !ch.touches("ingress") {
            continue;
        }
        let repl = net
            .sg_replicator
            .clone()
            .ok_or_else(|| missing("network", "replicator group"))?;
        // Replace the rules wholesale: revoke what is there, authorise what is wanted.
        let existing = current_rules(c, &id, gname).await?.0;
        if !existing.is_empty() {
            c.ec2
                .revoke_security_group_ingress()
                .group_id(&id)
                .set_ip_permissions(Some(existing))
                .send()
                .await
                .ctx("RevokeSecurityGroupIngress", gname)?;
        }
        let from_repl = UserIdGroupPair::builder().group_id(&repl).build();
        let perm = if slot == 0 {
            let mut p = IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(VAULT_PORT)
                .to_port(VAULT_PORT)
                .user_id_group_pairs(from_repl);
            p = if inbound_cidr.contains(':') {
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
            p.build()
        } else {
            let vault = net
                .sg_vault
                .clone()
                .ok_or_else(|| missing("network", "vault group"))?;
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(443)
                .to_port(443)
                .user_id_group_pairs(from_repl)
                .user_id_group_pairs(UserIdGroupPair::builder().group_id(vault).build())
                .build()
        };
        c.ec2
            .authorize_security_group_ingress()
            .group_id(&id)
            .ip_permissions(perm)
            .send()
            .await
            .ctx("AuthorizeSecurityGroupIngress", gname)?;
    }

    // Egress once all three groups exist (the replicator's names the other two).
    for (gname, slot) in [(&sg_vault, 0), (&sg_repl, 1), (&sg_end, 2)] {
        if wants("security group", gname).is_some_and(|ch| ch.touches("egress")) {
            Box::pin(set_egress(c, &net, gname, slot)).await?;
        }
    }

    // Boxed: the endpoint calls' futures would make this one too large for a thread's stack.
    Box::pin(apply_endpoints(c, spec, &net, changes, &vpc, &subnet)).await?;
    Ok(net)
}

/// A security group's (ingress, egress) rules as they are now.
async fn current_rules(
    c: &Clients,
    id: &str,
    gname: &str,
) -> Result<(Vec<IpPermission>, Vec<IpPermission>), DeployError> {
    let groups = c
        .ec2
        .describe_security_groups()
        .group_ids(id)
        .send()
        .await
        .ctx("DescribeSecurityGroups", gname)?;
    Ok(groups
        .security_groups()
        .first()
        .map(|g| {
            (
                g.ip_permissions().to_vec(),
                g.ip_permissions_egress().to_vec(),
            )
        })
        .unwrap_or_default())
}

/// Replaces a group's egress rules with the ones it needs (slot 0: the Vault instance, 1: the
/// replicator, 2: the endpoints).
async fn set_egress(
    c: &Clients,
    net: &Network,
    gname: &str,
    slot: usize,
) -> Result<(), DeployError> {
    let group =
        |g: &Option<String>, what: &'static str| g.clone().ok_or_else(|| missing("network", what));
    let id = group(
        [&net.sg_vault, &net.sg_replicator, &net.sg_endpoints][slot],
        "security group",
    )?;
    let tcp_to_group = |port: i32, to: String| {
        IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(port)
            .to_port(port)
            .user_id_group_pairs(UserIdGroupPair::builder().group_id(to).build())
            .build()
    };
    let wanted = match slot {
        0 => vec![
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(443)
                .to_port(443)
                .ip_ranges(
                    IpRange::builder()
                        .cidr_ip("0.0.0.0/0")
                        .description("packages and AWS APIs, HTTPS")
                        .build(),
                )
                .build(),
        ],
        1 => vec![
            tcp_to_group(VAULT_PORT, group(&net.sg_vault, "vault group")?),
            tcp_to_group(443, group(&net.sg_endpoints, "endpoint group")?),
        ],
        _ => Vec::new(),
    };
    let existing = current_rules(c, &id, gname).await?.1;
    if !existing.is_empty() {
        c.ec2
            .revoke_security_group_egress()
            .group_id(&id)
            .set_ip_permissions(Some(existing))
            .send()
            .await
            .ctx("RevokeSecurityGroupEgress", gname)?;
    }
    if !wanted.is_empty() {
        c.ec2
            .authorize_security_group_egress()
            .group_id(&id)
            .set_ip_permissions(Some(wanted))
            .send()
            .await
            .ctx("AuthorizeSecurityGroupEgress", gname)?;
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
        .sg_endpoints
        .clone()
        .ok_or_else(|| missing("network", "endpoint group"))?;
    for service in endpoint_services_all(spec) {
        let Some(ch) = field(changes, "vpc endpoint", &service) else {
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
                    .security_group_ids(&sg_end_id)
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
    let [_, sg_repl, _] = sg_names(spec);
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
        Change::new("network interfaces", &sg_repl, Action::Delete)
            .with_note(format!("{released} released by Lambda, deleted"))
    }))
}

/// Deletes the network, innermost first. Only pieces with the stack's tags are found at all.
pub async fn destroy(c: &Clients, spec: &Spec) -> Result<Vec<Change>, DeployError> {
    let (net, seen) = observe(c, spec).await?;
    let present = |kind: &str, name: &str| {
        seen.iter().any(|ch| {
            ch.kind == kind
                && ch.name == name
                && ch.action != Action::Create
                && ch.action != Action::Absent
        })
    };
    let mut done = Vec::new();
    let name = spec.vault_name();
    if let Some(vpc) = &net.vpc {
        for service in endpoint_services_all(spec) {
            if present("vpc endpoint", &service) {
                delete_endpoints(c, vpc, &service).await?;
                done.push(Change::new("vpc endpoint", service, Action::Delete));
            }
        }
    }
    let [sg_vault, sg_repl, sg_end] = sg_names(spec);
    // Rules referencing the replicator group go first, or it cannot be deleted.
    for (gname, id) in [
        (&sg_vault, &net.sg_vault),
        (&sg_end, &net.sg_endpoints),
        (&sg_repl, &net.sg_replicator),
    ] {
        if let Some(id) = id {
            // The Lambda's network interfaces linger a while after the function is deleted.
            gone_ok(
                super::retry_on(c.backoff, &["DependencyViolation"], || async {
                    c.ec2
                        .delete_security_group()
                        .group_id(id)
                        .send()
                        .await
                        .map(|_| ())
                        .ctx("DeleteSecurityGroup", gname)
                })
                .await,
            )?;
            done.push(Change::new("security group", gname.clone(), Action::Delete));
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
        done.push(Change::new("route table", &name, Action::Delete));
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
        done.push(Change::new("subnet", &name, Action::Delete));
    }
    if let Some(igw) = &net.igw {
        // Only where it is attached: an `up` cut short between create and attach leaves it free.
        for vpc in &net.igw_attached {
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
        done.push(Change::new("internet gateway", &name, Action::Delete));
    }
    if let Some(vpc) = &net.vpc {
        delete("DeleteVpc", vpc, c.ec2.delete_vpc().vpc_id(vpc).send()).await?;
        done.push(Change::new("vpc", &name, Action::Delete));
    }
    Ok(done)
}
