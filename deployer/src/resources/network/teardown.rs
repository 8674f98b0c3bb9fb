//! Taking the network down: the Lambda's network interfaces first (Lambda releases them slowly),
//! then every piece innermost first.

use aws_sdk_ec2::types::{Filter, NetworkInterfaceStatus};

use super::apply::delete_endpoints;
use super::{ENDPOINT, GROUP, IGW, INTERFACES_KIND, ROUTE_TABLE, SUBNET, VPC, filters, observe};
use crate::change::{Action, Change};
use crate::clients::Clients;
use crate::desired::NetworkSpec;
use crate::resources::{Ctx, DeployError, delete, gone_ok};
use crate::spec::Group;

/// How Lambda describes the network interfaces it makes for a function in a VPC.
const LAMBDA_ENI: &str = "AWS Lambda VPC ENI";

/// After the function is deleted, Lambda releases its network interfaces in the replicator's
/// security group, which can take many minutes and needs the replicator role's EC2 permissions
/// (so this runs before the role is deleted). Until they are gone neither the security group nor
/// the subnet can be deleted. Deletes the released ("available") ones itself and waits for the
/// rest, up to `release_wait`. Never touches an interface Lambda did not make.
pub(crate) async fn release_lambda_interfaces(
    c: &Clients,
    spec: &NetworkSpec,
) -> Result<Option<Change>, DeployError> {
    let sg_repl = spec.group_name(Group::Replicator);
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
pub(crate) async fn destroy(c: &Clients, spec: &NetworkSpec) -> Result<Vec<Change>, DeployError> {
    let seen = observe(c, spec).await?;
    let net = seen.ids();
    let mut done = Vec::new();
    let name = spec.name.clone();
    if let Some(vpc) = &net.vpc {
        for service in seen.endpoints.keys() {
            delete_endpoints(c, vpc, service).await?;
            done.push(Change::new(ENDPOINT, service, Action::Delete));
        }
    }
    // Rules referencing the replicator group go first, or it cannot be deleted.
    for group in [Group::Vault, Group::Endpoints, Group::Replicator] {
        let gname = spec.group_name(group);
        if let Some(id) = net.group(group) {
            // The Lambda's network interfaces linger a while after the function is deleted.
            gone_ok(
                crate::resources::retry_on(c.backoff, &["DependencyViolation"], || async {
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
            crate::resources::retry_on(c.backoff, &["DependencyViolation"], || async {
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
