//! The Elastic IP: a stable public address, allocated before the certificate that names it.

use aws_sdk_ec2::types::{DomainType, ResourceType};

use crate::change::{Action, Change, Field};
use crate::clients::Clients;
use crate::desired::VaultServerSpec;
use crate::resources::{Ctx, DeployError, missing};

use super::{ADDRESS_KIND, ec2_tags, filters};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Address {
    pub allocation_id: String,
    pub public_ip: String,
    pub instance_id: Option<String>,
}

pub async fn observe_address(
    c: &Clients,
    spec: &VaultServerSpec,
) -> Result<Option<Address>, DeployError> {
    let out = c
        .ec2
        .describe_addresses()
        .set_filters(Some(filters(spec)))
        .send()
        .await
        .ctx("DescribeAddresses", &spec.name.clone())?;
    Ok(out.addresses().first().map(|a| Address {
        allocation_id: a.allocation_id().unwrap_or_default().to_owned(),
        public_ip: a.public_ip().unwrap_or_default().to_owned(),
        instance_id: a.instance_id().map(str::to_owned),
    }))
}

/// `seen` is the address as observed before this run allocated one.
pub fn diff_address(
    spec: &VaultServerSpec,
    seen: Option<&Address>,
    instance: Option<&str>,
) -> Change {
    let name = spec.name.clone();
    if !spec.wanted {
        return match seen {
            Some(_) => Change::new(ADDRESS_KIND, name, Action::Delete),
            None => Change::new(ADDRESS_KIND, name, Action::Absent),
        };
    }
    let want = vec![(Field::AssociatedWith, instance.into())];
    let seen_f = seen.map(|a| {
        vec![(
            Field::AssociatedWith,
            a.instance_id
                .clone()
                .unwrap_or_else(|| "(none)".into())
                .into(),
        )]
    });
    let mut ch = Change::diff(ADDRESS_KIND, name, &want, seen_f.as_ref());
    if let Some(a) = seen {
        ch.note = Some(format!("public address {}", a.public_ip));
    }
    ch
}

pub async fn allocate(c: &Clients, spec: &VaultServerSpec) -> Result<Address, DeployError> {
    let out = c
        .ec2
        .allocate_address()
        .domain(DomainType::Vpc)
        .tag_specifications(ec2_tags(spec, ResourceType::ElasticIp))
        .send()
        .await
        .ctx("AllocateAddress", &spec.name.clone())?;
    Ok(Address {
        allocation_id: out
            .allocation_id()
            .ok_or_else(|| missing("AllocateAddress", "AllocationId"))?
            .to_owned(),
        public_ip: out
            .public_ip()
            .ok_or_else(|| missing("AllocateAddress", "PublicIp"))?
            .to_owned(),
        instance_id: None,
    })
}

pub async fn associate(c: &Clients, address: &Address, instance: &str) -> Result<(), DeployError> {
    c.ec2
        .associate_address()
        .allocation_id(&address.allocation_id)
        .instance_id(instance)
        .allow_reassociation(true)
        .send()
        .await
        .ctx("AssociateAddress", &address.public_ip)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml: &str) -> VaultServerSpec {
        crate::spec::tests::spec(toml).vault_server_spec().unwrap()
    }

    #[test]
    fn the_address_is_made_then_associated_with_the_instance() {
        let s = spec("stack_name = \"s\"\nvault_inbound_cidr = \"10.0.0.0/8\"\n");
        let free = Address {
            allocation_id: "eipalloc-1".into(),
            public_ip: "203.0.113.9".into(),
            instance_id: None,
        };
        let bound = Address {
            instance_id: Some("i-1".into()),
            ..free.clone()
        };
        assert_eq!(diff_address(&s, None, None).action, Action::Create);
        assert_eq!(diff_address(&s, None, Some("i-1")).action, Action::Create);
        let ch = diff_address(&s, Some(&free), Some("i-1"));
        assert_eq!(ch.action, Action::Update);
        assert_eq!(ch.note.as_deref(), Some("public address 203.0.113.9"));
        assert_eq!(
            diff_address(&s, Some(&bound), Some("i-1")).action,
            Action::Unchanged
        );
        // Moved to another instance by hand: moved back.
        assert_eq!(
            diff_address(&s, Some(&bound), Some("i-2")).action,
            Action::Update
        );
        let external = spec(
            "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"",
        );
        assert_eq!(
            diff_address(&external, Some(&free), None).action,
            Action::Delete
        );
        assert_eq!(diff_address(&external, None, None).action, Action::Absent);
    }
}
