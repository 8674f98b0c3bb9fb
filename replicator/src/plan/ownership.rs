//! Whose a replica is, from its tags alone: this rule's, one it may take over, another sync's,
//! or someone else's; and which Vault secret an owned replica comes from. Pure.

use crate::model::{AwsSecret, Rule};
use contract::tags;

/// Whose a secret under the prefix is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Written by this rule (same mount, path and prefix, and its stack or none). `tagged_prefix`
    /// is false for a replica written before the `replica-prefix` tag existed: it gets the tag
    /// on this run, and is never deleted as an orphan until then (it may be a nested sync's).
    Ours { tagged_prefix: bool },
    /// Listed for adoption, or the sample's replica while the rule takes those over.
    Adoptable,
    /// The sample's replica (a `version` tag, no owner), which the rule does not take over.
    Sample,
    /// Another sync's replica; the text says whose.
    OtherSource(String),
    /// Someone else's.
    Foreign,
}

/// Whose `secret` is, for `rule`.
pub fn ownership(secret: &AwsSecret, rule: &Rule) -> Ownership {
    let tag = |k: &str| secret.tags.get(k);
    if let Some(tagged_prefix) = rule.source().wrote(tag) {
        return Ownership::Ours { tagged_prefix };
    }
    // Rotated by Secrets Manager, or a service's own: whoever's it is, never taken over.
    if secret.managed_elsewhere {
        return Ownership::Foreign;
    }
    // Listed for adoption: taken over when nobody owns it, or another sync of this tool does.
    // Another tool's (its own `managed-by`) is never written: the role's policy denies every
    // write on it (`NeverWriteWhatAnotherToolOwns`), so no chain of writes can take it over.
    let owner = tag(tags::MANAGED_BY);
    if owner.is_none_or(|o| o == tags::MANAGED_BY_VALUE)
        && rule.adopt.iter().any(|a| **a == *secret.name)
    {
        return Ownership::Adoptable;
    }
    match tag(tags::MANAGED_BY) {
        Some(tags::MANAGED_BY_VALUE) => Ownership::OtherSource(format!(
            "replicated from mount {:?} path {:?} by the sync with prefix {:?}{}{}; list it in REPLICATOR_ADOPT to take it over",
            tag(tags::VAULT_MOUNT).unwrap_or(""),
            tag(tags::VAULT_PATH).unwrap_or(""),
            tag(tags::PREFIX).unwrap_or(""),
            tag(tags::RULE)
                .map(|r| format!(" (rule {r:?})"))
                .unwrap_or_default(),
            tag(tags::STACK)
                .map(|s| format!(" of stack {s:?}"))
                .unwrap_or_default()
        )),
        Some(_) => Ownership::Foreign,
        None if tag(tags::VERSION).is_some() && rule.adopt_sample => Ownership::Adoptable,
        None if tag(tags::VERSION).is_some() => Ownership::Sample,
        None => Ownership::Foreign,
    }
}

/// Whether `secret` is this rule's replica.
pub fn is_ours(secret: &AwsSecret, rule: &Rule) -> bool {
    rule.source().wrote(|k| secret.tags.get(k)).is_some()
}

/// The Vault path (relative to the rule's sub-path) an owned replica's tags or name say it comes
/// from: its `vault-secret` tag, or else its name after the prefix (the plain `{path}`
/// template's names, which carry no such tag). A replica that lost the tag by hand is found by
/// the planner at its entry's name ([`super::plan`]).
pub fn source_of<'a>(secret: &'a AwsSecret, rule: &Rule) -> &'a str {
    source_tag(secret).unwrap_or_else(|| name_source(&secret.name, rule))
}

/// A replica's `vault-secret` tag, when it has one that names something (an empty value is
/// none).
pub fn source_tag(secret: &AwsSecret) -> Option<&str> {
    secret.tags.get(tags::SOURCE).filter(|v| !v.is_empty())
}

/// Whether `secret`'s version ids prove it the replica of `rel`: the id its tags record for
/// that Vault secret (and its key) is among its versions.
pub fn proven(secret: &AwsSecret, rule: &Rule, rel: &str) -> bool {
    super::token::recorded_token(secret, rule, rel).is_some_and(|t| secret.has_version(&t))
}

/// A name's part after `<prefix>/`.
pub fn name_source<'a>(name: &'a str, rule: &Rule) -> &'a str {
    name.strip_prefix(rule.prefix.as_str())
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(name)
}

/// The conflict message of a secret [`Ownership::Sample`] leaves alone.
pub const SAMPLE_MESSAGE: &str = "looks like the AWS sample's replica (a version tag, no managed-by tag): take the sample's replicas over once with --adopt-sample (REPLICATOR_ADOPT_SAMPLE=true, adopt_sample = true in deployer.toml), or list it in REPLICATOR_ADOPT";

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, tags: &[(&str, &str)]) -> AwsSecret {
        let mut s = AwsSecret::named(name, "");
        for (k, v) in tags {
            s.tags.insert(k, v);
        }
        s
    }

    #[test]
    fn the_samples_replicas_are_taken_over_only_when_the_rule_says_so() {
        let mut rule = Rule::new("p", "kv");
        let sample = secret("p/a", &[("version", "3")]);
        assert_eq!(ownership(&sample, &rule), Ownership::Sample);
        rule.adopt_sample = true;
        assert_eq!(ownership(&sample, &rule), Ownership::Adoptable);
        // Another tool's secret with a version tag is never the sample's.
        let tool = secret("p/b", &[("version", "3"), ("managed-by", "terraform")]);
        assert_eq!(ownership(&tool, &rule), Ownership::Foreign);
        // Listed for adoption: nobody's, or another sync's, is taken over; another tool's never.
        rule.adopt = vec!["p/b".into(), "p/a".into(), "p/c".into()];
        assert_eq!(ownership(&tool, &rule), Ownership::Foreign);
        assert_eq!(ownership(&sample, &rule), Ownership::Adoptable);
        let other_sync = secret("p/c", &[("managed-by", "vault-secrets-replicator")]);
        assert_eq!(ownership(&other_sync, &rule), Ownership::Adoptable);
        // One that Secrets Manager rotates, or a service owns, is never taken over.
        let mut rotated = tool.clone();
        rotated.managed_elsewhere = true;
        assert_eq!(ownership(&rotated, &rule), Ownership::Foreign);
        let mut sample_rotated = sample.clone();
        sample_rotated.managed_elsewhere = true;
        assert_eq!(ownership(&sample_rotated, &rule), Ownership::Foreign);
    }

    #[test]
    fn an_owned_replicas_source_is_its_tag_or_its_name() {
        let rule = Rule::new("p", "kv");
        let tagged = secret("p/x-a", &[(tags::SOURCE, "a")]);
        assert_eq!(source_of(&tagged, &rule), "a");
        assert_eq!(source_of(&secret("p/b/c", &[]), &rule), "b/c");
    }
}
