//! Creates or repairs the network pieces the diff names, in dependency order: VPC, gateway,
//! subnet, route table, security groups (their rules replaced wholesale), endpoints.

use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, ResourceType, VpcEndpointType};

use super::rules::{Direction, permissions};
use super::{ENDPOINT, GROUP, IGW, Network, ROUTE_TABLE, SUBNET, VPC, field, tag_spec};
use crate::change::{Action, Change, Field};
use crate::clients::Clients;
use crate::desired::NetworkSpec;
use crate::policy::canonical;
use crate::resources::{Ctx, DeployError, missing};
use crate::spec::{Group, SUBNET_CIDR, VPC_CIDR};

/// Creates or repairs what the changes say, in order; returns the ids.
pub(crate) async fn apply(
    c: &Clients,
    spec: &NetworkSpec,
    mut net: Network,
    changes: &[Change],
) -> Result<Network, DeployError> {
    let Some(inbound_cidr) = &spec.inbound_cidr else {
        return Ok(net);
    };
    let name = spec.name.clone();
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
        if ch.touches(Field::DnsSupport) {
            c.ec2
                .modify_vpc_attribute()
                .vpc_id(&vpc)
                .enable_dns_support(on.clone())
                .send()
                .await
                .ctx("ModifyVpcAttribute", &vpc)?;
        }
        if ch.touches(Field::DnsHostnames) {
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
            .ctx("DescribeAvailabilityZones", &spec.region)?;
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
        if ch.touches(Field::DefaultRoute) {
            let had_route = ch.fields.iter().any(|f| {
                f.field == Field::DefaultRoute && f.from.as_deref().is_some_and(|v| v != "(none)")
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
        if ch.touches(Field::Subnet) {
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
        let gname = spec.group_name(group);
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
        if ch.touches(Field::Ingress) {
            Box::pin(set_rules(c, &net, inbound_cidr, group, Direction::Ingress)).await?;
        }
    }
    // Egress once all three groups exist (the replicator's names the other two).
    for group in Group::ALL {
        let gname = spec.group_name(group);
        if wants(GROUP, &gname).is_some_and(|ch| ch.touches(Field::Egress)) {
            Box::pin(set_rules(c, &net, inbound_cidr, group, Direction::Egress)).await?;
        }
    }

    // Boxed: the endpoint calls' futures would make this one too large for a thread's stack.
    Box::pin(apply_endpoints(c, spec, &net, changes, &vpc, &subnet)).await?;
    Ok(net)
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
    spec: &NetworkSpec,
    net: &Network,
    changes: &[Change],
    vpc: &str,
    subnet: &str,
) -> Result<(), DeployError> {
    let sg_end_id = net
        .group(Group::Endpoints)
        .ok_or_else(|| missing("network", "endpoint security group"))?;
    for service in spec.endpoints_ever.clone() {
        let Some(ch) = field(changes, ENDPOINT, &service) else {
            continue;
        };
        let policy = match ch.action {
            Action::Create | Action::Update => canonical(
                (spec.endpoints.get(&service))
                    .ok_or_else(|| missing("network", "the endpoint's policy"))?,
            ),
            _ => String::new(),
        };
        // Only the policy drifted: set it again in place.
        let policy_only = ch.fields.iter().all(|f| f.field == Field::Policy);
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

pub(super) async fn delete_endpoints(
    c: &Clients,
    vpc: &str,
    service: &str,
) -> Result<(), DeployError> {
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
