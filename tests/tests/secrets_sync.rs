//! What Vault Enterprise's Secrets Sync offers, on OpenBao + moto: tags and descriptions from
//! custom metadata, replica regions, name templates, one AWS secret per key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{args, env, failure_kinds, sync};
use replicator::config::{DeletionPolicy, Granularity};
use replicator::progress::Progress;
use replicator::report::Report;
use serde_json::json;

fn calls(r: &Report) -> Vec<&str> {
    r.aws_requests.keys().map(String::as_str).collect()
}

/// The calls of a run with nothing to do over replicas with replica regions: the listing, and
/// the region audit's `DescribeSecret` when it is the hour of the daily cycle (a digest of the
/// name) of one of `names`. The tests run at any hour; this one failed from 09:00 to 10:00 UTC.
fn idle_calls(names: &[&str]) -> Vec<&'static str> {
    let hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600
        % 24;
    if names
        .iter()
        .any(|n| replicator::plan::audit_slot(n, 24) == hour)
    {
        vec!["DescribeSecret", "ListSecrets"]
    } else {
        vec!["ListSecrets"]
    }
}

/// A tag key whose 24-bit digest (as `vault-tags` records keys) equals that of `added-by`:
/// found by brute force in a minute.
const COLLIDES_WITH_ADDED_BY: &str = "k77671169";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_and_description_follow_custom_metadata_without_reading_a_value() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let audit = bao.audit_log();
    bao.put("kv", "app/db", json!({"password": "pw-1"})).await;
    // A metadata writer tries the operator's key and a key nobody allowed.
    bao.set_custom_metadata(
        "kv",
        "app/db",
        json!({"tag:team": "core", "tag:cost": "free", "description": "Database of app", "owner": "not a tag"}),
    )
    .await;
    bao.put("kv", "web", json!({"k": "v"})).await;
    let mut a = args(&env, "kv");
    a.tags = vec!["env=prod".into(), "team=platform".into()];
    a.metadata_tag_keys = vec!["tier".into(), COLLIDES_WITH_ADDED_BY.into()];
    a.metadata_tag_keys.extend((0..45).map(|i| format!("t{i}")));

    let first = sync(&env, &a).await;
    assert_eq!(
        (first.created, first.failures.len()),
        (2, 0),
        "{}",
        first.to_text()
    );
    let seen = env.side.secrets("kv").await;
    let db = &seen["kv/app/db"];
    assert_eq!(
        db.tags["team"], "platform",
        "the operator's tag always wins"
    );
    assert_eq!(db.tags["env"], "prod");
    assert!(!db.tags.contains_key("cost"), "not a key metadata may set");
    assert!(!db.tags.contains_key("owner"));
    assert_eq!(db.description.as_deref(), Some("Database of app"));
    let ignored: Vec<&str> = first
        .warnings
        .iter()
        .filter(|w| w.kind == "metadata_tag_ignored")
        .map(|w| w.message.as_str())
        .collect();
    assert!(
        ignored.len() == 1
            && ignored[0].contains("\"cost\" in 1 secret(s)")
            && ignored[0].contains("\"team\" in 1 secret(s)"),
        "{ignored:?}"
    );
    let web = &seen["kv/web"];
    assert_eq!(web.tags["team"], "platform");
    assert_eq!(
        web.description.as_deref(),
        Some(replicator::plan::shape::DEFAULT_DESCRIPTION)
    );
    let reads = e2e::audited_value_reads(&audit).len();

    // Someone else tags the replica; then Vault's metadata changes, which makes no version.
    env.side
        .sm
        .tag_resource()
        .secret_id("kv/app/db")
        .tags(
            aws_sdk_secretsmanager::types::Tag::builder()
                .key("added-by")
                .value("ops")
                .build(),
        )
        .send()
        .await
        .unwrap();
    bao.set_custom_metadata(
        "kv",
        "app/db",
        json!({"tag:tier": "1", "description": "Database of app, v2"}),
    )
    .await;
    let second = sync(&env, &a).await;
    assert_eq!(
        (second.updated, second.unchanged, second.failures.len()),
        (1, 1, 0),
        "{}",
        second.to_text()
    );
    assert_eq!(second.values_read, 0);
    assert_eq!(
        e2e::audited_value_reads(&audit).len(),
        reads,
        "no value read"
    );
    assert_eq!(
        calls(&second),
        ["ListSecrets", "TagResource", "UpdateSecret"]
    );
    let db = &env.side.secrets("kv").await["kv/app/db"];
    assert_eq!(db.tags["team"], "platform");
    assert_eq!(db.tags["tier"], "1");
    assert_eq!(db.tags["added-by"], "ops", "a tag someone else added stays");
    assert_eq!(db.description.as_deref(), Some("Database of app, v2"));
    assert_eq!(env.side.version_count("kv/app/db").await, 1);

    // Nothing changed: nothing is sent.
    let third = sync(&env, &a).await;
    assert_eq!((third.unchanged, third.updated), (2, 0));
    assert_eq!(calls(&third), ["ListSecrets"]);

    // A metadata writer sets, then removes, a key whose digest is that of someone else's tag:
    // the removal takes its own tag, never the other (the record holds the operator's keys).
    bao.set_custom_metadata(
        "kv",
        "app/db",
        json!({"tag:tier": "1", "tag:k77671169": "x", "description": "Database of app, v2"}),
    )
    .await;
    sync(&env, &a).await;
    assert_eq!(
        env.side.secrets("kv").await["kv/app/db"].tags[COLLIDES_WITH_ADDED_BY],
        "x"
    );
    bao.set_custom_metadata(
        "kv",
        "app/db",
        json!({"tag:tier": "1", "description": "Database of app, v2"}),
    )
    .await;
    let removed = sync(&env, &a).await;
    assert_eq!(
        removed.aws_requests["UntagResource"],
        1,
        "{}",
        removed.to_text()
    );
    let db = &env.side.secrets("kv").await["kv/app/db"];
    assert!(!db.tags.contains_key(COLLIDES_WITH_ADDED_BY));
    assert_eq!(
        db.tags["added-by"], "ops",
        "a crafted key steers no removal"
    );

    // A replica as an earlier version left it: `vault-tags` recorded metadata's keys too (no
    // `o:`), among them one a metadata writer crafted, and `cost`, which metadata set then and
    // still names. The first run after the upgrade removes `cost` and rewrites the record;
    // the crafted digest removes nothing.
    let legacy = replicator::plan::shape::digests_of(
        ["env", "team", "cost", COLLIDES_WITH_ADDED_BY]
            .map(str::to_owned)
            .iter(),
    );
    let tag = |k: &str, v: &str| {
        aws_sdk_secretsmanager::types::Tag::builder()
            .key(k)
            .value(v)
            .build()
    };
    env.side
        .sm
        .tag_resource()
        .secret_id("kv/app/db")
        .tags(tag("vault-tags", &legacy))
        .tags(tag("cost", "free"))
        .send()
        .await
        .unwrap();
    bao.set_custom_metadata(
        "kv",
        "app/db",
        json!({"tag:tier": "1", "tag:cost": "free", "description": "Database of app, v2"}),
    )
    .await;
    let upgraded = sync(&env, &a).await;
    assert_eq!(upgraded.values_read, 0, "{}", upgraded.to_text());
    let db = &env.side.secrets("kv").await["kv/app/db"];
    assert!(!db.tags.contains_key("cost"), "{:?}", db.tags);
    assert_eq!(
        db.tags["added-by"], "ops",
        "a planted digest removes nothing"
    );
    assert!(db.tags["vault-tags"].starts_with("o:"), "{:?}", db.tags);

    // A tag dropped from the configuration, or from a secret's metadata, is removed from its
    // replicas; one secret's bad tag fails that secret alone.
    a.tags = vec!["team=platform".into()];
    bao.set_custom_metadata(
        "kv",
        "app/db",
        json!({"description": "Database of app, v2"}),
    )
    .await;
    bao.set_custom_metadata("kv", "web", json!({"tag:tier": "1!"}))
        .await;
    let fourth = sync(&env, &a).await;
    assert_eq!(
        failure_kinds(&fourth),
        [("kv/web".to_owned(), "invalid_tag".to_owned())]
    );
    assert!(
        fourth.failures[0].message.contains("does not allow"),
        "{fourth:?}"
    );
    assert_eq!(fourth.updated, 1);
    assert_eq!(fourth.aws_requests["UntagResource"], 1);
    let seen = env.side.secrets("kv").await;
    assert!(!seen["kv/app/db"].tags.contains_key("env"));
    assert!(!seen["kv/app/db"].tags.contains_key("tier"));
    assert_eq!(seen["kv/app/db"].tags["added-by"], "ops");
    assert_eq!(
        seen["kv/web"].tags["env"], "prod",
        "untouched while invalid"
    );

    // More tags than AWS allows on a secret.
    let many: serde_json::Map<String, serde_json::Value> =
        (0..45).map(|i| (format!("tag:t{i}"), json!("x"))).collect();
    bao.set_custom_metadata("kv", "web", serde_json::Value::Object(many))
        .await;
    let fifth = sync(&env, &a).await;
    assert_eq!(
        failure_kinds(&fifth),
        [("kv/web".to_owned(), "invalid_tag".to_owned())]
    );
    assert!(
        fifth.failures[0].message.contains("limit of 50"),
        "{fifth:?}"
    );

    // A bad --tag, or a metadata key that is also an operator tag, is a configuration error:
    // nothing is touched.
    for (tags, metadata, says) in [
        (vec!["managed-by=me".to_owned()], vec![], "--tag"),
        (
            vec!["team=platform".to_owned()],
            vec!["team".to_owned()],
            "--metadata-tag-key",
        ),
    ] {
        a.tags = tags;
        a.metadata_tag_keys = metadata;
        let bad = sync(&env, &a).await;
        assert_eq!(
            failure_kinds(&bad),
            [(String::new(), "config_invalid".to_owned())]
        );
        assert!(bad.failures[0].message.contains(says), "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_regions_are_added_and_removed_and_cleared_before_a_deletion() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "db", json!({"password": "pw"})).await;
    let mut a = args(&env, "kv");
    a.replica_regions = vec!["eu-west-1".into()];

    let first = sync(&env, &a).await;
    assert_eq!(
        (first.created, first.failures.len()),
        (1, 0),
        "{}",
        first.to_text()
    );
    assert_eq!(env.side.replica_regions("kv/db").await, ["eu-west-1"]);
    assert!(
        !calls(&first).contains(&"ReplicateSecretToRegions"),
        "created with them"
    );
    let second = sync(&env, &a).await;
    assert_eq!(second.unchanged, 1);
    assert_eq!(
        calls(&second),
        idle_calls(&["kv/db"]),
        "no replication call"
    );

    // A region added later, with its own key; a dry run says so and sends nothing.
    a.replica_regions = vec!["eu-west-1".into(), "us-west-2=alias/replicas".into()];
    a.dry_run = true;
    let dry = sync(&env, &a).await;
    assert_eq!(dry.updated, 1);
    assert_eq!(calls(&dry), ["ListSecrets"]);
    let shown = serde_json::to_value(dry.plan.as_ref().unwrap()).unwrap();
    assert_eq!(shown[0]["reason"], "metadata", "{shown}");
    assert_eq!(
        shown[0]["changes"]["regions"]["add"][0]["region"],
        "us-west-2"
    );
    a.dry_run = false;
    let third = sync(&env, &a).await;
    assert_eq!(
        (third.updated, third.values_read),
        (1, 0),
        "{}",
        third.to_text()
    );
    assert_eq!(third.aws_requests["ReplicateSecretToRegions"], 1);
    assert_eq!(
        env.side.replica_regions("kv/db").await,
        ["eu-west-1", "us-west-2"]
    );
    assert_eq!(calls(&sync(&env, &a).await), idle_calls(&["kv/db"]));

    // One removed.
    a.replica_regions = vec!["us-west-2=alias/replicas".into()];
    let fourth = sync(&env, &a).await;
    assert_eq!(fourth.aws_requests["RemoveRegionsFromReplication"], 1);
    assert!(!calls(&fourth).contains(&"ReplicateSecretToRegions"));
    assert_eq!(env.side.replica_regions("kv/db").await, ["us-west-2"]);

    // AWS refuses to delete a secret that has replicas; the replicator removes them first.
    let refused = env
        .side
        .sm
        .delete_secret()
        .secret_id("kv/db")
        .recovery_window_in_days(7)
        .send()
        .await;
    assert!(refused.is_err(), "moto refuses, as AWS does");
    bao.api("DELETE", "kv/metadata/db", None).await;
    // (Another secret, so that Vault is not empty: the breaker refuses to empty AWS.)
    bao.put("kv", "other", json!({"k": "v"})).await;
    a.deletion_policy = DeletionPolicy::Delete;
    let fifth = sync(&env, &a).await;
    assert_eq!(
        (fifth.deleted, fifth.failures.len()),
        (1, 0),
        "{}",
        fifth.to_text()
    );
    assert!(env.side.secrets("kv").await["kv/db"].pending_deletion);

    // A replica someone else replicated (no tag of this tool records it): AWS's refusal says
    // so, and the regions go before the deletion.
    // (First, no replica regions at all: this tool's go, with their tag.)
    a.replica_regions = vec![];
    bao.put("kv", "third", json!({"k": "v"})).await;
    assert_eq!(sync(&env, &a).await.failures.len(), 0);
    assert!(env.side.replica_regions("kv/other").await.is_empty());
    assert!(
        !env.side.secrets("kv").await["kv/other"]
            .tags
            .contains_key("replica-regions")
    );
    env.side
        .sm
        .replicate_secret_to_regions()
        .secret_id("kv/other")
        .add_replica_regions(
            aws_sdk_secretsmanager::types::ReplicaRegionType::builder()
                .region("ap-south-1")
                .build(),
        )
        .send()
        .await
        .unwrap();
    bao.api("DELETE", "kv/metadata/other", None).await;
    let sixth = sync(&env, &a).await;
    assert_eq!(
        (sixth.deleted, sixth.failures.len()),
        (1, 0),
        "{}",
        sixth.to_text()
    );
    assert_eq!(sixth.aws_requests["RemoveRegionsFromReplication"], 1);
    assert_eq!(
        sixth.aws_requests["DeleteSecret"], 1,
        "the regions AWS shows go first"
    );

    // A region AWS cannot replicate to (a secret of that name is there already): a failure of
    // that secret, which is created all the same; once the way is clear the next run
    // replicates it.
    let west = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&env.aws)
            .region(aws_types::region::Region::new("us-west-2"))
            .build(),
    );
    west.create_secret()
        .name("kv/squatted")
        .secret_string("{}")
        .send()
        .await
        .unwrap();
    a.replica_regions = vec!["us-west-2".into()];
    bao.put("kv", "squatted", json!({"k": "v"})).await;
    let blocked = sync(&env, &a).await;
    assert_eq!(
        failure_kinds(&blocked),
        [("kv/squatted".to_owned(), "replication_failed".to_owned())],
        "{}",
        blocked.to_text()
    );
    assert!(
        blocked.failures[0].message.contains("us-west-2"),
        "{blocked:?}"
    );
    assert!(env.side.secrets("kv").await.contains_key("kv/squatted"));
    west.delete_secret()
        .secret_id("kv/squatted")
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    let cleared = sync(&env, &a).await;
    assert_eq!(cleared.failures.len(), 0, "{}", cleared.to_text());
    assert_eq!(env.side.replica_regions("kv/squatted").await, ["us-west-2"]);
    assert_eq!(
        calls(&sync(&env, &a).await),
        idle_calls(&["kv/squatted", "kv/third"])
    );

    // The replicator's own region is not a replica region: nothing runs.
    a.replica_regions = vec![e2e::REGION.into()];
    let own = sync(&env, &a).await;
    assert_eq!(
        failure_kinds(&own),
        [(String::new(), "config_invalid".to_owned())]
    );
    assert!(own.failures[0].message.contains("own region"), "{own:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_template_renames_replicas_and_a_collision_fails_both() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("team").await;
    let audit = bao.audit_log();
    bao.put("team", "app/db", json!({"p": "1"})).await;
    bao.put("team", "web", json!({"p": "2"})).await;
    // Nothing yet under the template's names: the plain replicas are this tool's from before.
    let mut a = args(&env, "out");
    a.mount = Some("team".into());
    a.deletion_policy = DeletionPolicy::Delete;
    a.max_delete_share = 1.0;
    assert_eq!(sync(&env, &a).await.created, 2);

    a.name_template = Some("{mount}/{path}-copy".into());
    let renamed = sync(&env, &a).await;
    assert_eq!(
        (renamed.created, renamed.deleted, renamed.failures.len()),
        (2, 2, 0),
        "{}",
        renamed.to_text()
    );
    let seen = env.side.secrets("out").await;
    let live: Vec<&str> = seen
        .values()
        .filter(|s| !s.pending_deletion)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(live, ["out/team/app/db-copy", "out/team/web-copy"]);
    assert_eq!(seen["out/team/app/db-copy"].tags["vault-secret"], "app/db");
    assert_eq!(env.side.value("out/team/web-copy").await, json!({"p": "2"}));
    let reads = e2e::audited_value_reads(&audit).len();
    let again = sync(&env, &a).await;
    assert_eq!((again.unchanged, again.values_read), (2, 0));
    assert_eq!(e2e::audited_value_reads(&audit).len(), reads);

    // A change-driven run finds the replica by its rendered name.
    bao.put("team", "app/db", json!({"p": "3"})).await;
    let replicator = replicator::run::Replicator::new(&a, &env.aws).unwrap();
    let r = replicator
        .run_paths(&["app/db".into()], None, &Progress::default())
        .await;
    assert_eq!((r.updated, r.failures.len()), (1, 0), "{}", r.to_text());
    assert_eq!(
        env.side.value("out/team/app/db-copy").await,
        json!({"p": "3"})
    );

    // Two Vault secrets rendering one name: both fail, neither is written.
    a.name_template = Some("shared".into());
    a.deletion_policy = DeletionPolicy::Keep;
    let clash = sync(&env, &a).await;
    let mut kinds = failure_kinds(&clash);
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("out/shared".to_owned(), "name_collision".to_owned()),
            ("out/shared".to_owned(), "name_collision".to_owned())
        ]
    );
    assert!(!env.side.secrets("out").await.contains_key("out/shared"));

    // A rendered name AWS would refuse fails that secret alone.
    a.name_template = Some("{path}".into());
    bao.put("team", "bad name", json!({"p": "4"})).await;
    let bad = sync(&env, &a).await;
    assert_eq!(
        failure_kinds(&bad),
        [("out/bad name".to_owned(), "invalid_name".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_secret_per_key_holds_the_raw_value_and_follows_each_key() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let audit = bao.audit_log();
    bao.put(
        "kv",
        "app/db",
        json!({"user": "app", "password": "pw-1", "port": 5432, "bad key": "x"}),
    )
    .await;
    bao.put("kv", "web", json!({"token": "t-1"})).await;
    let mut a = args(&env, "kv");
    a.granularity = Granularity::SecretKey;
    a.deletion_policy = DeletionPolicy::Delete;
    a.metadata_tag_keys = vec!["team".into()];

    let first = sync(&env, &a).await;
    assert_eq!(first.created, 4, "{}", first.to_text());
    assert_eq!(
        failure_kinds(&first),
        [("kv/app/db/bad key".to_owned(), "invalid_name".to_owned())],
        "a bad key fails alone"
    );
    assert_eq!(env.side.text("kv/app/db/user").await, "app");
    assert_eq!(env.side.text("kv/app/db/port").await, "5432");
    assert_eq!(env.side.text("kv/web/token").await, "t-1");
    let seen = env.side.secrets("kv").await;
    assert_eq!(seen["kv/app/db/password"].tags["vault-key"], "password");
    assert_eq!(seen["kv/app/db/password"].tags["vault-secret"], "app/db");

    // The bad key gone, nothing changes without a value read.
    bao.put(
        "kv",
        "app/db",
        json!({"user": "app", "password": "pw-1", "port": 5432}),
    )
    .await;
    assert_eq!(sync(&env, &a).await.created, 0);
    let reads = e2e::audited_value_reads(&audit).len();
    let quiet = sync(&env, &a).await;
    assert_eq!(
        (quiet.unchanged, quiet.values_read),
        (4, 0),
        "{}",
        quiet.to_text()
    );
    assert_eq!(e2e::audited_value_reads(&audit).len(), reads);

    // A key removed in Vault follows the deletion policy; a changed one is written.
    bao.put("kv", "app/db", json!({"user": "app", "password": "pw-2"}))
        .await;
    let next = sync(&env, &a).await;
    assert_eq!(
        (
            next.updated,
            next.deleted,
            next.unchanged,
            next.failures.len()
        ),
        (2, 1, 1, 0),
        "{}",
        next.to_text()
    );
    assert_eq!(env.side.text("kv/app/db/password").await, "pw-2");
    let seen = env.side.secrets("kv").await;
    assert!(seen["kv/app/db/port"].pending_deletion);

    // Tags from custom metadata reach every key's replica, without a value read.
    bao.set_custom_metadata("kv", "app/db", json!({"tag:team": "core"}))
        .await;
    let reads = e2e::audited_value_reads(&audit).len();
    let tagged = sync(&env, &a).await;
    assert_eq!(
        (tagged.updated, tagged.values_read),
        (2, 0),
        "{}",
        tagged.to_text()
    );
    assert_eq!(e2e::audited_value_reads(&audit).len(), reads);
    let seen = env.side.secrets("kv").await;
    assert_eq!(seen["kv/app/db/user"].tags["team"], "core");
    assert_eq!(seen["kv/app/db/password"].tags["team"], "core");

    // A change-driven run finds a secret's key replicas by their tag.
    bao.put(
        "kv",
        "web",
        json!({"token": "t-2", "extra": "e", "cache-master": "c"}),
    )
    .await;
    let proxy = e2e::aws_proxy::AwsProxy::start(&env.moto.url).await;
    let through = env.moto.sdk_config_at(&proxy.url).await;
    let replicator = replicator::run::Replicator::new(&a, &through).unwrap();
    let r = replicator
        .run_paths(&["web".into()], None, &Progress::default())
        .await;
    assert_eq!(
        (r.created, r.updated, r.failures.len()),
        (2, 1, 0),
        "{}",
        r.to_text()
    );
    // Its replicas by their tag; only the two new keys' names are looked up (a secret someone
    // else holds there would be a conflict, or adopted when listed).
    let mut looked_up: Vec<String> = proxy
        .calls()
        .into_iter()
        .filter(|(op, _)| op == "DescribeSecret")
        .map(|(_, id)| id)
        .collect();
    looked_up.sort();
    assert_eq!(looked_up, ["kv/web/cache-master", "kv/web/extra"]);
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert_eq!(
        (r.warnings[0].name.as_str(), r.warnings[0].kind.as_str()),
        ("kv/web/cache-master", "arn_suffix_name")
    );
    assert_eq!(env.side.text("kv/web/token").await, "t-2");
    assert_eq!(env.side.text("kv/web/extra").await, "e");

    // The whole secret deleted: every key's replica follows the policy.
    bao.api("DELETE", "kv/metadata/web", None).await;
    let gone = sync(&env, &a).await;
    assert_eq!(gone.deleted, 3, "{}", gone.to_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_removed_in_vault_are_deleted_behind_the_breaker() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let eight: serde_json::Map<String, serde_json::Value> =
        (0..8).map(|i| (format!("k{i}"), json!("v"))).collect();
    bao.put("kv", "big", serde_json::Value::Object(eight)).await;
    bao.put("kv", "other", json!({"k": "v"})).await;
    let mut a = args(&env, "kv");
    a.granularity = Granularity::SecretKey;
    a.deletion_policy = DeletionPolicy::Delete;
    assert_eq!(sync(&env, &a).await.created, 9);

    // Seven of nine replicas would go: over a share of 0.25 (3 allowed), so none does.
    bao.put("kv", "big", json!({"k0": "w"})).await;
    let refused = sync(&env, &a).await;
    assert_eq!(
        failure_kinds(&refused),
        [(String::new(), "deletion_breaker".to_owned())],
        "{}",
        refused.to_text()
    );
    assert_eq!((refused.updated, refused.deleted), (1, 0));
    assert_eq!(refused.orphans.len(), 7, "{:?}", refused.orphans);
    let seen = env.side.secrets("kv").await;
    assert!(seen.values().all(|s| !s.pending_deletion));
    assert_eq!(env.side.text("kv/big/k0").await, "w");

    // Allowed: they go.
    a.max_delete_share = 1.0;
    bao.put("kv", "big", json!({"k0": "x"})).await;
    let allowed = sync(&env, &a).await;
    assert_eq!(
        (allowed.deleted, allowed.failures.len()),
        (7, 0),
        "{}",
        allowed.to_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_exclude_and_the_sync_metadata_choose_the_replicas_without_reading_values() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let audit = bao.audit_log();
    for path in [
        "app/db",
        "app/api",
        "app/scratch/tmp",
        "web",
        "web2",
        "web3",
        "legacy/old",
        "legacy/older",
    ] {
        bao.put("kv", path, json!({"v": path})).await;
    }
    bao.set_custom_metadata("kv", "web2", json!({"sync": "False"}))
        .await;
    let mut a = args(&env, "kv");
    a.include = vec!["app/*".into(), "web?".into(), "web".into()];
    a.exclude = vec!["*/scratch/*".into()];
    a.deletion_policy = DeletionPolicy::Delete;

    let first = sync(&env, &a).await;
    assert_eq!(
        (first.created, first.excluded, first.failures.len()),
        (4, 4, 0),
        "{}",
        first.to_text()
    );
    let names: Vec<String> = env.side.secrets("kv").await.into_keys().collect();
    assert_eq!(names, ["kv/app/api", "kv/app/db", "kv/web", "kv/web3"]);
    assert!(
        first
            .to_text()
            .contains("4 secret(s) in Vault not selected"),
        "{}",
        first.to_text()
    );
    // No value of a path left out is read.
    let reads = e2e::audited_value_reads(&audit);
    for left_out in ["legacy/old", "legacy/older", "app/scratch/tmp", "web2"] {
        assert!(
            !reads.iter().any(|p| p.ends_with(left_out)),
            "{left_out} read: {reads:?}"
        );
    }

    // `web` opts out (metadata only, no new version): its replica is kept even under the
    // delete policy (writing metadata is no right to delete), with no value read; a `sync`
    // that says neither fails that secret alone.
    let value_reads = e2e::audited_value_reads(&audit).len();
    bao.set_custom_metadata("kv", "web", json!({"sync": "false"}))
        .await;
    bao.set_custom_metadata("kv", "app/api", json!({"sync": "maybe"}))
        .await;
    bao.put("kv", "app/db", json!({"v": "db-2"})).await;
    let second = sync(&env, &a).await;
    assert_eq!(
        (second.updated, second.deleted, second.unchanged),
        (1, 0, 1),
        "{}",
        second.to_text()
    );
    assert_eq!(
        failure_kinds(&second),
        [("kv/app/api".to_owned(), "invalid_sync_metadata".to_owned())]
    );
    assert!(
        second.failures[0]
            .message
            .contains("\"true\" nor \"false\""),
        "{}",
        second.to_text()
    );
    assert_eq!(e2e::audited_value_reads(&audit).len(), value_reads + 1);
    let seen = env.side.secrets("kv").await;
    assert!(!seen["kv/web"].pending_deletion, "{seen:?}");
    assert_eq!(second.orphans, ["kv/web"], "{}", second.to_text());
    assert!(
        !seen["kv/app/api"].pending_deletion,
        "neither written nor deleted"
    );
    assert_eq!(env.side.value("kv/app/db").await, json!({"v": "db-2"}));

    // Under the keep policy a replica whose secret is left out stays, and the report says why.
    bao.set_custom_metadata("kv", "app/api", json!({})).await;
    let mut keep = a.clone();
    keep.deletion_policy = DeletionPolicy::Keep;
    keep.exclude.push("web3".into());
    keep.dry_run = true;
    let planned = sync(&env, &keep).await.to_text();
    assert!(
        planned.contains(
            "kv/web3  keep: excluded by the sync's include/exclude patterns; kept by deletion policy keep"
        ),
        "{planned}"
    );
    keep.dry_run = false;
    let third = sync(&env, &keep).await;
    assert_eq!(
        (third.deleted, third.failures.len()),
        (0, 0),
        "{}",
        third.to_text()
    );
    assert_eq!(third.orphans, ["kv/web", "kv/web3"], "{}", third.to_text());

    // Opt-in: only `sync = "true"` comes in; the others' replicas are kept by the policy.
    bao.set_custom_metadata("kv", "web2", json!({"sync": "true"}))
        .await;
    let mut opt_in = keep.clone();
    opt_in.opt_in = true;
    let fourth = sync(&env, &opt_in).await;
    assert_eq!(
        (fourth.created, fourth.updated, fourth.failures.len()),
        (1, 0, 0),
        "{}",
        fourth.to_text()
    );
    assert!(env.side.secrets("kv").await.contains_key("kv/web2"));
    assert_eq!(
        fourth.orphans,
        ["kv/app/api", "kv/app/db", "kv/web", "kv/web3"],
        "{}",
        fourth.to_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_opts_a_secret_out_keeps_its_replica_and_a_left_out_path_is_restored() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    for i in 0..8 {
        bao.put("kv", &format!("s{i}"), json!({"k": i})).await;
    }
    let mut a = args(&env, "kv");
    a.deletion_policy = DeletionPolicy::Delete;
    let watcher = replicator::run::Replicator::new(&a, &env.aws).unwrap();
    let progress = Progress::default();
    assert_eq!(watcher.run(None, &progress).await.created, 8);

    // The change a watcher sees: `s0`'s metadata now opts it out. Kept, saying why.
    bao.set_custom_metadata("kv", "s0", json!({"sync": "false"}))
        .await;
    let r = watcher.run_paths(&["s0".into()], None, &progress).await;
    assert_eq!((r.deleted, r.failures.len()), (0, 0), "{}", r.to_text());
    assert_eq!(r.orphans, ["kv/s0"], "{}", r.to_text());
    assert!(!env.side.secrets("kv").await["kv/s0"].pending_deletion);

    // A path the operator's patterns leave out: its replica goes under the delete policy.
    let mut narrower = a.clone();
    narrower.exclude = vec!["s1".into()];
    let narrow = replicator::run::Replicator::new(&narrower, &env.aws).unwrap();
    let r = narrow.run(None, &progress).await;
    assert_eq!((r.deleted, r.failures.len()), (1, 0), "{}", r.to_text());
    assert!(env.side.secrets("kv").await["kv/s1"].pending_deletion);
    // Selected again: a change-driven run restores it.
    let r = watcher.run_paths(&["s1".into()], None, &progress).await;
    assert_eq!(r.failures.len(), 0, "{}", r.to_text());
    assert!(
        !env.side.secrets("kv").await["kv/s1"].pending_deletion,
        "{}",
        r.to_text()
    );
}

/// A replica's resource policy as moto holds it.
async fn policy_of(env: &common::Env, name: &str) -> Option<serde_json::Value> {
    let out = env
        .side
        .sm
        .get_resource_policy()
        .secret_id(name)
        .send()
        .await
        .unwrap();
    out.resource_policy()
        .map(|p| serde_json::from_str(p).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_policy_is_put_on_each_replica_kept_in_sync_and_never_on_a_foreign_secret() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let audit = bao.audit_log();
    bao.put("kv", "app/db", json!({"password": "pw"})).await;
    bao.put("kv", "web", json!({"k": "v"})).await;
    // Someone else's secret under the prefix, with a policy of its own.
    let foreign = env.side.create("kv/theirs", "{}", &[("team", "x")]).await;
    let theirs = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:role/x"},"Action":"secretsmanager:GetSecretValue","Resource":"*"}]}"#;
    env.side
        .sm
        .put_resource_policy()
        .secret_id(&foreign)
        .resource_policy(theirs)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    let template = |role: &str| {
        format!(
            r#"{{"Version": "2012-10-17", "Statement": [{{"Sid": "App", "Effect": "Allow",
               "Principal": {{"AWS": "arn:aws:iam::${{Account}}:role/{role}"}},
               "Action": "secretsmanager:GetSecretValue", "Resource": "${{ReplicaArn}}"}}]}}"#
        )
    };
    std::fs::write(&file, template("app")).unwrap();
    let mut a = args(&env, "kv");
    a.resource_policy = Some(format!("@{}", file.display()));
    // Every replica's policy is audited in every run (one slot of a one-hour cycle).
    a.region_audit_hours = 1;

    let first = sync(&env, &a).await;
    assert_eq!(
        (first.created, first.failures.len()),
        (2, 0),
        "{}",
        first.to_text()
    );
    let seen = env.side.secrets("kv").await;
    for name in ["kv/app/db", "kv/web"] {
        let arn = &seen[name].arn;
        let p = policy_of(&env, name).await.unwrap();
        assert_eq!(p["Statement"][0]["Resource"], arn.as_str(), "{name}");
        assert_eq!(
            p["Statement"][0]["Principal"]["AWS"],
            format!("arn:aws:iam::{}:role/app", e2e::ACCOUNT)
        );
        assert!(seen[name].tags.contains_key("resource-policy"), "{name}");
    }
    let untouched = || async {
        assert_eq!(
            policy_of(&env, "kv/theirs").await.unwrap(),
            serde_json::from_str::<serde_json::Value>(theirs).unwrap(),
            "another's secret keeps its own policy"
        );
    };
    untouched().await;
    let reads = e2e::audited_value_reads(&audit).len();

    // Nothing changed: the audit reads each policy back and writes nothing.
    let idle = sync(&env, &a).await;
    assert_eq!(
        (idle.unchanged, idle.failures.len()),
        (2, 0),
        "{}",
        idle.to_text()
    );
    assert!(
        !calls(&idle).contains(&"PutResourcePolicy"),
        "{:?}",
        calls(&idle)
    );
    assert!(
        calls(&idle).contains(&"GetResourcePolicy"),
        "{:?}",
        calls(&idle)
    );

    // Someone widens one replica's policy in AWS: the audit puts the configured one back.
    env.side
        .sm
        .put_resource_policy()
        .secret_id("kv/web")
        .resource_policy(theirs)
        .send()
        .await
        .unwrap();
    let repaired = sync(&env, &a).await;
    assert_eq!(
        (repaired.updated, repaired.failures.len()),
        (1, 0),
        "{}",
        repaired.to_text()
    );
    assert_eq!(
        policy_of(&env, "kv/web").await.unwrap()["Statement"][0]["Principal"]["AWS"],
        format!("arn:aws:iam::{}:role/app", e2e::ACCOUNT)
    );

    // The template changes: every replica's policy is written again, no value read.
    std::fs::write(&file, template("app-v2")).unwrap();
    let changed = sync(&env, &a).await;
    assert_eq!(
        (changed.updated, changed.failures.len()),
        (2, 0),
        "{}",
        changed.to_text()
    );
    for name in ["kv/app/db", "kv/web"] {
        assert_eq!(
            policy_of(&env, name).await.unwrap()["Statement"][0]["Principal"]["AWS"],
            format!("arn:aws:iam::{}:role/app-v2", e2e::ACCOUNT)
        );
    }
    assert_eq!(
        e2e::audited_value_reads(&audit).len(),
        reads,
        "no value read"
    );

    // No policy configured any more: the ones this tool put are taken off, and their tag.
    a.resource_policy = None;
    let removed = sync(&env, &a).await;
    assert_eq!(
        (removed.updated, removed.failures.len()),
        (2, 0),
        "{}",
        removed.to_text()
    );
    let seen = env.side.secrets("kv").await;
    for name in ["kv/app/db", "kv/web"] {
        assert_eq!(policy_of(&env, name).await, None, "{name}");
        assert!(!seen[name].tags.contains_key("resource-policy"), "{name}");
    }
    untouched().await;
    assert_eq!(sync(&env, &a).await.writes(), 0);

    // A policy that would widen access is refused before anything runs.
    std::fs::write(
        &file,
        r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]}"#,
    )
    .unwrap();
    a.resource_policy = Some(format!("@{}", file.display()));
    let refused = sync(&env, &a).await;
    assert_eq!(refused.writes(), 0);
    assert!(
        refused.to_text().contains("allows every principal"),
        "{}",
        refused.to_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_into_another_account_writes_its_replicas_there_through_the_assumed_role() {
    const TARGET: &str = "222222222222";
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "app/db", json!({"password": "pw"})).await;
    bao.put("kv", "web", json!({"k": "v"})).await;
    // The connection secret stays in the function's own account.
    env.side
        .create(
            "kv-connection/vault",
            &json!({"vaultAddress": bao.addr, "vaultToken": e2e::ROOT_TOKEN}).to_string(),
            &[],
        )
        .await;
    let proxy = e2e::aws_proxy::AwsProxy::start(&env.moto.url).await;
    let through = env.moto.sdk_config_at(&proxy.url).await;
    let role_arn = format!("arn:aws:iam::{TARGET}:role/team-replicas");
    let mut a = args(&env, "kv");
    a.vault_addr = None;
    a.vault_token = None;
    a.connection_secret = Some("kv-connection/vault".into());
    a.account_role_arn = Some(role_arn.clone());
    a.external_id = Some("ext-7f3a".into());
    let replicator = replicator::run::Replicator::new(&a, &through).unwrap();

    let first = replicator.run(None, &Progress::default()).await;
    assert_eq!(
        (first.created, first.failures.len()),
        (2, 0),
        "{}",
        first.to_text()
    );
    let role = contract::account::AccountRole::new(&role_arn, Some("ext-7f3a")).unwrap();
    let in_target = replicator::aws::in_account(&env.aws, &role);
    let caller = aws_sdk_sts::Client::new(&in_target)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(
        caller.account(),
        Some(TARGET),
        "moto acts in the role's account"
    );
    let target = e2e::aws_side::AwsSide::new(&in_target);
    let there = target.secrets("kv").await;
    assert_eq!(
        there.keys().collect::<Vec<_>>(),
        ["kv/app/db", "kv/web"],
        "the replicas are in the role's account"
    );
    for seen in there.values() {
        assert!(seen.arn.contains(&format!(":{TARGET}:")), "{}", seen.arn);
    }
    assert_eq!(target.value("kv/app/db").await, json!({"password": "pw"}));
    assert!(
        env.side.secrets("kv").await.is_empty(),
        "nothing is written in the function's own account"
    );

    // A change reaches the other account; the role is assumed once, with its external id,
    // and its credentials serve both runs.
    bao.put("kv", "web", json!({"k": "v2"})).await;
    let second = replicator.run(None, &Progress::default()).await;
    assert_eq!(
        (second.updated, second.unchanged, second.failures.len()),
        (1, 1, 0),
        "{}",
        second.to_text()
    );
    assert_eq!(target.value("kv/web").await, json!({"k": "v2"}));
    let assumed: Vec<String> = proxy
        .calls()
        .into_iter()
        .filter(|(op, _)| op == "AssumeRole")
        .map(|(_, id)| id)
        .collect();
    assert_eq!(assumed, [format!("{role_arn} external-id=ext-7f3a")]);
    // The connection secret was read at home, by the function's own credentials, each run.
    assert!(
        proxy
            .calls()
            .iter()
            .any(|(op, id)| op == "GetSecretValue" && id == "kv-connection/vault")
    );

    // A role that refuses (here, the wrong external id): the run fails as a denied access,
    // not as an unreachable network, and writes nothing anywhere.
    proxy.set(vec![e2e::aws_proxy::Rewrite::Fail {
        op: "AssumeRole".into(),
        name: format!("{role_arn} external-id=ext-wrong"),
        code: "AccessDenied".into(),
    }]);
    a.external_id = Some("ext-wrong".into());
    bao.put("kv", "web", json!({"k": "v3"})).await;
    let refused = replicator::run::Replicator::new(&a, &through)
        .unwrap()
        .run(None, &Progress::default())
        .await;
    assert_eq!(
        failure_kinds(&refused),
        [(String::new(), "aws_access_denied".to_owned())],
        "{}",
        refused.to_text()
    );
    assert_eq!(refused.updated + refused.created + refused.deleted, 0);
    assert_eq!(target.value("kv/web").await, json!({"k": "v2"}));
    assert!(env.side.secrets("kv").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stacks_on_one_prefix_never_write_or_delete_each_others_replicas() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "app/db", json!({"password": "pw"})).await;
    bao.put("kv", "web", json!({"k": "v"})).await;
    let stack = |name: Option<&str>| {
        let mut a = args(&env, "kv");
        a.stack = name.map(str::to_owned);
        a.deletion_policy = DeletionPolicy::Delete;
        a.max_delete_share = 1.0;
        a
    };
    // Written by a run that named no stack (as before the stack tag): blue's first run claims
    // it, having checked it is the replica of the same source.
    let before = sync(&env, &stack(None)).await;
    assert_eq!(before.created, 2, "{}", before.to_text());
    let blue = sync(&env, &stack(Some("blue"))).await;
    assert_eq!(
        (blue.updated, blue.failures.len()),
        (2, 0),
        "the stack tag added: {}",
        blue.to_text()
    );
    let seen = env.side.secrets("kv").await;
    for name in ["kv/app/db", "kv/web"] {
        assert_eq!(seen[name].tags["replica-stack"], "blue", "{name}");
    }
    // green reads another Vault with the same mount: web is gone there. It writes and
    // deletes none of blue's replicas, and says why.
    bao.put("kv", "app/db", json!({"password": "green's"}))
        .await;
    bao.api("DELETE", "/v1/kv/metadata/web", None).await;
    let green = sync(&env, &stack(Some("green"))).await;
    assert_eq!(
        (green.created, green.updated, green.deleted),
        (0, 0, 0),
        "{}",
        green.to_text()
    );
    assert!(
        green
            .conflicts
            .iter()
            .any(|p| p.name == "kv/app/db" && p.message.contains("of stack \"blue\"")),
        "{}",
        green.to_text()
    );
    let after = env.side.secrets("kv").await;
    assert!(!after["kv/web"].pending_deletion, "blue's replica stays");
    assert_eq!(env.side.value("kv/app/db").await, json!({"password": "pw"}));
    // Nor does a run that names no stack.
    let anonymous = sync(&env, &stack(None)).await;
    assert_eq!(
        (anonymous.created, anonymous.updated, anonymous.deleted),
        (0, 0, 0),
        "{}",
        anonymous.to_text()
    );
}

/// `[[sync]]` rules in one process (the rules document): each rule its own mount, path,
/// namespace, prefix, selection, tags and account; nested prefixes never touch each other's
/// replicas; a change reaches every rule it falls in; one rule that fails (its role refused)
/// leaves the others replicating; the report and its problems name the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rules_in_one_process_each_sync_their_own_and_fail_alone() {
    const TARGET: &str = "222222222222";
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "payments/db", json!({"password": "pw"}))
        .await;
    bao.put("kv", "payments/scratch/tmp", json!({"t": "1"}))
        .await;
    bao.put("kv", "web/home", json!({"k": "v"})).await;
    bao.put("kv", "web/draft", json!({"k": "d"})).await;
    bao.set_custom_metadata("kv", "web/draft", json!({"sync": "false"}))
        .await;
    bao.put("kv", "web/keep", json!({"k": "kept"})).await;
    bao.set_custom_metadata("kv", "web/keep", json!({"sync": "true"}))
        .await;
    bao.namespace_with_kv2("team").await;
    bao.api_in(
        "team",
        "POST",
        "kv/data/ledger",
        Some(json!({"data": {"n": "1"}})),
    )
    .await;
    let proxy = e2e::aws_proxy::AwsProxy::start(&env.moto.url).await;
    let through = env.moto.sdk_config_at(&proxy.url).await;
    let role_arn = format!("arn:aws:iam::{TARGET}:role/team-replicas");
    let rules = |external_id: &str| {
        json!([
            {"name": "everything", "prefix": "all", "mount": "kv", "exclude": ["*/scratch/*"],
             "deletion_policy": "delete", "max_delete_share": 1.0},
            {"name": "payments", "prefix": "all/pay", "mount": "kv", "path": "payments",
             "tags": {"team": "payments"}},
            {"name": "team", "prefix": "team", "mount": "kv", "namespace": "team",
             "account_role_arn": role_arn, "external_id": external_id},
            {"name": "opted", "prefix": "opted", "mount": "kv", "path": "web", "opt_in": true,
             "resource_policy": {"Version": "2012-10-17", "Statement": [{"Effect": "Deny",
               "Principal": "*", "Action": "secretsmanager:DeleteSecret",
               "Resource": "${ReplicaArn}"}]}},
        ])
        .to_string()
    };
    let mut a = args(&env, "unused");
    a.rules = Some(rules("ext-7f3a"));
    let replicator = replicator::run::Replicator::new(&a, &through).unwrap();

    let first = replicator.run(None, &Progress::default()).await;
    assert_eq!(
        (first.created, first.excluded, first.failures.len()),
        (7, 4, 0),
        "{}",
        first.to_text()
    );
    let per_rule: Vec<(Option<&str>, u64)> = first
        .rules
        .iter()
        .map(|r| (r.rule.as_deref(), r.created))
        .collect();
    assert_eq!(
        per_rule,
        [
            (Some("everything"), 3),
            (Some("payments"), 2),
            (Some("team"), 1),
            (Some("opted"), 1)
        ]
    );
    let home = env.side.secrets("all").await;
    assert_eq!(
        home.keys().collect::<Vec<_>>(),
        [
            "all/pay/db",
            "all/pay/scratch/tmp",
            "all/payments/db",
            "all/web/home",
            "all/web/keep"
        ]
    );
    // The opt-in rule took only the secret that says `sync = "true"`, and put its policy on
    // it (the other rule's replica of it has none).
    let opted = env.side.secrets("opted").await;
    assert_eq!(opted.keys().collect::<Vec<_>>(), ["opted/keep"]);
    let policy = policy_of(&env, "opted/keep")
        .await
        .expect("the rule's policy");
    assert_eq!(
        policy["Statement"][0]["Resource"],
        opted["opted/keep"].arn.as_str()
    );
    assert_eq!(policy_of(&env, "all/web/keep").await, None);
    assert_eq!(home["all/pay/db"].tags["replica-rule"], "payments");
    assert_eq!(home["all/pay/db"].tags["team"], "payments");
    assert_eq!(home["all/web/home"].tags["replica-rule"], "everything");
    assert!(!home["all/web/home"].tags.contains_key("team"));
    assert!(
        env.side.secrets("team").await.is_empty(),
        "the team rule writes in its own account only"
    );
    let role = contract::account::AccountRole::new(&role_arn, Some("ext-7f3a")).unwrap();
    let target = e2e::aws_side::AwsSide::new(&replicator::aws::in_account(&env.aws, &role));
    assert_eq!(
        target.secrets("team").await.keys().collect::<Vec<_>>(),
        ["team/ledger"]
    );
    assert_eq!(target.value("team/ledger").await, json!({"n": "1"}));

    // Nothing changed: nothing written, and the rule with the outer prefix deletes none of
    // the nested rule's replicas, though it deletes what Vault deletes.
    let second = replicator.run(None, &Progress::default()).await;
    assert_eq!(
        (second.writes(), second.unchanged, second.failures.len()),
        (0, 7, 0),
        "{}",
        second.to_text()
    );
    assert!(
        !env.side.secrets("all").await["all/pay/db"].pending_deletion,
        "the nested rule's replica stays"
    );
    // One walk of kv serves both rules on it (the folders "", payments/, payments/scratch/
    // and web/, once each), one more team's kv; and each secret's metadata is read once.
    let walked = |kind: &str| second.vault_requests.get(kind).copied().unwrap_or(0);
    assert_eq!(
        walked("list") + walked("list_detailed_metadata"),
        5,
        "{:?}",
        second.vault_requests
    );
    assert!(walked("read_metadata") <= 5, "{:?}", second.vault_requests);

    // A change reaches each rule it falls in, and only those.
    bao.put("kv", "payments/db", json!({"password": "pw2"}))
        .await;
    let changed = replicator
        .run_paths(&["payments/db".to_owned()], None, &Progress::default())
        .await;
    assert_eq!(
        (changed.updated, changed.failures.len()),
        (2, 0),
        "{}",
        changed.to_text()
    );
    for name in ["all/payments/db", "all/pay/db"] {
        assert_eq!(
            env.side.value(name).await,
            json!({"password": "pw2"}),
            "{name}"
        );
    }

    // The team rule's role refuses: that rule fails, named, and the others go on.
    proxy.set(vec![e2e::aws_proxy::Rewrite::Fail {
        op: "AssumeRole".into(),
        name: format!("{role_arn} external-id=ext-wrong"),
        code: "AccessDenied".into(),
    }]);
    a.rules = Some(rules("ext-wrong"));
    bao.put("kv", "web/home", json!({"k": "v2"})).await;
    let refused = replicator::run::Replicator::new(&a, &through)
        .unwrap()
        .run(None, &Progress::default())
        .await;
    assert_eq!(
        refused
            .failures
            .iter()
            .map(|p| (p.rule.as_deref(), p.kind.as_str()))
            .collect::<Vec<_>>(),
        [(Some("team"), "aws_access_denied")],
        "{}",
        refused.to_text()
    );
    assert_eq!(refused.updated, 1, "{}", refused.to_text());
    assert_eq!(env.side.value("all/web/home").await, json!({"k": "v2"}));
    assert!(
        refused.to_text().contains("(rule team)"),
        "{}",
        refused.to_text()
    );
    let json: serde_json::Value = serde_json::from_str(&refused.to_json()).unwrap();
    assert_eq!(json["rules"][2]["rule"], "team");
    assert_eq!(json["failures"][0]["rule"], "team");
}

/// Rules under a folder the Vault policy does not let the sync list (only each rule's own
/// path): the walk they would share fails at that folder, and each rule walks its own path
/// instead and replicates. Two rules on one prefix of one account and region are refused
/// before any request, the region left out being the process's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_under_a_folder_the_sync_may_not_list_each_walk_their_own_path() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "team/app/db", json!({"k": "1"})).await;
    bao.put("kv", "team/other/db", json!({"k": "2"})).await;
    let token = bao
        .token_with_policy(
            "two-paths",
            r#"
path "kv/metadata/team/app/*" { capabilities = ["read", "list"] }
path "kv/data/team/app/*" { capabilities = ["read"] }
path "kv/metadata/team/other/*" { capabilities = ["read", "list"] }
path "kv/data/team/other/*" { capabilities = ["read"] }
"#,
        )
        .await;
    let mut a = args(&env, "unused");
    a.vault_token = Some(token.as_str().into());
    a.rules = Some(
        json!([
            {"name": "app", "prefix": "app", "mount": "kv", "path": "team/app"},
            {"name": "other", "prefix": "other", "mount": "kv", "path": "team/other"},
        ])
        .to_string(),
    );
    let first = sync(&env, &a).await;
    assert_eq!(
        (first.created, first.failures.len()),
        (2, 0),
        "{}",
        first.to_text()
    );
    assert_eq!(env.side.value("app/db").await, json!({"k": "1"}));
    assert_eq!(env.side.value("other/db").await, json!({"k": "2"}));
    let again = sync(&env, &a).await;
    assert_eq!(
        (again.writes(), again.unchanged),
        (0, 2),
        "{}",
        again.to_text()
    );

    let region = env.aws.region().unwrap().to_string();
    a.rules = Some(
        json!([
            {"name": "a", "prefix": "p", "mount": "kv"},
            {"name": "b", "prefix": "p", "mount": "kv", "path": "team", "region": region},
        ])
        .to_string(),
    );
    let refused = replicator::run::Replicator::new(&a, &env.aws).unwrap_err();
    assert!(
        refused.to_string().contains("rule \"b\": prefix"),
        "{refused}"
    );
}
