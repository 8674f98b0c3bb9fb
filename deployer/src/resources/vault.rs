//! The Vault server on EC2: its Elastic IP (a stable address, allocated first so the certificate
//! can name it), the TLS secret (CA, certificate and key; readable only by the instance's role),
//! and the instance itself (Amazon Linux 2023 from its SSM parameter, IMDSv2 required, encrypted
//! root volume, fixed private address, user data from `userdata/`).

use aws_sdk_ec2::types::{
    BlockDeviceMapping, DomainType, EbsBlockDevice, Filter, HttpTokensState,
    IamInstanceProfileSpecification, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceNetworkInterfaceSpecification, InstanceType, ResourceType, Tag, TagSpecification,
    VolumeType,
};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::network::Network;
use super::{Ctx, DeployError, delete, found, missing};
use crate::change::{Action, Change, Fields, UNKNOWN};
use crate::clients::Clients;
use crate::config::VaultMode;
use crate::policy::{self, canonical};
use crate::spec::{Group, STACK_TAG, Spec, VAULT_PRIVATE_IP};

pub const AMI_PARAMETER: &str =
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";
pub const INSTANCE_KIND: &str = "ec2 instance";
pub const ADDRESS_KIND: &str = "elastic ip";
pub const TLS_KIND: &str = "tls secret";
pub const USER_DATA: &str = include_str!("../../../userdata/vault-server.sh");
/// EC2's limit on user data.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Address {
    pub allocation_id: String,
    pub public_ip: String,
    pub instance_id: Option<String>,
}

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
}

fn filters(spec: &Spec) -> Vec<Filter> {
    vec![
        Filter::builder()
            .name(format!("tag:{STACK_TAG}"))
            .values(spec.stack())
            .build(),
        Filter::builder()
            .name("tag:Name")
            .values(spec.vault_name())
            .build(),
    ]
}

fn ec2_tags(spec: &Spec, kind: ResourceType) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(
            spec.named_tags(&spec.vault_name())
                .into_iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

pub fn version(spec: &Spec) -> (&str, &str) {
    match &spec.cfg.vault {
        VaultMode::Ec2 {
            instance_type,
            version,
            ..
        } => (instance_type.as_str(), version.as_str()),
        VaultMode::External { .. } => ("", ""),
    }
}

/// The boot script for this stack.
pub fn user_data(spec: &Spec, public_ip: &str) -> Result<String, DeployError> {
    let (_, version) = version(spec);
    let script = policy::render(
        USER_DATA,
        &[
            ("vault_version", version),
            ("region", &spec.id.region),
            ("tls_secret_id", &spec.tls_secret_name()),
            ("public_ip", public_ip),
            ("private_ip", VAULT_PRIVATE_IP),
        ],
    )?;
    if script.len() > USER_DATA_LIMIT {
        return Err(DeployError::TooLarge {
            what: "the Vault boot script (EC2 user data)",
            size: script.len(),
            limit: USER_DATA_LIMIT,
        });
    }
    Ok(script)
}

fn sha(text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

// --- Elastic IP -----------------------------------------------------------------------------

pub async fn observe_address(c: &Clients, spec: &Spec) -> Result<Option<Address>, DeployError> {
    let out = c
        .ec2
        .describe_addresses()
        .set_filters(Some(filters(spec)))
        .send()
        .await
        .ctx("DescribeAddresses", &spec.vault_name())?;
    Ok(out.addresses().first().map(|a| Address {
        allocation_id: a.allocation_id().unwrap_or_default().to_owned(),
        public_ip: a.public_ip().unwrap_or_default().to_owned(),
        instance_id: a.instance_id().map(str::to_owned),
    }))
}

/// `seen` is the address as observed before this run allocated one.
pub fn diff_address(spec: &Spec, seen: Option<&Address>, instance: Option<&str>) -> Change {
    let name = spec.vault_name();
    if !spec.deploys_vault() {
        return match seen {
            Some(_) => Change::new(ADDRESS_KIND, name, Action::Delete),
            None => Change::new(ADDRESS_KIND, name, Action::Absent),
        };
    }
    let want = vec![("associated_with", instance.unwrap_or(UNKNOWN).to_owned())];
    let seen_f = seen.map(|a| {
        vec![(
            "associated_with",
            a.instance_id.clone().unwrap_or_else(|| "(none)".into()),
        )]
    });
    let mut ch = Change::diff(ADDRESS_KIND, name, &want, seen_f.as_ref());
    if let Some(a) = seen {
        ch.note = Some(format!("public address {}", a.public_ip));
    }
    ch
}

pub async fn allocate(c: &Clients, spec: &Spec) -> Result<Address, DeployError> {
    let out = c
        .ec2
        .allocate_address()
        .domain(DomainType::Vpc)
        .tag_specifications(ec2_tags(spec, ResourceType::ElasticIp))
        .send()
        .await
        .ctx("AllocateAddress", &spec.vault_name())?;
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

// --- TLS secret -----------------------------------------------------------------------------

/// The TLS secret, as the connection secret's look-up sees it.
pub type TlsSecret = super::secret::SecretState;

pub async fn observe_tls(c: &Clients, spec: &Spec) -> Result<Option<TlsSecret>, DeployError> {
    super::secret::describe(c, spec, &spec.tls_secret_name()).await
}

fn tls_policy(spec: &Spec) -> Result<String, DeployError> {
    Ok(canonical(&spec.tls_secret_policy()?))
}

/// `complete`: the secret holds its certificate and key and the CA parameter is there, or an
/// instance already serves them. A pair whose creation was cut short is issued again.
pub fn diff_tls(
    spec: &Spec,
    seen: Option<&TlsSecret>,
    complete: bool,
) -> Result<Change, DeployError> {
    let name = spec.tls_secret_name();
    if !spec.deploys_vault() {
        return Ok(match seen {
            Some(s) if !s.pending_deletion => Change::new(TLS_KIND, name, Action::Delete),
            _ => Change::new(TLS_KIND, name, Action::Absent),
        });
    }
    const ISSUED: &str = "certificate, key and CA parameter";
    let want = vec![
        ("material", ISSUED.to_owned()),
        ("resource_policy", tls_policy(spec)?),
        ("state", "active".to_owned()),
    ];
    let seen_f = seen.map(|s| {
        vec![
            (
                "material",
                if complete { ISSUED } else { "cut short" }.to_owned(),
            ),
            ("resource_policy", s.policy.clone()),
            (
                "state",
                if s.pending_deletion {
                    "scheduled for deletion"
                } else {
                    "active"
                }
                .to_owned(),
            ),
        ]
    });
    let mut ch = Change::diff(TLS_KIND, name, &want, seen_f.as_ref());
    if seen.is_none() || !complete {
        ch.note = Some("a new CA and certificate for the Vault addresses; the key never leaves Secrets Manager and the instance".into());
    }
    Ok(ch)
}

/// Creates the TLS secret (new CA + certificate) or repairs its policy. Returns the CA's PEM when
/// it made one.
pub async fn apply_tls(
    c: &Clients,
    spec: &Spec,
    seen: Option<&TlsSecret>,
    change: &Change,
    key_arn: &str,
    public_ip: &str,
) -> Result<Option<String>, DeployError> {
    let name = spec.tls_secret_name();
    let mut ca = None;
    let mut policy_set = false;
    if let Some(s) = seen.filter(|s| s.pending_deletion) {
        c.sm.restore_secret()
            .secret_id(&s.arn)
            .send()
            .await
            .ctx("RestoreSecret", &name)?;
    }
    if seen.is_none() || change.touches("material") {
        let ips = [public_ip, VAULT_PRIVATE_IP, "127.0.0.1"]
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect::<Vec<_>>();
        let material = crate::tls_cert::issue(spec.stack(), &ips)?;
        let value = serde_json::to_string(&material)?;
        // The CA first: a run cut short after it issues the pair again (see `diff_tls`).
        write_ca(c, spec, &material.ca_certificate, key_arn, false).await?;
        // Empty, then its policy, then the key: never a key without the policy.
        if seen.is_none() {
            super::secret::create(
                c,
                spec,
                &name,
                "TLS certificate and key of the stack's Vault server; read by its instance role only",
                Some(key_arn),
                None,
            )
            .await?;
        }
        if seen.is_none() || change.touches("resource_policy") {
            super::secret::put_policy(c, &name, &tls_policy(spec)?).await?;
        }
        policy_set = true;
        c.sm.put_secret_value()
            .secret_id(&name)
            .secret_string(value)
            .send()
            .await
            .ctx("PutSecretValue", &name)?;
        ca = Some(material.ca_certificate.clone());
    }
    if change.touches("resource_policy") && !policy_set {
        super::secret::put_policy(c, &name, &tls_policy(spec)?).await?;
    }
    Ok(ca)
}

/// SSM parameter holding the CA certificate, so the operator and `vault-init` can trust the
/// stack's Vault while the TLS secret (with the key) stays readable by the instance role only.
/// It is a `SecureString` under the stack's key, and read back only as one: writing such a
/// value takes `kms:Encrypt` on that key through SSM, for this one parameter (the key policy),
/// which `ssm:PutParameter` alone does not give. A swapped parameter is refused, never trusted.
pub fn ca_parameter(spec: &Spec) -> String {
    spec.ca_parameter()
}

pub const CA_KIND: &str = "ssm parameter";

/// The CA parameter as read, without its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaParameter {
    /// `SecureString`, or `String` as earlier versions wrote it.
    pub r#type: String,
    /// The KMS key of a `SecureString`.
    pub key_id: Option<String>,
    pub version: i64,
}

pub async fn observe_ca(c: &Clients, spec: &Spec) -> Result<Option<CaParameter>, DeployError> {
    let name = ca_parameter(spec);
    let meta = c
        .ssm
        .describe_parameters()
        .parameter_filters(
            aws_sdk_ssm::types::ParameterStringFilter::builder()
                .key("Name")
                .values(&name)
                .build()?,
        )
        .send()
        .await
        .ctx("DescribeParameters", &name)?;
    Ok(meta
        .parameters()
        .iter()
        .find(|p| p.name() == Some(name.as_str()))
        .map(|p| CaParameter {
            r#type: p
                .r#type()
                .map(|t| t.as_str().to_owned())
                .unwrap_or_default(),
            key_id: p.key_id().map(str::to_owned),
            version: p.version(),
        }))
}

/// Whether `key_id` (as SSM reports it: ARN, alias or id) names the stack's key `key_arn`.
fn is_stack_key(spec: &Spec, key_id: &str, key_arn: &str) -> bool {
    key_id == key_arn || key_id == spec.key_alias() || key_arn.ends_with(&format!("/{key_id}"))
}

/// The CA parameter: a `SecureString` under the stack's key, written with the TLS secret. Pure.
/// `tls_exists`: the TLS secret is there already, so a missing parameter cannot be issued again
/// (its CA signed the certificate Vault serves).
pub fn diff_ca(
    spec: &Spec,
    seen: Option<&CaParameter>,
    tls_exists: bool,
    key_arn: Option<&str>,
) -> Change {
    let name = ca_parameter(spec);
    if !spec.deploys_vault() {
        return Change::new(
            CA_KIND,
            name,
            if seen.is_some() {
                Action::Delete
            } else {
                Action::Absent
            },
        );
    }
    let want = vec![
        ("type", "SecureString".to_owned()),
        ("kms_key", key_arn.unwrap_or(UNKNOWN).to_owned()),
    ];
    let have = seen.map(|p| {
        let key = match (&p.key_id, key_arn) {
            (Some(k), Some(arn)) if is_stack_key(spec, k, arn) => arn.to_owned(),
            (Some(k), _) => k.clone(),
            (None, _) => "(none)".into(),
        };
        vec![("type", p.r#type.clone()), ("kms_key", key)]
    });
    let ch = Change::diff(CA_KIND, name, &want, have.as_ref());
    match seen {
        None if tls_exists => ch.with_note(
            "missing: its CA signed the certificate Vault serves, so it cannot be issued again here; put the CA back (vault-init --ca-cert FILE prints how), or delete the TLS secret so that up issues a new pair",
        ),
        None => ch.with_note("the CA of the new TLS certificate"),
        Some(p) if p.r#type == "String" && p.version == 1 => {
            ch.with_note("written as a plain String by an earlier version: converted in place")
        }
        Some(_) if ch.changes_anything() => ch.with_note(
            "not as this tool writes it: up refuses to trust it and says how to put it back",
        ),
        Some(_) => ch,
    }
}

/// The CA certificate of the stack's Vault, from its SSM parameter, after checking that only
/// someone allowed to encrypt with the stack's key (`key_arn`) can have written it. A plain
/// `String` parameter that was never overwritten (version 1: as earlier versions of this tool
/// wrote it) is converted once; any other is refused with what to do.
pub async fn read_ca(
    c: &Clients,
    spec: &Spec,
    key_arn: &str,
) -> Result<Option<String>, DeployError> {
    let name = ca_parameter(spec);
    let p = found(
        c.ssm
            .get_parameter()
            .name(&name)
            .with_decryption(true)
            .send()
            .await
            .ctx("GetParameter", &name),
    )?;
    let Some(p) = p.and_then(|p| p.parameter) else {
        return Ok(None);
    };
    let value = p
        .value()
        .ok_or_else(|| missing("GetParameter", "Value"))?
        .to_owned();
    let refused = |why: String| {
        DeployError::Untrusted(format!(
            "the Vault CA certificate in the SSM parameter {name} is not trusted: {why}. Someone \
         with ssm:PutParameter may have replaced it. Check the certificate against your Vault \
         server, then write it back as a SecureString under the stack's key (aws ssm \
         put-parameter --name {name} --type SecureString --key-id {key_arn} --overwrite \
         --value file://ca.pem), or pass vault-init --ca-cert FILE"
        ))
    };
    match p.r#type() {
        Some(aws_sdk_ssm::types::ParameterType::SecureString) => {
            let meta = c
                .ssm
                .describe_parameters()
                .parameter_filters(
                    aws_sdk_ssm::types::ParameterStringFilter::builder()
                        .key("Name")
                        .values(&name)
                        .build()?,
                )
                .send()
                .await
                .ctx("DescribeParameters", &name)?;
            let key_id = meta
                .parameters()
                .first()
                .and_then(|m| m.key_id())
                .unwrap_or_default();
            if is_stack_key(spec, key_id, key_arn) {
                Ok(Some(value))
            } else {
                Err(refused(format!(
                    "it is encrypted with {key_id:?}, not the stack's key"
                )))
            }
        }
        _ if p.version() == 1 => {
            // Written so by an earlier version and never changed since: convert it.
            write_ca(c, spec, &value, key_arn, true).await?;
            Ok(Some(value))
        }
        _ => Err(refused(format!(
            "it is a plain String at version {} (this tool writes a SecureString, once)",
            p.version()
        ))),
    }
}

/// Writes the CA parameter; `retype` deletes it first (a `String` cannot become a `SecureString`
/// by overwriting, and tags go only on a new parameter).
async fn write_ca(
    c: &Clients,
    spec: &Spec,
    pem: &str,
    key_arn: &str,
    retype: bool,
) -> Result<(), DeployError> {
    let name = ca_parameter(spec);
    let tags: Vec<aws_sdk_ssm::types::Tag> = spec
        .tags()
        .into_iter()
        .filter_map(|(k, v)| {
            aws_sdk_ssm::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .ok()
        })
        .collect();
    if retype {
        delete(
            "DeleteParameter",
            &name,
            c.ssm.delete_parameter().name(&name).send(),
        )
        .await?;
    }
    let existing = !retype
        && found(
            c.ssm
                .get_parameter()
                .name(&name)
                .send()
                .await
                .ctx("GetParameter", &name),
        )?
        .is_some();
    c.ssm
        .put_parameter()
        .overwrite(existing)
        .name(&name)
        .description("CA certificate of the stack's Vault server (public; encrypted so that only the key's users can replace it)")
        .value(pem)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .key_id(key_arn)
        .set_tags((!existing).then_some(tags))
        .send()
        .await
        .ctx("PutParameter", &name)?;
    Ok(())
}

/// Deletes the CA parameter (with the TLS secret it belongs to).
async fn delete_ca(c: &Clients, spec: &Spec) -> Result<bool, DeployError> {
    let name = ca_parameter(spec);
    let existed = found(
        c.ssm
            .get_parameter()
            .name(&name)
            .send()
            .await
            .ctx("GetParameter", &name),
    )?
    .is_some();
    if existed {
        delete(
            "DeleteParameter",
            &name,
            c.ssm.delete_parameter().name(&name).send(),
        )
        .await?;
    }
    Ok(existed)
}

// --- Instance -------------------------------------------------------------------------------

pub async fn observe_instance(c: &Clients, spec: &Spec) -> Result<Option<Instance>, DeployError> {
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
        .ctx("DescribeInstances", &spec.vault_name())?;
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
    let root_volume = i
        .block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some(root_device))
        .and_then(|m| m.ebs())
        .and_then(|e| e.volume_id())
        .map(str::to_owned);
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
        id,
    }))
}

pub fn diff_instance(
    spec: &Spec,
    seen: Option<&Instance>,
    net: &Network,
    public_ip: Option<&str>,
) -> Result<Change, DeployError> {
    let name = spec.vault_name();
    if !spec.deploys_vault() {
        return Ok(match seen {
            Some(_) => Change::new(INSTANCE_KIND, name, Action::Delete),
            None => Change::new(INSTANCE_KIND, name, Action::Absent),
        });
    }
    let (instance_type, _) = version(spec);
    let user_data = match public_ip {
        Some(ip) => sha(&user_data(spec, ip)?),
        None => UNKNOWN.into(),
    };
    let want: Fields = vec![
        ("instance_type", instance_type.to_owned()),
        ("http_tokens", "required".into()),
        ("imds_hop_limit", "1".into()),
        ("root_encrypted", "yes".into()),
        ("iam_instance_profile", spec.vault_name()),
        (
            "security_groups",
            net.group(Group::Vault).unwrap_or(UNKNOWN).to_owned(),
        ),
        ("state", "running".into()),
        ("user_data", user_data),
    ];
    let seen_f = seen.map(|i| {
        vec![
            ("instance_type", i.instance_type.clone()),
            ("http_tokens", i.http_tokens.clone()),
            ("imds_hop_limit", i.imds_hop_limit.clone()),
            ("root_encrypted", i.root_encrypted.clone()),
            ("iam_instance_profile", i.profile.clone()),
            ("security_groups", i.security_groups.clone()),
            ("state", i.state.clone()),
            ("user_data", i.user_data_sha.clone()),
        ]
    });
    let mut ch = Change::diff(INSTANCE_KIND, name, &want, seen_f.as_ref());
    if ch.touches("user_data") && seen.is_some() {
        ch.note = Some("the boot script changed (vault_version?): it runs on first boot only, so up keeps this instance and its data; upgrade Vault on it, or destroy and up to replace it".into());
    }
    Ok(ch)
}

/// Launches the instance, or repairs what can be repaired in place.
pub async fn apply_instance(
    c: &Clients,
    spec: &Spec,
    seen: Option<&Instance>,
    change: &Change,
    net: &Network,
    public_ip: &str,
) -> Result<Instance, DeployError> {
    let name = spec.vault_name();
    let (instance_type, _) = version(spec);
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
                spec.stack(),
                subnet,
                public_ip,
                ami
            ));
            let out = super::retry_on(c.backoff, &["InvalidParameterValue"], || async {
                c.ec2
                    .run_instances()
                    .image_id(&ami)
                    .instance_type(InstanceType::from(instance_type))
                    .min_count(1)
                    .max_count(1)
                    .client_token(&token)
                    .iam_instance_profile(
                        IamInstanceProfileSpecification::builder()
                            .name(spec.vault_name())
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
            if change.touches("root_encrypted") {
                return Err(DeployError::NotReady {
                    what: format!("instance {id}"),
                    detail: "its root volume is not encrypted, and a volume cannot be encrypted in place: snapshot it, copy the snapshot encrypted, and swap the volume while the instance is stopped (or destroy and up, which loses Vault's data)".into(),
                });
            }
            if change.touches("http_tokens") || change.touches("imds_hop_limit") {
                c.ec2
                    .modify_instance_metadata_options()
                    .instance_id(&id)
                    .http_tokens(HttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .send()
                    .await
                    .ctx("ModifyInstanceMetadataOptions", &id)?;
            }
            if change.touches("security_groups") {
                c.ec2
                    .modify_instance_attribute()
                    .instance_id(&id)
                    .groups(&sg)
                    .send()
                    .await
                    .ctx("ModifyInstanceAttribute", &id)?;
            }
            if change.touches("state") && i.state == "stopped" {
                c.ec2
                    .start_instances()
                    .instance_ids(&id)
                    .send()
                    .await
                    .ctx("StartInstances", &id)?;
            }
            if change.touches("instance_type") {
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

/// Terminates the instance, releases the address, deletes the TLS secret.
pub async fn destroy(c: &Clients, spec: &Spec) -> Result<Vec<Change>, DeployError> {
    let name = spec.vault_name();
    let mut done = Vec::new();
    if let Some(i) = observe_instance(c, spec).await? {
        c.ec2
            .terminate_instances()
            .instance_ids(&i.id)
            .send()
            .await
            .ctx("TerminateInstances", &i.id)?;
        use aws_sdk_ec2::client::Waiters;
        c.ec2
            .wait_until_instance_terminated()
            .instance_ids(&i.id)
            .wait(std::time::Duration::from_secs(600))
            .await
            .map_err(|e| DeployError::NotReady {
                what: format!("instance {}", i.id),
                detail: e.to_string(),
            })?;
        done.push(
            Change::new(INSTANCE_KIND, &name, Action::Delete)
                .with_note("its root volume and Vault's data are deleted with it"),
        );
    }
    if let Some(a) = observe_address(c, spec).await? {
        if a.instance_id.is_some() {
            delete(
                "DisassociateAddress",
                &a.public_ip,
                c.ec2.disassociate_address().public_ip(&a.public_ip).send(),
            )
            .await?;
        }
        delete(
            "ReleaseAddress",
            &a.public_ip,
            c.ec2
                .release_address()
                .allocation_id(&a.allocation_id)
                .send(),
        )
        .await?;
        done.push(
            Change::new(ADDRESS_KIND, &name, Action::Delete)
                .with_note(format!("{} released", a.public_ip)),
        );
    }
    if let Some(s) = observe_tls(c, spec).await?
        && !s.pending_deletion
    {
        c.sm.delete_secret()
            .secret_id(&s.arn)
            .force_delete_without_recovery(true)
            .send()
            .await
            .ctx("DeleteSecret", &spec.tls_secret_name())?;
        done.push(
            Change::new(TLS_KIND, spec.tls_secret_name(), Action::Delete)
                .with_note("deleted at once: it only served the terminated instance"),
        );
    }
    if delete_ca(c, spec).await? {
        done.push(Change::new(
            "ssm parameter",
            ca_parameter(spec),
            Action::Delete,
        ));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::spec;

    #[test]
    fn the_ca_parameter_is_a_secure_string_under_the_stack_key() {
        let s = spec("vault_inbound_cidr = \"10.0.0.0/8\"");
        let key = "arn:aws-cn:kms:cn-north-1:123456789012:key/k-1";
        let param = |t: &str, key_id: Option<&str>, version| CaParameter {
            r#type: t.into(),
            key_id: key_id.map(str::to_owned),
            version,
        };
        let cases = [
            (None, false, Action::Create, "the CA of the new TLS"),
            (None, true, Action::Create, "cannot be issued again"),
            (
                Some(param("SecureString", Some(key), 1)),
                true,
                Action::Unchanged,
                "",
            ),
            (
                Some(param("SecureString", Some(&s.key_alias()), 3)),
                true,
                Action::Unchanged,
                "",
            ),
            (
                Some(param("String", None, 1)),
                true,
                Action::Update,
                "converted in place",
            ),
            (
                Some(param("String", None, 2)),
                true,
                Action::Update,
                "refuses to trust it",
            ),
            (
                Some(param("SecureString", Some("alias/aws/ssm"), 1)),
                true,
                Action::Update,
                "refuses to trust it",
            ),
        ];
        for (seen, tls, action, note) in cases {
            let ch = diff_ca(&s, seen.as_ref(), tls, Some(key));
            assert_eq!(ch.action, action, "{seen:?}");
            assert!(
                ch.note.as_deref().unwrap_or("").contains(note),
                "{seen:?}: {:?}",
                ch.note
            );
        }
        let external = spec(
            "deploy_vault_on_ec2 = false\nexternal_vault_address = \"https://v.example.com:8200\"",
        );
        let left = param("SecureString", Some(key), 1);
        assert_eq!(
            diff_ca(&external, Some(&left), false, Some(key)).action,
            Action::Delete
        );
        assert_eq!(diff_ca(&external, None, false, None).action, Action::Absent);
    }

    #[test]
    fn the_boot_script_is_complete_small_and_secret_free() {
        let s = spec("vault_inbound_cidr = \"10.0.0.0/8\"\nvault_version = \"1.18.3\"");
        let script = user_data(&s, "203.0.113.9").unwrap();
        assert!(script.len() < USER_DATA_LIMIT, "{} bytes", script.len());
        assert!(!script.contains("{{"), "no placeholder left");
        assert!(script.contains("set -euo pipefail"));
        assert!(script.contains("VAULT_VERSION=\"1.18.3\""));
        assert!(
            script.contains("s-vault/tls"),
            "the TLS secret is fetched at boot"
        );
        assert!(script.contains("Restart=on-failure"));
        assert!(!script.contains("PRIVATE KEY") && !script.contains("root_token"));
    }
}
