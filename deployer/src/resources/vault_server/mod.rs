//! The Vault server on EC2: its Elastic IP (a stable address, allocated first so the certificate
//! can name it; [`address`]), the TLS secret (CA, certificate and key; readable only by the
//! instance's role) and the CA parameter ([`tls`]), and the instance itself (Amazon Linux 2023
//! from its SSM parameter, IMDSv2 required, encrypted root volume, fixed private address, user
//! data from `userdata/`; [`instance`]), and the digest of the change watcher's code it runs
//! ([`watcher`]).

pub mod address;
pub mod instance;
pub mod tls;
pub mod watcher;

pub use address::{Address, allocate, associate, diff_address, observe_address};
pub use instance::{Instance, apply_instance, diff_instance, observe_instance};
pub use tls::{
    CA_KIND, CaParameter, TlsSecret, apply_tls, diff_ca, diff_tls, limit_tls_read, observe_ca,
    observe_tls, read_ca,
};
pub use watcher::{DIGEST_KIND, apply_digest, destroy_digest, diff_digest, observe_digest};

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use sha2::{Digest, Sha256};

use crate::change::{Action, Change};
use crate::clients::Clients;
use crate::desired::VaultServerSpec;
use crate::policy::{self};
use crate::resources::{Ctx, DeployError, delete};
use crate::spec::{STACK_TAG, VAULT_PRIVATE_IP};

pub const AMI_PARAMETER: &str =
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";
pub const INSTANCE_KIND: &str = "ec2 instance";
pub const ADDRESS_KIND: &str = "elastic ip";
pub const TLS_KIND: &str = "tls secret";
pub const USER_DATA: &str = include_str!("../../../../userdata/vault-server.sh");
/// The files the boot script puts on the host, each beside it in `userdata/`.
pub const FETCH_SCRIPT: &str = include_str!("../../../../userdata/vault-replicator-fetch.sh");
pub const WATCH_UNIT: &str = include_str!("../../../../userdata/vault-replicator-watch.service");
pub const AUDIT_LOGROTATE: &str = include_str!("../../../../userdata/vault-audit.logrotate");
pub const ROTATE_SERVICE: &str = include_str!("../../../../userdata/vault-audit-rotate.service");
pub const ROTATE_TIMER: &str = include_str!("../../../../userdata/vault-audit-rotate.timer");
/// EC2's limit on user data.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

pub(super) fn filters(spec: &VaultServerSpec) -> Vec<Filter> {
    vec![
        Filter::builder()
            .name(format!("tag:{STACK_TAG}"))
            .values(spec.owner.stack())
            .build(),
        Filter::builder()
            .name("tag:Name")
            .values(spec.name.clone())
            .build(),
    ]
}

pub(super) fn ec2_tags(spec: &VaultServerSpec, kind: ResourceType) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(
            spec.owner
                .named_tags(&spec.name)
                .into_iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

/// The change watcher's systemd unit for this stack: it invokes the watcher's function, checks
/// its code against the digest parameter, and sends a failed run's notice to the failure topic
/// when there is one.
pub fn watch_unit(spec: &VaultServerSpec) -> Result<String, DeployError> {
    let notices = match &spec.topic_arn {
        Some(topic) => format!(" --sns-topic-arn {topic}"),
        None => String::new(),
    };
    Ok(policy::render(
        WATCH_UNIT,
        &[
            ("region", &spec.region),
            ("watch_function", &spec.watch_function),
            ("digest_parameter", &spec.digest_parameter.clone()),
            ("prefix", &spec.prefix),
            ("stack", spec.owner.stack()),
            ("notice_flags", &notices),
        ],
    )?)
}

/// A file embedded in the boot script, without its comment lines (its copy in `userdata/`
/// keeps them): EC2 takes 16 KiB of user data. A shebang stays.
fn embedded(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let l = l.trim_start();
            !l.starts_with('#') || l.starts_with("#!")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The boot script for this stack.
pub fn user_data(spec: &VaultServerSpec, public_ip: &str) -> Result<String, DeployError> {
    let unit = embedded(&watch_unit(spec)?);
    let script = policy::render(
        USER_DATA,
        &[
            ("vault_version", &spec.vault_version),
            ("region", &spec.region),
            ("tls_secret_id", &spec.tls_secret.clone()),
            ("public_ip", public_ip),
            ("private_ip", VAULT_PRIVATE_IP),
            ("fetch_script", &embedded(FETCH_SCRIPT)),
            ("watch_unit", &unit),
            ("audit_logrotate", &embedded(AUDIT_LOGROTATE)),
            ("rotate_service", &embedded(ROTATE_SERVICE)),
            ("rotate_timer", &embedded(ROTATE_TIMER)),
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

pub(super) fn sha(text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Terminates the instance, releases the address, deletes the TLS secret.
pub async fn destroy(c: &Clients, spec: &VaultServerSpec) -> Result<Vec<Change>, DeployError> {
    let name = spec.name.clone();
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
    let tls = observe_tls(c, spec).await?;
    if let Some(s) = tls.as_ref().filter(|s| !s.ours && !s.pending_deletion) {
        done.push(
            Change::new(TLS_KIND, spec.tls_secret.clone(), Action::Absent).with_note(format!(
                "{} exists without this stack's tag; left alone",
                s.arn
            )),
        );
    }
    if let Some(s) = tls.filter(|s| s.ours && !s.pending_deletion) {
        c.sm.delete_secret()
            .secret_id(&s.arn)
            .force_delete_without_recovery(true)
            .send()
            .await
            .ctx("DeleteSecret", &spec.tls_secret.clone())?;
        done.push(
            Change::new(TLS_KIND, spec.tls_secret.clone(), Action::Delete)
                .with_note("deleted at once: it only served the terminated instance"),
        );
    }
    if tls::delete_ca(c, spec).await? {
        done.push(Change::new(
            "ssm parameter",
            spec.ca_parameter.clone(),
            Action::Delete,
        ));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml: &str) -> VaultServerSpec {
        crate::spec::tests::spec(toml).vault_server_spec().unwrap()
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
        // The change watcher: the function's own binary, sending paths to the watcher's
        // function only, checked against the digest up wrote, with the files beside it.
        let unit = watch_unit(&s).unwrap();
        assert!(script.contains(&embedded(&unit)), "the unit, as rendered");
        assert!(unit.contains(&format!(
            "watch --prefix hybrid-aws-secrets --invoke-function {} --audit-log /var/log/vault/audit.log --cloudwatch-stack {}\n",
            s.watch_function,
            s.owner.stack()
        )), "{unit}");
        assert!(unit.contains(&format!(
            "vault-replicator-fetch {} {} {}\n",
            s.region, s.watch_function, s.digest_parameter
        )));
        assert!(
            unit.contains("DynamicUser=yes") && unit.contains("SupplementaryGroups=vault-audit")
        );
        for file in [FETCH_SCRIPT, AUDIT_LOGROTATE, ROTATE_SERVICE, ROTATE_TIMER] {
            assert!(script.contains(&embedded(file)));
        }
        assert!(script.contains("install -d -o root -g vault-audit -m 0750 /var/log/vault"));
        assert!(script.contains(
            "install -o vault -g vault-audit -m 0640 /dev/null /var/log/vault/audit.log"
        ));
        assert!(
            script
                .contains("systemctl enable --now vault-audit-rotate.timer vault-replicator-watch")
        );
        // Each embedded file ends before its heredoc's delimiter.
        for (file, end) in [
            (FETCH_SCRIPT, "FETCH"),
            (WATCH_UNIT, "UNIT"),
            (AUDIT_LOGROTATE, "LOGROTATE"),
            (ROTATE_SERVICE, "SERVICE"),
            (ROTATE_TIMER, "TIMER"),
        ] {
            assert!(!file.lines().any(|l| l == end), "{end}");
        }
        // With a failure topic, the watcher sends a failed run's notice there.
        let notified =
            spec("vault_inbound_cidr = \"10.0.0.0/8\"\nnotification_email = \"ops@example.com\"");
        assert!(watch_unit(&notified).unwrap().contains(&format!(
            " --sns-topic-arn {}\n",
            notified.topic_arn.as_deref().unwrap()
        )));
        assert!(!script.contains("PRIVATE KEY") && !script.contains("root_token"));
    }
}
