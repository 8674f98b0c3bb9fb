//! The engine's promises on OpenBao + moto: a replica is never lost (a stale name goes only after
//! its successor is written; a tag removed by hand is repaired), never moved backwards (a stale
//! writer, a restored Vault), and deletions keep to the breaker whatever starts the run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{args, env, failure_kinds, sync};
use e2e::aws_proxy::{AwsProxy, Rewrite};
use replicator::config::{DeletionPolicy, Granularity, LatestDeleted};
use replicator::progress::Progress;
use replicator::report::Report;
use serde_json::json;

fn live(seen: &std::collections::BTreeMap<String, e2e::aws_side::Seen>) -> Vec<&str> {
    seen.values()
        .filter(|s| !s.pending_deletion)
        .map(|s| s.name.as_str())
        .collect()
}

fn warning_kinds(r: &Report) -> Vec<(String, String)> {
    r.warnings
        .iter()
        .map(|p| (p.name.clone(), p.kind.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_never_deletes_the_only_replica() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "a", json!({"p": "1"})).await;
    bao.put("kv", "b", json!({"p": "2"})).await;
    bao.put("kv", "c", json!({"p": "3"})).await;
    let mut a = args(&env, "kv");
    a.deletion_policy = DeletionPolicy::Delete;
    a.max_delete_share = 1.0;
    assert_eq!(sync(&env, &a).await.created, 3);

    // New names: `a`'s is held by someone else's secret, `b`'s CreateSecret fails in AWS; `c`'s
    // goes through. Only `c`'s old name is deleted, after its new one is written.
    env.side.create("kv/new/a", "{}", &[("owner", "ops")]).await;
    let proxy = AwsProxy::start(&env.moto.url).await;
    proxy.set(vec![Rewrite::Fail {
        op: "CreateSecret".into(),
        name: "kv/new/b".into(),
        code: "LimitExceededException".into(),
    }]);
    let through = env.moto.sdk_config_at(&proxy.url).await;
    a.name_template = Some("new/{path}".into());
    let r = replicator::run::run(&a, &through).await;
    assert_eq!((r.created, r.deleted), (1, 1), "{}", r.to_text());
    assert_eq!(
        failure_kinds(&r),
        [("kv/new/b".to_owned(), "aws_invalid_request".to_owned())],
        "{}",
        r.to_text()
    );
    assert_eq!(r.conflicts[0].name, "kv/new/a");
    let kept = warning_kinds(&r);
    assert!(
        kept.contains(&("kv/a".to_owned(), "stale_name_kept".to_owned())),
        "{kept:?}"
    );
    assert!(
        kept.contains(&("kv/b".to_owned(), "stale_name_kept".to_owned())),
        "{kept:?}"
    );
    assert_eq!(
        live(&env.side.secrets("kv").await),
        ["kv/a", "kv/b", "kv/new/a", "kv/new/c"]
    );
    let writes = proxy.writes();
    let create_c = writes.iter().position(|w| w.1 == "kv/new/c").unwrap();
    let delete_c = writes.iter().position(|w| w.0 == "DeleteSecret").unwrap();
    assert!(create_c < delete_c, "{writes:?}");
    // Once the way is clear, the next run finishes the move.
    env.side.delete_now("kv/new/a").await;
    let r = sync(&env, &a).await;
    assert_eq!(
        (r.created, r.deleted, r.failures.len()),
        (2, 2, 0),
        "{}",
        r.to_text()
    );
    assert_eq!(
        live(&env.side.secrets("kv").await),
        ["kv/new/a", "kv/new/b", "kv/new/c"]
    );

    // One replica per key instead of one per secret: a key AWS refuses (a space) keeps the
    // whole-secret replica.
    bao.enable_kv2("kv2").await;
    bao.put("kv2", "d", json!({"user": "u", "bad key": "x"}))
        .await;
    let mut k = args(&env, "kv2");
    k.deletion_policy = DeletionPolicy::Delete;
    k.max_delete_share = 1.0;
    assert_eq!(sync(&env, &k).await.created, 1);
    k.granularity = Granularity::SecretKey;
    let r = sync(&env, &k).await;
    assert_eq!(
        failure_kinds(&r),
        [("kv2/d/bad key".to_owned(), "invalid_name".to_owned())],
        "{}",
        r.to_text()
    );
    assert_eq!(r.created, 1);
    assert_eq!(
        live(&env.side.secrets("kv2").await),
        ["kv2/d", "kv2/d/user"]
    );
    assert!(
        warning_kinds(&r).contains(&("kv2/d".to_owned(), "stale_name_kept".to_owned())),
        "{}",
        r.to_text()
    );
    // The key fixed in Vault: the whole replica goes once every key's is written.
    bao.put("kv2", "d", json!({"user": "u", "good_key": "x"}))
        .await;
    let r = sync(&env, &k).await;
    assert_eq!(
        (r.created, r.deleted, r.failures.len()),
        (1, 1, 0),
        "{}",
        r.to_text()
    );
    assert_eq!(
        live(&env.side.secrets("kv2").await),
        ["kv2/d/good_key", "kv2/d/user"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_source_tag_was_removed_by_hand_is_repaired_not_deleted() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "app/db", json!({"p": "1"})).await;
    let mut a = args(&env, "out");
    a.mount = Some("kv".into());
    a.name_template = Some("{mount}/{path}".into());
    a.deletion_policy = DeletionPolicy::Delete;
    a.max_delete_share = 1.0;
    assert_eq!(sync(&env, &a).await.created, 1);
    env.side
        .sm
        .untag_resource()
        .secret_id("out/kv/app/db")
        .tag_keys("vault-secret")
        .send()
        .await
        .unwrap();
    let r = sync(&env, &a).await;
    assert_eq!(
        (r.updated, r.deleted, r.failures.len(), r.values_read),
        (1, 0, 0, 0),
        "{}",
        r.to_text()
    );
    let seen = env.side.secrets("out").await;
    assert!(!seen["out/kv/app/db"].pending_deletion);
    assert_eq!(seen["out/kv/app/db"].tags["vault-secret"], "app/db");
    assert_eq!(sync(&env, &a).await.unchanged, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_regions_survive_a_delete_and_restore_and_drift_is_repaired_without_a_read() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let audit = bao.audit_log();
    bao.put("kv", "db", json!({"p": "1"})).await;
    bao.put("kv", "other", json!({"p": "1"})).await;
    let mut a = args(&env, "kv");
    a.replica_regions = vec!["eu-west-1".into()];
    a.deletion_policy = DeletionPolicy::Delete;
    a.latest_deleted = LatestDeleted::Delete;
    a.max_delete_share = 1.0;
    a.metadata_tag_keys = vec!["team".into()];
    assert_eq!(sync(&env, &a).await.created, 2);

    // Deleted in Vault (its latest version), then undeleted: restored, with its regions.
    bao.api("DELETE", "kv/data/db", None).await;
    let r = sync(&env, &a).await;
    assert_eq!(r.deleted, 1, "{}", r.to_text());
    let seen = env.side.secrets("kv").await;
    assert!(seen["kv/db"].pending_deletion);
    assert!(
        !seen["kv/db"].tags.contains_key("replica-regions"),
        "no record of regions it lost"
    );
    bao.api("POST", "kv/undelete/db", Some(json!({"versions": [1]})))
        .await;
    let r = sync(&env, &a).await;
    assert_eq!((r.updated, r.failures.len()), (1, 0), "{}", r.to_text());
    assert_eq!(env.side.replica_regions("kv/db").await, ["eu-west-1"]);
    assert_eq!(sync(&env, &a).await.unchanged, 2);

    // Someone removes the region: found by the region audit and added again, no value read.
    env.side
        .sm
        .remove_regions_from_replication()
        .secret_id("kv/db")
        .remove_replica_regions("eu-west-1")
        .send()
        .await
        .unwrap();
    a.region_audit_hours = 1;
    let reads = e2e::audited_value_reads(&audit).len();
    let r = sync(&env, &a).await;
    assert_eq!((r.updated, r.values_read), (1, 0), "{}", r.to_text());
    assert_eq!(r.aws_requests["ReplicateSecretToRegions"], 1);
    assert_eq!(env.side.replica_regions("kv/db").await, ["eu-west-1"]);
    assert_eq!(e2e::audited_value_reads(&audit).len(), reads);

    // A region that keeps failing (a secret of that name stands there: a replica promoted to a
    // secret of its own) blocks neither the description nor the tags.
    env.side
        .sm
        .remove_regions_from_replication()
        .secret_id("kv/db")
        .remove_replica_regions("eu-west-1")
        .send()
        .await
        .unwrap();
    let west = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&env.aws)
            .region(aws_types::region::Region::new("eu-west-1"))
            .build(),
    );
    west.create_secret()
        .name("kv/db")
        .secret_string("{}")
        .send()
        .await
        .unwrap();
    bao.set_custom_metadata(
        "kv",
        "db",
        json!({"description": "the db", "tag:team": "core"}),
    )
    .await;
    let r = sync(&env, &a).await;
    assert_eq!(
        failure_kinds(&r),
        [("kv/db".to_owned(), "replication_failed".to_owned())],
        "{}",
        r.to_text()
    );
    assert!(r.failures[0].message.contains("promoted"), "{r:?}");
    let db = &env.side.secrets("kv").await["kv/db"];
    assert_eq!(db.description.as_deref(), Some("the db"));
    assert_eq!(db.tags["team"], "core");
    assert!(
        !db.tags.contains_key("replica-regions"),
        "not recorded: tried again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_never_moves_aws_backwards() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "a", json!({"v": 1})).await;
    let a = args(&env, "kv");
    assert_eq!(sync(&env, &a).await.created, 1);

    // Run A looks (Vault at 2, AWS at 1) and plans; run B then writes 3; A performs its plan.
    bao.put("kv", "a", json!({"v": 2})).await;
    let settings = a.resolve().unwrap().settings;
    let vault = replicator::vault::VaultClient::new(
        &bao.addr,
        replicator::vault::VaultLogin::Token(e2e::ROOT_TOKEN.into()),
        None,
        4,
    )
    .unwrap();
    let sm = replicator::aws::SecretsManager::new(&env.aws, 50, Default::default());
    let progress = Progress::default();
    let classify = replicator::inventory::Classify {
        now: aws_smithy_types::DateTime::from(std::time::SystemTime::now()),
        latest_deleted: LatestDeleted::Fallback,
        selection: &Default::default(),
    };
    let inventory = replicator::inventory::walk(&vault, "kv", "", 4, classify, &progress)
        .await
        .unwrap();
    let listed = sm.list("kv").await.unwrap();
    let regions = Default::default();
    let plan = replicator::plan::plan(
        &inventory.entries,
        &listed,
        &settings.rule,
        &replicator::plan::Run::full(&regions),
    );
    assert!(matches!(
        &plan.steps[0],
        replicator::plan::Step::Update { target, .. } if target.version == 2
    ));

    bao.put("kv", "a", json!({"v": 3})).await;
    assert_eq!(sync(&env, &a).await.updated, 1);
    assert_eq!(env.side.value("kv/a").await, json!({"v": 3}));

    let executor = replicator::execute::Executor {
        vault: &vault,
        sm: &sm,
        settings: &settings,
        events: None,
    };
    let outcomes = executor.run(&plan.steps, None, &progress).await;
    let mut report = Report::default();
    for (step, outcome) in plan.steps.iter().zip(outcomes) {
        replicator::execute::record(&mut report, step.name(), outcome.unwrap());
    }
    assert_eq!(
        (report.updated, report.failures.len()),
        (0, 0),
        "{}",
        report.to_text()
    );
    assert_eq!(
        warning_kinds(&report),
        [("kv/a".to_owned(), "superseded".to_owned())]
    );
    assert_eq!(
        env.side.value("kv/a").await,
        json!({"v": 3}),
        "the newer write won"
    );
    assert_eq!(env.side.secrets("kv").await["kv/a"].tags["version"], "3");
    assert_eq!(sync(&env, &a).await.unchanged, 1);
}

/// A raft OpenBao with TLS, initialised and unsealed, KV v2 at `kv`: (server, root token).
async fn raft_vault() -> (e2e::BaoTls, String) {
    let bao = e2e::BaoTls::start().await;
    let root = bao.init_and_unseal().await;
    bao.api(
        &root,
        "POST",
        "sys/mounts/kv",
        Some(json!({"type": "kv", "options": {"version": "2"}})),
    )
    .await;
    // A new KV v2 mount upgrades itself for a moment.
    for _ in 0..100 {
        let probe = bao
            .client()
            .get(format!("{}/v1/kv/config", bao.addr))
            .header("X-Vault-Token", &root)
            .send()
            .await
            .unwrap();
        if probe.status().is_success() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    (bao, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_vault_never_rolls_aws_back_unless_the_run_accepts_it() {
    let (bao, root) = raft_vault().await;
    let moto = e2e::Moto::start().await;
    let aws = moto.sdk_config().await;
    let side = e2e::aws_side::AwsSide::new(&aws);
    let put = |v: u64| {
        bao.api(
            &root,
            "POST",
            "kv/data/db",
            Some(json!({"data": {"password": format!("pw-{v}")}})),
        )
    };
    put(1).await;
    put(2).await;
    let snapshot = bao.snapshot(&root).await;
    put(3).await;
    let mut a = e2e::sync_args("kv");
    a.vault_addr = Some(bao.addr.clone());
    a.vault_token = Some(root.as_str().into());
    a.vault_cacert = Some(bao.ca_file.clone());
    assert_eq!(replicator::run::run(&a, &aws).await.created, 1);
    assert_eq!(side.value("kv/db").await, json!({"password": "pw-3"}));

    // Vault put back to version 2 (its snapshot): AWS keeps 3, and the run fails to say so.
    bao.restore(&root, snapshot).await;
    let r = replicator::run::run(&a, &aws).await;
    assert_eq!(
        failure_kinds(&r),
        [("kv/db".to_owned(), "vault_behind".to_owned())],
        "{}",
        r.to_text()
    );
    assert!(r.failures[0].message.contains("--accept-vault-rollback"));
    assert_eq!(side.value("kv/db").await, json!({"password": "pw-3"}));

    // The operator accepts it, for one run: version 2 again (its AWS version made current).
    let replicator = replicator::run::Replicator::new(&a, &aws).unwrap();
    let request = replicator::run::Request {
        accept_vault_rollback: true,
        ..Default::default()
    };
    let r = replicator.run_request(&request, &Progress::default()).await;
    assert_eq!((r.updated, r.failures.len()), (1, 0), "{}", r.to_text());
    assert_eq!(side.value("kv/db").await, json!({"password": "pw-2"}));
    assert_eq!(replicator::run::run(&a, &aws).await.unchanged, 1);

    // A path deleted and written again starts anew: not a rollback.
    bao.api(&root, "DELETE", "kv/metadata/db", None).await;
    put(1).await;
    let r = replicator::run::run(&a, &aws).await;
    assert_eq!((r.updated, r.failures.len()), (1, 0), "{}", r.to_text());
    assert_eq!(side.value("kv/db").await, json!({"password": "pw-1"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_driven_deletions_share_the_breakers_allowance_between_full_syncs() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    for i in 0..8 {
        bao.put("kv", &format!("s{i}"), json!({"k": i})).await;
    }
    let mut a = args(&env, "kv");
    a.deletion_policy = DeletionPolicy::Delete;
    assert_eq!(sync(&env, &a).await.created, 8);
    let progress = Progress::default();

    // A process that has not run a full sync yet deletes nothing on a change.
    let fresh = replicator::run::Replicator::new(&a, &env.aws).unwrap();
    bao.api("DELETE", "kv/metadata/s0", None).await;
    let r = fresh.run_paths(&["s0".into()], None, &progress).await;
    assert_eq!((r.deleted, r.failures.len()), (0, 0), "{}", r.to_text());
    assert_eq!(
        warning_kinds(&r),
        [(String::new(), "deletion_deferred".to_owned())]
    );

    // After a full sync (8 replicas, share 0.25: 3 allowed), change-driven runs delete 3 in
    // all until the next one, however their batches are padded with live paths.
    let watcher = replicator::run::Replicator::new(&a, &env.aws).unwrap();
    let full = watcher.run(None, &progress).await;
    assert_eq!(
        (full.deleted, full.failures.len()),
        (1, 0),
        "{}",
        full.to_text()
    );
    let padding: Vec<String> = (4..8).map(|i| format!("s{i}")).collect();
    let mut deleted = 0;
    for i in 1..4 {
        bao.api("DELETE", &format!("kv/metadata/s{i}"), None).await;
        let mut batch = padding.clone();
        batch.push(format!("s{i}"));
        let r = watcher.run_paths(&batch, None, &progress).await;
        deleted += r.deleted;
        assert_eq!(r.failures.len(), 0, "{}", r.to_text());
    }
    assert_eq!(deleted, 2, "one of the three went in the full sync");
    let seen = env.side.secrets("kv").await;
    assert!(
        !seen["kv/s3"].pending_deletion,
        "over the allowance: left to the full sync"
    );
    // The next full sync decides it under its own breaker.
    let r = watcher.run(None, &progress).await;
    assert_eq!(r.deleted, 1, "{}", r.to_text());

    // A full sync whose breaker trips: change-driven runs delete nothing until one does not.
    for i in 4..8 {
        bao.api("DELETE", &format!("kv/metadata/s{i}"), None).await;
    }
    bao.put("kv", "t", json!({"k": 1})).await;
    let tripped = watcher.run(None, &progress).await;
    assert!(
        failure_kinds(&tripped).contains(&(String::new(), "deletion_breaker".to_owned())),
        "{}",
        tripped.to_text()
    );
    let r = watcher.run_paths(&["s4".into()], None, &progress).await;
    assert_eq!(r.deleted, 0, "{}", r.to_text());
    assert!(!env.side.secrets("kv").await["kv/s4"].pending_deletion);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_that_resolves_to_another_secret_never_deletes_it() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "db-AbC123", json!({"k": 1})).await;
    bao.put("kv", "other", json!({"k": 1})).await;
    let mut a = args(&env, "kv");
    a.deletion_policy = DeletionPolicy::Delete;
    a.max_delete_share = 1.0;
    assert_eq!(sync(&env, &a).await.created, 2);
    let replicator = replicator::run::Replicator::new(&a, &env.aws).unwrap();
    assert_eq!(
        replicator.run(None, &Progress::default()).await.unchanged,
        2
    );

    // `db` never existed; AWS resolves the name `kv/db` like a partial ARN, to `kv/db-AbC123`.
    let proxy = AwsProxy::start(&env.moto.url).await;
    proxy.set(vec![Rewrite::DescribeAs {
        asked: "kv/db".into(),
        answer: "kv/db-AbC123".into(),
    }]);
    let through = env.moto.sdk_config_at(&proxy.url).await;
    let resolving = replicator::run::Replicator::new(&a, &through).unwrap();
    resolving.run(None, &Progress::default()).await;
    let r = resolving
        .run_paths(&["db".into()], None, &Progress::default())
        .await;
    assert_eq!((r.deleted, r.failures.len()), (0, 0), "{}", r.to_text());
    assert!(!env.side.secrets("kv").await["kv/db-AbC123"].pending_deletion);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_per_key_keeps_to_its_cap_its_adopt_list_and_reads_only_when_needed() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let audit = bao.audit_log();
    bao.put("kv", "app", json!({"user": "u", "pass": "p", "old": "o"}))
        .await;
    let many: serde_json::Map<String, serde_json::Value> =
        (0..5).map(|i| (format!("k{i}"), json!("v"))).collect();
    bao.put("kv", "wide", serde_json::Value::Object(many)).await;
    // Someone else's secret at a key's name, listed for adoption.
    env.side.create("kv/app/user", "theirs", &[]).await;
    let mut a = args(&env, "kv");
    a.granularity = Granularity::SecretKey;
    a.max_keys_per_secret = 3;
    a.adopt = vec!["kv/app/user".into()];
    let r = sync(&env, &a).await;
    assert_eq!((r.created, r.updated), (2, 1), "{}", r.to_text());
    assert_eq!(
        failure_kinds(&r),
        [("kv/wide".to_owned(), "too_many_keys".to_owned())]
    );
    assert_eq!(env.side.text("kv/app/user").await, "u", "adopted");
    let seen = env.side.secrets("kv").await;
    assert!(
        !seen.keys().any(|k| k.starts_with("kv/wide")),
        "nothing of it created"
    );

    // A key removed and its replica kept (policy keep): later runs read no value for it.
    bao.put("kv", "app", json!({"user": "u", "pass": "p"}))
        .await;
    let r = sync(&env, &a).await;
    assert_eq!(r.orphans, ["kv/app/old"], "{}", r.to_text());
    let app_reads = || {
        e2e::audited_value_reads(&audit)
            .into_iter()
            .filter(|p| p == "kv/data/app")
            .count()
    };
    let reads = app_reads();
    let quiet = sync(&env, &a).await;
    assert_eq!(quiet.unchanged, 2, "{}", quiet.to_text());
    assert_eq!(app_reads(), reads, "app's value is not read again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_deleted_latest_version_falls_back_to_the_newest_live_one_unless_told() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "db", json!({"p": "1"})).await;
    bao.put("kv", "db", json!({"p": "2"})).await;
    bao.put("kv", "other", json!({"p": "1"})).await;
    let mut a = args(&env, "kv");
    a.deletion_policy = DeletionPolicy::Delete;
    a.max_delete_share = 1.0;
    assert_eq!(sync(&env, &a).await.created, 2);
    bao.api("DELETE", "kv/data/db", None).await;
    // The default: the newest live version (1), as Vault's own sync does since 1.21.2.
    let r = sync(&env, &a).await;
    assert_eq!((r.updated, r.deleted), (1, 0), "{}", r.to_text());
    assert_eq!(env.side.value("kv/db").await, json!({"p": "1"}));
    assert_eq!(env.side.secrets("kv").await["kv/db"].tags["version"], "1");
    assert_eq!(sync(&env, &a).await.unchanged, 2);
    // Told to delete instead: the replica follows the deletion policy.
    a.latest_deleted = LatestDeleted::Delete;
    let r = sync(&env, &a).await;
    assert_eq!(r.deleted, 1, "{}", r.to_text());
    assert!(env.side.secrets("kv").await["kv/db"].pending_deletion);
}

/// A run that read a version without a key, and planned its replica's deletion, never deletes
/// it once Vault has moved on (the key came back and another run wrote it meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deletion_planned_from_an_older_version_is_not_performed() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "a", json!({"k1": "1", "k2": "2"})).await;
    bao.put("kv", "other", json!({"k": "v"})).await;
    let mut a = args(&env, "kv");
    a.granularity = Granularity::SecretKey;
    a.deletion_policy = DeletionPolicy::Delete;
    a.max_delete_share = 1.0;
    assert_eq!(sync(&env, &a).await.created, 3);

    // Run A: version 2 has no k2; it reads the value and plans k2's deletion.
    bao.put("kv", "a", json!({"k1": "1"})).await;
    let settings = a.resolve().unwrap().settings;
    let vault = replicator::vault::VaultClient::new(
        &bao.addr,
        replicator::vault::VaultLogin::Token(e2e::ROOT_TOKEN.into()),
        None,
        4,
    )
    .unwrap();
    let sm = replicator::aws::SecretsManager::new(&env.aws, 50, Default::default());
    let classify = replicator::inventory::Classify {
        now: aws_smithy_types::DateTime::from(std::time::SystemTime::now()),
        latest_deleted: LatestDeleted::Fallback,
        selection: &Default::default(),
    };
    let progress = Progress::default();
    let inventory = replicator::inventory::walk(&vault, "kv", "", 4, classify, &progress)
        .await
        .unwrap();
    let listed = sm.list("kv").await.unwrap();
    let regions = Default::default();
    let run = replicator::plan::Run::full(&regions);
    let plan = replicator::plan::plan(&inventory.entries, &listed, &settings.rule, &run);
    let Some(replicator::plan::Step::Expand { name, source }) = plan
        .steps
        .iter()
        .find(|s| matches!(s, replicator::plan::Step::Expand { .. }))
    else {
        panic!("{:?}", plan.steps)
    };
    let executor = replicator::execute::Executor {
        vault: &vault,
        sm: &sm,
        settings: &settings,
        events: None,
    };
    let values = executor
        .read_keys(name, &source.source.vault_path, source.source.version)
        .await
        .unwrap()
        .unwrap();
    let keys: Vec<(String, usize)> = values.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    let found: Vec<_> = listed
        .iter()
        .filter(|s| s.name.starts_with("kv/a/"))
        .cloned()
        .collect();
    let sub = replicator::plan::keys::expand(name, source, &keys, &found, &settings.rule, &run);
    assert!(
        sub.steps
            .iter()
            .any(|s| matches!(s, replicator::plan::Step::Delete { name, .. } if name == "kv/a/k2")),
        "{:?}",
        sub.steps
    );

    // Meanwhile k2 comes back (version 3) and run B writes it.
    bao.put("kv", "a", json!({"k1": "1", "k2": "3"})).await;
    let b = sync(&env, &a).await;
    assert_eq!(b.failures.len(), 0, "{}", b.to_text());
    assert_eq!(env.side.text("kv/a/k2").await, "3");

    // Run A goes on: the deletion it planned is not performed.
    let outcomes = executor.run(&sub.steps, Some(&values), &progress).await;
    let mut report = Report::default();
    for (step, outcome) in sub.steps.iter().zip(outcomes) {
        replicator::execute::record(&mut report, step.name(), outcome.unwrap());
    }
    assert_eq!(report.deleted, 0, "{}", report.to_text());
    assert!(
        warning_kinds(&report).contains(&("kv/a/k2".to_owned(), "superseded".to_owned())),
        "{}",
        report.to_text()
    );
    assert!(!env.side.secrets("kv").await["kv/a/k2"].pending_deletion);
}

/// A change-driven run names paths as Vault's audit log does, inside the mount: those outside
/// the synced sub-path (or not a secret path at all) are said and skipped, never written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_synced_path_are_said_and_skipped() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "team/db", json!({"k": 1})).await;
    bao.put("kv", "other/db", json!({"k": 2})).await;
    let mut a = args(&env, "kv");
    a.path = "team".into();
    let replicator = replicator::run::Replicator::new(&a, &env.aws).unwrap();
    let r = replicator
        .run_paths(
            &[
                "team/db".into(),
                "other/db".into(),
                "teamx/db".into(),
                "team/../other/db".into(),
            ],
            None,
            &Progress::default(),
        )
        .await;
    assert_eq!((r.created, r.failures.len()), (1, 0), "{}", r.to_text());
    let outside: Vec<&str> = r
        .warnings
        .iter()
        .filter(|w| w.kind == "path_outside_scope")
        .map(|w| w.message.as_str())
        .collect();
    assert_eq!(outside.len(), 3, "{outside:?}");
    let seen = env.side.secrets("kv").await;
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["kv/db"],
        "only team/db, as db"
    );
}
