//! The sync rules document (`[[sync]]` of deployer.toml; `--rules` / `REPLICATOR_RULES`): a
//! JSON array of rules, each its keys over the flags', checked into one [`Settings`] per rule
//! and across rules. No I/O but reading the document's `@FILE`.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{ConfigError, Settings, SyncArgs};
pub(crate) use contract::rules::{MAX_RULES, RuleDoc};

/// The flags of `rule`: `base`'s, with what the rule says put over them.
fn over(rule: &RuleDoc, base: &SyncArgs) -> SyncArgs {
    let mut args = base.clone();
    args.rule_name = Some(rule.name.clone());
    args.rules = None;
    args.prefix.clone_from(&rule.prefix);
    // The mount defaults to the prefix, as the flags': never to the flags' own mount.
    args.mount.clone_from(&rule.mount);
    fn set<T: Clone>(to: &mut T, from: &Option<T>) {
        if let Some(v) = from {
            to.clone_from(v);
        }
    }
    fn set_some<T: Clone>(to: &mut Option<T>, from: &Option<T>) {
        if from.is_some() {
            to.clone_from(from);
        }
    }
    set(&mut args.path, &rule.path);
    set_some(&mut args.vault_namespace, &rule.namespace);
    set_some(&mut args.account_role_arn, &rule.account_role_arn);
    if let Some(id) = &rule.external_id {
        args.external_id = Some(id.as_str().into());
    }
    args.rule_role_arn_prefix = None;
    if let Some(prefix) = base
        .rule_role_arn_prefix
        .as_deref()
        .filter(|p| !p.is_empty())
        && rule.account_role_arn.is_none()
    {
        let arn = format!("{prefix}{}", rule.name);
        args.external_id = arn.rsplit('/').next().map(Into::into);
        args.account_role_arn = Some(arn);
    }
    set_some(&mut args.kms_key_id, &rule.kms_key_id);
    set(&mut args.include, &rule.include);
    set(&mut args.exclude, &rule.exclude);
    set(&mut args.opt_in, &rule.opt_in);
    set(&mut args.replica_regions, &rule.replica_regions);
    set_some(&mut args.name_template, &rule.name_template);
    set(&mut args.granularity, &rule.granularity);
    if let Some(tags) = &rule.tags {
        args.tags = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    }
    set(&mut args.metadata_tag_keys, &rule.metadata_tag_keys);
    set(&mut args.deletion_policy, &rule.deletion_policy);
    set(&mut args.recovery_window_days, &rule.recovery_window_days);
    set(&mut args.max_delete_share, &rule.max_delete_share);
    set(&mut args.on_modified, &rule.on_modified);
    set(&mut args.latest_deleted, &rule.latest_deleted);
    set(&mut args.max_keys_per_secret, &rule.max_keys_per_secret);
    set(&mut args.adopt, &rule.adopt);
    set(&mut args.adopt_sample, &rule.adopt_sample);
    match &rule.resource_policy {
        Some(serde_json::Value::String(text)) => args.resource_policy = Some(text.clone()),
        Some(document) => args.resource_policy = Some(document.to_string()),
        None => {}
    }
    args
}

fn invalid(problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: "--rules / REPLICATOR_RULES",
        problem: problem.into(),
    }
}

/// The rules `given` (a JSON array, or `@FILE` holding one), as written.
pub(crate) fn parse(given: &str) -> Result<Vec<RuleDoc>, ConfigError> {
    let given = given.trim();
    let (text, from) = match given.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("cannot read {path}: {e}")))?,
            format!(" ({path})"),
        ),
        None => (given.to_owned(), String::new()),
    };
    let rules: Vec<RuleDoc> = serde_json::from_str(&text).map_err(|e| {
        // serde names a missing or unknown key without quoting the input; other messages can
        // quote a value, so only their category and position are said.
        let message = e.to_string();
        let problem = if message.starts_with("missing field") || message.starts_with("unknown field") {
            message
        } else {
            crate::vault::json_problem(&e)
        };
        invalid(format!(
            "the document{from} is not a JSON array of rules ({{\"name\", \"prefix\", ...}}): {problem}"
        ))
    })?;
    if rules.is_empty() {
        return Err(invalid(format!("the document{from} holds no rule")));
    }
    if rules.len() > MAX_RULES {
        return Err(invalid(format!(
            "the document{from} holds {} rules; at most {MAX_RULES}",
            rules.len()
        )));
    }
    Ok(rules)
}

/// The document's key a flag's error names (`--replica-region / ...` is `replica_regions`).
fn key_of(flag_key: &str) -> String {
    let flag = flag_key.split(" / ").next().unwrap_or(flag_key);
    let key = flag.trim_start_matches('-').replace('-', "_");
    match key.as_str() {
        "rule" => "name".to_owned(),
        "tag" => "tags".to_owned(),
        "replica_region" => "replica_regions".to_owned(),
        "metadata_tag_key" => "metadata_tag_keys".to_owned(),
        "vault_namespace" => "namespace".to_owned(),
        "include" => "include / exclude".to_owned(),
        _ => key,
    }
}

/// The flags resolved, and the rules document they name (`--rules`) read over them.
pub(crate) fn resolve(args: &SyncArgs) -> Result<crate::config::Resolved, ConfigError> {
    let mut resolved = args.resolve()?;
    if let Some(given) = args
        .rules
        .as_deref()
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        resolved.rules = settings_of(args, given)?;
    } else if args
        .rule_role_arn_prefix
        .as_deref()
        .is_some_and(|p| !p.is_empty())
    {
        return Err(ConfigError::Invalid {
            key: "--rule-role-arn-prefix / REPLICATOR_RULE_ROLE_ARN_PREFIX",
            problem:
                "names the roles of a rules document's rules: give --rules too, or leave it out"
                    .into(),
        });
    }
    Ok(resolved)
}

/// Each rule's settings, `base`'s flags under the document `given`: every rule checked as the
/// flags are, and the rules together (names once each; no two rules writing one prefix of one
/// account and region). The error names the rule and its key.
pub(crate) fn settings_of(base: &SyncArgs, given: &str) -> Result<Vec<Settings>, ConfigError> {
    if base.rule_name.as_deref().is_some_and(|n| !n.is_empty()) {
        return Err(invalid(
            "names its rules itself: give --rule / REPLICATOR_RULE only without a rules document",
        ));
    }
    let docs = parse(given)?;
    let mut names = BTreeSet::new();
    let mut all = Vec::with_capacity(docs.len());
    for doc in &docs {
        let rule_error = |key: String, problem: String| ConfigError::Rule {
            name: doc.name.clone(),
            key,
            problem,
        };
        contract::check_rule_name(&doc.name).map_err(|e| invalid(format!("a rule's name: {e}")))?;
        if !names.insert(doc.name.as_str()) {
            return Err(invalid(format!(
                "two rules are named {:?}: each needs a name of its own",
                doc.name
            )));
        }
        if let Some(region) = &doc.region {
            contract::check_region(region).map_err(|e| rule_error("region".into(), e))?;
        }
        // The roles of the prefix are each its own rule's: never another's.
        if let (Some(prefix), Some(arn)) = (
            base.rule_role_arn_prefix
                .as_deref()
                .filter(|p| !p.is_empty()),
            doc.account_role_arn.as_deref(),
        ) && arn.starts_with(prefix)
            && arn != format!("{prefix}{}", doc.name)
        {
            return Err(rule_error(
                "account_role_arn".into(),
                format!(
                    "is another rule's role ({prefix}…): a rule writes with its own, {prefix}{}",
                    doc.name
                ),
            ));
        }
        if doc.account_kms_key.is_some() {
            return Err(rule_error(
                "account_kms_key".into(),
                "is a deployer.toml key: give the function the key itself, kms_key_id".into(),
            ));
        }
        let mut settings = over(doc, base).settings().map_err(|e| match e {
            ConfigError::Invalid { key, problem } => rule_error(key_of(key), problem),
            other => other,
        })?;
        settings.region.clone_from(&doc.region);
        settings.namespace = contract::namespace(doc.namespace.as_deref());
        all.push(settings);
    }
    check_destinations(&all, None)?;
    Ok(all)
}

/// No two rules write one prefix of one account and region (they would write the same names;
/// nested prefixes are fine). A rule without a region writes in `own`, when it is known.
pub(crate) fn check_destinations(rules: &[Settings], own: Option<&str>) -> Result<(), ConfigError> {
    let mut destinations = BTreeMap::new();
    for s in rules {
        let account = s.account_role.as_ref().map(|r| r.account());
        let name = s.rule.name.as_deref().unwrap_or_default();
        if let Some(other) =
            destinations.insert((account, s.region_or(own), s.rule.prefix.as_str()), name)
        {
            return Err(ConfigError::Rule {
                name: name.to_owned(),
                key: "prefix".into(),
                problem: format!(
                    "{:?} is rule {other:?}'s prefix in the same account and region: the two would write the same names",
                    s.rule.prefix
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeletionPolicy;

    fn base() -> SyncArgs {
        crate::config::tests::parse(&[
            "--vault-addr",
            "http://v",
            "--vault-token",
            "t",
            "--tag",
            "team=all",
        ])
    }

    #[test]
    fn a_rule_naming_no_role_writes_with_the_one_the_prefix_names() {
        let prefix = "arn:aws:iam::111111111111:role/vault-secrets-replicator/s/s.sync.";
        let mut args = base();
        args.rule_role_arn_prefix = Some(prefix.into());
        let away = "arn:aws:iam::222222222222:role/replicas";
        let rules = settings_of(
            &args,
            &format!(
                r#"[{{"name": "pay", "prefix": "pay"}},
                   {{"name": "web", "prefix": "web", "account_role_arn": "{away}", "external_id": "ext-web"}}]"#
            ),
        )
        .unwrap();
        let role = |s: &Settings| s.account_role.clone().unwrap();
        assert_eq!(role(&rules[0]).role_arn, format!("{prefix}pay"));
        assert_eq!(role(&rules[0]).external_id, "s.sync.pay");
        assert_eq!(role(&rules[1]).role_arn, away);
        assert_eq!(role(&rules[1]).external_id, "ext-web");
        // Another rule's role, named outright: refused.
        let err = settings_of(
            &args,
            &format!(
                r#"[{{"name": "web", "prefix": "web", "account_role_arn": "{prefix}pay", "external_id": "s.sync.pay"}}]"#
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is another rule's role"), "{err}");
        // Without it, a rule naming no role writes with the process's own credentials.
        let plain = settings_of(&base(), r#"[{"name": "pay", "prefix": "pay"}]"#).unwrap();
        assert!(plain[0].account_role.is_none());
        // It names the roles of a document's rules: alone, it is a mistake.
        let err = resolve(&args).unwrap_err().to_string();
        assert!(err.contains("give --rules too"), "{err}");
    }

    #[test]
    fn each_rule_takes_its_keys_over_the_flags() {
        let rules = settings_of(
            &base(),
            r#"[
              {"name": "payments", "prefix": "pay", "mount": "kv", "path": "payments",
               "include": ["db/*"], "deletion_policy": "delete", "tags": {"team": "pay"},
               "namespace": "team-a/", "region": "eu-west-1",
               "resource_policy": {"Version": "2012-10-17", "Statement": [{"Effect": "Deny",
                 "Principal": "*", "Action": "secretsmanager:DeleteSecret", "Resource": "${ReplicaArn}"}]}},
              {"name": "web", "prefix": "web"}
            ]"#,
        )
        .unwrap();
        let (pay, web) = (&rules[0], &rules[1]);
        assert_eq!(pay.rule.name.as_deref(), Some("payments"));
        assert_eq!(
            (pay.rule.mount.as_str(), pay.rule.path.as_str()),
            ("kv", "payments")
        );
        assert_eq!(pay.rule.deletion_policy, DeletionPolicy::Delete);
        assert_eq!(pay.rule.tags, vec![("team".into(), "pay".into())]);
        assert!(pay.rule.resource_policy.is_some());
        assert_eq!(pay.namespace.as_deref(), Some("team-a"));
        assert_eq!(pay.region.as_deref(), Some("eu-west-1"));
        // What a rule leaves out is the flags': the mount defaults to its own prefix.
        assert_eq!(
            (web.rule.mount.as_str(), web.rule.path.as_str()),
            ("web", "")
        );
        assert_eq!(web.rule.tags, vec![("team".into(), "all".into())]);
        assert_eq!(web.rule.deletion_policy, DeletionPolicy::Keep);
        assert_eq!(
            (web.namespace.as_deref(), web.region.as_deref()),
            (None, None)
        );
    }

    #[test]
    fn a_bad_document_or_rule_names_what_to_fix() {
        let problem = |doc: &str| settings_of(&base(), doc).unwrap_err().to_string();
        for (doc, says) in [
            ("{}", "not a JSON array"),
            ("[]", "holds no rule"),
            (r#"[{"name": "a"}]"#, "missing field `prefix`"),
            (
                r#"[{"name": "a", "prefix": "p", "prefixx": "q"}]"#,
                "unknown field `prefixx`",
            ),
            (r#"[{"name": "A", "prefix": "p"}]"#, "a rule's name"),
            (
                r#"[{"name": "a", "prefix": "p"}, {"name": "a", "prefix": "q"}]"#,
                "two rules are named \"a\"",
            ),
            (
                r#"[{"name": "a", "prefix": "p"}, {"name": "b", "prefix": "p", "mount": "kv"}]"#,
                "rule \"b\": prefix: \"p\" is rule \"a\"'s prefix",
            ),
            (
                r#"[{"name": "a", "prefix": "p", "recovery_window_days": 3}]"#,
                "rule \"a\": recovery_window_days: 3 is outside",
            ),
            (
                r#"[{"name": "a", "prefix": "p", "tags": {"aws:x": "y"}}]"#,
                "rule \"a\": tags:",
            ),
            (
                r#"[{"name": "a", "prefix": "p", "region": "mars"}]"#,
                "rule \"a\": region:",
            ),
            (
                r#"[{"name": "a", "prefix": "p", "external_id": "abcdefgh"}]"#,
                "rule \"a\": external_id:",
            ),
            (
                r#"[{"name": "a", "prefix": "p", "account_kms_key": "create"}]"#,
                "rule \"a\": account_kms_key: is a deployer.toml key",
            ),
            (
                "@/nonexistent/rules.json",
                "cannot read /nonexistent/rules.json",
            ),
        ] {
            let got = problem(doc);
            assert!(got.contains(says), "{doc}: {got}");
        }
        // The same prefix in another account, or nested prefixes, are two destinations.
        let arn = "arn:aws:iam::222222222222:role/r";
        let doc = format!(
            r#"[{{"name": "a", "prefix": "p"}}, {{"name": "b", "prefix": "p", "account_role_arn": "{arn}", "external_id": "abcdefgh"}}, {{"name": "c", "prefix": "p/q"}}]"#
        );
        assert_eq!(settings_of(&base(), &doc).unwrap().len(), 3);
        // A rules document names its rules.
        let mut named = base();
        named.rule_name = Some("x".into());
        assert!(settings_of(&named, r#"[{"name": "a", "prefix": "p"}]"#).is_err());
    }
}
