//! `deployer plan | up | status | destroy` against a moto server the test starts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::Moto;
use e2e::deploy::{fake_zip, run};
use sha2::Digest as _;

struct Fixture {
    moto: Moto,
    dir: tempfile::TempDir,
    /// Lambda's code signing, which moto lacks, when the test needs it: the deployer's
    /// requests go through it.
    signing: Option<e2e::lambda_signing::SigningStandIn>,
}

impl Fixture {
    async fn new(config: &str) -> Self {
        let moto = Moto::start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deployer.toml"), config).unwrap();
        fake_zip(dir.path(), b"\x7fELF v1");
        Self {
            moto,
            dir,
            signing: None,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    async fn deployer(&self, args: &[&str]) -> e2e::deploy::Outcome {
        let out = self.deployer_may_fail(args).await;
        assert!(
            out.error.is_none(),
            "deployer {args:?} failed: {:?}",
            out.error
        );
        out
    }

    /// [`Self::deployer`], returning a failure instead of panicking on it.
    async fn deployer_may_fail(&self, args: &[&str]) -> e2e::deploy::Outcome {
        let config = self.path("deployer.toml");
        let zip = self.path("replicator.zip");
        let mut all = vec![
            "--config",
            &config,
            "--lambda-zip",
            &zip,
            "--output",
            "json",
        ];
        all.extend_from_slice(args);
        match &self.signing {
            Some(stand_in) => {
                let aws = self.moto.sdk_config_at(&stand_in.url).await;
                e2e::deploy::run_as(&aws, &all).await
            }
            None => run(&self.moto, &all).await,
        }
    }
}

const EXTERNAL: &str = r#"
stack_name = "demo"
deploy_vault_on_ec2 = false
external_vault_address = "https://vault.example.com:8200"
notification_email = "ops@example.com"
schedule = "cron(0/15 * * * ? *)"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_twice_changes_nothing_the_second_time_and_destroy_twice_is_fine() {
    let f = Fixture::new(EXTERNAL).await;
    // Terraform's convention: a plan that worked exits 0, changes or not, unless asked.
    assert_eq!(f.deployer(&["plan"]).await.code, 0);
    assert_eq!(f.deployer(&["status"]).await.code, 0);
    let plan = f.deployer(&["plan", "--detailed-exitcode"]).await;
    assert_eq!(plan.code, 2, "changes pending");
    assert!(
        plan.mutating.is_empty(),
        "plan changes nothing: {:?}",
        plan.mutating
    );
    let p = plan.json();
    assert!(
        p["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["action"] == "create"),
        "{p}"
    );
    // The key, the connection, logs, the alarms, the dashboard ($3) and the metrics ($3.30).
    let total = p["cost"]["total_usd_per_month"].as_f64().unwrap();
    assert!(total < 10.0, "{total}");

    let up = f.deployer(&["up", "--yes"]).await;
    assert_eq!(up.code, 0);
    let o = up.json()["outputs"].clone();
    assert_eq!(o["vault_url"], "https://vault.example.com:8200");
    assert_eq!(o["function_name"], "demo-replicator");
    assert!(
        o["connection_secret_arn"]
            .as_str()
            .unwrap()
            .contains(":secret:hybrid-aws-secrets-connection/vault-")
    );
    assert!(
        o["topic_arn"]
            .as_str()
            .unwrap()
            .ends_with(":demo-replicator-failures")
    );

    // One run at a time, no retry of a failed scheduled run, failures to the topic.
    let (concurrency, retries, on_failure) = invoke_settings(&f, "demo-replicator").await;
    assert_eq!(concurrency, Some(1));
    assert_eq!(retries, Some(0));
    assert_eq!(on_failure.as_deref(), o["topic_arn"].as_str());

    let again = f.deployer(&["up", "--yes"]).await;
    assert_eq!(again.code, 0);
    assert!(
        again.mutating.is_empty(),
        "second up sent {:?}",
        again.mutating
    );
    assert_eq!(again.json()["applied"], serde_json::json!([]));

    let plan = f.deployer(&["plan", "--detailed-exitcode"]).await;
    assert_eq!(plan.code, 0, "{}", plan.stdout);
    let status = f.deployer(&["status", "--detailed-exitcode"]).await;
    assert_eq!(status.code, 0, "{}", status.stdout);
    assert_eq!(status.json()["clean"], true);

    // The alarms over the function's metrics, notifying the topic, and the dashboard.
    let aws = f.moto.sdk_config().await;
    let cw = aws_sdk_cloudwatch::Client::new(&aws);
    let alarms = cw.describe_alarms().send().await.unwrap();
    let mut found: Vec<(String, String, String, Vec<String>)> = alarms
        .metric_alarms()
        .iter()
        .map(|a| {
            (
                a.alarm_name().unwrap().to_owned(),
                a.metric_name().unwrap().to_owned(),
                a.treat_missing_data().unwrap_or("").to_owned(),
                a.alarm_actions().to_vec(),
            )
        })
        .collect();
    found.sort();
    let topic = o["topic_arn"].as_str().unwrap().to_owned();
    assert_eq!(
        found,
        [
            (
                "demo-failed-runs".to_owned(),
                "Failed".to_owned(),
                "notBreaching".to_owned(),
                vec![topic.clone()]
            ),
            (
                "demo-no-full-sync".to_owned(),
                "FullSyncsSucceeded".to_owned(),
                "breaching".to_owned(),
                vec![topic.clone()]
            ),
        ]
    );
    let board = cw
        .get_dashboard()
        .dashboard_name("demo")
        .send()
        .await
        .unwrap();
    assert!(
        board.dashboard_body().unwrap().contains("LagSeconds"),
        "{board:?}"
    );
    // Someone loosens an alarm: drift, shown, then repaired by the next up.
    cw.put_metric_alarm()
        .alarm_name("demo-failed-runs")
        .namespace("VaultSecretsReplicator")
        .metric_name("Failed")
        .dimensions(
            aws_sdk_cloudwatch::types::Dimension::builder()
                .name("Stack")
                .value("demo")
                .build(),
        )
        .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
        .period(300)
        .evaluation_periods(1)
        .threshold(100.0)
        .comparison_operator(
            aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanOrEqualToThreshold,
        )
        .send()
        .await
        .unwrap();
    let drifted = f.deployer(&["status", "--detailed-exitcode"]).await;
    assert_eq!(drifted.code, 2, "{}", drifted.stdout);
    let repaired = f.deployer(&["up", "--yes"]).await;
    assert_eq!(repaired.sent, ["PutMetricAlarm"]);

    // No dashboard wanted: the stack's goes (the alarms stay), and stays gone; then back.
    let plain = f
        .deployer(&["--set", "dashboard=false", "up", "--yes"])
        .await;
    assert_eq!(plain.sent, ["DeleteDashboards"]);
    assert!(
        cw.get_dashboard()
            .dashboard_name("demo")
            .send()
            .await
            .is_err(),
        "the dashboard is gone"
    );
    let again = f
        .deployer(&["--set", "dashboard=false", "up", "--yes"])
        .await;
    assert!(again.mutating.is_empty(), "{:?}", again.mutating);
    assert_eq!(f.deployer(&["up", "--yes"]).await.sent, ["PutDashboard"]);

    // No reserved concurrency (an account at Lambda's default limit reserves none): the slot
    // goes, and stays gone.
    let unreserved = f
        .deployer(&["--set", "lambda_reserved_concurrency=0", "up", "--yes"])
        .await;
    let ops: Vec<&str> = unreserved
        .mutating
        .iter()
        .map(|(op, _)| op.as_str())
        .collect();
    assert_eq!(ops, ["DeleteFunctionConcurrency"]);
    assert_eq!(invoke_settings(&f, "demo-replicator").await.0, None);
    let again = f
        .deployer(&["--set", "lambda_reserved_concurrency=0", "up", "--yes"])
        .await;
    assert!(again.mutating.is_empty(), "{:?}", again.mutating);

    let gone = f.deployer(&["destroy", "--yes"]).await;
    assert_eq!(gone.code, 0);
    let deleted: Vec<String> = gone.json()["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "delete")
        .map(|c| c["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        deleted,
        [
            "cloudwatch alarm",
            "cloudwatch alarm",
            "cloudwatch dashboard",
            "schedule rule",
            // The sync function and the rotation function, their log groups and roles.
            "lambda function",
            "lambda function",
            "connection secret",
            "log group",
            "log group",
            "iam role",
            "iam role",
            "sns topic",
            "kms key"
        ]
    );
    let status = f.deployer(&["status", "--detailed-exitcode"]).await;
    assert_eq!(status.code, 2);
    for r in status.json()["resources"].as_array().unwrap() {
        // The connection secret stays recoverable for 7 days: present, scheduled for deletion.
        if r["kind"] == "connection secret" {
            assert_eq!(
                (&r["status"], &r["fields"][0]["from"]),
                (&"drifted".into(), &"scheduled for deletion".into())
            );
        } else {
            assert_eq!(r["status"], "missing", "{r}");
        }
    }
    let twice = f.deployer(&["destroy", "--yes"]).await;
    assert_eq!(twice.code, 0);
    assert!(
        twice.mutating.is_empty(),
        "nothing left to delete: {:?}",
        twice.mutating
    );

    // Up again after destroy: the scheduled secret is restored, a new key made.
    let back = f.deployer(&["up", "--yes"]).await;
    assert_eq!(back.code, 0);
    assert_eq!(f.deployer(&["status", "--detailed-exitcode"]).await.code, 0);
}

/// A secret named as a stack's Vault TLS secret that the stack did not make (no stack tag) is
/// never deleted: not by `up` of a stack with an external Vault (which removes an EC2 Vault's
/// leftovers), nor by `destroy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_secret_the_stack_did_not_make_is_left_alone() {
    let f = Fixture::new(EXTERNAL).await;
    let aws = f.moto.sdk_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    create_tagged(&sm, "demo-vault/tls", &[("owner", "someone-else")]).await;
    for args in [&["up", "--yes"][..], &["destroy", "--yes"][..]] {
        assert_eq!(f.deployer(args).await.code, 0, "{args:?}");
        let there = sm
            .describe_secret()
            .secret_id("demo-vault/tls")
            .send()
            .await
            .unwrap();
        assert!(there.deleted_date().is_none(), "{args:?} deleted it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_keeps_the_replicas_unless_asked_then_only_the_managed_ones() {
    let f = Fixture::new(EXTERNAL).await;
    f.deployer(&["up", "--yes"]).await;
    let aws = f.moto.sdk_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    // Whose each secret is, by its tags: this stack's sync (its mount, the whole mount, its
    // prefix), another sync's, an earlier version's replica without the prefix tag, nobody's.
    let ours = [
        ("managed-by", "vault-secrets-replicator"),
        ("vault-mount", "hybrid-aws-secrets"),
        ("vault-path", "/"),
        ("replica-prefix", "hybrid-aws-secrets"),
    ];
    let mut nested = ours;
    nested[3].1 = "hybrid-aws-secrets/mirror";
    let mut other_mount = ours;
    other_mount[1].1 = "payments";
    let old: &[(&str, &str)] = &ours[..3];
    let secrets: [(&str, &[(&str, &str)]); 8] = [
        ("hybrid-aws-secrets/a", &ours),
        ("hybrid-aws-secrets/team/b", &ours),
        ("hybrid-aws-secrets/hand-made", &[]),
        ("hybrid-aws-secrets/mirror/d", &nested),
        ("hybrid-aws-secrets/e", &other_mount),
        ("hybrid-aws-secrets/old/f", old),
        ("elsewhere/c", &ours),
        ("removed-rule/g", &ours),
    ];
    let stack_key = aws_sdk_kms::Client::new(&aws)
        .describe_key()
        .key_id("alias/hybrid-aws-secrets-encryption-key")
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .arn()
        .unwrap()
        .to_owned();
    for (name, tags) in secrets {
        let mut req = sm.create_secret().name(name).secret_string("{}");
        if name == "hybrid-aws-secrets/mirror/d" || name == "removed-rule/g" {
            // Another sync's, but made with this stack's key (taken over from it, say); a
            // replica of a rule since removed from the configuration.
            req = req.kms_key_id(&stack_key);
        }
        if name == "hybrid-aws-secrets/team/b" {
            // Replica regions: AWS refuses to delete it until they are removed.
            req = req.add_replica_regions(
                aws_sdk_secretsmanager::types::ReplicaRegionType::builder()
                    .region("us-west-2")
                    .build(),
            );
        }
        for (k, v) in tags {
            req = req.tags(
                aws_sdk_secretsmanager::types::Tag::builder()
                    .key(*k)
                    .value(*v)
                    .build(),
            );
        }
        req.send().await.unwrap();
    }
    let scheduled = || async {
        let mut out = Vec::new();
        for (name, _) in secrets {
            let d = sm.describe_secret().secret_id(name).send().await.unwrap();
            if d.deleted_date().is_some() {
                out.push(name);
            }
        }
        out
    };

    // The key by its id, not its alias: deleting the alias while the key stays live must not
    // read as "pending deletion", and any error fails the test.
    let kms = aws_sdk_kms::Client::new(&aws);
    let key_id = kms
        .describe_key()
        .key_id("alias/hybrid-aws-secrets-encryption-key")
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned();
    let key_pending = || async {
        let state = kms
            .describe_key()
            .key_id(&key_id)
            .send()
            .await
            .expect("a key pending deletion is still described")
            .key_metadata()
            .unwrap()
            .key_state()
            .cloned();
        assert!(
            matches!(
                state,
                Some(
                    aws_sdk_kms::types::KeyState::Enabled
                        | aws_sdk_kms::types::KeyState::PendingDeletion
                )
            ),
            "{state:?}"
        );
        state == Some(aws_sdk_kms::types::KeyState::PendingDeletion)
    };
    let plain = f.deployer(&["destroy", "--yes"]).await;
    assert!(scheduled().await.is_empty());
    // The replicas stay, so does the key they are encrypted with.
    assert!(!key_pending().await, "the key went while replicas need it");
    let key = plain.json()["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "kms key")
        .unwrap()
        .clone();
    assert_eq!(key["action"], "unchanged", "{key}");
    assert!(
        key["note"]
            .as_str()
            .unwrap()
            .starts_with("kept: 5 secret(s) are encrypted with it"),
        "{key}"
    );
    assert!(
        plain.json()["kept"][0]
            .as_str()
            .unwrap()
            .starts_with("replicated secrets hybrid-aws-secrets/*")
    );

    f.deployer(&["up", "--yes"]).await;
    let asked = f
        .deployer(&["destroy", "--yes", "--delete-replicated-secrets"])
        .await;
    // Exactly this stack's replicas: not another sync's, not another mount's, not one that
    // cannot say whose it is (nor, while it is there, the key it may be encrypted with).
    assert_eq!(
        scheduled().await,
        ["hybrid-aws-secrets/a", "hybrid-aws-secrets/team/b"]
    );
    assert!(!key_pending().await, "an unproven replica keeps the key");
    let replicas = asked.json()["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "replicated secrets")
        .unwrap()
        .clone();
    assert_eq!(replicas["action"], "delete");
    let note = replicas["note"].as_str().unwrap();
    assert!(
        note.starts_with("2 managed by the replicator scheduled for deletion in 30 days")
            && note.contains("; 2 of another sync (another stack, mount or prefix) kept")
            && note.contains("; 1 without the replica-prefix tag")
            && note.ends_with("1 without the managed-by=vault-secrets-replicator tag kept"),
        "{note}"
    );
    let again = f
        .deployer(&["destroy", "--yes", "--delete-replicated-secrets"])
        .await;
    assert!(again.mutating.is_empty(), "{:?}", again.mutating);
    // Once that one is gone, with the replicas the key goes too.
    sm.delete_secret()
        .secret_id("hybrid-aws-secrets/old/f")
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    f.deployer(&["destroy", "--yes", "--delete-replicated-secrets"])
        .await;
    assert!(
        !key_pending().await,
        "another sync's secret made with the key keeps it"
    );
    sm.delete_secret()
        .secret_id("hybrid-aws-secrets/mirror/d")
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    f.deployer(&["destroy", "--yes", "--delete-replicated-secrets"])
        .await;
    assert!(
        !key_pending().await,
        "a replica under a prefix no sync has now keeps it"
    );
    sm.delete_secret()
        .secret_id("removed-rule/g")
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    f.deployer(&["destroy", "--yes", "--delete-replicated-secrets"])
        .await;
    assert!(key_pending().await, "with the replicas, the key goes too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_made_by_hand_is_reported_then_repaired() {
    let f = Fixture::new(EXTERNAL).await;
    f.deployer(&["up", "--yes"]).await;
    let aws = f.moto.sdk_config().await;
    let events = aws_sdk_eventbridge::Client::new(&aws);
    events
        .put_rule()
        .name("demo-replicator-schedule")
        .schedule_expression("rate(1 day)")
        .send()
        .await
        .unwrap();
    let lambda = aws_sdk_lambda::Client::new(&aws);
    lambda
        .update_function_configuration()
        .function_name("demo-replicator")
        .memory_size(512)
        .send()
        .await
        .unwrap();
    let iam = aws_sdk_iam::Client::new(&aws);
    iam.put_role_policy()
        .role_name("demo-replicator")
        .policy_name("replicator")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();
    iam.update_assume_role_policy()
        .role_name("demo-replicator")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#)
        .send()
        .await
        .unwrap();
    lambda
        .update_function_configuration()
        .function_name("demo-replicator")
        .environment(
            aws_sdk_lambda::types::Environment::builder()
                .variables("REPLICATOR_DELETION_POLICY", "delete")
                .build(),
        )
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule("demo-replicator-schedule")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("replicator")
                .arn("arn:aws:lambda:us-east-1:123456789012:function:someone-else")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let kms = aws_sdk_kms::Client::new(&aws);
    let key_id = kms
        .describe_key()
        .key_id("alias/hybrid-aws-secrets-encryption-key")
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned();
    kms.put_key_policy()
        .key_id(&key_id)
        .policy_name("default")
        .policy(r#"{"Version":"2012-10-17","Statement":[{"Sid":"Open","Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();
    lambda
        .put_function_concurrency()
        .function_name("demo-replicator")
        .reserved_concurrent_executions(5)
        .send()
        .await
        .unwrap();
    // Replaced by hand (deleted first: moto keeps the first configuration it was given).
    lambda
        .delete_function_event_invoke_config()
        .function_name("demo-replicator")
        .send()
        .await
        .unwrap();
    lambda
        .put_function_event_invoke_config()
        .function_name("demo-replicator")
        .maximum_retry_attempts(2)
        .send()
        .await
        .unwrap();
    aws_sdk_cloudwatchlogs::Client::new(&aws)
        .put_retention_policy()
        .log_group_name("/aws/lambda/demo-replicator")
        .retention_in_days(1)
        .send()
        .await
        .unwrap();

    let status = f.deployer(&["status", "--detailed-exitcode"]).await;
    assert_eq!(status.code, 2);
    let drifted: Vec<(String, Vec<String>)> = status.json()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "drifted")
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["fields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["field"].as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    let expected: Vec<(String, Vec<String>)> = [
        ("kms key", &["policy"][..]),
        ("iam role", &["trust_policy", "inline_policy"]),
        ("log group", &["retention_days"]),
        (
            "lambda function",
            &[
                "memory_mb",
                "environment",
                "reserved_concurrency",
                "max_retry_attempts",
                "on_failure",
            ],
        ),
        ("schedule rule", &["schedule", "target"]),
    ]
    .iter()
    .map(|(k, f)| ((*k).to_owned(), f.iter().map(|f| (*f).to_owned()).collect()))
    .collect();
    assert_eq!(drifted, expected);
    let repair = f.deployer(&["up", "--yes"]).await;
    let ops: Vec<&str> = repair.mutating.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(
        ops,
        [
            "DeleteFunctionEventInvokeConfig",
            "PutFunctionConcurrency",
            "PutFunctionEventInvokeConfig",
            "PutKeyPolicy",
            "PutRetentionPolicy",
            "PutRolePolicy",
            "PutRule",
            "PutTargets",
            "UpdateAssumeRolePolicy",
            "UpdateFunctionConfiguration"
        ]
    );
    assert_eq!(f.deployer(&["status", "--detailed-exitcode"]).await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_on_then_off_adds_then_removes_the_topic() {
    let f = Fixture::new(&EXTERNAL.replace("notification_email = \"ops@example.com\"", "")).await;
    let up = f.deployer(&["up", "--yes"]).await;
    assert!(up.json()["outputs"]["topic_arn"].is_null());
    assert!(!up.mutating.iter().any(|(op, _)| op == "CreateTopic"));

    let on = f
        .deployer(&["up", "--yes", "--set", "notification_email=ops@example.com"])
        .await;
    let ops: Vec<&str> = on.mutating.iter().map(|(op, _)| op.as_str()).collect();
    assert!(
        ops.contains(&"CreateTopic") && ops.contains(&"Subscribe"),
        "{ops:?}"
    );
    assert!(
        ops.contains(&"PutRolePolicy"),
        "the role gains sns:Publish: {ops:?}"
    );
    assert!(
        ops.contains(&"PutFunctionEventInvokeConfig"),
        "failures go to the new topic: {ops:?}"
    );
    let (_, retries, on_failure) = invoke_settings(&f, "demo-replicator").await;
    assert_eq!(retries, Some(0));
    assert!(
        on_failure
            .as_deref()
            .is_some_and(|d| d.ends_with(":demo-replicator-failures")),
        "{on_failure:?}"
    );

    let off = f.deployer(&["up", "--yes"]).await;
    let ops: Vec<&str> = off.mutating.iter().map(|(op, _)| op.as_str()).collect();
    assert!(ops.contains(&"DeleteTopic"), "{ops:?}");
    let (_, retries, on_failure) = invoke_settings(&f, "demo-replicator").await;
    assert_eq!(
        (retries, on_failure),
        (Some(0), None),
        "no destination left"
    );
    assert_eq!(f.deployer(&["status", "--detailed-exitcode"]).await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invalid_value_is_rejected_before_any_aws_call() {
    let f = Fixture::new(EXTERNAL).await;
    let config = f.path("deployer.toml");
    let zip = f.path("replicator.zip");
    for (set, key) in [
        ("schedule=cron(0 * * * * *)", "schedule"),
        ("schedule=rate(1 hours)", "schedule"),
        ("notification_email=not-an-email", "notification_email"),
        ("secrets_prefix=has space", "secrets_prefix"),
        ("stack_name=-x", "stack_name"),
        ("deploy_vault_on_ec2=true", "external_vault_address"),
        ("lambda_timeout_seconds=901", "lambda_timeout_seconds"),
        ("no_such_key=1", "unknown field"),
    ] {
        let out = run(
            &f.moto,
            &[
                "--config",
                &config,
                "--lambda-zip",
                &zip,
                "up",
                "--yes",
                "--set",
                set,
            ],
        )
        .await;
        assert_eq!(out.code, 1, "{set}");
        let err = out.error.unwrap();
        assert!(err.contains(key), "{set}: {err}");
        assert_eq!(out.requests, 0, "{set}: an invalid config sends no request");
    }
    // A bad zip too.
    std::fs::write(f.path("bad.zip"), b"not a zip").unwrap();
    let bad = f.path("bad.zip");
    let out = run(
        &f.moto,
        &["--config", &config, "--lambda-zip", &bad, "up", "--yes"],
    )
    .await;
    assert!(out.error.unwrap().contains("not a zip archive"));
    assert_eq!(out.requests, 0);
    // Nothing was created.
    let aws = f.moto.sdk_config().await;
    let roles = aws_sdk_iam::Client::new(&aws)
        .list_roles()
        .send()
        .await
        .unwrap();
    assert!(roles.roles().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_up_killed_midway_converges_on_rerun_without_duplicates() {
    killed_up_converges(EXTERNAL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_up_of_vault_on_ec2_killed_midway_converges_too() {
    killed_up_converges(ON_EC2).await;
}

/// Kills `up` at mutating request after mutating request: run after run, each is stopped at
/// its 1st, 2nd, 3rd or 4th mutating request (odd: after AWS made the change, which the
/// deployer never hears of; even: before it is sent), so the runs walk through the stack's
/// creation a few requests at a time until one finishes. Twice on the way the stack is
/// destroyed, so reruns also start from torn-down shapes.
async fn killed_up_converges(config_text: &str) {
    let f = Fixture::new(config_text).await;
    let config = f.path("deployer.toml");
    let zip = f.path("replicator.zip");
    let cli = <deployer::cli::Cli as clap::Parser>::try_parse_from([
        "deployer",
        "--config",
        &config,
        "--lambda-zip",
        &zip,
        "up",
    ])
    .unwrap();
    let cfg = deployer::cli::load_config(&cli.global).unwrap();
    let zipf = deployer::cli::load_zip(&cli.command, &cli.global).unwrap();
    let aws = f.moto.sdk_config().await;
    let id = deployer::cli::identity(
        &deployer::clients::Clients::new(&aws, deployer::clients::Backoff::NONE),
        Some(e2e::REGION.into()),
    )
    .await
    .unwrap();
    let spec = deployer::spec::Spec::new(cfg, id);
    let mut kills = 0;
    let mut killed_at = Vec::new();
    for run in 0.. {
        assert!(
            run < 300,
            "up never finished after {kills} kills: {:?}",
            &killed_at[killed_at.len().saturating_sub(12)..]
        );
        let kill = e2e::deploy::KillAtMutating::new(1 + (run % 4));
        let clients = deployer::clients::Clients::with_interceptor(
            &aws,
            deployer::clients::Backoff::NONE,
            Some(
                aws_smithy_runtime_api::client::interceptors::SharedInterceptor::new(
                    e2e::deploy::Injector(kill.clone()),
                ),
            ),
        );
        let stack = deployer::stack::Stack {
            clients: &clients,
            spec: &spec,
            zip: zipf.as_ref(),
        };
        let result = stack.up(&mut |_, _: &deployer::change::Change| {}).await;
        if !kill.fired.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                result.is_ok(),
                "an up nobody killed failed: {:?}",
                result.err()
            );
            break;
        }
        assert!(result.is_err(), "a killed up reported success");
        killed_at.push(kill.sent.lock().unwrap().join(","));
        kills += 1;
        if kills == 5 || kills == 17 {
            f.deployer(&["destroy", "--yes"]).await;
        }
    }
    assert!(kills > 10, "only {kills} kill points reached");
    let up = f.deployer(&["up", "--yes"]).await;
    assert_eq!(up.code, 0);
    assert!(up.mutating.is_empty(), "{:?}", up.mutating);
    assert_eq!(f.deployer(&["status", "--detailed-exitcode"]).await.code, 0);

    // The TLS pair is whole, however its creation was cut: the secret holds the certificate,
    // and the CA parameter and the connection secret carry the CA that signed it.
    if config_text == ON_EC2 {
        let ssm = aws_sdk_ssm::Client::new(&aws);
        let ca = ssm
            .get_parameter()
            .name("/onec2/vault/ca-certificate")
            .with_decryption(true)
            .send()
            .await
            .unwrap()
            .parameter
            .unwrap()
            .value
            .unwrap();
        let side = e2e::aws_side::AwsSide::new(&aws);
        let tls = side.value("onec2-vault/tls").await;
        assert_eq!(tls["ca_certificate"], ca.as_str());
        assert!(tls["certificate"].as_str().is_some());
        let conn = side.value("hybrid-aws-secrets-connection/vault").await;
        assert_eq!(conn["vaultCaCert"], ca.as_str());
        // The instance's role reads the key in the instance's first hour only (its boot script
        // reads it once; the watcher on it, later, cannot).
        let ec2 = aws_sdk_ec2::Client::new(&aws);
        let made = ec2
            .describe_instances()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("instance-state-name")
                    .values("running")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let instance = made
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .unwrap();
        let root = instance
            .block_device_mappings()
            .iter()
            .find(|m| m.device_name() == instance.root_device_name())
            .and_then(|m| m.ebs())
            .and_then(|e| e.attach_time())
            .or(instance.launch_time())
            .unwrap();
        let until = aws_sdk_ec2::primitives::DateTime::from_secs(root.secs() + 3600)
            .fmt(aws_sdk_ec2::primitives::DateTimeFormat::DateTime)
            .unwrap();
        let policy: serde_json::Value = serde_json::from_str(
            side.sm
                .get_resource_policy()
                .secret_id("onec2-vault/tls")
                .send()
                .await
                .unwrap()
                .resource_policy()
                .unwrap(),
        )
        .unwrap();
        let window = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|st| st["Sid"] == "ReadOnlyWhileTheInstanceBoots")
            .unwrap_or_else(|| panic!("{policy}"));
        assert_eq!(
            window["Condition"]["DateGreaterThan"]["aws:CurrentTime"],
            until.as_str()
        );
        // The deployer's secrets carry its own owner tag: the replicator's role may write none
        // of them, even under another stack's prefix.
        for name in ["onec2-vault/tls", "hybrid-aws-secrets-connection/vault"] {
            let d = side
                .sm
                .describe_secret()
                .secret_id(name)
                .send()
                .await
                .unwrap();
            let owner = d
                .tags()
                .iter()
                .find(|t| t.key() == Some("managed-by"))
                .and_then(|t| t.value());
            assert_eq!(owner, Some("vault-secrets-replicator-deployer"), "{name}");
        }
    }

    // Exactly one live key carries the stack tag.
    let kms = aws_sdk_kms::Client::new(&aws);
    let mut live_tagged = 0;
    for k in kms.list_keys().send().await.unwrap().keys() {
        let id = k.key_id().unwrap();
        let d = kms.describe_key().key_id(id).send().await.unwrap();
        if d.key_metadata().unwrap().key_state()
            == Some(&aws_sdk_kms::types::KeyState::PendingDeletion)
        {
            continue;
        }
        let tags = kms.list_resource_tags().key_id(id).send().await.unwrap();
        if tags
            .tags()
            .iter()
            .any(|t| t.tag_key() == deployer::spec::STACK_TAG)
        {
            live_tagged += 1;
        }
    }
    assert_eq!(live_tagged, 1);

    // Exactly one of each tagged EC2 resource (VPC, gateway, subnet, route table, each
    // security group and endpoint, instance, address, volume), whatever the kills.
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let live = live_ec2_resources(&ec2).await;
    let mut by_kind: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
    for (kind, name, id) in live {
        by_kind.entry((kind, name)).or_default().push(id);
    }
    let duplicated: Vec<_> = by_kind.iter().filter(|(_, ids)| ids.len() != 1).collect();
    assert!(duplicated.is_empty(), "{duplicated:?}");
    let kinds: std::collections::BTreeSet<&str> = by_kind.keys().map(|(k, _)| k.as_str()).collect();
    if config_text.contains("vault_inbound_cidr") {
        for kind in [
            "vpc",
            "internet-gateway",
            "subnet",
            "route-table",
            "security-group",
            "vpc-endpoint",
            "instance",
            "elastic-ip",
        ] {
            assert!(kinds.contains(kind), "no {kind} in {by_kind:?}");
        }
        assert_eq!(
            by_kind
                .keys()
                .filter(|(k, _)| k == "security-group")
                .count(),
            3,
            "vault, replicator and endpoints: {by_kind:?}"
        );
    } else {
        assert!(kinds.is_empty(), "{by_kind:?}");
    }
}

/// Every live EC2 resource tagged with a stack, as (kind, Name tag, id): what each kind's own
/// describe call lists (moto's tag index keeps deleted resources), leaving out terminated
/// instances, deleted endpoints and the volumes of terminated instances.
async fn live_ec2_resources(ec2: &aws_sdk_ec2::Client) -> Vec<(String, String, String)> {
    use aws_sdk_ec2::types::Tag;
    let stack = || {
        aws_sdk_ec2::types::Filter::builder()
            .name("tag-key")
            .values(deployer::spec::STACK_TAG)
            .build()
    };
    let name = |tags: &[Tag]| {
        tags.iter()
            .find(|t| t.key() == Some("Name"))
            .and_then(|t| t.value())
            .unwrap_or("")
            .to_owned()
    };
    let mut out = Vec::new();
    let mut add = |kind: &str, tags: &[Tag], id: Option<&str>| {
        out.push((kind.to_owned(), name(tags), id.unwrap_or("?").to_owned()));
    };
    for v in ec2
        .describe_vpcs()
        .filters(stack())
        .send()
        .await
        .unwrap()
        .vpcs()
    {
        add("vpc", v.tags(), v.vpc_id());
    }
    let igws = ec2
        .describe_internet_gateways()
        .filters(stack())
        .send()
        .await
        .unwrap();
    for g in igws.internet_gateways() {
        add("internet-gateway", g.tags(), g.internet_gateway_id());
    }
    for n in ec2
        .describe_subnets()
        .filters(stack())
        .send()
        .await
        .unwrap()
        .subnets()
    {
        add("subnet", n.tags(), n.subnet_id());
    }
    let tables = ec2
        .describe_route_tables()
        .filters(stack())
        .send()
        .await
        .unwrap();
    for t in tables.route_tables() {
        add("route-table", t.tags(), t.route_table_id());
    }
    let groups = ec2
        .describe_security_groups()
        .filters(stack())
        .send()
        .await
        .unwrap();
    for g in groups.security_groups() {
        add("security-group", g.tags(), g.group_id());
    }
    let endpoints = ec2
        .describe_vpc_endpoints()
        .filters(stack())
        .send()
        .await
        .unwrap();
    for e in endpoints.vpc_endpoints() {
        // Compared as text: moto spells the states in lower case, the SDK's enum does not.
        let gone = e.state().is_some_and(|s| {
            ["deleted", "deleting"].contains(&s.as_str().to_ascii_lowercase().as_str())
        });
        if !gone {
            add("vpc-endpoint", e.tags(), e.vpc_endpoint_id());
        }
    }
    let running = ec2
        .describe_instances()
        .filters(stack())
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut live_instances = std::collections::BTreeSet::new();
    for i in running.reservations().iter().flat_map(|r| r.instances()) {
        live_instances.extend(i.instance_id().map(str::to_owned));
        add("instance", i.tags(), i.instance_id());
    }
    for a in ec2
        .describe_addresses()
        .filters(stack())
        .send()
        .await
        .unwrap()
        .addresses()
    {
        add("elastic-ip", a.tags(), a.allocation_id());
    }
    for v in ec2
        .describe_volumes()
        .filters(stack())
        .send()
        .await
        .unwrap()
        .volumes()
    {
        let attached = v
            .attachments()
            .iter()
            .any(|a| a.instance_id().is_some_and(|i| live_instances.contains(i)));
        if attached {
            add("volume", v.tags(), v.volume_id());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_code_is_uploaded_only_when_the_zip_changes() {
    let f = Fixture::new(EXTERNAL).await;
    f.deployer(&["up", "--yes"]).await;
    // Same bytes written again: nothing to do.
    fake_zip(f.dir.path(), b"\x7fELF v1");
    assert!(f.deployer(&["up", "--yes"]).await.mutating.is_empty());
    fake_zip(f.dir.path(), b"\x7fELF v2");
    let plan = f.deployer(&["plan", "--detailed-exitcode"]).await;
    assert_eq!(plan.code, 2);
    let up = f.deployer(&["up", "--yes"]).await;
    let ops: Vec<&str> = up.mutating.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(ops, ["UpdateFunctionCode"]);

    // Plan and up say which file they upload (absolute, links resolved) and its SHA-256, as
    // `sha256sum` prints it and as Lambda reports it.
    let zip = f.dir.path().canonicalize().unwrap().join("replicator.zip");
    let digest = sha2::Sha256::digest(std::fs::read(&zip).unwrap());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let deployed = aws_sdk_lambda::Client::new(&f.moto.sdk_config().await)
        .get_function_configuration()
        .function_name("demo-replicator")
        .send()
        .await
        .unwrap();
    let roundabout = f.path("sub/../replicator.zip");
    std::fs::create_dir_all(f.path("sub")).unwrap();
    let config = f.path("deployer.toml");
    let global = ["--config", &config, "--lambda-zip", &roundabout];
    for command in [&["plan"][..], &["up", "--yes"]] {
        let args = [&global[..], &["--output", "json"], command].concat();
        let out = run(&f.moto, &args).await.json();
        assert_eq!(
            out["code"]["path"],
            zip.display().to_string(),
            "{command:?}"
        );
        assert_eq!(out["code"]["sha256"], hex, "{command:?}");
        assert_eq!(
            out["code"]["code_sha256"],
            deployed.code_sha256().unwrap(),
            "{command:?}"
        );
    }
    let text = run(&f.moto, &[&global[..], &["plan"]].concat())
        .await
        .stdout;
    assert!(
        text.contains(&format!("{}", zip.display())) && text.contains(&hex),
        "{text}"
    );
}

const ON_EC2: &str = r#"
stack_name = "onec2"
vault_inbound_cidr = "198.51.100.0/24"
notification_email = "ops@example.com"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_on_ec2_is_private_by_default_and_converges() {
    let f = Fixture::new(ON_EC2).await;
    let plan = f.deployer(&["plan", "--detailed-exitcode"]).await;
    assert_eq!(plan.code, 2);
    let p = plan.json();
    let kinds: Vec<&str> = p["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    for k in [
        "vpc",
        "internet gateway",
        "subnet",
        "route table",
        "security group",
        "vpc endpoint",
        "ec2 instance",
        "elastic ip",
        "tls secret",
    ] {
        assert!(kinds.contains(&k), "{k} missing from the plan: {kinds:?}");
    }
    assert!(!kinds.contains(&"nat gateway"));
    let total = p["cost"]["total_usd_per_month"].as_f64().unwrap();
    assert!(
        total < 35.0,
        "under the sample's ~$45 (its NAT gateway alone is ~$33): {total}"
    );

    let up = f.deployer(&["up", "--yes"]).await;
    let o = up.json()["outputs"].clone();
    let url = o["vault_url"].as_str().unwrap();
    assert!(
        url.starts_with("https://") && url.ends_with(":8200"),
        "{url}"
    );

    let aws = f.moto.sdk_config().await;
    let side = e2e::aws_side::AwsSide::new(&aws);
    let conn = side.value("hybrid-aws-secrets-connection/vault").await;
    assert_eq!(
        conn["vaultAddress"], "https://10.42.0.10:8200",
        "the replicator uses the private address"
    );
    assert!(
        conn["vaultCaCert"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert!(conn.get("vaultToken").is_none());

    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let reservations = ec2.describe_instances().send().await.unwrap();
    let instance = reservations.reservations()[0].instances()[0].clone();
    assert_eq!(
        instance.metadata_options().unwrap().http_tokens(),
        Some(&aws_sdk_ec2::types::HttpTokensState::Required)
    );
    assert_eq!(instance.private_ip_address(), Some("10.42.0.10"));
    let ud = ec2
        .describe_instance_attribute()
        .instance_id(instance.instance_id().unwrap())
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    use base64::Engine as _;
    let script = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(ud.user_data().unwrap().value().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(script.starts_with("#!/usr/bin/env bash") && script.contains("set -euo pipefail"));
    assert!(
        !script.contains("PRIVATE KEY") && !script.contains("{{"),
        "no secret and no placeholder in user data"
    );
    let volumes = ec2.describe_volumes().send().await.unwrap();
    assert!(
        volumes
            .volumes()
            .iter()
            .all(|v| v.encrypted() == Some(true))
    );

    let groups = ec2
        .describe_security_groups()
        .group_names("onec2-vault")
        .send()
        .await;
    let groups = match groups {
        Ok(g) => g,
        Err(_) => ec2
            .describe_security_groups()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("group-name")
                    .values("onec2-vault")
                    .build(),
            )
            .send()
            .await
            .unwrap(),
    };
    let vault_sg = groups.security_groups()[0].clone();
    let cidrs: Vec<&str> = vault_sg
        .ip_permissions()
        .iter()
        .flat_map(|p| p.ip_ranges())
        .filter_map(|r| r.cidr_ip())
        .collect();
    assert_eq!(
        cidrs,
        ["198.51.100.0/24"],
        "port 8200 is not open to the world"
    );

    let conf = aws_sdk_lambda::Client::new(&aws)
        .get_function_configuration()
        .function_name("onec2-replicator")
        .send()
        .await
        .unwrap();
    assert_eq!(
        conf.vpc_config().unwrap().subnet_ids().len(),
        1,
        "the function runs in the Vault VPC"
    );
    // One endpoint, Secrets Manager's: failure notices leave through Lambda's destination.
    // Its policy lets only the stack's secrets through.
    let endpoints = ec2.describe_vpc_endpoints().send().await.unwrap();
    let services: Vec<&str> = endpoints
        .vpc_endpoints()
        .iter()
        .filter_map(|e| e.service_name())
        .collect();
    assert_eq!(services, ["com.amazonaws.us-east-1.secretsmanager"]);
    let endpoint = endpoints.vpc_endpoints()[0].clone();
    let policy: serde_json::Value =
        serde_json::from_str(endpoint.policy_document().unwrap()).unwrap();
    assert_eq!(
        policy["Statement"][0]["Resource"][0],
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:hybrid-aws-secrets/*",
        "{policy}"
    );

    let again = f.deployer(&["up", "--yes"]).await;
    assert!(
        again.mutating.is_empty(),
        "second up sent {:?}",
        again.mutating
    );
    // Beside the runs' two alarms, the watcher's and the disk's, over the stack's own host
    // namespace.
    let cw = aws_sdk_cloudwatch::Client::new(&aws);
    let host_alarms = async || {
        let out = cw
            .describe_alarms()
            .alarm_names("onec2-watcher-silent")
            .alarm_names("onec2-vault-disk")
            .send()
            .await
            .unwrap();
        let mut seen: Vec<(String, String)> = out
            .metric_alarms()
            .iter()
            .map(|a| {
                (
                    a.alarm_name().unwrap_or_default().to_owned(),
                    format!(
                        "{}/{}",
                        a.namespace().unwrap_or_default(),
                        a.metric_name().unwrap_or_default()
                    ),
                )
            })
            .collect();
        seen.sort();
        seen
    };
    assert_eq!(
        host_alarms().await,
        [
            (
                "onec2-vault-disk".to_owned(),
                "VaultSecretsReplicator/Host/onec2/AuditLogDiskUsedPercent".to_owned()
            ),
            (
                "onec2-watcher-silent".to_owned(),
                "VaultSecretsReplicator/Host/onec2/WatcherAlive".to_owned()
            ),
        ]
    );

    // Opened to the world by hand: drift, then repaired.
    ec2.authorize_security_group_ingress()
        .group_id(vault_sg.group_id().unwrap())
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(8200)
                .to_port(8200)
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("0.0.0.0/0")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let status = f.deployer(&["status", "--detailed-exitcode"]).await;
    assert_eq!(status.code, 2);
    let drifted: Vec<String> = status.json()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "drifted")
        .map(|r| {
            format!(
                "{} {}",
                r["kind"].as_str().unwrap(),
                r["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(drifted, ["security group onec2-vault"]);
    f.deployer(&["up", "--yes"]).await;
    assert_eq!(f.deployer(&["status", "--detailed-exitcode"]).await.code, 0);

    // Boxed, as the deployer's own large steps: the test's future would not fit its stack.
    Box::pin(endpoint_policy_drift_is_repaired_in_place(
        &f, &ec2, &endpoint,
    ))
    .await;
    Box::pin(egress_is_only_what_each_group_needs(&f, &ec2)).await;

    // A network interface Lambda released but has not deleted yet (it would block the security
    // group and the subnet), and one somebody else put in the group: only Lambda's goes.
    let named = |n: &'static str| {
        aws_sdk_ec2::types::Filter::builder()
            .name("tag:Name")
            .values(n)
            .build()
    };
    let repl_sg = ec2
        .describe_security_groups()
        .filters(named("onec2-replicator"))
        .send()
        .await
        .unwrap()
        .security_groups()[0]
        .group_id()
        .unwrap()
        .to_owned();
    let subnet = ec2
        .describe_subnets()
        .filters(named("onec2-vault"))
        .send()
        .await
        .unwrap()
        .subnets()[0]
        .subnet_id()
        .unwrap()
        .to_owned();
    let mut enis = Vec::new();
    for description in [
        "AWS Lambda VPC ENI-onec2-replicator-0f1e2d3c",
        "someone else's interface",
    ] {
        let eni = ec2
            .create_network_interface()
            .subnet_id(&subnet)
            .groups(&repl_sg)
            .description(description)
            .send()
            .await
            .unwrap();
        enis.push(
            eni.network_interface()
                .unwrap()
                .network_interface_id()
                .unwrap()
                .to_owned(),
        );
    }

    let gone = f.deployer(&["destroy", "--yes"]).await;
    assert_eq!(gone.code, 0);
    // Reverse dependency order: what runs or points at a thing goes before it.
    let order: Vec<String> = gone.json()["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "delete")
        .map(|c| {
            format!(
                "{} {}",
                c["kind"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            )
        })
        .collect();
    // The first and last deletion whose "kind name" starts with `what`.
    let first = |what: &str| {
        order
            .iter()
            .position(|k| k.starts_with(what))
            .unwrap_or_else(|| panic!("{what} not deleted: {order:?}"))
    };
    let last = |what: &str| {
        order
            .iter()
            .rposition(|k| k.starts_with(what))
            .unwrap_or_else(|| panic!("{what} not deleted: {order:?}"))
    };
    for (before, after) in [
        ("schedule rule", "lambda function"),
        ("lambda function", "network interfaces"),
        ("network interfaces", "security group"),
        ("network interfaces", "iam role onec2-replicator"),
        ("ec2 instance", "elastic ip"),
        ("ec2 instance", "security group"),
        ("vpc endpoint", "subnet"),
        ("security group", "vpc onec2-vault"),
        ("subnet", "vpc onec2-vault"),
        ("internet gateway", "vpc onec2-vault"),
        ("lambda function", "connection secret"),
        ("connection secret", "kms key"),
        ("tls secret", "kms key"),
    ] {
        assert!(
            last(before) < first(after),
            "{before} after {after}: {order:?}"
        );
    }
    let left: Vec<String> = ec2
        .describe_network_interfaces()
        .network_interface_ids(&enis[1])
        .send()
        .await
        .unwrap()
        .network_interfaces()
        .iter()
        .filter_map(|e| e.network_interface_id().map(str::to_owned))
        .collect();
    assert_eq!(
        left,
        [enis[1].clone()],
        "only Lambda's interface is deleted"
    );
    let lambdas = ec2
        .describe_network_interfaces()
        .network_interface_ids(&enis[0])
        .send()
        .await;
    let code = lambdas
        .err()
        .and_then(|e| e.into_service_error().meta().code().map(str::to_owned));
    assert_eq!(
        code.as_deref(),
        Some("InvalidNetworkInterfaceID.NotFound"),
        "Lambda's released interface is deleted"
    );
    let left = ec2.describe_instances().send().await.unwrap();
    assert!(
        left.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .all(|i| i.state().and_then(|s| s.name())
                == Some(&aws_sdk_ec2::types::InstanceStateName::Terminated))
    );
    let vpcs = ec2
        .describe_vpcs()
        .filters(named("onec2-vault"))
        .send()
        .await
        .unwrap();
    assert!(vpcs.vpcs().is_empty());
    assert!(
        ec2.describe_addresses()
            .send()
            .await
            .unwrap()
            .addresses()
            .is_empty()
    );
    assert!(f.deployer(&["destroy", "--yes"]).await.mutating.is_empty());
    assert!(
        host_alarms().await.is_empty(),
        "destroy deletes the host's alarms"
    );
}

/// Runs the `deployer` executable against moto with `input` typed at a terminal (`script`
/// gives it one), or with no terminal at all when `input` is `None`: (exit code, output).
fn deployer_at_terminal(f: &Fixture, args: &[&str], input: Option<&str>) -> (i32, String) {
    deployer_binary(f, args, input, &[])
}

/// [`deployer_at_terminal`] with more environment variables.
fn deployer_binary(
    f: &Fixture,
    args: &[&str],
    input: Option<&str>,
    envs: &[(&str, &str)],
) -> (i32, String) {
    let bin = e2e::bin_path("deployer");
    let mut argv = vec![
        bin.display().to_string(),
        "--config".into(),
        f.path("deployer.toml"),
        "--lambda-zip".into(),
        f.path("replicator.zip"),
    ];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let mut cmd = match input {
        Some(_) => {
            let mut c = std::process::Command::new("script");
            c.args(["-q", "-e", "-c", &argv.join(" "), "/dev/null"]);
            c
        }
        None => {
            let mut c = std::process::Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    let mut child = cmd
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(f.moto.env())
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) and the deployer binary");
    if let Some(text) = input {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_without_yes_asks_for_the_stack_name_at_a_terminal_and_refuses_without_one() {
    let f = Fixture::new(EXTERNAL).await;
    f.deployer(&["up", "--yes"]).await;
    let intact = || async { f.deployer(&["status", "--detailed-exitcode"]).await.code == 0 };

    let (code, out) = deployer_at_terminal(&f, &["destroy"], None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("destroy needs --yes when not run from a terminal"),
        "{out}"
    );
    assert!(intact().await, "nothing deleted without a terminal");

    let (code, out) = deployer_at_terminal(&f, &["destroy"], Some("not-demo\n"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Type its name to confirm"), "{out}");
    assert!(out.contains("not confirmed; nothing was deleted"), "{out}");
    assert!(intact().await, "nothing deleted on a wrong name");

    let (code, out) = deployer_at_terminal(&f, &["destroy"], Some("demo\n"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("deleted lambda function demo-replicator"),
        "{out}"
    );
    assert_eq!(f.deployer(&["status", "--detailed-exitcode"]).await.code, 2);
}

/// `up` lists the changes of access it would make and asks first; without a terminal it
/// refuses unless `--yes`. Changes that leave access alone need no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_asks_before_changing_access_and_refuses_without_a_terminal_unless_yes() {
    let f = Fixture::new(EXTERNAL).await;
    let untouched = || async { f.deployer(&["status", "--detailed-exitcode"]).await.code == 2 };

    let (code, out) = deployer_at_terminal(&f, &["up"], None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("up would change access"), "{out}");
    assert!(
        out.contains("creating iam role demo-replicator (trust_policy, inline_policy)"),
        "{out}"
    );
    assert!(out.contains("deployer up --yes"), "{out}");
    assert!(untouched().await, "nothing made without a terminal");

    let (code, out) = deployer_at_terminal(&f, &["up"], Some("no\n"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Apply them? Type yes"), "{out}");
    assert!(out.contains("not confirmed; nothing was changed"), "{out}");
    assert!(untouched().await, "nothing made when not confirmed");

    let (code, out) = deployer_at_terminal(&f, &["up"], Some("yes\n"));
    assert_eq!(code, 0, "{out}");
    assert_eq!(f.deployer(&["status", "--detailed-exitcode"]).await.code, 0);

    // No access changes: nothing to ask, even without a terminal.
    let (code, out) = deployer_at_terminal(&f, &["up", "--set", "lambda_memory_mb=256"], None);
    assert_eq!(code, 0, "{out}");
    // The role's policy grows (deletion): asked again.
    let (code, out) = deployer_at_terminal(&f, &["up", "--set", "deletion_policy=delete"], None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("updating iam role demo-replicator (inline_policy)"),
        "{out}"
    );
    // Not access, but what an operator must see first: the deletion policy and the breaker's
    // share (the function's settings), the notification address, new code.
    assert!(
        out.contains("updating lambda function demo-replicator (environment)"),
        "{out}"
    );
    let (code, out) = deployer_at_terminal(&f, &["up", "--set", "max_delete_share=0.5"], None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("(environment)"), "{out}");
    let (code, out) = deployer_at_terminal(
        &f,
        &["up", "--set", "notification_email=oncall@example.com"],
        None,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("email_subscription"), "{out}");
    fake_zip(f.dir.path(), b"\x7fELF other code");
    let (code, out) = deployer_at_terminal(&f, &["up"], None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("(code_sha256)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_after_credentials_were_written_never_overwrites_the_connection_secret() {
    let f = Fixture::new(EXTERNAL).await;
    f.deployer(&["up", "--yes"]).await;
    let aws = f.moto.sdk_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    let planted = "PLANTED-secret-id-9d2c";
    let with_credentials = serde_json::json!({
        "vaultAddress": "https://vault.example.com:8200",
        "vaultRoleId": "role-1",
        "vaultSecretId": planted,
    })
    .to_string();
    sm.put_secret_value()
        .secret_id("hybrid-aws-secrets-connection/vault")
        .secret_string(&with_credentials)
        .send()
        .await
        .unwrap();
    let side = e2e::aws_side::AwsSide::new(&aws);
    let value = || side.text("hybrid-aws-secrets-connection/vault");

    // Nothing else changed: no write at all.
    let again = f.deployer(&["up", "--yes"]).await;
    assert!(again.mutating.is_empty(), "{:?}", again.mutating);
    // Other settings change: the rest converges, the secret's value stays.
    let changed = f
        .deployer(&[
            "up",
            "--yes",
            "--set",
            "schedule=rate(1 hour)",
            "--set",
            "lambda_memory_mb=256",
        ])
        .await;
    let ops: Vec<&str> = changed.mutating.iter().map(|(op, _)| op.as_str()).collect();
    assert!(
        !ops.contains(&"PutSecretValue") && !ops.contains(&"UpdateSecret"),
        "{ops:?}"
    );
    assert_eq!(value().await, with_credentials);

    // Nothing the deployer prints shows a value from it, as JSON or as text.
    for args in [&["plan"][..], &["status"], &["up", "--yes"]] {
        let out = f.deployer(args).await;
        assert!(!out.stdout.contains(planted), "{args:?} showed a value");
        let (config, zip) = (f.path("deployer.toml"), f.path("replicator.zip"));
        let mut text_args = vec!["--config", &config, "--lambda-zip", &zip];
        text_args.extend_from_slice(args);
        let text = run(&f.moto, &text_args).await;
        assert!(text.error.is_none(), "{:?}", text.error);
        assert!(
            !text.stdout.is_empty() && !text.stdout.contains(planted),
            "{args:?}: {}",
            text.stdout
        );
    }
    assert_eq!(value().await, with_credentials);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_of_the_deployer_carry_no_key_or_credential() {
    let f = Fixture::new(ON_EC2).await;
    let loud = [
        ("RUST_LOG", "trace"),
        ("LOG_SIGNABLE_SERIALIZATION", "true"),
    ];
    let (code, out) = deployer_binary(&f, &["up", "--yes"], None, &loud);
    assert_eq!(code, 0, "{}", &out[out.len().saturating_sub(2000)..]);
    assert!(
        out.len() > 10_000 && out.contains("TRACE"),
        "trace logs were on"
    );
    // The TLS key the deployer made and stored: no line of it in the output.
    let aws = f.moto.sdk_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    let tls = sm
        .get_secret_value()
        .secret_id("onec2-vault/tls")
        .send()
        .await
        .unwrap()
        .secret_string()
        .unwrap()
        .to_owned();
    let tls: serde_json::Value = serde_json::from_str(&tls).unwrap();
    let key_lines: Vec<String> = tls
        .as_object()
        .unwrap()
        .values()
        .filter_map(|v| v.as_str())
        .filter(|v| v.contains("PRIVATE KEY"))
        .flat_map(|k| {
            k.lines()
                .filter(|l| !l.starts_with("-----"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!key_lines.is_empty(), "the TLS secret holds a private key");
    for line in &key_lines {
        assert!(
            !out.contains(line.as_str()),
            "a line of the TLS key is in the trace output"
        );
    }
    // Credentials written into the connection secret: a second `up` and `status` at trace.
    let planted = "PLANTED-secret-id-trace-41d7";
    sm.put_secret_value()
        .secret_id("hybrid-aws-secrets-connection/vault")
        .secret_string(
            serde_json::json!({"vaultAddress": "https://10.42.0.10:8200", "vaultRoleId": "r", "vaultSecretId": planted})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    for args in [&["up", "--yes"][..], &["status"]] {
        let (code, out) = deployer_binary(&f, args, None, &loud);
        assert_eq!(code, 0, "{args:?}");
        assert!(
            !out.contains(planted),
            "{args:?}: a credential in the trace output"
        );
    }
}

/// The function's (reserved concurrency, maximum retry attempts, on-failure destination).
async fn invoke_settings(f: &Fixture, name: &str) -> (Option<i32>, Option<i32>, Option<String>) {
    let aws = f.moto.sdk_config().await;
    let lambda = aws_sdk_lambda::Client::new(&aws);
    let concurrency = lambda
        .get_function()
        .function_name(name)
        .send()
        .await
        .unwrap()
        .concurrency()
        .and_then(|c| c.reserved_concurrent_executions());
    let invoke = lambda
        .get_function_event_invoke_config()
        .function_name(name)
        .send()
        .await
        .unwrap();
    (
        concurrency,
        invoke.maximum_retry_attempts(),
        invoke
            .destination_config()
            .and_then(|d| d.on_failure())
            .and_then(|o| o.destination())
            .filter(|d| !d.is_empty())
            .map(str::to_owned),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_instance_keeps_imds_to_one_hop_and_its_root_volume_is_checked_not_assumed() {
    let f = Fixture::new(ON_EC2).await;
    f.deployer(&["up", "--yes"]).await;
    let aws = f.moto.sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let instance = || async {
        ec2.describe_instances()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("instance-state-name")
                    .values("running")
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .reservations()[0]
            .instances()[0]
            .clone()
    };
    let i = instance().await;
    let id = i.instance_id().unwrap().to_owned();
    assert_eq!(
        i.metadata_options().unwrap().http_put_response_hop_limit(),
        Some(1),
        "a container on the instance cannot reach its credentials"
    );

    // Widened by hand: drift, then repaired.
    ec2.modify_instance_metadata_options()
        .instance_id(&id)
        .http_put_response_hop_limit(3)
        .send()
        .await
        .unwrap();
    let status = f.deployer(&["status", "--detailed-exitcode"]).await;
    assert_eq!(status.code, 2);
    assert!(
        status.stdout.contains("imds_hop_limit"),
        "{}",
        status.stdout
    );
    let repair = f.deployer(&["up", "--yes"]).await;
    let ops: Vec<&str> = repair.mutating.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(ops, ["ModifyInstanceMetadataOptions"]);
    assert_eq!(f.deployer(&["status", "--detailed-exitcode"]).await.code, 0);

    // The instance replaced by hand with one whose root volume is not encrypted (moto cannot
    // detach a root volume): status reads it from EC2, and up says what to do.
    ec2.terminate_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap();
    let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
    ec2.run_instances()
        .image_id(i.image_id().unwrap())
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .subnet_id(i.subnet_id().unwrap())
        .block_device_mappings(
            aws_sdk_ec2::types::BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    aws_sdk_ec2::types::EbsBlockDevice::builder()
                        .encrypted(false)
                        .volume_size(8)
                        .build(),
                )
                .build(),
        )
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                .tags(tag(deployer::spec::STACK_TAG, "onec2"))
                .tags(tag("Name", "onec2-vault"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let status = f.deployer(&["status", "--detailed-exitcode"]).await;
    assert_eq!(status.code, 2);
    let fields: Vec<serde_json::Value> = status.json()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "ec2 instance")
        .flat_map(|r| r["fields"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(
        fields
            .iter()
            .any(|f| f["field"] == "root_encrypted" && f["from"] == "no"),
        "{fields:?}"
    );
    let config = f.path("deployer.toml");
    let zip = f.path("replicator.zip");
    let refused = run(
        &f.moto,
        &["--config", &config, "--lambda-zip", &zip, "up", "--yes"],
    )
    .await;
    assert!(
        refused
            .error
            .unwrap()
            .contains("root volume is not encrypted"),
        "up says what to do"
    );
}

/// The Secrets Manager endpoint opened to every secret by hand: drift, repaired in place.
async fn endpoint_policy_drift_is_repaired_in_place(
    f: &Fixture,
    ec2: &aws_sdk_ec2::Client,
    endpoint: &aws_sdk_ec2::types::VpcEndpoint,
) {
    ec2.modify_vpc_endpoint()
        .vpc_endpoint_id(endpoint.vpc_endpoint_id().unwrap())
        .policy_document(
            serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let status = f.deployer(&["status", "--detailed-exitcode"]).await;
    assert_eq!(status.code, 2, "{}", status.stdout);
    assert!(
        status
            .stdout
            .contains("com.amazonaws.us-east-1.secretsmanager"),
        "{}",
        status.stdout
    );
    let repair = f.deployer(&["up", "--yes"]).await;
    assert_eq!(
        repair.mutating,
        [("ModifyVpcEndpoint".to_owned(), 1)],
        "repaired in place, nothing recreated"
    );
    let after = ec2.describe_vpc_endpoints().send().await.unwrap();
    assert_eq!(
        after.vpc_endpoints()[0].vpc_endpoint_id(),
        endpoint.vpc_endpoint_id()
    );
    assert_eq!(f.deployer(&["status", "--detailed-exitcode"]).await.code, 0);
}

/// Each security group's egress: the Vault instance HTTPS out, the replicator to Vault and the
/// endpoints only, the endpoints nothing; opened by hand, it is drift and is repaired.
async fn egress_is_only_what_each_group_needs(f: &Fixture, ec2: &aws_sdk_ec2::Client) {
    let groups = ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:Name")
                .values("onec2-vault")
                .values("onec2-replicator")
                .values("onec2-endpoints")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let by_name = |n: &str| {
        groups
            .security_groups()
            .iter()
            .find(|g| g.group_name() == Some(n))
            .unwrap()
            .clone()
    };
    let (vault, repl, end) = (
        by_name("onec2-vault"),
        by_name("onec2-replicator"),
        by_name("onec2-endpoints"),
    );
    let egress = |g: &aws_sdk_ec2::types::SecurityGroup| {
        let mut out: Vec<String> = g
            .ip_permissions_egress()
            .iter()
            .flat_map(|p| {
                let port = format!(
                    "{}/{}",
                    p.ip_protocol().unwrap(),
                    p.from_port().unwrap_or(0)
                );
                let cidrs = p
                    .ip_ranges()
                    .iter()
                    .filter_map(|r| r.cidr_ip())
                    .map(str::to_owned);
                let groups = p
                    .user_id_group_pairs()
                    .iter()
                    .filter_map(|g| g.group_id())
                    .map(str::to_owned);
                cidrs
                    .chain(groups)
                    .map(move |to| format!("{port} {to}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out
    };
    assert_eq!(egress(&vault), ["tcp/443 0.0.0.0/0"]);
    let mut want = vec![
        format!("tcp/8200 {}", vault.group_id().unwrap()),
        format!("tcp/443 {}", end.group_id().unwrap()),
    ];
    want.sort();
    assert_eq!(egress(&repl), want);
    assert!(egress(&end).is_empty(), "{:?}", egress(&end));

    ec2.authorize_security_group_egress()
        .group_id(repl.group_id().unwrap())
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("-1")
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("0.0.0.0/0")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let status = f.deployer(&["status", "--detailed-exitcode"]).await;
    assert_eq!(status.code, 2, "{}", status.stdout);
    assert!(
        status.stdout.contains("onec2-replicator"),
        "{}",
        status.stdout
    );
    f.deployer(&["up", "--yes"]).await;
    assert_eq!(f.deployer(&["status", "--detailed-exitcode"]).await.code, 0);
    let after = ec2
        .describe_security_groups()
        .group_ids(repl.group_id().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(egress(&after.security_groups()[0]), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_ca_is_kept_encrypted_under_the_stack_key_and_a_swapped_one_is_refused() {
    let f = Fixture::new(ON_EC2).await;
    let up = f.deployer(&["up", "--yes"]).await;
    assert!(up.error.is_none(), "{:?}", up.error);
    let key_arn = up.json()["outputs"]["key_arn"].as_str().unwrap().to_owned();
    let aws = f.moto.sdk_config().await;
    let ssm = aws_sdk_ssm::Client::new(&aws);
    let name = "/onec2/vault/ca-certificate";
    let meta = |ssm: aws_sdk_ssm::Client| async move {
        let out = ssm
            .describe_parameters()
            .parameter_filters(
                aws_sdk_ssm::types::ParameterStringFilter::builder()
                    .key("Name")
                    .values(name)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let m = out.parameters()[0].clone();
        (m.r#type().cloned(), m.key_id().map(str::to_owned))
    };
    assert_eq!(
        meta(ssm.clone()).await,
        (
            Some(aws_sdk_ssm::types::ParameterType::SecureString),
            Some(key_arn.clone())
        )
    );
    let ca = ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .unwrap()
        .parameter()
        .unwrap()
        .value()
        .unwrap()
        .to_owned();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));

    // Someone with ssm:PutParameter (and no use of the key) swaps in their own CA.
    let planted = "-----BEGIN CERTIFICATE-----\nplanted\n-----END CERTIFICATE-----\n";
    ssm.put_parameter()
        .name(name)
        .value(planted)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .unwrap();
    // vault-init refuses it before talking to any Vault (nothing listens at this address).
    let closed = format!("https://{}", e2e::CLOSED_ADDRESS);
    let init = f
        .deployer_may_fail(&["vault-init", "--vault-addr", &closed])
        .await;
    let err = init.error.clone().unwrap_or_default();
    assert!(
        err.contains("not trusted") && err.contains(name),
        "{err}\n{}",
        init.stdout
    );
    // So does an `up` that has to write the CA into a new connection secret.
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    sm.delete_secret()
        .secret_id("hybrid-aws-secrets-connection/vault")
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    let refused = f.deployer_may_fail(&["up", "--yes"]).await;
    let err = refused.error.clone().unwrap_or_default();
    assert!(err.contains("not trusted"), "{err}");
    assert!(
        sm.describe_secret()
            .secret_id("hybrid-aws-secrets-connection/vault")
            .send()
            .await
            .is_err(),
        "no connection secret pinned to the planted CA"
    );

    // A parameter as an earlier version wrote it (a String, never overwritten) is converted once.
    ssm.delete_parameter().name(name).send().await.unwrap();
    ssm.put_parameter()
        .name(name)
        .value(&ca)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    let up = f.deployer(&["up", "--yes"]).await;
    assert!(up.error.is_none(), "{:?}", up.error);
    assert_eq!(
        meta(ssm.clone()).await,
        (
            Some(aws_sdk_ssm::types::ParameterType::SecureString),
            Some(key_arn)
        )
    );
    let conn = e2e::aws_side::AwsSide::new(&aws)
        .value("hybrid-aws-secrets-connection/vault")
        .await;
    assert_eq!(conn["vaultCaCert"], ca.as_str());

    // destroy removes it with the TLS secret.
    f.deployer(&["destroy", "--yes"]).await;
    assert!(ssm.get_parameter().name(name).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_terminal_no_color_is_honoured_and_the_error_shows_whatever_rust_log_says() {
    // A setting worth a warning (logged, coloured at a terminal).
    let f =
        Fixture::new(&EXTERNAL.replace("https://vault.example.com", "http://vault.example.com"))
            .await;
    let (code, coloured) = deployer_binary(&f, &["status"], Some(""), &[]);
    assert_eq!(code, 0, "{coloured}");
    assert!(coloured.contains("plain http"), "{coloured}");
    assert!(
        coloured.contains('\x1b'),
        "coloured at a terminal: {coloured:?}"
    );
    let (code, plain) = deployer_binary(&f, &["status"], Some(""), &[("NO_COLOR", "1")]);
    assert_eq!(code, 0);
    assert!(plain.contains("plain http"), "{plain}");
    assert!(
        !plain.contains('\x1b'),
        "no escape sequence with NO_COLOR: {plain:?}"
    );

    // A failure with logs off: the error is printed all the same.
    std::fs::remove_file(f.path("replicator.zip")).unwrap();
    let (code, quiet) = deployer_binary(&f, &["up", "--yes"], Some(""), &[("RUST_LOG", "off")]);
    assert_eq!(code, 1);
    assert!(
        quiet.contains("error:") && quiet.contains("replicator.zip"),
        "{quiet}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_sync_settings_reach_the_function_and_the_role_and_converge() {
    let config = format!(
        "{EXTERNAL}replica_regions = [\"eu-west-1\", \"us-west-2=arn:aws:kms:us-west-2:123456789012:key/r1\"]\n\
         granularity = \"secret-key\"\nname_template = \"{{mount}}/{{path}}/{{key}}\"\n\
         tags = {{ team = \"core\" }}\nevents = true\nevents_bus = \"team-changes\"\n"
    );
    let f = Fixture::new(&config).await;
    assert_eq!(f.deployer(&["up", "--yes"]).await.code, 0);
    let aws = f.moto.sdk_config().await;
    let env = e2e::deploy::function_environment(&aws, "demo-replicator").await;
    assert_eq!(
        env["REPLICATOR_REPLICA_REGIONS"],
        "eu-west-1,us-west-2=arn:aws:kms:us-west-2:123456789012:key/r1"
    );
    assert_eq!(env["REPLICATOR_GRANULARITY"], "secret-key");
    assert_eq!(env["REPLICATOR_NAME_TEMPLATE"], "{mount}/{path}/{key}");
    assert_eq!(env["REPLICATOR_TAGS"], "team=core");
    assert_eq!(env["REPLICATOR_EVENTS_BUS"], "team-changes");
    let doc = role_policy(&aws, "demo-replicator", "replicator").await;
    let events = statement(&doc, "PutChangeEventsOnTheStacksBus");
    assert_eq!(
        events["Resource"],
        format!(
            "arn:aws:events:{}:123456789012:event-bus/team-changes",
            e2e::REGION
        )
    );
    let replicate = statement(&doc, "ReplicateToTheConfiguredRegions");
    assert_eq!(
        replicate["Condition"]["ForAllValues:StringEquals"]["secretsmanager:AddReplicaRegions"],
        serde_json::json!(["eu-west-1", "us-west-2"])
    );
    let again = f.deployer(&["up", "--yes"]).await;
    assert!(
        again.mutating.is_empty(),
        "second up sent {:?}",
        again.mutating
    );

    // The stack's own region (here from the environment) is refused before anything is sent.
    std::fs::write(
        f.path("deployer.toml"),
        format!("{EXTERNAL}replica_regions = [\"{}\"]\n", e2e::REGION),
    )
    .unwrap();
    let own = f.deployer_may_fail(&["up", "--yes"]).await;
    let error = own.error.unwrap_or_default();
    assert!(
        error.contains("replica_regions") && error.contains("own region"),
        "{error}"
    );
    assert!(own.mutating.is_empty(), "{:?}", own.mutating);

    // A replica key in another account (its key policy is out of the stack's reach) or in
    // another partition is refused the same way.
    for (key, says) in [
        (
            "arn:aws:kms:us-west-2:210987654321:key/r1",
            "another account",
        ),
        ("arn:aws-cn:kms:us-west-2:123456789012:key/r1", "partition"),
    ] {
        std::fs::write(
            f.path("deployer.toml"),
            format!("{EXTERNAL}replica_regions = [\"us-west-2={key}\"]\n"),
        )
        .unwrap();
        let refused = f.deployer_may_fail(&["plan"]).await;
        let error = refused.error.unwrap_or_default();
        assert!(
            error.contains("replica_regions") && error.contains(says),
            "{key}: {error}"
        );
        assert!(refused.mutating.is_empty(), "{:?}", refused.mutating);
        // A stack deployed before the check can still be looked at (and destroyed).
        let status = f.deployer_may_fail(&["status"]).await;
        assert!(status.error.is_none(), "{key}: {:?}", status.error);
    }
}

/// The text between `<<'END'` and the line `END` in a boot script: a file it installs.
fn embedded(script: &str, end: &str) -> String {
    let start = format!("<<'{end}'\n");
    let from = script
        .find(&start)
        .unwrap_or_else(|| panic!("no {end} file"))
        + start.len();
    let len = script[from..].find(&format!("\n{end}\n")).unwrap();
    format!("{}\n", &script[from..from + len])
}

/// The boot script `up` gave the stack's Vault instance.
async fn boot_script(f: &Fixture) -> String {
    use base64::Engine as _;
    let ec2 = aws_sdk_ec2::Client::new(&f.moto.sdk_config().await);
    let reservations = ec2.describe_instances().send().await.unwrap();
    let id = reservations.reservations()[0].instances()[0]
        .instance_id()
        .unwrap()
        .to_owned();
    let ud = ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(ud.user_data().unwrap().value().unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// Stand-ins for the two commands `vault-replicator-fetch` calls that reach AWS: `aws`
/// (answered from moto with boto3, which moto's server brings) and `curl` (serves the zip named
/// by `SERVED_ZIP`, as Lambda serves a function's code); each call is logged to `CALLS`.
fn host_commands(dir: &std::path::Path) {
    let aws = r#"#!/usr/bin/env python3
import os, sys, boto3
args = sys.argv[1:]
def opt(name):
    return args[args.index(name) + 1]
with open(os.environ["CALLS"], "a") as f:
    f.write("aws " + " ".join(args[:2]) + "\n")
if args[:2] == ["ssm", "get-parameter"]:
    assert opt("--query") == "[Parameter.Type, Parameter.Value]" and opt("--output") == "text"
    p = boto3.client("ssm", region_name=opt("--region")).get_parameter(
        Name=opt("--name"), WithDecryption="--with-decryption" in args)["Parameter"]
    print(p["Type"] + "\t" + p["Value"])
elif args[:2] == ["lambda", "get-function"]:
    assert opt("--query") == "Code.Location" and opt("--output") == "text"
    c = boto3.client("lambda", region_name=opt("--region")).get_function(
        FunctionName=opt("--function-name"))
    print(c["Code"]["Location"])
else:
    sys.exit("stand-in aws: unexpected " + " ".join(args))
"#;
    let curl = r#"#!/usr/bin/env bash
set -euo pipefail
out=""
while [ $# -gt 0 ]; do
  case "$1" in --output) out=$2; shift ;; esac
  shift
done
echo curl >> "$CALLS"
cp "$SERVED_ZIP" "$out"
"#;
    use std::os::unix::fs::PermissionsExt as _;
    for (name, text) in [("aws", aws), ("curl", curl)] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// What one run of the fetch script did: its exit code and stderr, the calls it made, and the
/// binary it left to run.
struct Fetched {
    code: i32,
    stderr: String,
    calls: Vec<String>,
    bootstrap: Option<Vec<u8>>,
}

fn fetch(
    f: &Fixture,
    script: &std::path::Path,
    state: &std::path::Path,
    served: &std::path::Path,
) -> Fetched {
    let bin = f.dir.path().join("host-bin");
    let calls = f.dir.path().join("calls");
    let _ = std::fs::remove_file(&calls);
    std::fs::create_dir_all(state).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .arg(script)
        .args([
            "us-east-1",
            "onec2-replicator-watch",
            "/onec2/vault/watcher-code-sha256",
        ])
        .env_clear()
        .envs(f.moto.env())
        .env("PATH", path)
        .env("STATE_DIRECTORY", state)
        .env("CALLS", &calls)
        .env("SERVED_ZIP", served)
        .output()
        .unwrap();
    Fetched {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        calls: std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect(),
        bootstrap: std::fs::read(state.join("bootstrap")).ok(),
    }
}

/// The change watcher on the stack's Vault host (issue: the code run there was whatever the
/// function held). `up` makes the watcher's own function (its own reserved slot, no on-failure
/// destination, refusing an operator's word) and writes the digest of the code it uploaded; the
/// boot script's fetch step, run as installed with stand-in `aws`/`curl`, runs that code only:
/// not a zip someone put in the function, not under a digest someone wrote as a plain String.
/// Its units pass `systemd-analyze verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_host_runs_only_the_watchers_code_that_up_uploaded() {
    let f = Fixture::new(ON_EC2).await;
    f.deployer(&["up", "--yes"]).await;
    let aws = f.moto.sdk_config().await;
    let lambda = aws_sdk_lambda::Client::new(&aws);
    let ssm = aws_sdk_ssm::Client::new(&aws);

    // Two functions, one code: the schedule keeps its slot and its on-failure destination.
    let (reserved, retries, destination) = invoke_settings(&f, "onec2-replicator").await;
    assert_eq!((reserved, retries), (Some(1), Some(0)));
    assert!(destination.unwrap().ends_with(":onec2-replicator-failures"));
    let (reserved, retries, destination) = invoke_settings(&f, "onec2-replicator-watch").await;
    assert_eq!(
        (reserved, retries, destination),
        (Some(1), Some(0), None),
        "the watcher's function has a slot of its own and the watcher sends the notices"
    );
    let conf = lambda
        .get_function_configuration()
        .function_name("onec2-replicator-watch")
        .send()
        .await
        .unwrap();
    let vars = conf.environment().unwrap().variables().unwrap();
    assert_eq!(
        vars.get(contract::env::SERVES_WATCHER).map(String::as_str),
        Some("true")
    );
    assert_eq!(conf.vpc_config().unwrap().subnet_ids().len(), 1);

    // The digest: the zip's SHA-256, a SecureString under the stack's key.
    let zip = std::fs::read(f.path("replicator.zip")).unwrap();
    let sha: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&zip)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let p = ssm
        .get_parameter()
        .name("/onec2/vault/watcher-code-sha256")
        .with_decryption(true)
        .send()
        .await
        .unwrap()
        .parameter
        .unwrap();
    assert_eq!(p.value(), Some(sha.as_str()));
    assert_eq!(
        p.r#type(),
        Some(&aws_sdk_ssm::types::ParameterType::SecureString)
    );

    // The fetch step, as the boot script installs it.
    let script_text = boot_script(&f).await;
    let script = f.dir.path().join("vault-replicator-fetch");
    std::fs::write(&script, embedded(&script_text, "FETCH")).unwrap();
    std::fs::create_dir_all(f.dir.path().join("host-bin")).unwrap();
    host_commands(&f.dir.path().join("host-bin"));
    let genuine = std::path::PathBuf::from(f.path("replicator.zip"));
    let host = f.dir.path().join("host");
    let run = fetch(&f, &script, &host, &genuine);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.bootstrap.as_deref(), Some(&b"\x7fELF v1"[..]));
    assert!(run.calls.contains(&"curl".to_owned()), "{:?}", run.calls);
    // A restart keeps the checked code: nothing is downloaded again.
    let run = fetch(&f, &script, &host, &genuine);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.calls, ["aws ssm get-parameter"]);

    // Someone who may update the function's code puts theirs in: a new host refuses it, the
    // running one keeps the code up uploaded.
    let tampered_dir = tempfile::tempdir().unwrap();
    let tampered = fake_zip(tampered_dir.path(), b"#!/bin/sh\necho pwned\n");
    lambda
        .update_function_code()
        .function_name("onec2-replicator-watch")
        .zip_file(aws_sdk_lambda::primitives::Blob::new(
            std::fs::read(&tampered).unwrap(),
        ))
        .send()
        .await
        .unwrap();
    let fresh = f.dir.path().join("fresh-host");
    let run = fetch(&f, &script, &fresh, &tampered);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("refused") && run.stderr.contains("is not what deployer up uploaded"),
        "{}",
        run.stderr
    );
    assert_eq!(run.bootstrap, None, "nothing to run is left");
    assert!(!fresh.join("code.zip").exists() && !fresh.join("code.zip.new").exists());
    let run = fetch(&f, &script, &host, &tampered);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.bootstrap.as_deref(), Some(&b"\x7fELF v1"[..]));

    // Someone who may write SSM parameters (not the key) writes the tampered zip's digest as
    // a plain String: refused, on a new host and on the running one.
    let tampered_sha: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(std::fs::read(&tampered).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    ssm.delete_parameter()
        .name("/onec2/vault/watcher-code-sha256")
        .send()
        .await
        .unwrap();
    ssm.put_parameter()
        .name("/onec2/vault/watcher-code-sha256")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .value(&tampered_sha)
        .send()
        .await
        .unwrap();
    for host in [&fresh, &host] {
        let run = fetch(&f, &script, host, &tampered);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(run.stderr.contains("not a SecureString"), "{}", run.stderr);
    }
    assert_eq!(
        std::fs::read(fresh.join("bootstrap")).ok(),
        None,
        "a refused start leaves nothing to run"
    );

    // `status` sees both; `up` puts the code and the digest back.
    let status = f.deployer(&["status", "--detailed-exitcode"]).await;
    assert_eq!(status.code, 2);
    f.deployer(&["up", "--yes"]).await;
    let run = fetch(&f, &script, &fresh, &genuine);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.bootstrap.as_deref(), Some(&b"\x7fELF v1"[..]));

    // The units as installed, with their two programs where the test has them.
    let units = f.dir.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    let bootstrap = fresh.join("bootstrap");
    for (name, end) in [
        ("vault-replicator-watch.service", "UNIT"),
        ("vault-audit-rotate.service", "SERVICE"),
        ("vault-audit-rotate.timer", "TIMER"),
    ] {
        let text = embedded(&script_text, end)
            .replace(
                "/usr/local/libexec/vault-replicator-fetch",
                &script.display().to_string(),
            )
            .replace(
                "%S/vault-replicator-watch/bootstrap",
                &bootstrap.display().to_string(),
            );
        std::fs::write(units.join(name), text).unwrap();
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(
            [
                "vault-replicator-watch.service",
                "vault-audit-rotate.service",
                "vault-audit-rotate.timer",
            ]
            .map(|n| units.join(n)),
        )
        .output()
        .expect("systemd-analyze (tests/run.sh installs systemd)");
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

/// With `code_signing_profile`, the functions run only code that profile signed: a code
/// signing config that enforces it, made before the functions and attached at their creation,
/// so an unsigned zip is refused by Lambda (here by a stand-in for Lambda's code signing,
/// which moto lacks) and never replaces the running code; `plan` says so; removing the profile
/// is asked about and detaches, then deletes, the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_signing_lets_the_functions_run_only_signed_code() {
    const PROFILE: &str =
        "arn:aws:signer:us-east-1:123456789012:/signing-profiles/replicator/a1B2c3D4e5";
    let signed_config = format!("{EXTERNAL}code_signing_profile = \"{PROFILE}\"\n");
    let mut f = Fixture::new(&signed_config).await;
    let stand_in = e2e::lambda_signing::SigningStandIn::start(&f.moto.url).await;
    f.signing = Some(stand_in.clone());
    let zip = || std::fs::read(f.path("replicator.zip")).unwrap();
    let lambda = aws_sdk_lambda::Client::new(&f.moto.sdk_config().await);
    let code_of = || async {
        lambda
            .get_function_configuration()
            .function_name("demo-replicator")
            .send()
            .await
            .map(|c| c.code_sha256().unwrap_or_default().to_owned())
    };

    let plan = f.deployer(&["plan"]).await.json();
    assert_eq!(plan["code_signing_profile"], PROFILE);
    let config = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "code signing config")
        .expect("the code signing config in the plan")
        .clone();
    assert_eq!(config["action"], "create", "{config}");
    assert_eq!(config["fields"][0]["to"], PROFILE, "{config}");
    assert_eq!(config["fields"][1]["to"], "Enforce", "{config}");

    // An unsigned zip: Lambda refuses it, the deployer says what to do, no function is made.
    let unsigned = f.deployer_may_fail(&["up", "--yes"]).await;
    let error = unsigned.error.unwrap_or_default();
    assert!(
        error.contains("Lambda refused the function code")
            && error.contains(PROFILE)
            && error.contains("aws signer start-signing-job"),
        "{error}"
    );
    assert_eq!(stand_in.refused(), ["demo-replicator"]);
    assert!(code_of().await.is_err(), "no function with unsigned code");

    // Signed by the profile: made under the config, which allows that profile alone.
    stand_in.sign(PROFILE, &zip());
    f.deployer(&["up", "--yes"]).await;
    let configs = stand_in.configs();
    assert_eq!(configs.len(), 1, "{configs:?}");
    let made = &configs[0];
    assert_eq!(
        (made.profiles.as_slice(), made.policy.as_str()),
        (&[PROFILE.to_owned()][..], "Enforce")
    );
    assert_eq!(
        made.tags
            .get("vault-secrets-replicator:stack")
            .map(String::as_str),
        Some("demo")
    );
    assert_eq!(
        stand_in.functions(),
        [
            ("demo-replicator".to_owned(), made.arn.clone()),
            ("demo-replicator-rotate".to_owned(), made.arn.clone())
        ]
        .into()
    );
    let running = code_of().await.unwrap();
    assert!(
        f.deployer(&["up", "--yes"]).await.mutating.is_empty(),
        "a second up changes nothing"
    );

    // New code that nobody signed never replaces the running code.
    fake_zip(f.dir.path(), b"\x7fELF v2");
    let refused = f.deployer_may_fail(&["up", "--yes"]).await;
    assert!(
        refused
            .error
            .unwrap_or_default()
            .contains("Lambda refused the function code")
    );
    assert_eq!(code_of().await.unwrap(), running);
    stand_in.sign(PROFILE, &zip());
    f.deployer(&["up", "--yes"]).await;
    assert_ne!(code_of().await.unwrap(), running);

    // Without the profile: asked about (it lets any code run), then detached and deleted.
    std::fs::write(f.path("deployer.toml"), EXTERNAL).unwrap();
    let asked = f.deployer_may_fail(&["up"]).await;
    let error = asked.error.unwrap_or_default();
    assert!(error.contains("code_signing_config"), "{error}");
    assert!(asked.mutating.is_empty(), "{:?}", asked.mutating);
    f.deployer(&["up", "--yes"]).await;
    assert!(
        stand_in.functions().is_empty(),
        "{:?}",
        stand_in.functions()
    );
    assert!(stand_in.configs().is_empty(), "{:?}", stand_in.configs());
    assert!(f.deployer(&["up", "--yes"]).await.mutating.is_empty());

    // Unsigned code deployed while no profile is set runs; turning signing back on does not
    // leave it running under a config that was never asked about it: `up` uploads the code
    // again, which Lambda refuses, and says so, until the zip is signed.
    fake_zip(f.dir.path(), b"\x7fELF v3");
    f.deployer(&["up", "--yes"]).await;
    let unsigned_code = code_of().await.unwrap();
    std::fs::write(f.path("deployer.toml"), &signed_config).unwrap();
    let plan = f.deployer(&["plan"]).await.json();
    let function = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "lambda function")
        .unwrap()
        .clone();
    assert!(
        function["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["field"] == "code_signed_by"
                && d["from"] == "unsigned"
                && d["to"] == PROFILE),
        "{function}"
    );
    let refused = f.deployer_may_fail(&["up", "--yes"]).await;
    assert!(
        refused
            .error
            .unwrap_or_default()
            .contains("Lambda refused the function code")
    );
    assert_eq!(code_of().await.unwrap(), unsigned_code);
    stand_in.sign(PROFILE, &zip());
    f.deployer(&["up", "--yes"]).await;
    assert!(f.deployer(&["up", "--yes"]).await.mutating.is_empty());
    assert_eq!(stand_in.configs().len(), 1);

    // Destroy: the config goes after the function.
    f.deployer(&["destroy", "--yes"]).await;
    assert!(stand_in.configs().is_empty(), "{:?}", stand_in.configs());
}

/// The executable as an operator runs it: credentials, region and endpoint from a named
/// profile (`--profile`), `--stack-name` over the file's; and without any region, a clear
/// error before any call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executable_takes_a_named_profile_and_says_when_no_region_is_set() {
    let f = Fixture::new(EXTERNAL).await;
    let aws_dir = f.dir.path().join("aws");
    std::fs::create_dir_all(&aws_dir).unwrap();
    std::fs::write(
        aws_dir.join("config"),
        format!(
            "[profile lab]\nregion = {}\nendpoint_url = {}\n",
            e2e::REGION,
            f.moto.url
        ),
    )
    .unwrap();
    std::fs::write(
        aws_dir.join("credentials"),
        "[lab]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    let run = async |args: &[&str]| {
        let out = tokio::process::Command::new(e2e::bin_path("deployer"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", f.dir.path())
            .env("AWS_CONFIG_FILE", aws_dir.join("config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", aws_dir.join("credentials"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .current_dir(f.dir.path())
            .args(["--lambda-zip", "replicator.zip", "--output", "json"])
            .args(args)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
            .await
            .expect("the deployer answered within 2 minutes")
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["--profile", "lab", "--stack-name", "other", "plan"]).await;
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["stack"], "other");
    assert!(
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "other-replicator"),
        "{out}"
    );
    // No profile, no region anywhere: said, with what to set.
    let (code, _, err) = run(&["plan"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no AWS region") && err.contains("--region"),
        "{err}"
    );
}

/// A role made seconds ago is not assumable at once: Lambda answers `CreateFunction` with
/// `InvalidParameterValueException` until it is, and `up` tries again (moto never does this: a
/// stand-in in front of it answers so twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_waits_out_a_role_that_has_not_propagated() {
    let mut f = Fixture::new(EXTERNAL).await;
    let stand_in = e2e::lambda_signing::SigningStandIn::start(&f.moto.url).await;
    f.signing = Some(stand_in.clone());
    for _ in 0..2 {
        stand_in.refuse_next_create_function(
            "InvalidParameterValueException",
            "The role defined for the function cannot be assumed by Lambda.",
        );
    }
    let up = f.deployer(&["up", "--yes"]).await;
    let creates = up.sent.iter().filter(|op| *op == "CreateFunction").count();
    // The sync function's twice refused, then made; the rotation function's at once.
    assert_eq!(creates, 4, "{:?}", up.sent);
    assert!(f.deployer(&["up", "--yes"]).await.mutating.is_empty());
}

/// `deployer target …` as an operator of the replicas' account runs it: home credentials as
/// usual, the other account's through `--target-profile` (here, credentials moto issues in
/// that account).
/// The inline policy `name` of the role `role`, as IAM holds it.
async fn role_policy(aws: &aws_types::SdkConfig, role: &str, name: &str) -> serde_json::Value {
    let policy = aws_sdk_iam::Client::new(aws)
        .get_role_policy()
        .role_name(role)
        .policy_name(name)
        .send()
        .await
        .unwrap();
    deployer::policy::parse_returned(policy.policy_document()).unwrap()
}

/// A secret named `name` with `tags`, as a replica of this tool's (or an earlier version's).
async fn create_tagged(sm: &aws_sdk_secretsmanager::Client, name: &str, tags: &[(&str, &str)]) {
    let mut create = sm.create_secret().name(name).secret_string("{}");
    for (k, v) in tags {
        create = create.tags(
            aws_sdk_secretsmanager::types::Tag::builder()
                .key(*k)
                .value(*v)
                .build(),
        );
    }
    create.send().await.unwrap();
}

/// The statement of `policy` with the Sid `sid`.
fn statement<'a>(policy: &'a serde_json::Value, sid: &str) -> &'a serde_json::Value {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == sid)
        .unwrap_or_else(|| panic!("no statement {sid} in {policy}"))
}

async fn in_target(
    f: &Fixture,
    target: &aws_types::SdkConfig,
    args: &[&str],
) -> e2e::deploy::Outcome {
    let config = f.path("deployer.toml");
    let mut all = vec!["--config", &config, "--output", "json", "target"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--target-profile", "team-a"]);
    e2e::deploy::run_in_accounts(&f.moto.sdk_config().await, target, &all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_up_makes_the_role_in_the_replicas_account_once_and_repairs_it() {
    const ROLE: &str = "arn:aws:iam::222222222222:role/demo-replicas";
    let f = Fixture::new(&format!(
        "{EXTERNAL}deletion_policy = \"delete\"\naccount_role_arn = \"{ROLE}\"\nexternal_id = \"ext-9b1\"\n"
    ))
    .await;
    let operator = |account: &str| {
        contract::account::AccountRole::new(
            &format!("arn:aws:iam::{account}:role/admin"),
            Some("any"),
        )
        .unwrap()
    };
    let home = f.moto.sdk_config().await;
    let target = replicator::aws::in_account(&home, &operator("222222222222"));
    f.deployer(&["up", "--yes"]).await;

    let plan = in_target(&f, &target, &["plan", "--detailed-exitcode"]).await;
    assert_eq!(
        (plan.code, plan.error.as_deref()),
        (2, None),
        "{}",
        plan.stdout
    );
    assert_eq!(
        plan.json()["changes"][0]["action"],
        "create",
        "{}",
        plan.stdout
    );
    assert!(
        plan.sent.is_empty(),
        "plan changes nothing: {:?}",
        plan.sent
    );
    // Not from a terminal, a change of access needs --yes.
    let refused = in_target(&f, &target, &["up"]).await;
    assert!(
        refused.error.as_deref().unwrap_or("").contains("--yes"),
        "{:?}",
        refused.error
    );
    assert!(refused.sent.is_empty(), "{:?}", refused.sent);

    let up = in_target(&f, &target, &["up", "--yes"]).await;
    assert!(up.error.is_none(), "{:?}", up.error);
    assert_eq!(up.sent, ["CreateRole", "PutRolePolicy"]);
    let iam = aws_sdk_iam::Client::new(&target);
    let made = iam
        .get_role()
        .role_name("demo-replicas")
        .send()
        .await
        .unwrap();
    let made = made.role().unwrap();
    assert_eq!(made.arn(), ROLE, "the role is in the replicas' account");
    let trust =
        deployer::policy::parse_returned(made.assume_role_policy_document().unwrap()).unwrap();
    // The deployer writes a list of one as its element (AWS's canonical form).
    let only = &trust["Statement"];
    assert_eq!(
        only["Principal"]["AWS"],
        "arn:aws:iam::123456789012:role/demo-replicator"
    );
    assert_eq!(
        only["Condition"]["StringEquals"]["sts:ExternalId"],
        "ext-9b1"
    );
    let policy = role_policy(&target, "demo-replicas", "replicas")
        .await
        .to_string();
    assert!(
        policy
            .contains("arn:aws:secretsmanager:us-east-1:222222222222:secret:hybrid-aws-secrets/*"),
        "scoped to the prefix in that account: {policy}"
    );
    assert!(policy.contains("DeleteOnlyItsOwnReplicas"), "{policy}");
    // Nothing was made in the home account.
    assert!(
        aws_sdk_iam::Client::new(&home)
            .get_role()
            .role_name("demo-replicas")
            .send()
            .await
            .is_err()
    );

    let again = in_target(&f, &target, &["up", "--yes"]).await;
    assert_eq!(
        (again.error.as_deref(), again.sent.len()),
        (None, 0),
        "{:?}",
        again.sent
    );
    let status = in_target(&f, &target, &["status", "--detailed-exitcode"]).await;
    assert_eq!(status.code, 0, "{}", status.stdout);

    // Someone lets anyone in the home account assume it: drift, repaired by the next up.
    iam.update_assume_role_policy()
        .role_name("demo-replicas")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}"#)
        .send()
        .await
        .unwrap();
    let drifted = in_target(&f, &target, &["status", "--detailed-exitcode"]).await;
    assert_eq!(drifted.code, 2, "{}", drifted.stdout);
    let repaired = in_target(&f, &target, &["up", "--yes"]).await;
    assert_eq!(repaired.sent, ["UpdateAssumeRolePolicy"]);
    // A policy beside its own widens what the replicator may do there: drift, taken off.
    iam.put_role_policy()
        .role_name("demo-replicas")
        .policy_name("backdoor")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();
    let widened = in_target(&f, &target, &["status", "--detailed-exitcode"]).await;
    assert_eq!(widened.code, 2, "{}", widened.stdout);
    assert!(
        widened.stdout.contains("inline backdoor"),
        "{}",
        widened.stdout
    );
    let narrowed = in_target(&f, &target, &["up", "--yes"]).await;
    assert_eq!(narrowed.sent, ["DeleteRolePolicy"]);
    let policies = iam
        .list_role_policies()
        .role_name("demo-replicas")
        .send()
        .await
        .unwrap();
    assert_eq!(policies.policy_names(), ["replicas"]);

    // A profile of another account is refused before anything is changed.
    let elsewhere = replicator::aws::in_account(&home, &operator("333333333333"));
    let wrong = in_target(&f, &elsewhere, &["up", "--yes"]).await;
    let error = wrong.error.unwrap_or_default();
    assert!(
        error.contains("account 333333333333") && error.contains("222222222222"),
        "{error}"
    );
    assert!(wrong.sent.is_empty());

    let gone = in_target(&f, &target, &["destroy", "--yes"]).await;
    assert!(gone.error.is_none(), "{:?}", gone.error);
    assert!(
        gone.sent.contains(&"DeleteRole".to_owned()),
        "{:?}",
        gone.sent
    );
    assert!(
        iam.get_role()
            .role_name("demo-replicas")
            .send()
            .await
            .is_err()
    );

    // A role of that name that this stack did not make is never taken over.
    iam.create_role()
        .role_name("demo-replicas")
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::222222222222:root"},"Action":"sts:AssumeRole"}]}"#)
        .send()
        .await
        .unwrap();
    let plan = in_target(&f, &target, &["plan"]).await;
    assert!(
        plan.stdout.contains("does not take over"),
        "{}",
        plan.stdout
    );
    let refused = in_target(&f, &target, &["up", "--yes"]).await;
    let error = refused.error.unwrap_or_default();
    assert!(
        error.contains("does not take over a role it did not make"),
        "{error}"
    );
    assert!(refused.sent.is_empty(), "{:?}", refused.sent);
    let kept = in_target(&f, &target, &["destroy", "--yes"]).await;
    assert!(kept.sent.is_empty(), "{:?}", kept.sent);
    assert!(
        iam.get_role()
            .role_name("demo-replicas")
            .send()
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_managers_own_check_refuses_a_replica_policy_before_anything_is_made() {
    use e2e::aws_proxy::{AwsProxy, Rewrite};
    let f = Fixture::new(EXTERNAL).await;
    let policy = e2e::deploy::replica_policy_file(f.dir.path());
    std::fs::write(
        f.dir.path().join("deployer.toml"),
        format!("{EXTERNAL}resource_policy = \"{}\"\n", policy.display()),
    )
    .unwrap();
    let proxy = AwsProxy::start(&f.moto.url).await;
    let verdict = |passed: bool| {
        Rewrite::Answer {
        op: "ValidateResourcePolicy".into(),
        body: serde_json::json!({
            "PolicyValidationPassed": passed,
            "ValidationErrors": if passed { serde_json::json!([]) } else {
                serde_json::json!([{"CheckName": "PUBLIC_ACCESS_CHECK", "ErrorMessage": "the policy grants broad access"}])
            },
        })
        .to_string(),
    }
    };
    proxy.set(vec![verdict(false)]);
    let aws = f.moto.sdk_config_at(&proxy.url).await;
    let (config, zip) = (f.path("deployer.toml"), f.path("replicator.zip"));
    let deployer = |command: &'static str| {
        let (aws, config, zip) = (aws.clone(), config.clone(), zip.clone());
        async move {
            let mut args = vec!["--config", &config, "--lambda-zip", &zip, command];
            if command == "up" {
                args.push("--yes");
            }
            e2e::deploy::run_as(&aws, &args).await
        }
    };
    for command in ["plan", "up"] {
        let refused = deployer(command).await;
        let error = refused.error.unwrap_or_default();
        assert!(
            error.starts_with("resource_policy: Secrets Manager refuses the policy")
                && error.contains("PUBLIC_ACCESS_CHECK: the policy grants broad access"),
            "{command}: {error}"
        );
        assert!(refused.sent.is_empty(), "{command}: {:?}", refused.sent);
    }
    let checked = proxy
        .calls()
        .into_iter()
        .find(|(op, _)| op == "ValidateResourcePolicy")
        .map(|(_, policy)| policy)
        .unwrap();
    assert!(
        checked.contains(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:hybrid-aws-secrets/example-AbCdEf"
        ) && checked.contains("arn:aws:iam::123456789012:role/app"),
        "the policy as it would be put on a replica: {checked}"
    );
    proxy.set(vec![verdict(true)]);
    let passed = deployer("plan").await;
    assert_eq!((passed.code, passed.error), (0, None));
}

/// `target --sync NAME` with `[[sync]]` rules: the rule names its account; a role two rules
/// name serves both (each prefix there, one trust); without `--sync`, several rules in other
/// accounts are refused, and a name no rule has is refused with the rules' names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_up_of_a_rule_makes_its_role_for_every_rule_that_names_it() {
    const ROLE: &str = "arn:aws:iam::222222222222:role/teams-replicas";
    let rule = |name: &str, prefix: &str, role: &str| {
        format!(
            "[[sync]]\nname = \"{name}\"\nprefix = \"{prefix}\"\nmount = \"kv\"\npath = \"{prefix}\"\naccount_role_arn = \"{role}\"\nexternal_id = \"ext-9b1\"\n"
        )
    };
    let f = Fixture::new(&format!(
        "{EXTERNAL}{}{}{}[[sync]]\nname = \"home\"\nprefix = \"home\"\n",
        rule("team-a", "a", ROLE),
        rule("team-b", "b", ROLE),
        rule("team-c", "c", "arn:aws:iam::333333333333:role/c-replicas"),
    ))
    .await;
    let home = f.moto.sdk_config().await;
    let target = replicator::aws::in_account(
        &home,
        &contract::account::AccountRole::new("arn:aws:iam::222222222222:role/admin", Some("any"))
            .unwrap(),
    );
    f.deployer(&["up", "--yes"]).await;
    // A replica of the top-level keys' sync from before the rules: no rule's now, and said so.
    create_tagged(
        &aws_sdk_secretsmanager::Client::new(&home),
        "hybrid-aws-secrets/left",
        &[
            ("managed-by", "vault-secrets-replicator"),
            ("vault-mount", "hybrid-aws-secrets"),
            ("vault-path", "/"),
            ("replica-prefix", "hybrid-aws-secrets"),
            ("replica-stack", "demo"),
        ],
    )
    .await;
    let plan = f.deployer(&["plan"]).await;
    assert!(
        plan.json()["warnings"].to_string().contains(
            "1 replica(s) of this stack under hybrid-aws-secrets/, from the top-level keys' sync before [[sync]], are no rule's now"
        ),
        "{}",
        plan.stdout
    );

    let unnamed = in_target(&f, &target, &["plan"]).await;
    assert!(
        unnamed.error.as_deref().unwrap_or("").contains(
            "several rules write in other accounts (team-a, team-b, team-c): give --sync NAME"
        ),
        "{:?}",
        unnamed.error
    );
    let unknown = in_target(&f, &target, &["plan", "--sync", "team-z"]).await;
    assert!(
        unknown
            .error
            .as_deref()
            .unwrap_or("")
            .contains("no rule has that name (the rules: team-a, team-b, team-c, home)"),
        "{:?}",
        unknown.error
    );
    let at_home = in_target(&f, &target, &["plan", "--sync", "home"]).await;
    assert!(
        at_home
            .error
            .as_deref()
            .unwrap_or("")
            .contains("names no account_role_arn"),
        "{:?}",
        at_home.error
    );
    // Another rule's account is not this profile's.
    let elsewhere = in_target(&f, &target, &["plan", "--sync", "team-c"]).await;
    assert!(
        elsewhere
            .error
            .as_deref()
            .unwrap_or("")
            .contains("account_role_arn is in account 333333333333"),
        "{:?}",
        elsewhere.error
    );

    let up = in_target(&f, &target, &["up", "--yes", "--sync", "team-a"]).await;
    assert!(up.error.is_none(), "{:?}", up.error);
    assert_eq!(up.sent, ["CreateRole", "PutRolePolicy"]);
    let policy = role_policy(&target, "teams-replicas", "replicas").await;
    let write = statement(&policy, "WriteReplicatedSecrets");
    assert_eq!(
        write["Resource"],
        serde_json::json!([
            "arn:aws:secretsmanager:us-east-1:222222222222:secret:a/*",
            "arn:aws:secretsmanager:us-east-1:222222222222:secret:b/*"
        ]),
        "{policy}"
    );
    // The other rule that names the role sees it converged.
    let again = in_target(&f, &target, &["up", "--yes", "--sync", "team-b"]).await;
    assert!(again.error.is_none(), "{:?}", again.error);
    assert!(again.sent.is_empty(), "{:?}", again.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_up_makes_the_replicas_key_there_when_asked_and_destroy_keeps_it() {
    let f = Fixture::new(&format!(
        "{EXTERNAL}account_kms_key = \"create\"\n[[sync]]\nname = \"team-a\"\nprefix = \"a\"\nmount = \"kv\"\nregion = \"eu-west-1\"\naccount_role_arn = \"arn:aws:iam::222222222222:role/a-replicas\"\nexternal_id = \"ext-9b1\"\n"
    ))
    .await;
    let home = f.moto.sdk_config().await;
    let target = replicator::aws::in_account(
        &home,
        &contract::account::AccountRole::new("arn:aws:iam::222222222222:role/admin", Some("any"))
            .unwrap(),
    );
    f.deployer(&["up", "--yes"]).await;
    // The function is told the key by its alias there.
    let env = e2e::deploy::function_environment(&home, "demo-replicator").await;
    let rules: serde_json::Value = serde_json::from_str(&env["REPLICATOR_RULES"]).unwrap();
    assert_eq!(rules[0]["kms_key_id"], "alias/demo-replicas", "{rules}");

    let plan = in_target(&f, &target, &["plan", "--detailed-exitcode"]).await;
    assert_eq!(plan.code, 2, "{}", plan.stdout);
    let planned: Vec<String> = plan.json()["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["action"].as_str().unwrap(),
                c["kind"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        planned,
        ["create kms key", "create iam role"],
        "{}",
        plan.stdout
    );
    let up = in_target(&f, &target, &["up", "--yes"]).await;
    assert!(up.error.is_none(), "{:?}", up.error);
    assert_eq!(
        up.sent,
        [
            "CreateKey",
            "EnableKeyRotation",
            "CreateAlias",
            "CreateRole",
            "PutRolePolicy"
        ]
    );
    // In the rule's region of the replicas' account, rotation on, tagged with the stack.
    let kms = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::from(&target)
            .region(aws_types::region::Region::new("eu-west-1"))
            .build(),
    );
    let key = kms
        .describe_key()
        .key_id("alias/demo-replicas")
        .send()
        .await
        .unwrap();
    let key_id = key.key_metadata().unwrap().key_id().to_owned();
    assert!(
        key.key_metadata()
            .unwrap()
            .arn()
            .unwrap()
            .contains(":eu-west-1:222222222222:"),
        "{key:?}"
    );
    assert!(
        kms.get_key_rotation_status()
            .key_id(&key_id)
            .send()
            .await
            .unwrap()
            .key_rotation_enabled()
    );
    // The role may use it, by its alias, and no other key but Secrets Manager's own.
    let policy = role_policy(&target, "a-replicas", "replicas").await;
    let deny = statement(&policy, "NoKeyButTheDefaultOrTheReplicaKeys");
    assert_eq!(
        deny["Condition"]["ForAllValues:StringNotEquals"]["kms:ResourceAliases"],
        serde_json::json!(["alias/aws/secretsmanager", "alias/demo-replicas"])
    );

    let again = in_target(&f, &target, &["up", "--yes"]).await;
    assert_eq!(
        (again.error.as_deref(), again.sent.len()),
        (None, 0),
        "{:?}",
        again.sent
    );
    // Someone widens the key's policy: drift, repaired.
    kms.put_key_policy()
        .key_id(&key_id)
        .policy_name("default")
        .policy(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();
    let drifted = in_target(&f, &target, &["status", "--detailed-exitcode"]).await;
    assert_eq!(drifted.code, 2, "{}", drifted.stdout);
    let repaired = in_target(&f, &target, &["up", "--yes"]).await;
    assert_eq!(repaired.sent, ["PutKeyPolicy"]);

    // The replicas stay, and so does the key they are encrypted with.
    let gone = in_target(&f, &target, &["destroy", "--yes"]).await;
    assert!(gone.error.is_none(), "{:?}", gone.error);
    assert!(
        gone.sent.contains(&"DeleteRole".to_owned()),
        "{:?}",
        gone.sent
    );
    assert!(
        gone.sent
            .iter()
            .all(|op| !op.contains("Key") && !op.contains("Alias")),
        "{:?}",
        gone.sent
    );
    let kept = &gone.json()["changes"][1];
    assert_eq!(
        (&kept["kind"], &kept["name"], &kept["action"]),
        (
            &serde_json::json!("kms key"),
            &serde_json::json!("alias/demo-replicas"),
            &serde_json::json!("unchanged")
        ),
        "{}",
        gone.stdout
    );
    let state = kms.describe_key().key_id(&key_id).send().await.unwrap();
    assert_eq!(
        state.key_metadata().unwrap().key_state(),
        Some(&aws_sdk_kms::types::KeyState::Enabled)
    );

    // With --delete-replicated-secrets: the rule's replicas there, in its region, are
    // scheduled for deletion with that account's credentials; anything else stays.
    let sm = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&target)
            .region(aws_types::region::Region::new("eu-west-1"))
            .build(),
    );
    create_tagged(
        &sm,
        "a/db",
        &[
            ("managed-by", "vault-secrets-replicator"),
            ("vault-mount", "kv"),
            ("vault-path", "/"),
            ("replica-prefix", "a"),
            ("replica-stack", "demo"),
            ("replica-rule", "team-a"),
        ],
    )
    .await;
    sm.create_secret()
        .name("a/theirs")
        .secret_string("{}")
        .send()
        .await
        .unwrap();
    let deleted = in_target(
        &f,
        &target,
        &["destroy", "--yes", "--delete-replicated-secrets"],
    )
    .await;
    assert!(deleted.error.is_none(), "{:?}", deleted.error);
    assert_eq!(
        deleted.sent,
        ["DeleteSecret"],
        "the role is gone already: {}",
        deleted.stdout
    );
    let described = |name: &'static str| {
        let sm = sm.clone();
        async move {
            sm.describe_secret()
                .secret_id(name)
                .send()
                .await
                .unwrap()
                .deleted_date()
                .is_some()
        }
    };
    assert!(described("a/db").await, "the rule's replica is scheduled");
    assert!(!described("a/theirs").await, "another's secret stays");

    // A role of that name the stack did not make: it may still be written through, so its
    // replicas are not deleted.
    aws_sdk_iam::Client::new(&target)
        .create_role()
        .role_name("a-replicas")
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .send()
        .await
        .unwrap();
    let refused = in_target(
        &f,
        &target,
        &["destroy", "--yes", "--delete-replicated-secrets"],
    )
    .await;
    assert!(
        refused
            .error
            .as_deref()
            .is_some_and(|e| e.contains("does not carry this stack's tag")),
        "{:?}",
        refused.error
    );
    assert!(refused.sent.is_empty(), "{:?}", refused.sent);
}

/// Moving a stack's one sync to `[[sync]]` rules: the function's role keeps its writes until the
/// function writes with the rules' roles, then loses them; a rule's role is not taken over
/// from someone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_to_rules_narrows_the_functions_role_only_once_the_function_has_moved() {
    let f = Fixture::new(EXTERNAL).await;
    f.deployer(&["up", "--yes"]).await;
    let aws = f.moto.sdk_config().await;
    let rules = format!(
        "{EXTERNAL}[[sync]]\nname = \"a\"\nprefix = \"a\"\n[[sync]]\nname = \"b\"\nprefix = \"b\"\n"
    );
    std::fs::write(f.path("deployer.toml"), &rules).unwrap();
    let up = f.deployer(&["up", "--yes"]).await;
    let at = |op: &str| -> Vec<usize> {
        up.sent
            .iter()
            .enumerate()
            .filter(|(_, s)| *s == op)
            .map(|(i, _)| i)
            .collect()
    };
    let function = at("UpdateFunctionConfiguration");
    let puts = at("PutRolePolicy");
    assert!(
        !function.is_empty() && puts.first() < function.first() && puts.last() > function.last(),
        "widened before the function moves, narrowed after: {:?}",
        up.sent
    );
    let policy = role_policy(&aws, "demo-replicator", "replicator").await;
    statement(&policy, "WriteNoSecretItself");
    assert!(
        !policy.to_string().contains("\"WriteReplicatedSecrets\""),
        "{policy}"
    );
    assert_eq!(
        statement(&policy, "AssumeTheReplicasAccountRole")["Resource"],
        serde_json::json!([
            "arn:aws:iam::123456789012:role/vault-secrets-replicator/demo/demo.sync.a",
            "arn:aws:iam::123456789012:role/vault-secrets-replicator/demo/demo.sync.b"
        ])
    );
    let again = f.deployer(&["up", "--yes"]).await;
    assert!(again.sent.is_empty(), "{:?}", again.sent);

    // A role of a rule's name that this stack did not make is not taken over.
    let iam = aws_sdk_iam::Client::new(&aws);
    iam.create_role()
        .role_name("demo.sync.c")
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .send()
        .await
        .unwrap();
    std::fs::write(
        f.path("deployer.toml"),
        format!("{rules}[[sync]]\nname = \"c\"\nprefix = \"c\"\n"),
    )
    .unwrap();
    let plan = f.deployer(&["plan"]).await;
    assert!(
        plan.stdout
            .contains("does not take over a role it did not make"),
        "{}",
        plan.stdout
    );
    let refused = f.deployer_may_fail(&["up", "--yes"]).await;
    assert!(
        refused
            .error
            .as_deref()
            .is_some_and(|e| e.contains("demo.sync.c exists without this stack's tag")),
        "{:?}",
        refused.error
    );
    assert!(
        !refused.sent.iter().any(|s| s == "UpdateAssumeRolePolicy"),
        "{:?}",
        refused.sent
    );
}

/// Rules naming one role in another account, in two regions, with `account_kms_key =
/// "create"`: `target up` for either makes the key in each rule's region; the other rule's
/// `target up` and `target status` see them converged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_up_makes_the_key_in_every_region_of_the_rules_sharing_the_role() {
    const ROLE: &str = "arn:aws:iam::222222222222:role/teams-replicas";
    let f = Fixture::new(&format!(
        "{EXTERNAL}account_kms_key = \"create\"\n\
         [[sync]]\nname = \"team-a\"\nprefix = \"a\"\nregion = \"eu-west-1\"\naccount_role_arn = \"{ROLE}\"\nexternal_id = \"ext-9b1\"\n\
         [[sync]]\nname = \"team-b\"\nprefix = \"b\"\naccount_role_arn = \"{ROLE}\"\nexternal_id = \"ext-9b1\"\n"
    ))
    .await;
    let home = f.moto.sdk_config().await;
    let target = replicator::aws::in_account(
        &home,
        &contract::account::AccountRole::new("arn:aws:iam::222222222222:role/admin", Some("any"))
            .unwrap(),
    );
    f.deployer(&["up", "--yes"]).await;
    let plan = in_target(&f, &target, &["plan", "--sync", "team-a"]).await;
    assert_eq!(
        plan.json()["kms_key_regions"],
        serde_json::json!(["eu-west-1", "us-east-1"]),
        "{}",
        plan.stdout
    );
    let up = in_target(&f, &target, &["up", "--yes", "--sync", "team-a"]).await;
    assert!(up.error.is_none(), "{:?}", up.error);
    assert_eq!(
        up.sent.iter().filter(|s| *s == "CreateKey").count(),
        2,
        "{:?}",
        up.sent
    );
    for region in ["eu-west-1", "us-east-1"] {
        let kms = aws_sdk_kms::Client::from_conf(
            aws_sdk_kms::config::Builder::from(&target)
                .region(aws_types::region::Region::new(region))
                .build(),
        );
        let key = kms
            .describe_key()
            .key_id("alias/demo-replicas")
            .send()
            .await
            .unwrap();
        let arn = key.key_metadata().unwrap().arn().unwrap().to_owned();
        assert!(arn.contains(&format!(":{region}:222222222222:")), "{arn}");
    }
    let other = in_target(&f, &target, &["up", "--yes", "--sync", "team-b"]).await;
    assert!(other.sent.is_empty(), "{:?}", other.sent);
    let status = in_target(
        &f,
        &target,
        &["status", "--sync", "team-b", "--detailed-exitcode"],
    )
    .await;
    assert_eq!(status.code, 0, "{}", status.stdout);
}

/// Vault on EC2 with `[[sync]]` rules in the stack's account: the function assumes each rule's
/// role through an STS endpoint of the Vault network, whose policy passes only that; the
/// endpoint goes when the rules do. Converged, a second `up` sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_on_ec2_with_rules_reaches_sts_through_its_own_endpoint() {
    let rules = format!(
        "{ON_EC2}events = true\n[[sync]]\nname = \"a\"\nprefix = \"a\"\n[[sync]]\nname = \"b\"\nprefix = \"b\"\n"
    );
    let f = Fixture::new(&rules).await;
    let plan = f.deployer(&["plan"]).await;
    let cost = plan.json()["cost"].to_string();
    assert!(
        cost.contains("STS") && cost.contains("EventBridge"),
        "{}",
        plan.stdout
    );
    f.deployer(&["up", "--yes"]).await;
    let aws = f.moto.sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let endpoints = || async {
        let out = ec2.describe_vpc_endpoints().send().await.unwrap();
        let mut live: Vec<(String, String)> = out
            .vpc_endpoints()
            .iter()
            // Compared as text: moto spells the states in lower case.
            .filter(|e| {
                !e.state().is_some_and(|s| {
                    ["deleted", "deleting"].contains(&s.as_str().to_ascii_lowercase().as_str())
                })
            })
            .map(|e| {
                (
                    e.service_name().unwrap_or_default().to_owned(),
                    e.policy_document().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        live.sort();
        live
    };
    let live = endpoints().await;
    let services: Vec<&str> = live.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        services,
        [
            "com.amazonaws.us-east-1.events",
            "com.amazonaws.us-east-1.secretsmanager",
            "com.amazonaws.us-east-1.sts"
        ]
    );
    let events = deployer::policy::parse_returned(&live[0].1).unwrap();
    assert!(
        events.to_string().contains("event-bus/default")
            && events.to_string().contains("vault-secrets-replicator"),
        "{events}"
    );
    let sts = deployer::policy::parse_returned(&live[2].1).unwrap();
    assert!(
        sts.to_string()
            .contains("role/vault-secrets-replicator/onec2/onec2.sync.a"),
        "{sts}"
    );
    let again = f.deployer(&["up", "--yes"]).await;
    assert!(again.sent.is_empty(), "{:?}", again.sent);
    // Back to the one sync without events: the STS and EventBridge endpoints go.
    std::fs::write(f.path("deployer.toml"), ON_EC2).unwrap();
    f.deployer(&["up", "--yes"]).await;
    let services: Vec<String> = endpoints().await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(services, ["com.amazonaws.us-east-1.secretsmanager"]);
}
