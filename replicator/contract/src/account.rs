//! Another AWS account a sync writes into: the role the replicator assumes there, and the
//! external id that role's trust policy requires. Checked here once for both programs, so the
//! deployer refuses in `plan` what the function would refuse at its first run.

/// A role in the account the replicas live in, assumed with an external id. Its `Debug` shows
/// the role, not the id.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountRole {
    /// `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`.
    pub role_arn: String,
    /// Sent with every `AssumeRole`; the role's trust policy requires it.
    pub external_id: String,
}

impl std::fmt::Debug for AccountRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRole")
            .field("role_arn", &self.role_arn)
            .field("external_id", &"(hidden)")
            .finish()
    }
}

impl AccountRole {
    /// From the two settings as given (an empty one is not given): none when neither is; an
    /// external id alone is an error, as is a role without one.
    pub fn from_settings(
        role_arn: Option<&str>,
        external_id: Option<&str>,
    ) -> Result<Option<Self>, AccountRoleError> {
        fn given(v: Option<&str>) -> Option<&str> {
            v.filter(|v| !v.is_empty())
        }
        match (given(role_arn), given(external_id)) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(AccountRoleError::ExternalIdWithoutRole),
            (Some(arn), id) => Self::new(arn, id).map(Some),
        }
    }

    /// Checks both; the error says which one is wrong and why (the external id is never
    /// quoted: it is not a secret, but it is not for logs either).
    pub fn new(role_arn: &str, external_id: Option<&str>) -> Result<Self, AccountRoleError> {
        role_account(role_arn).map_err(AccountRoleError::RoleArn)?;
        let external_id = external_id
            .filter(|id| !id.is_empty())
            .ok_or(AccountRoleError::MissingExternalId)?;
        check_external_id(external_id).map_err(AccountRoleError::ExternalId)?;
        Ok(Self {
            role_arn: role_arn.to_owned(),
            external_id: external_id.to_owned(),
        })
    }

    /// The account the role is in, where the replicas are written.
    pub fn account(&self) -> &str {
        self.role_arn.split(':').nth(4).unwrap_or_default()
    }
}

/// Which of the two values is wrong; each program names its own setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountRoleError {
    RoleArn(String),
    ExternalId(String),
    /// A role without the external id its trust policy checks.
    MissingExternalId,
    /// An external id without the role it is for.
    ExternalIdWithoutRole,
}

/// The account of an IAM role ARN; the error says what is wrong with it.
pub fn role_account(arn: &str) -> Result<&str, String> {
    let shape = || format!("{arn:?} is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)");
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(shape());
    };
    if !partition.starts_with("aws")
        || account.len() != 12
        || !account.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(shape());
    }
    let Some(path_and_name) = resource.strip_prefix("role/") else {
        return Err(shape());
    };
    let name = path_and_name.rsplit('/').next().unwrap_or_default();
    let allowed = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if name.is_empty()
        || name.len() > 64
        || !path_and_name.chars().all(|c| allowed(c) || c == '/')
        || path_and_name.contains("//")
    {
        return Err(format!(
            "{arn:?}: a role name is 1 to 64 of letters, digits and +=,.@_- (after an optional path)"
        ));
    }
    Ok(account)
}

/// Checks an external id as STS does: 2 to 1,224 of letters, digits and `+=,.@:/-_`.
pub fn check_external_id(id: &str) -> Result<(), String> {
    if !(2..=1224).contains(&id.len()) {
        return Err(format!("is {} characters; STS takes 2 to 1,224", id.len()));
    }
    if id
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || "+=,.@:/-_".contains(c)))
    {
        return Err("holds a character STS refuses (use letters, digits and +=,.@:/-_)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_names_the_role_and_hides_the_external_id() {
        let role =
            AccountRole::new("arn:aws:iam::222222222222:role/r", Some("ext-secretish")).unwrap();
        let shown = format!("{role:?}");
        assert!(
            shown.contains("role/r") && !shown.contains("secretish"),
            "{shown}"
        );
    }

    #[test]
    fn a_role_in_another_account_needs_a_well_formed_arn_and_an_external_id() {
        let role = AccountRole::new(
            "arn:aws:iam::222222222222:role/team/replicas",
            Some("ext-123"),
        )
        .unwrap();
        assert_eq!(role.account(), "222222222222");
        assert!(AccountRole::new("arn:aws-cn:iam::222222222222:role/r", Some("ab")).is_ok());
        for bad in [
            "",
            "arn:aws:iam::2222:role/r",
            "arn:aws:iam::222222222222:user/r",
            "arn:aws:sts::222222222222:role/r",
            "arn:aws:iam:eu-west-1:222222222222:role/r",
            "arn:aws:iam::222222222222:role/",
            "arn:aws:iam::222222222222:role/a b",
        ] {
            assert!(
                matches!(
                    AccountRole::new(bad, Some("ext")),
                    Err(AccountRoleError::RoleArn(_))
                ),
                "{bad}"
            );
        }
        for missing in [None, Some("")] {
            assert_eq!(
                AccountRole::new("arn:aws:iam::222222222222:role/r", missing),
                Err(AccountRoleError::MissingExternalId)
            );
        }
        for bad in ["x", "has space", "é-accent"] {
            let err = AccountRole::new("arn:aws:iam::222222222222:role/r", Some(bad)).unwrap_err();
            let AccountRoleError::ExternalId(message) = err else {
                panic!("{bad:?}: {err:?}")
            };
            if bad.len() > 1 {
                assert!(!message.contains(bad), "the id is not quoted: {message}");
            }
        }
        assert_eq!(AccountRole::from_settings(None, Some("")), Ok(None));
        assert_eq!(
            AccountRole::from_settings(Some(""), Some("ext-1")),
            Err(AccountRoleError::ExternalIdWithoutRole)
        );
        assert_eq!(
            AccountRole::from_settings(Some("arn:aws:iam::222222222222:role/r"), Some("ext-1"))
                .unwrap()
                .map(|r| r.external_id),
            Some("ext-1".to_owned())
        );
        assert!(check_external_id(&"a".repeat(1224)).is_ok());
        assert!(check_external_id(&"a".repeat(1225)).is_err());
    }
}
