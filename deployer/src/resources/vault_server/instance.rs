//! The instance: Amazon Linux 2023 from its SSM parameter, IMDSv2 with one hop, an encrypted
//! root volume, the fixed private address, the boot script as user data.

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceNetworkInterfaceSpecification, InstanceType, ResourceType, VolumeType,
};
use base64::Engine as _;

use crate::change::{Action, Change, Field, FieldValue, Fields};
use crate::clients::Clients;
use crate::desired::VaultServerSpec;
use crate::resources::network::Network;
use crate::resources::{Ctx, DeployError, missing};
use crate::spec::{Group, VAULT_PRIVATE_IP};

use super::{AMI_PARAMETER, INSTANCE_KIND, ec2_tags, filters, sha, user_data};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub state: String,
    pub instance_type: String,
    pub http_tokens: String,
    /// IMDS hops a response may take: 1 keeps the instance's credentials from a container on it.
    pub imds_hop_limit: String,
    pub profile: String,
    pub security_groups: String,
    pub root_encrypted: String,
    pub user_data_sha: String,
    /// When it was made (its root volume's attach time, which a stop and start keep; else its
    /// launch time), seconds since the epoch: not compared, it dates the TLS key's read.
    pub made_at: Option<i64>,
}

impl Instance {
    /// Until when its role may read the TLS key: the first hour of its life, time enough for
    /// its boot script, which reads the key once.
    pub fn tls_read_until(&self) -> Option<String> {
        let until = aws_sdk_ec2::primitives::DateTime::from_secs(self.made_at? + 3600);
        until
            .fmt(aws_sdk_ec2::primitives::DateTimeFormat::DateTime)
            .ok()
    }
}

pub async fn observe_instance(
    c: &Clients,
    spec: &VaultServerSpec,
) -> Result<Option<Instance>, DeployError> {
    let out = c
        .ec2
        .describe_instances()
        .set_filters(Some(filters(spec)))
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .build(),
        )
        .send()
        .await
        .ctx("DescribeInstances", &spec.name.clone())?;
    let Some(i) = out.reservations().iter().flat_map(|r| r.instances()).next() else {
        return Ok(None);
    };
    let id = i
        .instance_id()
        .ok_or_else(|| missing("DescribeInstances", "InstanceId"))?
        .to_owned();
    // The primary interface's groups are the instance's (moto leaves `SecurityGroups` empty when
    // they were given on the interface).
    let primary = i
        .network_interfaces()
        .iter()
        .find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0))
        .map(|n| n.groups())
        .unwrap_or_default();
    let groups = if primary.is_empty() {
        i.security_groups()
    } else {
        primary
    };
    let mut sgs: Vec<String> = groups
        .iter()
        .filter_map(|g| g.group_id())
        .map(str::to_owned)
        .collect();
    sgs.sort();
    // The root volume's encryption as EC2 reports it, not as it was asked for.
    let root_device = i.root_device_name().unwrap_or("/dev/xvda");
    let root_ebs = i
        .block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some(root_device))
        .and_then(|m| m.ebs());
    let root_volume = root_ebs.and_then(|e| e.volume_id()).map(str::to_owned);
    let made_at = root_ebs
        .and_then(|e| e.attach_time())
        .or(i.launch_time())
        .map(|t| t.secs());
    let root_encrypted = match &root_volume {
        Some(v) => {
            let out = c
                .ec2
                .describe_volumes()
                .volume_ids(v)
                .send()
                .await
                .ctx("DescribeVolumes", v)?;
            match out.volumes().first().and_then(|v| v.encrypted()) {
                Some(true) => "yes",
                _ => "no",
            }
        }
        None => "no root volume",
    };
    let user_data = c
        .ec2
        .describe_instance_attribute()
        .instance_id(&id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .ctx("DescribeInstanceAttribute", &id)?;
    let script = user_data
        .user_data()
        .and_then(|u| u.value())
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Ok(Some(Instance {
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        http_tokens: i
            .metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        imds_hop_limit: i
            .metadata_options()
            .and_then(|m| m.http_put_response_hop_limit())
            .map(|n| n.to_string())
            .unwrap_or_default(),
        profile: i
            .iam_instance_profile()
            .and_then(|p| p.arn())
            .and_then(|a| a.rsplit('/').next())
            .unwrap_or_default()
            .to_owned(),
        security_groups: sgs.join(","),
        root_encrypted: root_encrypted.into(),
        user_data_sha: sha(&script),
        made_at,
        id,
    }))
}

pub fn diff_instance(
    spec: &VaultServerSpec,
    seen: Option<&Instance>,
    net: &Network,
    public_ip: Option<&str>,
) -> Result<Change, DeployError> {
    let name = spec.name.clone();
    if !spec.wanted {
        return Ok(match seen {
            Some(_) => Change::new(INSTANCE_KIND, name, Action::Delete),
            None => Change::new(INSTANCE_KIND, name, Action::Absent),
        });
    }
    let instance_type = spec.instance_type.as_str();
    let user_data = match public_ip {
        Some(ip) => sha(&user_data(spec, ip)?).into(),
        None => FieldValue::AfterApply,
    };
    let want: Fields = vec![
        (Field::InstanceType, instance_type.into()),
        (Field::HttpTokens, "required".into()),
        (Field::ImdsHopLimit, "1".into()),
        (Field::RootEncrypted, "yes".into()),
        (Field::IamInstanceProfile, spec.name.clone().into()),
        (Field::SecurityGroups, net.group(Group::Vault).into()),
        (Field::State, "running".into()),
        (Field::UserData, user_data),
    ];
    let seen_f = seen.map(|i| {
        vec![
            (Field::InstanceType, i.instance_type.clone().into()),
            (Field::HttpTokens, i.http_tokens.clone().into()),
            (Field::ImdsHopLimit, i.imds_hop_limit.clone().into()),
            (Field::RootEncrypted, i.root_encrypted.clone().into()),
            (Field::IamInstanceProfile, i.profile.clone().into()),
            (Field::SecurityGroups, i.security_groups.clone().into()),
            (Field::State, i.state.clone().into()),
            (Field::UserData, i.user_data_sha.clone().into()),
        ]
    });
    let mut ch = Change::diff(INSTANCE_KIND, name, &want, seen_f.as_ref());
    if ch.touches(Field::UserData) && seen.is_some() {
        ch.note = Some("the boot script changed (vault_version?): it runs on first boot only, so up keeps this instance and its data; upgrade Vault on it, or destroy and up to replace it".into());
    }
    Ok(ch)
}

/// Launches the instance, or repairs what can be repaired in place.
pub async fn apply_instance(
    c: &Clients,
    spec: &VaultServerSpec,
    seen: Option<&Instance>,
    change: &Change,
    net: &Network,
    public_ip: &str,
) -> Result<Instance, DeployError> {
    let name = spec.name.clone();
    let instance_type = spec.instance_type.as_str();
    let sg = net
        .group(Group::Vault)
        .map(str::to_owned)
        .ok_or_else(|| missing("network", "vault group"))?;
    let subnet = net
        .subnet
        .clone()
        .ok_or_else(|| missing("network", "subnet"))?;
    let id = match seen {
        None => {
            let ami = c
                .ssm
                .get_parameter()
                .name(AMI_PARAMETER)
                .send()
                .await
                .ctx("GetParameter", AMI_PARAMETER)?;
            let ami = ami
                .parameter()
                .and_then(|p| p.value())
                .ok_or_else(|| missing("GetParameter", "AMI id"))?
                .to_owned();
            let script = user_data(spec, public_ip)?;
            // Same stack, subnet and address ⇒ same token: a rerun after a kill finds the
            // instance already launched instead of launching a second one.
            let token = sha(&format!(
                "{}/{}/{}/{}",
                spec.owner.stack(),
                subnet,
                public_ip,
                ami
            ));
            let out = crate::resources::retry_on(c.backoff, &["InvalidParameterValue"], || async {
                c.ec2
                    .run_instances()
                    .image_id(&ami)
                    .instance_type(InstanceType::from(instance_type))
                    .min_count(1)
                    .max_count(1)
                    .client_token(&token)
                    .iam_instance_profile(
                        IamInstanceProfileSpecification::builder()
                            .name(spec.name.clone())
                            .build(),
                    )
                    .network_interfaces(
                        InstanceNetworkInterfaceSpecification::builder()
                            .device_index(0)
                            .subnet_id(&subnet)
                            .groups(&sg)
                            .private_ip_address(VAULT_PRIVATE_IP)
                            .associate_public_ip_address(true)
                            .build(),
                    )
                    .metadata_options(
                        InstanceMetadataOptionsRequest::builder()
                            .http_tokens(HttpTokensState::Required)
                            .http_put_response_hop_limit(1)
                            .http_endpoint(InstanceMetadataEndpointState::Enabled)
                            .build(),
                    )
                    .block_device_mappings(
                        BlockDeviceMapping::builder()
                            .device_name("/dev/xvda")
                            .ebs(
                                EbsBlockDevice::builder()
                                    .encrypted(true)
                                    .volume_size(8)
                                    .volume_type(VolumeType::Gp3)
                                    .delete_on_termination(true)
                                    .build(),
                            )
                            .build(),
                    )
                    .user_data(base64::engine::general_purpose::STANDARD.encode(&script))
                    .tag_specifications(ec2_tags(spec, ResourceType::Instance))
                    .tag_specifications(ec2_tags(spec, ResourceType::Volume))
                    .send()
                    .await
                    .ctx("RunInstances", &name)
            })
            .await?;
            let id = out
                .instances()
                .first()
                .and_then(|i| i.instance_id())
                .ok_or_else(|| missing("RunInstances", "InstanceId"))?
                .to_owned();
            use aws_sdk_ec2::client::Waiters;
            c.ec2
                .wait_until_instance_running()
                .instance_ids(&id)
                .wait(std::time::Duration::from_secs(600))
                .await
                .map_err(|e| DeployError::NotReady {
                    what: format!("instance {id}"),
                    detail: e.to_string(),
                })?;
            id
        }
        Some(i) => {
            let id = i.id.clone();
            if change.touches(Field::RootEncrypted) {
                return Err(DeployError::NotReady {
                    what: format!("instance {id}"),
                    detail: "its root volume is not encrypted, and a volume cannot be encrypted in place: snapshot it, copy the snapshot encrypted, and swap the volume while the instance is stopped (or destroy and up, which loses Vault's data)".into(),
                });
            }
            if change.touches(Field::HttpTokens) || change.touches(Field::ImdsHopLimit) {
                c.ec2
                    .modify_instance_metadata_options()
                    .instance_id(&id)
                    .http_tokens(HttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .send()
                    .await
                    .ctx("ModifyInstanceMetadataOptions", &id)?;
            }
            if change.touches(Field::SecurityGroups) {
                c.ec2
                    .modify_instance_attribute()
                    .instance_id(&id)
                    .groups(&sg)
                    .send()
                    .await
                    .ctx("ModifyInstanceAttribute", &id)?;
            }
            if change.touches(Field::State) && i.state == "stopped" {
                c.ec2
                    .start_instances()
                    .instance_ids(&id)
                    .send()
                    .await
                    .ctx("StartInstances", &id)?;
            }
            if change.touches(Field::InstanceType) {
                // Changing the type needs a stopped instance; Vault comes back sealed.
                return Err(DeployError::NotReady {
                    what: format!("instance {id}"),
                    detail: format!(
                        "its type is {} but {instance_type} is configured: stop it, change the type (aws ec2 modify-instance-attribute), start it and unseal Vault",
                        i.instance_type
                    ),
                });
            }
            id
        }
    };
    observe_instance(c, spec)
        .await?
        .filter(|i| i.id == id)
        .ok_or_else(|| missing("DescribeInstances", "the instance just launched"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml: &str) -> VaultServerSpec {
        crate::spec::tests::spec(toml).vault_server_spec().unwrap()
    }

    const EC2: &str = "stack_name = \"s\"\nvault_inbound_cidr = \"10.0.0.0/8\"\n";

    fn net() -> Network {
        Network {
            groups: [(Group::Vault, "sg-v".to_owned())].into(),
            ..Network::default()
        }
    }

    /// The instance as `up` leaves it.
    fn running(s: &VaultServerSpec) -> Instance {
        Instance {
            id: "i-1".into(),
            state: "running".into(),
            instance_type: s.instance_type.clone(),
            http_tokens: "required".into(),
            imds_hop_limit: "1".into(),
            profile: s.name.clone(),
            security_groups: "sg-v".into(),
            root_encrypted: "yes".into(),
            user_data_sha: sha(&user_data(s, "203.0.113.9").unwrap()),
            made_at: Some(1_764_921_600),
        }
    }

    #[test]
    fn the_instance_up_leaves_is_unchanged_and_each_drift_is_its_own_field() {
        let s = spec(EC2);
        let ip = Some("203.0.113.9");
        let ch = diff_instance(&s, Some(&running(&s)), &net(), ip).unwrap();
        assert_eq!(ch.action, Action::Unchanged, "{ch:?}");
        // Its first hour, in the form a policy's date condition takes.
        assert_eq!(
            running(&s).tls_read_until().as_deref(),
            Some("2025-12-05T09:00:00Z")
        );
        type Drift = fn(&mut Instance);
        let cases: [(Drift, &str); 5] = [
            (|i| i.http_tokens = "optional".into(), "http_tokens"),
            (|i| i.imds_hop_limit = "2".into(), "imds_hop_limit"),
            (|i| i.root_encrypted = "no".into(), "root_encrypted"),
            (|i| i.security_groups = "sg-open".into(), "security_groups"),
            (|i| i.state = "stopped".into(), "state"),
        ];
        for (drift, field) in cases {
            let mut i = running(&s);
            drift(&mut i);
            let ch = diff_instance(&s, Some(&i), &net(), ip).unwrap();
            assert_eq!(ch.action, Action::Update, "{field}");
            let fields: Vec<&str> = ch.fields.iter().map(|f| f.field.as_str()).collect();
            assert_eq!(fields, [field]);
        }
        // Another Vault version: a new boot script, said to run on first boot only.
        let newer = spec(&format!("{EC2}vault_version = \"1.99.0\"\n"));
        let ch = diff_instance(&newer, Some(&running(&s)), &net(), ip).unwrap();
        assert!(ch.touches(Field::UserData));
        assert!(ch.note.unwrap().contains("first boot only"));
    }

    #[test]
    fn before_the_address_and_groups_exist_their_values_are_known_after_apply() {
        let s = spec(EC2);
        let ch = diff_instance(&s, None, &Network::default(), None).unwrap();
        assert_eq!(ch.action, Action::Create);
        for field in [Field::UserData, Field::SecurityGroups] {
            let f = ch.fields.iter().find(|f| f.field == field).unwrap();
            assert_eq!(f.to, Some(FieldValue::AfterApply), "{field}");
        }
        let external = spec(
            "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"",
        );
        let left = running(&s);
        assert_eq!(
            diff_instance(&external, Some(&left), &net(), None)
                .unwrap()
                .action,
            Action::Delete
        );
        assert_eq!(
            diff_instance(&external, None, &net(), None).unwrap().action,
            Action::Absent
        );
    }
}
