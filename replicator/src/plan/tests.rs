//! The planner's decisions, table by table.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::model::{DeletionPolicy, NameTemplate, OnModified, Tags};
use breaker::{BREAKER_FLOOR, breaker_allows};
use shape::ARN_SUFFIX_WARNING;

fn settings() -> Rule {
    let mut r = Rule::new("p", "kv");
    r.max_delete_share = 0.5;
    r
}

const T: &str = "2026-11-01T10:00:00Z";

fn live(rel: &str, version: u64) -> VaultEntry {
    VaultEntry {
        rel_path: rel.into(),
        state: EntryState::Live {
            version,
            created_time: T.into(),
            latest: version,
            earlier: (1..version).rev().map(|n| (n, T.into())).collect(),
            custom: Box::new([]),
        },
    }
}

fn deleted(rel: &str) -> VaultEntry {
    VaultEntry {
        rel_path: rel.into(),
        state: EntryState::Deleted,
    }
}

/// An AWS secret the replicator wrote from `kv` version `version` of `rel`.
fn ours(rel: &str, version: u64) -> AwsSecret {
    let mut tags = Tags::default();
    for (k, v) in shape::owner_tags(&Rule::new("p", "kv")) {
        tags.insert(&k, &v);
    }
    tags.insert("version", &version.to_string());
    tags.insert("vault-version-created", T);
    let mut s = AwsSecret::named(
        &format!("p/{rel}"),
        &format!("arn:aws:secretsmanager:r:1:secret:p/{rel}-abcdef"),
    );
    s.tags = tags;
    s.set_versions(Some(&version_token("kv", rel, version, T)), []);
    s.description = Some(shape::DEFAULT_DESCRIPTION.into());
    s
}

/// Every step's kind and name, then the unchanged replicas'.
fn kinds(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| {
            let v = serde_json::to_value(s).unwrap();
            format!("{} {}", v["action"].as_str().unwrap(), s.name())
        })
        .chain(
            plan.unchanged_names
                .iter()
                .map(|n| format!("unchanged {n}")),
        )
        .collect()
}

/// A full sync's plan, its unchanged replicas listed.
fn plan(entries: &[VaultEntry], aws: &[AwsSecret], rule: &Rule) -> Plan {
    plan_with(entries, aws, rule, Scope::Everything)
}

fn plan_with(entries: &[VaultEntry], aws: &[AwsSecret], rule: &Rule, scope: Scope<'_>) -> Plan {
    let regions = BTreeMap::new();
    let run = Run {
        scope,
        accept_vault_rollback: false,
        allowance: breaker::Allowance::Left(1000),
        regions: &regions,
        drifted_policies: &NO_DRIFT,
        list_unchanged: true,
    };
    super::plan(entries, aws, rule, &run)
}

#[test]
fn new_changed_and_unchanged_secrets() {
    let vault = [live("a", 1), live("b/c", 2), live("d", 5)];
    let aws = [ours("b/c", 1), ours("d", 5)];
    let plan = plan(&vault, &aws, &settings());
    assert_eq!(
        kinds(&plan),
        ["create p/a", "update p/b/c", "unchanged p/d"]
    );
    assert!(matches!(
        &plan.steps[1],
        Step::Update {
            reason: UpdateReason::NewVersion,
            restore: false,
            ..
        }
    ));
}

#[test]
fn deletions_follow_the_policy() {
    let vault = [live("a", 1), deleted("b"), live("c", 1), live("d", 1)];
    let aws = [
        ours("a", 1),
        ours("b", 1),
        ours("c", 1),
        ours("d", 1),
        ours("gone", 1),
    ];
    let keep = plan(&vault, &aws, &settings());
    assert_eq!(
        kinds(&keep),
        [
            "keep p/b",
            "keep p/gone",
            "unchanged p/a",
            "unchanged p/c",
            "unchanged p/d"
        ]
    );
    let mut s = settings();
    s.deletion_policy = DeletionPolicy::Delete;
    let del = plan(&vault, &aws, &s);
    assert_eq!(
        kinds(&del),
        [
            "delete p/b",
            "delete p/gone",
            "unchanged p/a",
            "unchanged p/c",
            "unchanged p/d"
        ]
    );
    assert!(del.breaker.is_none());
}

#[test]
fn breaker_refuses_large_or_total_deletions() {
    let mut s = settings();
    s.deletion_policy = DeletionPolicy::Delete;
    let names: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    let aws: Vec<_> = names.iter().map(|n| ours(n, 1)).collect();
    // 7 of 8 > 50 %, and over the floor
    let p = plan(&[live("s0", 1)], &aws, &s);
    assert!(p.breaker.as_deref().unwrap().contains("7 of 8"));
    assert!(p.steps.iter().all(|s| !matches!(s, Step::Delete { .. })));
    // An empty Vault never deletes, whatever the share.
    s.max_delete_share = 1.0;
    let p = plan(&[], &aws, &s);
    assert!(p.breaker.as_deref().unwrap().contains("no live secret"));
    assert_eq!(
        kinds(&p).iter().filter(|k| k.starts_with("keep")).count(),
        8
    );
}

/// Deletes `n` of `owned` replicas (Vault keeps the rest live) at `share`: refused?
fn breaker_refuses(owned: usize, n: usize, share: f64) -> bool {
    let mut s = settings();
    s.deletion_policy = DeletionPolicy::Delete;
    s.max_delete_share = share;
    let names: Vec<String> = (0..owned).map(|i| format!("s{i:03}")).collect();
    let aws: Vec<_> = names.iter().map(|n| ours(n, 1)).collect();
    let vault: Vec<_> = names[n..].iter().map(|n| live(n, 1)).collect();
    let p = plan(&vault, &aws, &s);
    let deletes = p
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Delete { .. }))
        .count();
    assert_eq!(deletes, if p.breaker.is_some() { 0 } else { n });
    p.breaker.is_some()
}

#[test]
fn breaker_boundaries_at_the_share_the_floor_and_share_zero() {
    for (owned, n, share, refused) in [
        (40, 10, 0.25, false),  // exactly at the share
        (40, 11, 0.25, true),   // one over
        (100, 30, 0.3, false),  // 100 × 0.3 is 30.000000000000004 in floating point
        (100, 29, 0.29, false), // 100 × 0.29 is 28.999999999999996
        (100, 30, 0.29, true),
        (200, 58, 0.29, false),
        (50, 29, 0.58, false),
        (2, 1, 0.25, false), // 1 of 2 at the default share: under the floor of 3
        (10, 3, 0.25, false),
        (10, 4, 0.25, true), // over the share and the floor
        (4, 1, 0.0, true),   // share 0: no deletion at all
        (1000, 1, 0.0, true),
        (4, 3, 1.0, false), // share 1: anything while Vault shows something live
    ] {
        assert_eq!(
            breaker_refuses(owned, n, share),
            refused,
            "{n} of {owned} at share {share}"
        );
    }
}

#[test]
fn ownership_decides_conflicts_and_adoption() {
    let mut foreign = ours("f", 1);
    foreign.tags.clear();
    let mut sample = ours("s", 1);
    sample.tags = Tags::from([("version", "1")]);
    sample.set_versions(Some("random-id-from-the-sample-0000000000"), []);
    let mut other = ours("o", 1);
    other.tags.insert("vault-mount", "elsewhere");
    let mut listed = ours("l", 1);
    listed.tags.clear();
    let mut s = settings();
    s.adopt = vec!["p/l".into()];
    let vault = [live("f", 1), live("l", 1), live("o", 1), live("s", 1)];
    let aws = [foreign, listed, other, sample];
    // The sample's replica is taken over only on the operator's word.
    let p = plan(&vault, &aws, &s);
    assert_eq!(
        kinds(&p),
        ["conflict p/f", "update p/l", "conflict p/o", "conflict p/s"]
    );
    assert!(matches!(
        &p.steps[3],
        Step::Conflict {
            kind: ConflictKind::SampleReplica,
            ..
        }
    ));
    s.adopt_sample = true;
    let p = plan(&vault, &aws, &s);
    assert_eq!(
        kinds(&p),
        ["conflict p/f", "update p/l", "conflict p/o", "update p/s"]
    );
    assert!(matches!(
        &p.steps[0],
        Step::Conflict {
            kind: ConflictKind::Foreign,
            ..
        }
    ));
    assert!(matches!(
        &p.steps[2],
        Step::Conflict {
            kind: ConflictKind::OtherSource,
            ..
        }
    ));
    assert!(matches!(
        &p.steps[3],
        Step::Update {
            reason: UpdateReason::Adopt,
            ..
        }
    ));
    // The adopt list wins over another sync's managed-by tag, never over another tool's (the
    // role may write nothing another tool owns); a secret already ours is not adopted again.
    let mut tool = ours("t", 1);
    tool.tags.insert("managed-by", "terraform");
    let mut elsewhere = ours("e", 1);
    elsewhere.tags.insert("vault-mount", "other");
    let mut s = settings();
    s.adopt = vec!["p/t".into(), "p/e".into(), "p/mine".into()];
    let vault = [live("e", 1), live("mine", 1), live("t", 1)];
    let p = plan(&vault, &[tool, elsewhere, ours("mine", 1)], &s);
    assert_eq!(
        kinds(&p),
        ["update p/e", "conflict p/t", "unchanged p/mine"]
    );
    assert!(matches!(
        &p.steps[1],
        Step::Conflict { kind: ConflictKind::Foreign, message, .. }
            if message.contains("managed-by=terraform") && message.contains("never written")
    ));
    assert!(p.steps.iter().all(|st| !matches!(
        st,
        Step::Update {
            reason: UpdateReason::NewVersion | UpdateReason::Overwrite,
            ..
        }
    )));
    // A foreign orphan is never touched.
    let mut stray = ours("x", 1);
    stray.tags.clear();
    let mut d = settings();
    d.deletion_policy = DeletionPolicy::Delete;
    assert!(plan(&[live("a", 1)], &[stray], &d).steps.len() == 1);
}

#[test]
fn out_of_band_writes_are_conflicts_unless_overwritten() {
    let mut touched = ours("a", 2);
    touched.set_versions(Some("someone-else-wrote-this-0000000000"), []);
    let p = plan(&[live("a", 2)], std::slice::from_ref(&touched), &settings());
    assert!(matches!(
        &p.steps[0],
        Step::Conflict {
            kind: ConflictKind::ModifiedOutside,
            ..
        }
    ));
    let mut s = settings();
    s.on_modified = OnModified::Overwrite;
    let p = plan(&[live("a", 2)], &[touched], &s);
    assert!(matches!(
        &p.steps[0],
        Step::Update {
            reason: UpdateReason::Overwrite,
            ..
        }
    ));
}

#[test]
fn a_write_whose_tags_were_lost_is_finished_not_flagged() {
    let mut half = ours("a", 1);
    half.set_versions(Some(&version_token("kv", "a", 2, T)), []);
    half.add_staged(&version_token("kv", "a", 1, T));
    let p = plan(&[live("a", 2)], &[half], &settings());
    assert!(matches!(
        &p.steps[0],
        Step::Update {
            reason: UpdateReason::FinishTags,
            write: Write::None | Write::Stage,
            ..
        }
    ));
}

#[test]
fn only_a_version_not_in_aws_is_written_again() {
    // Vault's version 1 was overwritten by hand in AWS but is still staged there.
    let mut touched = ours("a", 1);
    touched.set_versions(Some("someone-else-wrote-this-0000000000"), []);
    touched.add_staged(&version_token("kv", "a", 1, T));
    let mut s = settings();
    s.on_modified = OnModified::Overwrite;
    let p = plan(&[live("a", 1)], std::slice::from_ref(&touched), &s);
    assert!(matches!(
        &p.steps[0],
        Step::Update {
            reason: UpdateReason::Overwrite,
            write: Write::None | Write::Stage,
            ..
        }
    ));
    // Vault moved on meanwhile: version 2 has never been written.
    let p = plan(&[live("a", 2)], &[touched], &s);
    assert!(matches!(
        &p.steps[0],
        Step::Update {
            write: Write::Value,
            ..
        }
    ));
}

#[test]
fn a_lost_tag_write_then_a_newer_vault_version_is_an_update_not_a_conflict() {
    // Version 2's value went in, its tag write was lost (tags still say 1); Vault is at 3.
    let mut half = ours("a", 1);
    half.set_versions(Some(&version_token("kv", "a", 2, T)), []);
    let p = plan(&[live("a", 3)], &[half.clone()], &settings());
    assert!(
        matches!(
            &p.steps[0],
            Step::Update {
                reason: UpdateReason::NewVersion,
                ..
            }
        ),
        "{:?}",
        p.steps[0]
    );
    // A version id none of Vault's versions gives is still someone else's.
    half.set_versions(Some(&version_token("kv", "a", 7, T)), []);
    let p = plan(&[live("a", 3)], &[half], &settings());
    assert!(matches!(
        &p.steps[0],
        Step::Conflict {
            kind: ConflictKind::ModifiedOutside,
            ..
        }
    ));
}

#[test]
fn scheduled_deletions_are_restored_when_ours_and_reported_otherwise() {
    let mut mine = ours("a", 1);
    mine.pending_deletion = true;
    let mut theirs = ours("b", 1);
    theirs.tags.clear();
    theirs.pending_deletion = true;
    let p = plan(&[live("a", 1), live("b", 1)], &[mine, theirs], &settings());
    assert!(matches!(&p.steps[0], Step::Update { restore: true, .. }));
    assert!(matches!(
        &p.steps[1],
        Step::Conflict {
            kind: ConflictKind::ScheduledForDeletion,
            ..
        }
    ));
}

#[test]
fn bad_names_and_collisions_fail_alone() {
    let vault = [
        live("ok", 1),
        live("has space", 1),
        live("ends-abcdef", 1),
        live(&"x".repeat(600), 1),
    ];
    let p = plan(&vault, &[], &settings());
    let invalid: Vec<_> = p
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Invalid { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect();
    assert_eq!(
        invalid,
        [InvalidKind::InvalidName, InvalidKind::NameTooLong]
    );
    assert_eq!(kinds(&p)[0], "create p/ok");
    // A name like an ARN suffix is replicated, with a warning.
    assert!(kinds(&p).contains(&"create p/ends-abcdef".to_owned()));
    assert_eq!(
        p.warnings,
        [(
            "p/ends-abcdef".to_owned(),
            shape::ARN_SUFFIX_KIND,
            ARN_SUFFIX_WARNING.to_owned()
        )]
    );
}

#[test]
fn unreadable_metadata_neither_writes_nor_deletes() {
    let mut s = settings();
    s.deletion_policy = DeletionPolicy::Delete;
    s.max_delete_share = 1.0;
    let vault = [
        live("a", 1),
        VaultEntry {
            rel_path: "b".into(),
            state: EntryState::Unreadable {
                kind: "vault_permission_denied",
                message: "denied".into(),
            },
        },
    ];
    let p = plan(&vault, &[ours("a", 1), ours("b", 1)], &s);
    assert_eq!(kinds(&p), ["vault_failed p/b", "unchanged p/a"]);
}

#[test]
fn a_nested_prefix_is_another_syncs_and_untagged_replicas_get_the_tag() {
    let mut s = settings();
    s.deletion_policy = DeletionPolicy::Delete;
    s.max_delete_share = 1.0;
    // `p/mirror/x` belongs to the sync with prefix `p/mirror` of the same mount.
    let mut nested = ours("mirror/x", 1);
    nested.tags.insert("replica-prefix", "p/mirror");
    // Written before the prefix tag: one up to date, one whose Vault source is gone.
    let mut legacy = ours("old", 1);
    legacy.tags.remove("replica-prefix");
    let mut legacy_orphan = ours("gone", 1);
    legacy_orphan.tags.remove("replica-prefix");
    let p = plan(
        &[live("a", 1), live("old", 1)],
        &[ours("a", 1), nested, legacy, legacy_orphan],
        &s,
    );
    assert_eq!(
        kinds(&p),
        ["update p/old", "keep p/gone", "unchanged p/a"],
        "the nested sync's replica is not touched"
    );
    assert!(matches!(
        &p.steps[0],
        Step::Update {
            reason: UpdateReason::FinishTags,
            write: Write::None | Write::Stage,
            ..
        }
    ));
    // A Vault path that maps onto the nested sync's replica is a conflict, not a write.
    let mut nested = ours("mirror/x", 1);
    nested.tags.insert("replica-prefix", "p/mirror");
    let p = plan(&[live("mirror/x", 1)], &[nested], &s);
    assert!(matches!(
        &p.steps[0],
        Step::Conflict {
            kind: ConflictKind::OtherSource,
            ..
        }
    ));
}

#[test]
fn another_stacks_replicas_are_never_its_own_and_untagged_ones_get_the_stack() {
    let mut s = settings();
    s.deletion_policy = DeletionPolicy::Delete;
    s.max_delete_share = 1.0;
    s.stack = Some("blue".into());
    let stacked = |rel: &str, stack: &str| {
        let mut r = ours(rel, 1);
        r.tags.insert("replica-stack", stack);
        r
    };
    // "green" replicates the same mount into the same prefix: its replicas, of paths this
    // Vault has or not, are neither written nor deleted. One from before the stack tag is this
    // stack's, as before: tagged when it is up to date, deleted when its source is gone.
    let p = plan(
        &[live("a", 1), live("theirs", 2), live("old", 1)],
        &[
            stacked("a", "blue"),
            stacked("theirs", "green"),
            stacked("gone-theirs", "green"),
            ours("old", 1),
            ours("gone-untagged", 1),
        ],
        &s,
    );
    assert_eq!(
        kinds(&p),
        [
            "conflict p/theirs",
            "update p/old",
            "delete p/gone-untagged",
            "unchanged p/a"
        ],
        "{p:?}"
    );
    assert!(matches!(
        &p.steps[0],
        Step::Conflict {
            kind: ConflictKind::OtherSource,
            message,
            ..
        } if message.contains("of stack \"green\"")
    ));
    let Step::Update {
        reason: UpdateReason::Metadata,
        target,
        changes,
        ..
    } = &p.steps[1]
    else {
        panic!("{:?}", p.steps[1])
    };
    assert!(changes.tag, "the tags are written");
    assert_eq!(
        target.tags.get("replica-stack").map(String::as_str),
        Some("blue")
    );
}

#[test]
fn a_folder_vault_would_not_list_keeps_its_replicas() {
    let mut s = settings();
    s.deletion_policy = DeletionPolicy::Delete;
    s.max_delete_share = 1.0;
    let vault = [
        live("a", 1),
        VaultEntry {
            rel_path: "private/".into(),
            state: EntryState::Unreadable {
                kind: "vault_permission_denied",
                message: "cannot list the folder".into(),
            },
        },
    ];
    let aws = [ours("a", 1), ours("private/x", 1), ours("gone", 1)];
    let p = plan(&vault, &aws, &s);
    assert_eq!(
        kinds(&p),
        [
            "vault_failed p/private/",
            "keep p/private/x",
            "delete p/gone",
            "unchanged p/a"
        ]
    );
}

#[test]
fn sub_paths_map_relative_names_and_own_their_tag() {
    let mut s = settings();
    s.path = "apps/web".into();
    let p = plan(&[live("db", 1)], &[], &s);
    let Step::Create { target } = &p.steps[0] else {
        panic!("{p:?}")
    };
    assert_eq!(target.name, "p/db");
    assert_eq!(target.vault_path, "apps/web/db");
    // A secret replicated from the whole mount is another source.
    let p = plan(&[live("db", 1)], &[ours("db", 1)], &s);
    assert!(matches!(
        &p.steps[0],
        Step::Conflict {
            kind: ConflictKind::OtherSource,
            ..
        }
    ));
}

fn with_custom(mut entry: VaultEntry, custom: &[(&str, &str)]) -> VaultEntry {
    if let EntryState::Live { custom: c, .. } = &mut entry.state {
        *c = custom
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    }
    entry
}

#[test]
fn the_breaker_leaves_a_budget_for_deletions_found_while_writing() {
    let mut s = settings();
    s.deletion_policy = DeletionPolicy::Delete;
    s.max_delete_share = 0.25;
    let aws: Vec<AwsSecret> = (0..20).map(|i| ours(&format!("s{i}"), 1)).collect();
    let mut vault: Vec<VaultEntry> = (0..20).map(|i| live(&format!("s{i}"), 1)).collect();
    // 20 owned: 5 may go; one planned leaves 4.
    vault[0] = deleted("s0");
    assert_eq!(plan(&vault, &aws, &s).delete_budget, 4);
    // Refused: nothing more may go.
    s.max_delete_share = 0.0;
    assert_eq!(plan(&vault, &aws, &s).delete_budget, 0);
    assert_eq!(breaker_allows(2, 0.25), BREAKER_FLOOR);
    assert_eq!(breaker_allows(100, 0.29), 29);
}

#[test]
fn a_metadata_change_is_applied_without_a_value_and_a_bad_tag_fails_alone() {
    let vault = [
        with_custom(live("a", 1), &[("tag:team", "core"), ("description", "A")]),
        with_custom(live("b", 1), &[("tag:aws:x", "1")]),
        live("c", 1),
    ];
    let aws = [ours("a", 1), ours("b", 1), ours("c", 1)];
    let mut s = settings();
    s.metadata_tag_keys = ["team", "aws:x"].map(String::from).into();
    let p = plan(&vault, &aws, &s);
    assert_eq!(kinds(&p), ["update p/a", "invalid p/b", "unchanged p/c"]);
    let Step::Update {
        reason: UpdateReason::Metadata,
        write: Write::None | Write::Stage,
        changes,
        target,
        ..
    } = &p.steps[0]
    else {
        panic!("{p:?}")
    };
    assert!(changes.tag);
    assert_eq!(changes.description.as_deref(), Some("A"));
    assert_eq!(target.tags["team"], "core");
    assert!(matches!(
        &p.steps[1],
        Step::Invalid {
            kind: InvalidKind::InvalidTag,
            ..
        }
    ));
    // Global tags too, and the regions: every replica is brought to them.
    let mut s = settings();
    s.tags = vec![("env".into(), "prod".into())];
    s.replica_regions = vec!["eu-west-1".parse().unwrap()];
    let p = plan(&[live("c", 1)], &[ours("c", 1)], &s);
    let Step::Update { changes, .. } = &p.steps[0] else {
        panic!("{p:?}")
    };
    assert_eq!(
        changes.regions.as_ref().map(|m| &m.add[..]),
        Some(&s.replica_regions[..])
    );
}

#[test]
fn a_template_names_replicas_collisions_fail_both_and_old_names_are_orphans() {
    let mut s = settings();
    s.deletion_policy = DeletionPolicy::Delete;
    s.name_template = NameTemplate::parse("{mount}-{path}", Granularity::SecretPath).unwrap();
    let p = plan(&[live("a", 1), live("b", 1)], &[ours("a", 1)], &s);
    assert_eq!(kinds(&p), ["create p/kv-a", "delete p/a", "create p/kv-b"]);
    // The stale name goes only after the replica that replaces it is written.
    assert!(
        matches!(&p.steps[1], Step::Delete { guard: Guard::After(after), .. } if after == &[0])
    );
    let Step::Create { target } = &p.steps[0] else {
        panic!()
    };
    assert_eq!(target.tags[tags::SOURCE], "a");
    s.name_template = NameTemplate::parse("same", Granularity::SecretPath).unwrap();
    let p = plan(&[live("a", 1), live("b", 1)], &[], &s);
    assert_eq!(kinds(&p), ["invalid p/same", "invalid p/same"]);
    // A replica of another Vault secret already under the rendered name is never taken.
    s.name_template = NameTemplate::parse("x-{path}", Granularity::SecretPath).unwrap();
    let p = plan(&[live("a", 1), live("x-a", 1)], &[ours("x-a", 1)], &s);
    assert_eq!(
        kinds(&p),
        ["invalid p/x-a", "create p/x-x-a", "delete p/x-a"],
        "the stale name follows the deletion policy"
    );
    let Step::Invalid { message, .. } = &p.steps[0] else {
        panic!()
    };
    assert!(message.contains("Vault path x-a"), "{message}");
    // Deleted in Vault: only its own replica goes, never another's under the same name.
    let p = plan(&[deleted("a"), live("x-a", 1)], &[ours("x-a", 1)], &s);
    assert_eq!(kinds(&p), ["skip p/x-a", "create p/x-x-a", "delete p/x-a"]);
}

#[test]
fn one_replica_per_key_is_current_without_a_value_read_only_when_complete() {
    let mut s = settings();
    s.granularity = Granularity::SecretKey;
    s.name_template = NameTemplate::default_for(Granularity::SecretKey);
    let key_replica = |key: &str, count: usize| {
        let mut r = ours(&format!("a/{key}"), 1);
        r.tags.insert(tags::SOURCE, "a");
        r.tags.insert(tags::KEY, key);
        r.tags.insert(tags::KEY_COUNT, &count.to_string());
        r.set_versions(Some(&key_token("kv", "a", Some(key), 1, T)), []);
        r
    };
    let both = [key_replica("user", 2), key_replica("pass", 2)];
    let p = plan(&[live("a", 1)], &both, &s);
    assert_eq!(kinds(&p), ["unchanged p/a/user", "unchanged p/a/pass"]);
    // One replica is missing (a create that failed): the value says which.
    let p = plan(&[live("a", 1)], &both[..1], &s);
    assert_eq!(kinds(&p), ["expand p/a"]);
    // A new version.
    let p = plan(&[live("a", 2)], &both, &s);
    assert_eq!(kinds(&p), ["expand p/a"]);
    let Step::Expand { source, .. } = &p.steps[0] else {
        panic!()
    };
    assert_eq!(source.group.len(), 2);
    // Deleted in Vault: each key's replica follows the deletion policy.
    s.deletion_policy = DeletionPolicy::Delete;
    let p = plan(&[deleted("a"), live("z", 1)], &both, &s);
    assert_eq!(
        kinds(&p),
        ["delete p/a/user", "delete p/a/pass", "expand p/z"]
    );
}

fn template(rule: &mut Rule, text: &str) {
    rule.name_template = NameTemplate::parse(text, rule.granularity).unwrap();
}

#[test]
fn a_stale_name_goes_only_after_its_successor_and_stays_when_it_cannot_be_written() {
    let mut s = settings();
    s.deletion_policy = DeletionPolicy::Delete;
    s.max_delete_share = 1.0;
    template(&mut s, "new/{path}");
    s.metadata_tag_keys = ["aws:x".to_owned()].into();
    // Written: the old name waits for the create.
    let p = plan(&[live("a", 1)], &[ours("a", 1)], &s);
    assert_eq!(kinds(&p), ["create p/new/a", "delete p/a"]);
    assert!(matches!(&p.steps[1], Step::Delete { guard: Guard::After(a), .. } if a == &[0]));
    // A foreign secret at the new name: the old one stays, and the report says why.
    let mut squatter = ours("new/a", 1);
    squatter.tags.clear();
    let p = plan(&[live("a", 1)], &[ours("a", 1), squatter], &s);
    assert_eq!(kinds(&p), ["conflict p/new/a", "keep p/a"]);
    let Step::Keep { why, warn, .. } = &p.steps[1] else {
        panic!("{p:?}")
    };
    assert!(*warn && why.contains("foreign"), "{why}");
    // A tag AWS refuses: the same.
    let bad_tag = with_custom(live("a", 1), &[("tag:aws:x", "1")]);
    let p = plan(&[bad_tag], &[ours("a", 1)], &s);
    assert_eq!(kinds(&p), ["invalid p/new/a", "keep p/a"]);
    // The successor already there and current: nothing to wait for.
    template(&mut s, "new/{path}");
    let mut done = ours("new/a", 1);
    done.tags.insert(tags::SOURCE, "a");
    done.set_versions(Some(&version_token("kv", "a", 1, T)), []);
    let p = plan(&[live("a", 1)], &[ours("a", 1), done], &s);
    assert_eq!(kinds(&p), ["delete p/a", "unchanged p/new/a"]);
    assert!(matches!(&p.steps[0], Step::Delete { guard: Guard::After(a), .. } if a.is_empty()));
}

#[test]
fn a_replica_that_lost_its_source_tag_at_its_own_name_is_its_own_and_gets_the_tag_back() {
    let mut s = settings();
    s.deletion_policy = DeletionPolicy::Delete;
    s.max_delete_share = 1.0;
    template(&mut s, "x-{path}");
    // `a`'s replica at `p/x-a`, its vault-secret tag removed by hand.
    let mut untagged = ours("x-a", 1);
    untagged.set_versions(Some(&version_token("kv", "a", 1, T)), []);
    let p = plan(&[live("a", 1)], std::slice::from_ref(&untagged), &s);
    assert_eq!(kinds(&p), ["update p/x-a"]);
    let Step::Update {
        reason,
        write,
        changes,
        target,
        ..
    } = &p.steps[0]
    else {
        panic!("{p:?}")
    };
    assert_eq!((*reason, *write), (UpdateReason::Metadata, Write::None));
    assert!(changes.tag && target.tags[tags::SOURCE] == "a");
    // The plain template's replica of `x-a` at that name (its own version id) is another's.
    let p = plan(&[live("a", 1), live("x-a", 1)], &[ours("x-a", 1)], &s);
    assert_eq!(kinds(&p)[0], "invalid p/x-a");
}

#[test]
fn a_replica_restored_from_its_deletion_gets_its_regions_again() {
    let mut s = settings();
    s.replica_regions = vec!["eu-west-1".parse().unwrap()];
    let mut deleted_with_tag = ours("a", 1);
    deleted_with_tag.pending_deletion = true;
    deleted_with_tag.tags.insert(
        tags::REPLICA_REGIONS,
        &shape::regions_tag(&s.replica_regions),
    );
    let p = plan(&[live("a", 2)], &[deleted_with_tag], &s);
    let Step::Update {
        restore, changes, ..
    } = &p.steps[0]
    else {
        panic!("{p:?}")
    };
    assert!(*restore);
    assert_eq!(
        changes.regions.as_ref().map(|m| &m.add[..]),
        Some(&s.replica_regions[..])
    );
}

fn live_at(rel: &str, version: u64, created: &str, latest: u64) -> VaultEntry {
    VaultEntry {
        rel_path: rel.into(),
        state: EntryState::Live {
            version,
            created_time: created.into(),
            latest,
            earlier: Box::new([]),
            custom: Box::new([]),
        },
    }
}

const T2: &str = "2026-11-02T10:00:00Z";
const T3: &str = "2026-11-03T10:00:00Z";
const T4: &str = "2026-11-04T10:00:00Z";

/// The replica of `rel` at Vault version 3, created at T3.
fn at_v3(rel: &str) -> AwsSecret {
    let mut r = ours(rel, 3);
    r.tags.insert("vault-version-created", T3);
    r.set_versions(
        Some(&version_token("kv", rel, 3, T3)),
        [version_token("kv", rel, 2, T2).as_str()],
    );
    r
}

#[test]
fn a_vault_behind_aws_is_refused_unless_the_run_accepts_it_and_a_recreated_path_is_not() {
    let s = settings();
    // Restored: Vault's latest is 2 (created before AWS's 3).
    let restored = [live_at("a", 2, T2, 2)];
    let p = plan(&restored, &[at_v3("a")], &s);
    let Step::Conflict { kind, message, .. } = &p.steps[0] else {
        panic!("{p:?}")
    };
    assert_eq!(*kind, ConflictKind::VaultBehind);
    assert!(kind.fails_the_run() && message.contains("--accept-vault-rollback"));
    // Accepted for one run: version 2 is made current again (its value is in AWS already).
    let regions = BTreeMap::new();
    let run = Run {
        accept_vault_rollback: true,
        ..Run::full(&regions)
    };
    let p = super::plan(&restored, &[at_v3("a")], &s, &run);
    assert!(matches!(
        &p.steps[0],
        Step::Update {
            reason: UpdateReason::Rollback,
            write: Write::Stage,
            ..
        }
    ));
    // Deleted and written again: version 1, newer than what AWS holds.
    let p = plan(&[live_at("a", 1, T4, 1)], &[at_v3("a")], &s);
    assert!(matches!(
        &p.steps[0],
        Step::Update {
            reason: UpdateReason::NewVersion,
            write: Write::Value,
            ..
        }
    ));
    // The latest deleted (Vault still at 3): version 2 falls back, no conflict.
    let p = plan(&[live_at("a", 2, T2, 3)], &[at_v3("a")], &s);
    assert!(matches!(
        &p.steps[0],
        Step::Update {
            reason: UpdateReason::LatestDeleted,
            write: Write::Stage,
            ..
        }
    ));
}

#[test]
fn a_change_driven_run_judges_only_its_paths_and_deletes_within_its_allowance() {
    let mut s = settings();
    s.deletion_policy = DeletionPolicy::Delete;
    // `b` was looked up by name for the batch, but AWS answered with `z`'s replica (a name
    // resolved like a partial ARN): `z` is not the batch's to judge.
    let rels = ["b".to_owned()];
    let p = plan_with(&[], &[ours("z", 1)], &s, Scope::Paths(&rels));
    assert!(p.steps.is_empty(), "{p:?}");
    // `b` gone from Vault: its replica goes, within the allowance.
    let p = plan_with(&[], &[ours("b", 1)], &s, Scope::Paths(&rels));
    assert_eq!(kinds(&p), ["delete p/b"]);
    assert!(
        matches!(&p.steps[0], Step::Delete { guard: Guard::SourceGone { vault_path }, .. } if vault_path == "b")
    );
    for allowance in [
        breaker::Allowance::Left(0),
        breaker::Allowance::Tripped,
        breaker::Allowance::NoFullSync,
    ] {
        let regions = BTreeMap::new();
        let run = Run {
            scope: Scope::Paths(&rels),
            allowance,
            ..Run::full(&regions)
        };
        let p = super::plan(&[], &[ours("b", 1)], &s, &run);
        assert_eq!(kinds(&p), ["keep p/b"]);
        assert!(p.deferred.is_some() && p.breaker.is_none());
    }
}

fn key_replica(rel: &str, key: &str, version: u64, count: usize) -> AwsSecret {
    let mut r = ours(&format!("{rel}/{key}"), version);
    r.tags.insert(tags::SOURCE, rel);
    r.tags.insert(tags::KEY, key);
    r.tags.insert(tags::KEY_COUNT, &count.to_string());
    r.set_versions(Some(&key_token("kv", rel, Some(key), version, T)), []);
    r
}

fn per_key() -> Rule {
    let mut s = settings();
    s.granularity = Granularity::SecretKey;
    s.name_template = NameTemplate::default_for(Granularity::SecretKey);
    s
}

#[test]
fn a_kept_key_replica_does_not_make_every_run_read_the_value() {
    let s = per_key();
    // Version 2 dropped `old`; its replica is kept (policy keep).
    let aws = [
        key_replica("a", "user", 2, 1),
        key_replica("a", "old", 1, 2),
    ];
    let p = plan(&[live("a", 2)], &aws, &s);
    assert_eq!(kinds(&p), ["keep p/a/old", "unchanged p/a/user"]);
}

fn expand_source(rel: &str, version: u64, group: Vec<AwsSecret>) -> ExpandSource {
    ExpandSource {
        source: Source {
            rel_path: rel.into(),
            vault_path: rel.into(),
            version,
            created_time: T.into(),
            user_tags: BTreeMap::new(),
            description: shape::DEFAULT_DESCRIPTION.into(),
            metadata_ignored: vec![],
        },
        latest: version,
        earlier: vec![],
        group,
    }
}

fn expanded(src: &ExpandSource, keys: &[&str], found: &[AwsSecret], rule: &Rule) -> Plan {
    let keys: Vec<(String, usize)> = keys.iter().map(|k| ((*k).to_owned(), 3)).collect();
    let regions = BTreeMap::new();
    let run = Run {
        list_unchanged: true,
        ..Run::full(&regions)
    };
    keys::expand("p/a", src, &keys, found, rule, &run)
}

#[test]
fn keys_are_planned_once_read_over_the_cap_nothing_and_listed_ones_are_adopted() {
    let mut s = per_key();
    s.max_keys_per_secret = 2;
    let src = expand_source("a", 1, vec![]);
    let p = expanded(&src, &["k1", "k2", "k3"], &[], &s);
    assert_eq!(kinds(&p), ["invalid p/a"]);
    assert!(matches!(
        &p.steps[0],
        Step::Invalid {
            kind: InvalidKind::TooManyKeys,
            ..
        }
    ));
    // A key's name held by a secret listed for adoption: taken over.
    s.max_keys_per_secret = 100;
    s.adopt = vec!["p/a/k1".into()];
    let mut theirs = ours("a/k1", 1);
    theirs.tags.clear();
    let p = expanded(&src, &["k1", "k2"], &[theirs], &s);
    assert_eq!(kinds(&p), ["update p/a/k1", "create p/a/k2"]);
    assert!(matches!(
        &p.steps[0],
        Step::Update {
            reason: UpdateReason::Adopt,
            ..
        }
    ));
    // A value over AWS's limit fails that key alone.
    let keys = [("big".to_owned(), 70_000), ("k".to_owned(), 1)];
    let regions = BTreeMap::new();
    let p = keys::expand("p/a", &src, &keys, &[], &s, &Run::full(&regions));
    assert!(matches!(
        &p.steps[0],
        Step::Invalid {
            kind: InvalidKind::ValueTooLarge,
            ..
        }
    ));
    assert!(matches!(&p.steps[1], Step::Create { .. }));
}

#[test]
fn a_whole_replica_goes_only_after_every_key_replica_is_written() {
    let mut s = per_key();
    s.deletion_policy = DeletionPolicy::Delete;
    // From secret-path to secret-key: the whole replica is stale.
    let whole = ours("a", 1);
    let src = expand_source("a", 1, vec![whole]);
    let p = expanded(&src, &["k1", "k2"], &[], &s);
    assert_eq!(kinds(&p), ["create p/a/k1", "create p/a/k2", "delete p/a"]);
    assert!(matches!(&p.steps[2], Step::Delete { guard: Guard::After(a), .. } if a == &[0, 1]));
    // A key AWS refuses: the whole replica stays, and the report says why.
    let p = expanded(&src, &["k1", "bad key"], &[], &s);
    assert_eq!(
        kinds(&p),
        ["create p/a/k1", "invalid p/a/bad key", "keep p/a"]
    );
    // From secret-key back to secret-path: each key replica waits for the whole one.
    let mut s = settings();
    s.deletion_policy = DeletionPolicy::Delete;
    s.max_delete_share = 1.0;
    let p = plan(&[live("a", 1)], &[key_replica("a", "k1", 1, 1)], &s);
    assert_eq!(kinds(&p), ["create p/a", "delete p/a/k1"]);
    assert!(matches!(&p.steps[1], Step::Delete { guard: Guard::After(a), .. } if a == &[0]));
}

#[test]
fn a_key_replica_kept_under_the_whole_secrets_name_is_updated_never_deleted() {
    // secret-key ({path}/{key}, key `main`) to secret-path with the template {path}/main: the
    // replica keeps its name and is the secret's own, not a stale one.
    let mut s = settings();
    s.deletion_policy = DeletionPolicy::Delete;
    s.max_delete_share = 1.0;
    template(&mut s, "{path}/main");
    let p = plan(&[live("a", 1)], &[key_replica("a", "main", 1, 1)], &s);
    assert_eq!(kinds(&p), ["update p/a/main"]);
}

#[test]
fn an_untagged_key_replica_is_kept_and_repaired_by_its_secrets_expansion() {
    let mut s = per_key();
    s.deletion_policy = DeletionPolicy::Delete;
    s.max_delete_share = 1.0;
    let mut untagged = key_replica("a", "pass", 1, 1);
    untagged.tags.remove(tags::SOURCE);
    // The full sync: its name says nothing for sure, so it is kept with a word, never deleted.
    let p = plan(&[live("a", 1)], std::slice::from_ref(&untagged), &s);
    assert_eq!(kinds(&p), ["expand p/a", "keep p/a/pass"]);
    assert!(matches!(&p.steps[1], Step::Keep { warn: true, .. }));
    // Once the value is read, its version id proves it the key's own: its tag comes back.
    let src = expand_source("a", 1, vec![]);
    let p = expanded(&src, &["pass"], &[untagged], &s);
    let Step::Update {
        reason, changes, ..
    } = &p.steps[0]
    else {
        panic!("{p:?}")
    };
    assert!(changes.tag, "{reason:?}");
}

#[test]
fn a_whole_replica_waits_for_the_key_replicas_before_read_too() {
    let mut s = per_key();
    s.deletion_policy = DeletionPolicy::Delete;
    s.max_delete_share = 1.0;
    s.tags = vec![("team".into(), "core".into())];
    // Complete at the version, but the key replica's tags change (a metadata update), and the
    // whole secret's replica from before the granularity changed waits for it.
    let p = plan(
        &[live("a", 1)],
        &[key_replica("a", "k", 1, 1), ours("a", 1)],
        &s,
    );
    assert_eq!(kinds(&p), ["update p/a/k", "delete p/a"]);
    assert!(matches!(&p.steps[1], Step::Delete { guard: Guard::After(a), .. } if a == &[0]));
    // A key replica someone wrote over (overwrite): its value needs the read, so the secret is
    // expanded instead of writing anything from here.
    s.on_modified = OnModified::Overwrite;
    let mut touched = key_replica("a", "k", 1, 1);
    touched.set_versions(Some("someone-else-wrote-this-0000000000"), []);
    let p = plan(&[live("a", 1)], &[touched, ours("a", 1)], &s);
    assert_eq!(kinds(&p), ["expand p/a"]);
}

#[test]
fn tags_that_name_the_version_while_an_earlier_one_is_current_move_the_stage_back() {
    let mut r = ours("a", 2);
    r.set_versions(
        Some(&version_token("kv", "a", 1, T)),
        [version_token("kv", "a", 2, T).as_str()],
    );
    let p = plan(&[live("a", 2)], &[r], &settings());
    assert!(
        matches!(
            &p.steps[0],
            Step::Update {
                write: Write::Stage,
                ..
            }
        ),
        "{p:?}"
    );
}

#[test]
fn a_vault_behind_aws_is_refused_even_under_overwrite() {
    let mut s = settings();
    s.on_modified = OnModified::Overwrite;
    // The tags say 3, a lost tag write left AWS at someone's id, Vault restored to 2.
    let mut r = at_v3("a");
    r.set_versions(Some("someone-else-wrote-this-0000000000"), []);
    let p = plan(&[live_at("a", 2, T2, 2)], &[r], &s);
    assert!(matches!(
        &p.steps[0],
        Step::Conflict {
            kind: ConflictKind::VaultBehind,
            ..
        }
    ));
}

#[test]
fn falling_back_to_older_versions_is_weighed_by_the_breaker_and_said() {
    let mut s = settings();
    s.max_delete_share = 0.25;
    // Eight replicas at version 3 whose latest Vault deleted (softly): all would go back to 2.
    let names: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    let aws: Vec<AwsSecret> = names.iter().map(|n| at_v3(n)).collect();
    let vault: Vec<VaultEntry> = names.iter().map(|n| live_at(n, 2, T2, 3)).collect();
    let p = plan(&vault, &aws, &s);
    assert!(p.breaker.is_some(), "{p:?}");
    assert!(
        p.steps
            .iter()
            .all(|st| matches!(st, Step::Keep { warn: true, .. }))
    );
    // Within the share: done, each one said.
    let p = plan(&vault[..1], &aws[..1], &s);
    assert!(matches!(
        &p.steps[0],
        Step::Update {
            reason: UpdateReason::LatestDeleted,
            ..
        }
    ));
    assert_eq!(p.warnings[0].1, "latest_deleted_fallback");
}

#[test]
fn a_secret_with_no_keys_keeps_its_whole_replica() {
    let mut s = per_key();
    s.deletion_policy = DeletionPolicy::Delete;
    let src = expand_source("a", 1, vec![ours("a", 1)]);
    let p = expanded(&src, &[], &[], &s);
    assert_eq!(kinds(&p), ["keep p/a"]);
}

fn excluded(rel: &str, why: contract::select::Excluded) -> VaultEntry {
    VaultEntry {
        rel_path: rel.into(),
        state: EntryState::Excluded(why),
    }
}

#[test]
fn a_secret_the_rule_leaves_out_is_counted_and_its_replica_goes_as_if_deleted() {
    use contract::select::Excluded;
    let entries = [
        live("a", 1),
        excluded("b", Excluded::OptedOut),
        excluded("c", Excluded::Path),
        excluded("d", Excluded::NotOptedIn),
        live("e", 1),
        live("f", 1),
    ];
    let aws = [ours("a", 1), ours("b", 1), ours("e", 1), ours("f", 1)];
    // Kept by the default policy, saying why; nothing written for `c` or `d`.
    let p = plan(&entries, &aws, &settings());
    assert_eq!(
        kinds(&p),
        [
            "keep p/b",
            "unchanged p/a",
            "unchanged p/e",
            "unchanged p/f"
        ]
    );
    assert!(
        matches!(&p.steps[0], Step::Keep { why, .. } if why.contains("opted out in Vault")),
        "{p:?}"
    );
    assert_eq!(p.excluded, 2);
    // Under the delete policy: kept when its own metadata left it out (writing metadata is no
    // right to delete), deleted when the patterns did, guarded like a deletion in Vault.
    let mut s = settings();
    s.deletion_policy = DeletionPolicy::Delete;
    let p = plan(&entries, &aws, &s);
    assert!(
        matches!(&p.steps[0], Step::Keep { why, .. } if why.contains("Vault metadata never deletes")),
        "{p:?}"
    );
    let by_path = [
        excluded("b", Excluded::Path),
        live("a", 1),
        live("e", 1),
        live("f", 1),
    ];
    let p = plan(&by_path, &aws, &s);
    assert!(
        matches!(&p.steps[0], Step::Delete { guard: Guard::SourceGone { vault_path }, .. } if vault_path == "b"),
        "{p:?}"
    );
    // And counted by the breaker like any deletion: a share above it deletes nothing.
    // (Live secrets beside them: a run that sees none refuses every deletion anyway.)
    let mut all: Vec<VaultEntry> = ["a", "b", "e", "f"]
        .iter()
        .map(|r| excluded(r, Excluded::Path))
        .collect();
    all.extend([live("g", 1), live("h", 1)]);
    s.max_delete_share = 0.25;
    let p = plan(&all, &aws, &s);
    assert!(p.breaker.is_some(), "{p:?}");
    assert!(
        !p.steps.iter().any(|s| matches!(s, Step::Delete { .. })),
        "{p:?}"
    );
}

#[test]
fn a_resource_policy_is_written_when_its_template_changes_or_drifted_and_removed_when_dropped() {
    let mut s = settings();
    s.resource_policy = Some(
        contract::resource_policy::ResourcePolicy::parse(
            r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:role/a"}, "Action": "secretsmanager:GetSecretValue", "Resource": "${ReplicaArn}"}}"#,
        )
        .unwrap(),
    );
    let tag = shape::policy_tag(s.resource_policy.as_ref().unwrap());
    let changes_of = |p: &Plan| match &p.steps[..] {
        [Step::Update { changes, .. }] => (**changes).clone(),
        other => panic!("{other:?}"),
    };
    // A replica without the policy gets it, and the tag recording it; no value is written.
    let p = plan(&[live("a", 1)], &[ours("a", 1)], &s);
    let c = changes_of(&p);
    assert_eq!(c.policy, Some(shape::PolicyWrite::Put));
    assert!(c.tag);
    assert!(matches!(
        &p.steps[0],
        Step::Update {
            write: Write::None,
            ..
        }
    ));
    // One that has it: nothing, unless an audit found it changed in AWS.
    let mut has = ours("a", 1);
    has.tags.insert(tags::RESOURCE_POLICY, &tag);
    let p = plan(&[live("a", 1)], std::slice::from_ref(&has), &s);
    assert_eq!(kinds(&p), ["unchanged p/a"]);
    let regions = BTreeMap::new();
    let drifted = BTreeSet::from(["p/a".to_owned()]);
    let run = Run {
        drifted_policies: &drifted,
        ..Run::full(&regions)
    };
    let p = super::plan(&[live("a", 1)], std::slice::from_ref(&has), &s, &run);
    assert_eq!(changes_of(&p).policy, Some(shape::PolicyWrite::Put));
    // No policy configured any more: the one this tool put is removed, and its tag.
    let p = plan(&[live("a", 1)], &[has], &settings());
    let c = changes_of(&p);
    assert_eq!(c.policy, Some(shape::PolicyWrite::Delete));
    assert_eq!(c.untag, [tags::RESOURCE_POLICY]);
    // A replica it never put a policy on is left alone.
    assert_eq!(
        kinds(&plan(&[live("a", 1)], &[ours("a", 1)], &settings())),
        ["unchanged p/a"]
    );
}
