//! The replicator against real servers: OpenBao (`bao server -dev`) and moto.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{args, env, failure_kinds, sync};
use replicator::config::{DeletionPolicy, OnModified};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_first_sync_then_noop_then_one_bump() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("team").await;
    let audit = bao.audit_log();
    bao.put("team", "app/db", json!({"user": "app", "password": "pw-1"}))
        .await;
    bao.put("team", "app/api/key", json!({"k": "v"})).await;
    bao.put("team", "app", json!({"both": "secret and folder"}))
        .await;
    bao.put("team", "top", json!({"x": 1, "nested": {"y": true}}))
        .await;

    let a = args(&env, "team");
    let progress = replicator::progress::Progress::default();
    let first =
        replicator::run::run_with_progress(&a, &env.aws, &Default::default(), &progress).await;
    assert_eq!(progress.line(), "4 secrets in Vault; writing to AWS: 4/4");
    assert_eq!(
        (first.created, first.failures.len()),
        (4, 0),
        "{}",
        first.to_text()
    );
    assert!(
        first.bulk_metadata,
        "OpenBao offers detailed-metadata listing"
    );
    let seen = env.side.secrets("team").await;
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["team/app", "team/app/api/key", "team/app/db", "team/top"]
    );
    let db = &seen["team/app/db"];
    assert_eq!(db.tags["version"], "1");
    assert_eq!(db.tags["managed-by"], "vault-secrets-replicator");
    assert_eq!(db.tags["vault-mount"], "team");
    assert_eq!(db.tags["vault-path"], "/");
    assert_eq!(
        env.side.value("team/app/db").await,
        json!({"user": "app", "password": "pw-1"})
    );
    assert_eq!(
        env.side.value("team/top").await,
        json!({"x": 1, "nested": {"y": true}})
    );
    assert_eq!(e2e::audited_value_reads(&audit).len(), 4);

    // Nothing changed: metadata only, one ListSecrets page, no new AWS version.
    let second = sync(&env, &a).await;
    assert_eq!(
        (second.unchanged, second.created, second.updated),
        (4, 0, 0)
    );
    assert_eq!(second.values_read, 0);
    assert_eq!(
        second.aws_requests.keys().collect::<Vec<_>>(),
        ["ListSecrets"]
    );
    assert_eq!(second.aws_requests["ListSecrets"], 1);
    assert!(!second.vault_requests.contains_key("read_metadata"));
    assert_eq!(e2e::audited_value_reads(&audit).len(), 4, "no value read");
    for name in seen.keys() {
        assert_eq!(env.side.version_count(name).await, 1, "{name}");
    }

    // One version bump: exactly that secret is read and written.
    bao.put("team", "app/db", json!({"user": "app", "password": "pw-2"}))
        .await;
    let third = sync(&env, &a).await;
    assert_eq!(
        (third.updated, third.unchanged),
        (1, 3),
        "{}",
        third.to_text()
    );
    let reads = e2e::audited_value_reads(&audit);
    assert_eq!(reads[4..], ["team/data/app/db".to_owned()]);
    assert_eq!(env.side.value("team/app/db").await["password"], "pw-2");
    assert_eq!(
        env.side.secrets("team").await["team/app/db"].tags["version"],
        "2"
    );
    assert_eq!(env.side.version_count("team/app/db").await, 2);
    assert_eq!(env.side.version_count("team/top").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_follow_the_policy_and_a_recreated_secret_comes_back() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    for k in ["a", "b", "c", "d", "e"] {
        bao.put("kv", k, json!({"k": k})).await;
    }
    let mut a = args(&env, "kv");
    a.max_delete_share = 1.0;
    assert_eq!(sync(&env, &a).await.created, 5);

    bao.api("DELETE", "kv/data/b", None).await; // soft delete
    bao.api("POST", "kv/destroy/c", Some(json!({"versions": [1]})))
        .await;
    bao.api("DELETE", "kv/metadata/d", None).await; // gone entirely

    let keep = sync(&env, &a).await;
    assert_eq!(keep.orphans, ["kv/b", "kv/c", "kv/d"]);
    assert_eq!((keep.deleted, keep.skipped, keep.unchanged), (0, 3, 2));
    assert!(!keep.failed());
    assert!(
        env.side
            .secrets("kv")
            .await
            .values()
            .all(|s| !s.pending_deletion)
    );

    a.deletion_policy = DeletionPolicy::Delete;
    a.recovery_window_days = 9;
    let del = sync(&env, &a).await;
    assert_eq!((del.deleted, del.unchanged), (3, 2), "{}", del.to_text());
    let seen = env.side.secrets("kv").await;
    let pending: Vec<_> = seen
        .values()
        .filter(|s| s.pending_deletion)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(pending, ["kv/b", "kv/c", "kv/d"]);
    // The recovery window reached the deletion: moto dates a scheduled deletion at its end.
    let described = env
        .side
        .sm
        .describe_secret()
        .secret_id("kv/b")
        .send()
        .await
        .unwrap();
    let ends = described.deleted_date().unwrap().secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let days = (ends - now) as f64 / 86_400.0;
    assert!((8.9..9.1).contains(&days), "{days} days");

    // Already scheduled: nothing more to do.
    let again = sync(&env, &a).await;
    assert_eq!((again.deleted, again.skipped, again.unchanged), (0, 3, 2));

    // Undeleted in Vault (the same version back): restored in place, no value read.
    bao.api("DELETE", "kv/data/e", None).await;
    assert_eq!(sync(&env, &a).await.deleted, 1);
    assert!(env.side.secrets("kv").await["kv/e"].pending_deletion);
    let reads = e2e::audited_value_reads(&bao.audit_log()).len();
    bao.api("POST", "kv/undelete/e", Some(json!({"versions": [1]})))
        .await;
    let undeleted = sync(&env, &a).await;
    assert_eq!(undeleted.updated, 1, "{}", undeleted.to_text());
    assert!(!env.side.secrets("kv").await["kv/e"].pending_deletion);
    assert_eq!(e2e::audited_value_reads(&bao.audit_log()).len(), reads);
    assert_eq!(env.side.version_count("kv/e").await, 1);
    assert_eq!(env.side.value("kv/e").await, json!({"k": "e"}));

    // Written again in Vault: restored and updated in place.
    bao.put("kv", "b", json!({"k": "b again"})).await;
    let back = sync(&env, &a).await;
    assert_eq!(back.updated, 1, "{}", back.to_text());
    let b = &env.side.secrets("kv").await["kv/b"];
    assert!(!b.pending_deletion);
    assert_eq!(b.arn, seen["kv/b"].arn);
    assert_eq!(b.tags["version"], "2");
    assert_eq!(env.side.value("kv/b").await, json!({"k": "b again"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_refuses_mass_deletion_and_an_empty_vault_never_wipes_aws() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let names: Vec<String> = (0..12).map(|i| format!("s{i:02}")).collect();
    for k in &names {
        bao.put("kv", k, json!({"k": k})).await;
    }
    let mut a = args(&env, "kv");
    a.deletion_policy = DeletionPolicy::Delete;
    a.max_delete_share = 0.5;
    assert_eq!(sync(&env, &a).await.created, 12);
    let none_pending = || async {
        env.side
            .secrets("kv")
            .await
            .values()
            .all(|s| !s.pending_deletion)
    };

    // 1 of 12 at share 0: refused (0 means no deletion at all).
    bao.api("DELETE", "kv/metadata/s00", None).await;
    a.max_delete_share = 0.0;
    let r = sync(&env, &a).await;
    assert_eq!(
        failure_kinds(&r),
        [(String::new(), "deletion_breaker".to_owned())]
    );
    assert!(none_pending().await);

    // 9 of 12 at 0.5: over the share and over the floor of 3, refused.
    for k in &names[1..9] {
        bao.api("DELETE", &format!("kv/metadata/{k}"), None).await;
    }
    a.max_delete_share = 0.5;
    let r = sync(&env, &a).await;
    assert!(r.failed());
    assert_eq!(
        failure_kinds(&r),
        [(String::new(), "deletion_breaker".to_owned())]
    );
    assert!(r.failures[0].message.contains("9 of 12"), "{}", r.to_text());
    assert_eq!(r.deleted, 0);
    assert!(none_pending().await);

    // Exactly at the share (9 of 12 at 0.75): allowed.
    a.max_delete_share = 0.75;
    let r = sync(&env, &a).await;
    assert_eq!((r.deleted, r.failures.len()), (9, 0), "{}", r.to_text());

    // 1 of the 3 left, at the default share: under the floor, allowed.
    bao.api("DELETE", "kv/metadata/s09", None).await;
    a.max_delete_share = 0.25;
    let r = sync(&env, &a).await;
    assert_eq!((r.deleted, r.failures.len()), (1, 0), "{}", r.to_text());

    // Every secret gone from Vault: refused whatever the share.
    bao.api("DELETE", "kv/metadata/s10", None).await;
    bao.api("DELETE", "kv/metadata/s11", None).await;
    a.max_delete_share = 1.0;
    let r = sync(&env, &a).await;
    assert_eq!(
        failure_kinds(&r),
        [(String::new(), "deletion_breaker".to_owned())]
    );
    assert!(r.failures[0].message.contains("no live secret"));
    assert!(!env.side.secrets("kv").await["kv/s10"].pending_deletion);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_sample_and_adopted_secrets() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    for k in ["foreign", "legacy", "listed", "fresh"] {
        bao.put("kv", k, json!({"from": "vault"})).await;
    }
    let foreign_arn = env
        .side
        .create("kv/foreign", "{\"from\":\"someone\"}", &[("team", "x")])
        .await;
    let stray_arn = env.side.create("kv/stray", "{}", &[]).await;
    // As the sample left it: tag `version`, no owner tag.
    let legacy_arn = env
        .side
        .create("kv/legacy", "{\"from\":\"sample\"}", &[("version", "1")])
        .await;
    let listed_arn = env.side.create("kv/listed", "{}", &[]).await;

    let mut a = args(&env, "kv");
    a.adopt = vec!["kv/listed".into()];
    a.deletion_policy = DeletionPolicy::Delete;
    a.max_delete_share = 1.0;
    // The sample's replica is never taken over implicitly: a conflict of its own, untouched.
    let r = sync(&env, &a).await;
    assert_eq!((r.created, r.updated), (1, 1), "{}", r.to_text());
    let kinds: Vec<(&str, &str)> = r
        .conflicts
        .iter()
        .map(|c| (c.name.as_str(), c.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [("kv/foreign", "foreign"), ("kv/legacy", "sample_replica")]
    );
    assert!(r.conflicts[1].message.contains("--adopt-sample"));
    assert_eq!(env.side.value("kv/legacy").await, json!({"from": "sample"}));
    assert!(
        !env.side.secrets("kv").await["kv/legacy"]
            .tags
            .contains_key("managed-by")
    );
    // On the operator's word, once.
    a.adopt_sample = true;
    let r = sync(&env, &a).await;
    assert_eq!((r.unchanged, r.updated), (2, 1), "{}", r.to_text());
    a.adopt_sample = false;
    assert_eq!(r.conflicts.len(), 1);
    assert_eq!(
        (r.conflicts[0].name.as_str(), r.conflicts[0].kind.as_str()),
        ("kv/foreign", "foreign")
    );
    assert!(!r.failed(), "a conflict is reported, not failed");

    let seen = env.side.secrets("kv").await;
    assert_eq!(
        env.side.value("kv/foreign").await,
        json!({"from": "someone"})
    );
    assert_eq!(seen["kv/foreign"].arn, foreign_arn);
    assert!(!seen["kv/foreign"].tags.contains_key("managed-by"));
    assert_eq!(seen["kv/stray"].arn, stray_arn, "never touched");
    assert!(!seen["kv/stray"].pending_deletion);
    for (name, arn) in [("kv/legacy", &legacy_arn), ("kv/listed", &listed_arn)] {
        assert_eq!(&seen[name].arn, arn, "adopted in place");
        assert_eq!(seen[name].tags["managed-by"], "vault-secrets-replicator");
        assert_eq!(env.side.value(name).await, json!({"from": "vault"}));
    }
    let r = sync(&env, &a).await;
    assert_eq!((r.unchanged, r.conflicts.len()), (3, 1), "{}", r.to_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_band_change_is_a_conflict_unless_overwrite_is_set() {
    let env = env().await;
    env.bao.enable_kv2("kv").await;
    env.bao.put("kv", "a", json!({"v": "vault"})).await;
    env.bao.put("kv", "b", json!({"v": "vault"})).await;
    let mut a = args(&env, "kv");
    sync(&env, &a).await;
    env.side
        .sm
        .put_secret_value()
        .secret_id("kv/a")
        .secret_string("{\"v\":\"by hand\"}")
        .send()
        .await
        .unwrap();

    let r = sync(&env, &a).await;
    assert_eq!(r.conflicts.len(), 1);
    assert_eq!(
        (r.conflicts[0].name.as_str(), r.conflicts[0].kind.as_str()),
        ("kv/a", "modified_outside")
    );
    assert_eq!(
        e2e::audited_value_reads(&env.bao.audit_log()).len(),
        2,
        "detected without reading values (the 2 reads are the first sync's)"
    );
    assert_eq!(env.side.value("kv/a").await, json!({"v": "by hand"}));

    a.on_modified = OnModified::Overwrite;
    let r = sync(&env, &a).await;
    assert_eq!((r.updated, r.unchanged, r.conflicts.len()), (1, 1, 0));
    assert_eq!(env.side.value("kv/a").await, json!({"v": "vault"}));
    // Vault's version was still in AWS (now AWSPREVIOUS): made current again by a stage move,
    // its value neither read from Vault nor written again.
    assert_eq!(e2e::audited_value_reads(&env.bao.audit_log()).len(), 2);
    assert_eq!(env.side.version_count("kv/a").await, 2);
    assert!(
        !r.aws_requests.contains_key("PutSecretValue"),
        "{:?}",
        r.aws_requests
    );
    a.on_modified = OnModified::Report;
    assert_eq!(sync(&env, &a).await.unchanged, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_secrets_fail_alone_and_the_notice_carries_no_value() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let planted = "PLANTED-VALUE-7f3a9c";
    bao.put("kv", "good", json!({"v": planted})).await;
    bao.put(
        "kv",
        "big",
        json!({"v": format!("{planted}{}", "x".repeat(70_000))}),
    )
    .await;
    bao.put("kv", "bad name", json!({"v": planted})).await;
    bao.put("kv", "looks-abcdef", json!({"v": planted})).await;
    let (topic, queue) = env.side.topic_with_queue("failures").await;
    let mut a = args(&env, "kv");
    a.sns_topic_arn = Some(topic);

    // A dry run sees the same failures and tells nobody.
    a.dry_run = true;
    assert!(sync(&env, &a).await.failed());
    a.dry_run = false;

    let r = sync(&env, &a).await;
    assert_eq!(r.created, 2, "{}", r.to_text());
    assert!(r.failed());
    let mut kinds = failure_kinds(&r);
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("kv/bad name".to_owned(), "invalid_name".to_owned()),
            ("kv/big".to_owned(), "value_too_large".to_owned()),
        ]
    );
    // A name like an ARN suffix (db-backup, redis-master) is replicated, with a warning.
    assert_eq!(
        r.warnings
            .iter()
            .map(|w| (w.name.as_str(), w.kind.as_str()))
            .collect::<Vec<_>>(),
        [("kv/looks-abcdef", "arn_suffix_name")]
    );
    assert_eq!(env.side.value("kv/looks-abcdef").await["v"], planted);
    assert_eq!(env.side.value("kv/good").await["v"], planted);
    assert_eq!(env.side.secrets("kv").await.len(), 2);

    let notices = env.side.notices(&queue, 1).await;
    assert_eq!(notices.len(), 1, "one notice per run");
    // The whole format: the sample's opening, the counts, then every failure as JSON.
    let head = format!(
        "Account: {}, Region: {}. vault-secrets-replicator run failed (2 created, 0 updated, 0 deleted before the failures). Failed to create/update the following secrets: ",
        e2e::ACCOUNT,
        e2e::REGION
    );
    let listed: serde_json::Value = serde_json::from_str(
        notices[0]
            .strip_prefix(&head)
            .unwrap_or_else(|| panic!("{}", notices[0])),
    )
    .unwrap();
    let expected: Vec<serde_json::Value> = r
        .failures
        .iter()
        .map(|p| json!({"secretName": p.name, "kind": p.kind, "error": p.message}))
        .collect();
    assert_eq!(listed, serde_json::Value::Array(expected));
    assert!(!notices[0].contains(planted));

    // The next run: the ARN-suffix name is found again by its full ARN, unchanged.
    let again = sync(&env, &a).await;
    assert_eq!(
        (again.unchanged, again.created),
        (2, 0),
        "{}",
        again.to_text()
    );
    assert!(!r.to_json().contains(planted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_down_and_a_revoked_token_fail_the_run_with_a_notice() {
    let env = env().await;
    let (topic, queue) = env.side.topic_with_queue("failures").await;
    let mut a = args(&env, "kv");
    a.sns_topic_arn = Some(topic);
    a.vault_addr = Some(format!("http://{}", e2e::CLOSED_ADDRESS));
    let r = sync(&env, &a).await;
    assert_eq!(
        failure_kinds(&r),
        [(String::new(), "vault_unreachable".to_owned())]
    );

    let token = env
        .bao
        .token_with_policy(
            "reader",
            "path \"*\" { capabilities = [\"read\", \"list\"] }",
        )
        .await;
    env.bao
        .api("POST", "auth/token/revoke", Some(json!({ "token": token })))
        .await;
    a.vault_addr = Some(env.bao.addr.clone());
    a.vault_token = Some(token.as_str().into());
    let r = sync(&env, &a).await;
    assert_eq!(
        failure_kinds(&r),
        [(String::new(), "vault_permission_denied".to_owned())]
    );
    assert!(env.side.secrets("kv").await.is_empty());

    let notices = env.side.notices(&queue, 2).await;
    assert_eq!(notices.len(), 2);
    assert!(notices.iter().any(|n| n.contains("vault_unreachable")));
    assert!(
        notices
            .iter()
            .any(|n| n.contains("vault_permission_denied"))
    );
    assert!(
        notices.iter().all(|n| !n.contains(&token)),
        "no token in a notice"
    );

    // TLS settings that cannot work: their own failure kind, before any request.
    let bad_ca = env.bao.dir.path().join("not-a-ca.pem");
    std::fs::write(&bad_ca, "not a certificate").unwrap();
    a.vault_cacert = Some(bad_ca);
    let r = sync(&env, &a).await;
    assert_eq!(failure_kinds(&r), [(String::new(), "vault_tls".to_owned())]);
    a.vault_cacert = Some(env.bao.dir.path().join("missing.pem"));
    let r = sync(&env, &a).await;
    assert_eq!(failure_kinds(&r), [(String::new(), "vault_tls".to_owned())]);
    assert!(
        r.failures[0].message.contains("missing.pem"),
        "{}",
        r.to_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_mount_or_a_missing_path_is_not_an_error_and_a_missing_mount_is() {
    let env = env().await;
    env.bao.enable_kv2("empty").await;
    let r = sync(&env, &args(&env, "empty")).await;
    assert!(!r.failed(), "{}", r.to_text());
    assert_eq!((r.created, r.unchanged), (0, 0));

    // A path nobody wrote under (Vault answers 404 with no error): nothing to replicate.
    env.bao.put("empty", "elsewhere/a", json!({"k": 1})).await;
    let mut a = args(&env, "empty");
    a.path = "not/written/yet".into();
    let r = sync(&env, &a).await;
    assert!(!r.failed(), "{}", r.to_text());
    assert_eq!((r.created, r.unchanged), (0, 0));
    assert!(env.side.secrets("empty").await.is_empty());

    // A KV v1 mount answers a KV v2 listing with "not found": a failure that says how to
    // upgrade, never an "empty Vault".
    env.bao
        .api(
            "POST",
            "sys/mounts/old",
            Some(json!({"type": "kv", "options": {"version": "1"}})),
        )
        .await;
    env.bao.api("POST", "old/x", Some(json!({"k": "v"}))).await;
    let r = sync(&env, &args(&env, "old")).await;
    assert_eq!(
        failure_kinds(&r),
        [(String::new(), "vault_mount_not_kv2".to_owned())]
    );
    assert!(
        r.failures[0].message.contains("KV version 1")
            && r.failures[0].message.contains("enable-versioning old/"),
        "{}",
        r.to_text()
    );
    // Another engine at the mount: named too.
    env.bao
        .api("POST", "sys/mounts/tr", Some(json!({"type": "transit"})))
        .await;
    let r = sync(&env, &args(&env, "tr")).await;
    assert_eq!(
        failure_kinds(&r),
        [(String::new(), "vault_mount_not_kv2".to_owned())]
    );

    // No mount at all: a failure that names it, never an "empty Vault".
    let r = sync(&env, &args(&env, "no-such-mount")).await;
    assert!(r.failed(), "{}", r.to_text());
    assert_eq!(r.failures.len(), 1, "{}", r.to_text());
    assert_eq!(r.failures[0].name, "");
    assert!(
        r.failures[0].message.contains("no-such-mount"),
        "{}",
        r.to_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bulk_listing_metadata_is_read_per_secret() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    for k in ["a", "f/b", "f/g/c"] {
        bao.put("kv", k, json!({"k": k})).await;
    }
    // The read-only policy of the sample: no detailed-metadata, as on HashiCorp Vault.
    let token = bao
        .token_with_policy(
            "replicator",
            "path \"kv/data/*\" { capabilities = [\"read\"] }\npath \"kv/metadata/*\" { capabilities = [\"read\", \"list\"] }",
        )
        .await;
    let mut a = args(&env, "kv");
    a.vault_token = Some(token.into());
    let r = sync(&env, &a).await;
    assert_eq!(r.created, 3, "{}", r.to_text());
    assert!(!r.bulk_metadata);
    assert_eq!(r.vault_requests["read_metadata"], 3);
    assert_eq!(r.vault_requests["list"], 3, "one LIST per folder");
    assert_eq!(e2e::audited_value_reads(&bao.audit_log()).len(), 3);
    let r = sync(&env, &a).await;
    assert_eq!(r.unchanged, 3);
    assert_eq!(
        e2e::audited_value_reads(&bao.audit_log()).len(),
        3,
        "the no-op run read no value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_path_of_another_mount_and_a_dry_run() {
    let env = env().await;
    let bao = &env.bao;
    let planted = "PLANTED-dry-run-5e1f";
    bao.put("secret", "apps/web/db", json!({"k": planted}))
        .await;
    bao.put("secret", "apps/web/cache/redis", json!({"k": 2}))
        .await;
    bao.put("secret", "apps/other", json!({"k": 3})).await;
    let mut a = args(&env, "web");
    a.mount = Some("secret".into());
    a.path = "/apps/web/".into();
    a.dry_run = true;
    let dry = sync(&env, &a).await;
    assert_eq!(dry.created, 2);
    assert_eq!(dry.plan.as_ref().map(Vec::len), Some(2));
    assert!(
        env.side.secrets("web").await.is_empty(),
        "a dry run writes nothing"
    );
    assert!(
        e2e::audited_value_reads(&bao.audit_log()).is_empty(),
        "a dry run reads no value"
    );
    for shown in [dry.to_json(), dry.to_text()] {
        assert!(shown.contains("web/db"), "the plan names the secret");
        assert!(!shown.contains(planted), "the plan shows no value");
    }

    a.dry_run = false;
    let r = sync(&env, &a).await;
    assert_eq!(r.created, 2);
    let seen = env.side.secrets("web").await;
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["web/cache/redis", "web/db"]
    );
    assert_eq!(seen["web/db"].tags["vault-mount"], "secret");
    assert_eq!(seen["web/db"].tags["vault-path"], "apps/web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listing_page_is_read_past_one_hundred_replicas() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("many").await;
    // moto, like AWS, answers ListSecrets 100 secrets a page at most.
    let n: u64 = 130;
    for i in 0..n {
        bao.put("many", &format!("f{}/s{i:03}", i % 3), json!({"i": i}))
            .await;
    }
    let a = args(&env, "many");
    let first = sync(&env, &a).await;
    assert_eq!(
        (first.created, first.failures.len()),
        (n, 0),
        "{}",
        first.to_text()
    );
    assert_eq!(env.side.secrets("many").await.len() as u64, n);

    // Every replica on every page is seen: nothing created twice, nothing updated.
    let second = sync(&env, &a).await;
    assert_eq!(
        (second.unchanged, second.created, second.updated),
        (n, 0, 0),
        "{}",
        second.to_text()
    );
    assert!(
        second.aws_requests["ListSecrets"] >= 2,
        "{:?}",
        second.aws_requests
    );
    assert_eq!(
        e2e::audited_value_reads(&bao.audit_log()).len() as u64,
        n,
        "the second run read no value"
    );
    for i in [0, 99, 100, n - 1] {
        let name = format!("many/f{}/s{i:03}", i % 3);
        assert_eq!(env.side.version_count(&name).await, 1, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tag_write_does_not_freeze_the_replica() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "a", json!({"v": 1})).await;
    let a = args(&env, "kv");
    assert_eq!(sync(&env, &a).await.created, 1);

    // Version 2 reaches AWS as the replicator writes it (its deterministic version id), but the
    // TagResource that follows is lost: the tags still say version 1.
    bao.put("kv", "a", json!({"v": 2})).await;
    let meta = bao.api("GET", "kv/metadata/a", None).await;
    let created = meta["data"]["versions"]["2"]["created_time"]
        .as_str()
        .unwrap();
    env.side
        .sm
        .put_secret_value()
        .secret_id("kv/a")
        .secret_string(json!({"v": 2}).to_string())
        .client_request_token(replicator::plan::version_token("kv", "a", 2, created))
        .send()
        .await
        .unwrap();
    assert_eq!(env.side.secrets("kv").await["kv/a"].tags["version"], "1");

    // Vault moves on: the replica follows instead of turning into a silent conflict.
    bao.put("kv", "a", json!({"v": 3})).await;
    let r = sync(&env, &a).await;
    assert_eq!(
        (r.updated, r.conflicts.len(), r.failures.len()),
        (1, 0, 0),
        "{}",
        r.to_text()
    );
    assert_eq!(env.side.value("kv/a").await, json!({"v": 3}));
    assert_eq!(env.side.secrets("kv").await["kv/a"].tags["version"], "3");
    assert_eq!(
        env.side.version_count("kv/a").await,
        3,
        "one AWS version per Vault version"
    );
    assert_eq!(sync(&env, &a).await.unchanged, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_failure_still_sends_one_notice_under_the_sns_limit() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    // 800 secrets whose names AWS refuses, each failure a few hundred bytes: listed in full,
    // the notice would pass SNS's 256 KB and be refused, and nobody would hear of the run.
    let padding = "p".repeat(240);
    for i in 0..800 {
        bao.put("kv", &format!("bad name {i:04} {padding}"), json!({"k": i}))
            .await;
    }
    bao.put("kv", "good", json!({"k": "fine"})).await;
    let (topic, queue) = env.side.topic_with_queue("failures").await;
    let mut a = args(&env, "kv");
    a.sns_topic_arn = Some(topic);
    let r = sync(&env, &a).await;
    assert_eq!((r.created, r.failures.len()), (1, 800));
    assert!(
        r.failures.iter().all(|p| p.kind == "invalid_name"),
        "the notice itself was sent: {:?}",
        r.failures.iter().find(|p| p.kind != "invalid_name")
    );
    let notices = env.side.notices(&queue, 1).await;
    assert_eq!(notices.len(), 1);
    let n = &notices[0];
    assert!(n.len() < 256 * 1024);
    assert_eq!(n.matches("\"secretName\"").count(), 50);
    assert!(
        n.contains("and 750 more not listed; 800 failures in all: 800 invalid_name"),
        "{}",
        &n[n.len().saturating_sub(400)..]
    );
}

/// A Vault policy that lets the replicator read the mount `kv` but its folder `private/`.
const NO_PRIVATE: &str = "path \"kv/data/*\" { capabilities = [\"read\"] }\npath \"kv/metadata/*\" { capabilities = [\"read\", \"list\"] }\npath \"kv/detailed-metadata/*\" { capabilities = [\"list\"] }\npath \"kv/metadata/private/*\" { capabilities = [\"deny\"] }\npath \"kv/detailed-metadata/private/*\" { capabilities = [\"deny\"] }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_vault_will_not_list_fails_alone_and_is_never_taken_as_deleted() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    for k in ["a", "private/x", "pub/y", "pub/z"] {
        bao.put("kv", k, json!({"k": k})).await;
    }
    let mut a = args(&env, "kv");
    a.deletion_policy = DeletionPolicy::Delete;
    a.max_delete_share = 1.0;
    assert_eq!(sync(&env, &a).await.created, 4);

    // A policy that keeps the replicator out of one folder; a secret deleted elsewhere.
    let token = bao.token_with_policy("no-private", NO_PRIVATE).await;
    bao.api("DELETE", "kv/metadata/pub/y", None).await;
    bao.put("kv", "pub/z", json!({"k": "z2"})).await;
    a.vault_token = Some(token.into());
    let r = sync(&env, &a).await;
    assert_eq!(
        failure_kinds(&r),
        [(
            "kv/private/".to_owned(),
            "vault_permission_denied".to_owned()
        )]
    );
    assert!(
        r.failures[0].message.contains("kv/private/"),
        "{}",
        r.to_text()
    );
    // The rest is replicated: the update, the deletion.
    assert_eq!(
        (r.updated, r.deleted, r.unchanged),
        (1, 1, 1),
        "{}",
        r.to_text()
    );
    assert_eq!(env.side.value("kv/pub/z").await, json!({"k": "z2"}));
    let seen = env.side.secrets("kv").await;
    assert!(seen["kv/pub/y"].pending_deletion);
    assert!(
        !seen["kv/private/x"].pending_deletion,
        "an unlisted folder is never taken as deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_runs_converge_with_one_aws_version_per_vault_version() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    for i in 0..40 {
        bao.put("kv", &format!("s{i:02}"), json!({"v": 1})).await;
    }
    let a = args(&env, "kv");
    // Two runs at once (a schedule firing during a long run, or two operators): both plan the
    // same creates; the deterministic version ids make the loser's writes no-ops.
    let (r1, r2) = tokio::join!(sync(&env, &a), sync(&env, &a));
    assert!(
        r1.created + r2.created + r1.updated + r2.updated >= 40,
        "{}{}",
        r1.to_text(),
        r2.to_text()
    );
    for i in 0..40 {
        bao.put("kv", &format!("s{i:02}"), json!({"v": 2})).await;
    }
    let (u1, u2) = tokio::join!(sync(&env, &a), sync(&env, &a));
    for r in [&r1, &r2, &u1, &u2] {
        assert!(
            r.conflicts.is_empty(),
            "no lasting conflict: {}",
            r.to_text()
        );
    }
    let settled = sync(&env, &a).await;
    assert_eq!(
        (
            settled.unchanged,
            settled.failures.len(),
            settled.conflicts.len()
        ),
        (40, 0, 0),
        "{}",
        settled.to_text()
    );
    for i in 0..40 {
        let name = format!("kv/s{i:02}");
        assert_eq!(env.side.version_count(&name).await, 2, "{name}");
        assert_eq!(env.side.value(&name).await, json!({"v": 2}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_meets_its_own_deleted_secret_brings_it_back() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "a", json!({"k": 1})).await;
    bao.put("kv", "keep", json!({"k": 1})).await;
    let mut a = args(&env, "kv");
    a.deletion_policy = DeletionPolicy::Delete;
    a.max_delete_share = 1.0;
    assert_eq!(sync(&env, &a).await.created, 2);
    bao.api("DELETE", "kv/metadata/a", None).await;
    assert_eq!(sync(&env, &a).await.deleted, 1);
    bao.put("kv", "a", json!({"k": 2})).await;

    // A listing that has not caught up (ListSecrets lags): `kv/a` is missing from it, so the
    // plan creates it; the create finds the tool's own secret, scheduled for deletion, and the
    // run plans that name again from what is there: restored, with the new version.
    let proxy = e2e::aws_proxy::AwsProxy::start(&env.moto.url).await;
    proxy.set(vec![e2e::aws_proxy::Rewrite::HideFromListing(
        "kv/a".into(),
    )]);
    let lagging = env.moto.sdk_config_at(&proxy.url).await;
    let report = replicator::run::run(&a, &lagging).await;
    assert_eq!(
        (
            report.created,
            report.updated,
            report.conflicts.len(),
            report.failures.len()
        ),
        (0, 1, 0, 0),
        "{}",
        report.to_text()
    );
    let writes: Vec<String> = proxy.writes().into_iter().map(|(op, _)| op).collect();
    assert_eq!(
        writes,
        [
            "CreateSecret",
            "RestoreSecret",
            "PutSecretValue",
            "UpdateSecretVersionStage",
            "TagResource"
        ],
        "refused, then planned again from what is there"
    );
    let seen = env.side.secrets("kv").await;
    assert!(!seen["kv/a"].pending_deletion, "brought back");
    assert_eq!(seen["kv/a"].tags["version"], "1");
    assert_eq!(env.side.value("kv/a").await, json!({"k": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_prefixes_of_one_mount_each_keep_to_their_own() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "x", json!({"k": 1})).await;
    bao.put("kv", "y", json!({"k": 1})).await;
    let mut outer = args(&env, "app");
    outer.mount = Some("kv".into());
    outer.deletion_policy = DeletionPolicy::Delete;
    outer.max_delete_share = 1.0;
    let mut inner = outer.clone();
    inner.prefix = "app/mirror".into();
    assert_eq!(sync(&env, &outer).await.created, 2);
    assert_eq!(sync(&env, &inner).await.created, 2);
    // The outer sync lists `app/…`, the inner one's replicas included: not its own, so neither
    // orphans nor deletions nor conflicts.
    for (who, a) in [("outer", &outer), ("inner", &inner), ("outer", &outer)] {
        let r = sync(&env, a).await;
        assert_eq!(
            (
                r.unchanged,
                r.deleted,
                r.orphans.len(),
                r.conflicts.len(),
                r.failures.len()
            ),
            (2, 0, 0, 0, 0),
            "{who}: {}",
            r.to_text()
        );
    }
    let seen = env.side.secrets("app").await;
    assert_eq!(seen.len(), 4);
    assert!(seen.values().all(|s| !s.pending_deletion));
    assert_eq!(seen["app/mirror/x"].tags["replica-prefix"], "app/mirror");
    assert_eq!(seen["app/x"].tags["replica-prefix"], "app");

    // A replica written before the prefix tag existed gets it, without a value read.
    env.side
        .sm
        .untag_resource()
        .secret_id("app/y")
        .tag_keys("replica-prefix")
        .send()
        .await
        .unwrap();
    let reads = e2e::audited_value_reads(&bao.audit_log()).len();
    let r = sync(&env, &outer).await;
    assert_eq!((r.updated, r.unchanged), (1, 1), "{}", r.to_text());
    assert_eq!(e2e::audited_value_reads(&bao.audit_log()).len(), reads);
    assert_eq!(
        env.side.secrets("app").await["app/y"].tags["replica-prefix"],
        "app"
    );
    assert_eq!(env.side.version_count("app/y").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_meets_its_deadline_ends_partial_and_the_next_goes_on() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    for i in 0..60 {
        bao.put("kv", &format!("s{i:02}"), json!({"i": i})).await;
    }
    let (topic, queue) = env.side.topic_with_queue("failures").await;
    let mut a = args(&env, "kv");
    a.sns_topic_arn = Some(topic);
    // The budget is sized from this machine, in this test: a dry run takes the walk and the
    // listing; the real run gets that, rounded up, and 2 s of writes at 10 a second, while
    // the 60 writes need 6 s.
    a.dry_run = true;
    let started = std::time::Instant::now();
    let dry = sync(&env, &a).await;
    assert!(!dry.failed(), "{}", dry.to_text());
    let walk = started.elapsed().as_secs() + 1;
    a.dry_run = false;
    a.writes_per_second = 10;
    a.max_duration = Some(walk + 2);
    let r = sync(&env, &a).await;
    assert!(r.partial, "{}", r.to_text());
    assert!(r.remaining > 0 && r.created > 0, "{}", r.to_text());
    assert_eq!(r.created + r.remaining, 60);
    assert!(!r.failed(), "partial is a success: {}", r.to_text());
    assert!(r.to_text().contains("partial"));
    assert_eq!(env.side.secrets("kv").await.len() as u64, r.created);

    a.max_duration = None;
    a.writes_per_second = 50;
    let rest = sync(&env, &a).await;
    assert!(!rest.partial && !rest.failed(), "{}", rest.to_text());
    assert_eq!((rest.created, rest.unchanged), (r.remaining, r.created));
    assert_eq!(env.side.secrets("kv").await.len(), 60);
    assert!(
        env.side.notices(&queue, 0).await.is_empty(),
        "no notice for a partial run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ranged_listing_finds_exactly_what_one_page_chain_finds() {
    let env = env().await;
    let sm = replicator::aws::SecretsManager::new(&env.aws, 50, Default::default());
    // What Vault says exists steers the split: deep shared prefixes, so prefixes are split
    // several times over.
    let expected: Vec<String> = (0..40)
        .map(|i| format!("ranged/team{}/svc{}/s{i}", i % 2, i % 4))
        .collect();
    // What AWS holds: most of those, plus names only AWS has — a name equal to a split prefix,
    // names beside the shared ones, every odd character, one scheduled for deletion — and names
    // outside the prefix that a careless prefix match would take.
    let mut held: Vec<String> = expected.iter().skip(3).cloned().collect();
    held.extend(
        [
            "ranged/team",
            "ranged/team0",
            "ranged/team0/",
            "ranged/tea",
            "ranged/Team0/x",
            "ranged/team0+x",
            "ranged/team1/svc1/s1-stale",
            "ranged/=@._-",
            "ranged/z",
            "ranged/",
        ]
        .map(String::from),
    );
    let pending = "ranged/team1/gone";
    held.push(pending.to_owned());
    let outside = ["ranged2/team0/a", "rangedteam", "other/ranged/team0"];
    futures::future::join_all(
        held.iter()
            .map(String::as_str)
            .chain(outside)
            .map(|name| env.side.create(name, "{}", &[])),
    )
    .await;
    aws_sdk_secretsmanager::Client::new(&env.aws)
        .delete_secret()
        .secret_id(pending)
        .send()
        .await
        .unwrap();

    let chain = sm.list("ranged").await.unwrap();
    let partition =
        replicator::listing::partition("ranged/", expected.iter().map(String::as_str), 3);
    assert!(
        partition.ranges.len() > 5 && partition.exact.len() > 3,
        "{partition:?}"
    );
    let ranged = sm.list_partitioned(&partition, 4, 0).await.unwrap();

    let mut want = held.clone();
    want.sort();
    let names: Vec<&str> = ranged.iter().map(|s| &*s.name).collect();
    assert_eq!(
        names, want,
        "each held name once, nothing outside the prefix"
    );
    let mut chain_sorted = chain.clone();
    chain_sorted.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(ranged, chain_sorted, "the same secrets, tags and versions");
    assert!(
        ranged
            .iter()
            .any(|s| *s.name == *pending && s.pending_deletion)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bulk_listing_the_names_are_known_before_the_metadata_reads_end() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let n = 120;
    for i in 0..n {
        bao.put("kv", &format!("f{}/s{i}", i % 4), json!({"i": i}))
            .await;
    }
    let token = bao
        .token_with_policy(
            "replicator",
            "path \"kv/data/*\" { capabilities = [\"read\"] }\npath \"kv/metadata/*\" { capabilities = [\"read\", \"list\"] }",
        )
        .await;
    let vault = replicator::vault::VaultClient::new(
        &bao.addr,
        replicator::vault::VaultLogin::Token(token.into()),
        None,
        4,
    )
    .unwrap();
    let progress = replicator::progress::Progress::default();
    let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let counters = vault.counters.clone();
    let watch = async move {
        let names = rx.await.unwrap();
        let reads_then = counters
            .snapshot()
            .get("read_metadata")
            .copied()
            .unwrap_or(0);
        (names, reads_then)
    };
    let (inventory, (mut names, reads_then)) = tokio::join!(
        replicator::inventory::walk_telling_names(
            &vault,
            "kv",
            "",
            4,
            classify(now),
            &progress,
            Some(tx)
        ),
        watch
    );
    let inventory = inventory.unwrap();
    assert!(!inventory.bulk_metadata);
    names.sort();
    let paths: Vec<String> = inventory
        .entries
        .iter()
        .map(|e| e.rel_path.to_string())
        .collect();
    assert_eq!(names, paths, "every name, once the folders are listed");
    assert!(
        reads_then < n,
        "the names came while metadata reads were still to do ({reads_then} of {n} done)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_is_sent_with_every_request_and_replicates_that_namespace_only() {
    let env = env().await;
    let bao = &env.bao;
    let http = reqwest::Client::new();
    let call = |ns: Option<&'static str>,
                method: reqwest::Method,
                path: &'static str,
                body: serde_json::Value| {
        let mut req = http
            .request(method, format!("{}/v1/{path}", bao.addr))
            .header("X-Vault-Token", e2e::ROOT_TOKEN)
            .json(&body);
        if let Some(ns) = ns {
            req = req.header("X-Vault-Namespace", ns);
        }
        async move {
            let resp = req.send().await.unwrap();
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
        }
    };
    call(
        None,
        reqwest::Method::POST,
        "sys/namespaces/team",
        json!({}),
    )
    .await;
    // The same mount name in the root namespace and in `team`, each with its own secret.
    bao.enable_kv2("kv").await;
    bao.put("kv", "root-only", json!({"v": 1})).await;
    call(
        Some("team"),
        reqwest::Method::POST,
        "sys/mounts/kv",
        json!({"type": "kv", "options": {"version": "2"}}),
    )
    .await;
    // A new KV v2 mount answers 400 for a moment while it upgrades.
    let mut written = false;
    for _ in 0..100 {
        let resp = http
            .post(format!("{}/v1/kv/data/team-only", bao.addr))
            .header("X-Vault-Token", e2e::ROOT_TOKEN)
            .header("X-Vault-Namespace", "team")
            .json(&json!({"data": {"v": 2}}))
            .send()
            .await
            .unwrap();
        if resp.status().is_success() {
            written = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(written, "the namespace's mount never took the write");

    let mut a = args(&env, "ns");
    a.mount = Some("kv".into());
    a.vault_namespace = Some("team".into());
    let r = sync(&env, &a).await;
    assert_eq!((r.created, r.failures.len()), (1, 0), "{}", r.to_text());
    let seen = env.side.secrets("ns").await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["ns/team-only"]);
    assert_eq!(env.side.value("ns/team-only").await, json!({"v": 2}));
    // Without it: the root namespace's mount.
    a.vault_namespace = None;
    let mut b = a.clone();
    b.prefix = "root".into();
    let r = sync(&env, &b).await;
    assert_eq!(r.created, 1, "{}", r.to_text());
    assert_eq!(
        env.side.secrets("root").await.keys().collect::<Vec<_>>(),
        ["root/root-only"]
    );
}

fn classify(now: aws_smithy_types::DateTime) -> replicator::inventory::Classify<'static> {
    replicator::inventory::Classify {
        now,
        latest_deleted: replicator::config::LatestDeleted::Fallback,
        selection: &contract::select::EVERY_SECRET,
    }
}

/// The last folder the walk lists cannot be listed: the walk still names its secrets to the AWS
/// listing of a prefix of more than one page, which is then read as it is (it used to wait for
/// names that never came and take AWS for empty: every replica planned as a create).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_folder_vault_will_not_list_still_guides_a_full_aws_listing() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    futures::future::join_all(
        (0..120).map(|i| async move { bao.put("kv", &format!("s{i:03}"), json!({"i": i})).await }),
    )
    .await;
    bao.put("kv", "private/x", json!({"k": "x"})).await;
    let mut a = args(&env, "kv");
    assert_eq!(sync(&env, &a).await.created, 121);
    let token = bao.token_with_policy("no-private-last", NO_PRIVATE).await;
    a.vault_token = Some(token.into());
    // The root's listing comes first; the one folder under it, denied, is the walk's last task.
    let r = sync(&env, &a).await;
    assert_eq!(
        failure_kinds(&r),
        [(
            "kv/private/".to_owned(),
            "vault_permission_denied".to_owned()
        )],
        "{}",
        r.to_text()
    );
    assert_eq!((r.unchanged, r.created), (120, 0), "{}", r.to_text());
    assert!(
        !r.aws_requests.contains_key("CreateSecret"),
        "no replica taken for missing: {:?}",
        r.aws_requests
    );
}

/// The change events of every write, as an EventBridge rule delivers them to an SQS queue:
/// (detail-type, detail), in the order of the replicas' names.
async fn events_received(
    env: &common::Env,
    queue: &str,
    expected: usize,
) -> Vec<(String, serde_json::Value)> {
    let mut got: Vec<(String, serde_json::Value)> = env
        .side
        .notices(queue, expected)
        .await
        .iter()
        .map(|body| {
            let event: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(event["source"], "vault-secrets-replicator", "{event}");
            assert_eq!(
                event["resources"],
                json!([event["detail"]["arn"]]),
                "{event}"
            );
            (
                event["detail-type"].as_str().unwrap().to_owned(),
                event["detail"].clone(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.1["name"].as_str().cmp(&b.1["name"].as_str()));
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_replicated_change_puts_one_event_and_none_holds_a_value() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let queue = env.side.bus_with_queue("default", "changes").await;
    for k in ["a", "b", "c"] {
        bao.put("kv", k, json!({"password": format!("v4lue-{k}-1")}))
            .await;
    }
    let mut a = args(&env, "kv");
    a.events_bus = Some("default".into());
    a.deletion_policy = DeletionPolicy::Delete;
    a.max_delete_share = 1.0;
    a.stack = Some("s".into());

    let first = sync(&env, &a).await;
    assert_eq!(
        (first.created, first.events_put),
        (3, 3),
        "{}",
        first.to_text()
    );
    let arns: std::collections::BTreeMap<String, String> = env
        .side
        .secrets("kv")
        .await
        .into_values()
        .map(|s| (s.name, s.arn))
        .collect();
    let created = events_received(&env, &queue, 3).await;
    assert_eq!(created.len(), 3, "{created:?}");
    for ((detail_type, detail), k) in created.iter().zip(["a", "b", "c"]) {
        assert_eq!(detail_type, "Replica Created");
        assert_eq!(
            *detail,
            json!({
                "action": "created",
                "name": format!("kv/{k}"),
                "arn": arns[&format!("kv/{k}")],
                "stack": "s",
                "vault_mount": "kv",
                "vault_path": k,
                "vault_version": 1,
            })
        );
    }

    // Nothing changed: no event.
    assert_eq!(sync(&env, &a).await.events_put, 0);
    // A new version, a deletion; then the deleted one back (restored).
    bao.put("kv", "a", json!({"password": "v4lue-a-2"})).await;
    bao.api("DELETE", "kv/metadata/b", None).await;
    let second = sync(&env, &a).await;
    assert_eq!(
        (second.updated, second.deleted, second.events_put),
        (1, 1, 2),
        "{}",
        second.to_text()
    );
    bao.put("kv", "b", json!({"password": "v4lue-b-2"})).await;
    assert_eq!(sync(&env, &a).await.events_put, 1);
    let changed = events_received(&env, &queue, 3).await;
    let summary: Vec<(&str, &str, &str, Option<u64>)> = changed
        .iter()
        .map(|(t, d)| {
            (
                t.as_str(),
                d["action"].as_str().unwrap(),
                d["name"].as_str().unwrap(),
                d["vault_version"].as_u64(),
            )
        })
        .collect();
    let mut want = vec![
        ("Replica Updated", "updated", "kv/a", Some(2)),
        ("Replica Deleted", "deleted", "kv/b", None),
        ("Replica Restored", "restored", "kv/b", Some(1)),
    ];
    want.sort_by(|x, y| x.2.cmp(y.2).then(x.0.cmp(y.0)));
    let mut summary = summary;
    summary.sort_by(|x, y| x.2.cmp(y.2).then(x.0.cmp(y.0)));
    assert_eq!(summary, want, "{changed:?}");
    assert!(
        changed
            .iter()
            .all(|(_, d)| d["arn"] == arns[d["name"].as_str().unwrap()])
    );

    // Tags alone change no value: no event.
    a.tags = vec!["team=core".into()];
    let tagged = sync(&env, &a).await;
    assert_eq!(
        (tagged.updated, tagged.events_put),
        (3, 0),
        "{}",
        tagged.to_text()
    );

    // A bus that is not there: the writes stand, each undelivered event fails its secret.
    a.events_bus = Some("missing".into());
    bao.put("kv", "c", json!({"password": "v4lue-c-2"})).await;
    let lost = sync(&env, &a).await;
    assert_eq!(
        (lost.updated, lost.events_put),
        (1, 0),
        "{}",
        lost.to_text()
    );
    assert_eq!(
        failure_kinds(&lost),
        [("kv/c".to_owned(), "event_not_delivered".to_owned())]
    );
    assert!(
        lost.failures[0].message.contains("missing"),
        "{:?}",
        lost.failures
    );
    assert_eq!(
        env.side.value("kv/c").await,
        json!({"password": "v4lue-c-2"})
    );

    // No event, nor the report, holds a value.
    let seen = format!("{created:?}{changed:?}{}", lost.to_json());
    assert!(!seen.contains("v4lue"), "{seen}");
}
