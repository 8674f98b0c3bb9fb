//! The deployer and the replicator agree: the Lambda the deployer configures (its environment,
//! its connection secret, its KMS key) makes the real `bootstrap` replicate, through the Lambda
//! Runtime API, against real OpenBao and moto servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use e2e::aws_side::AwsSide;
use e2e::deploy::{fake_zip, run};
use e2e::runtime_api::{Answer, RuntimeApi};
use e2e::{Bao, Moto};
use serde_json::json;

/// A stack deployed by `deployer up` with `extra` configuration against an external Vault
/// (`bao`), its function run by the real `bootstrap` with exactly the environment deployed.
struct Deployed {
    _dir: tempfile::TempDir,
    config: String,
    zip: String,
    outputs: serde_json::Value,
    side: AwsSide,
    /// The function's environment as deployed.
    vars: std::collections::HashMap<String, String>,
    /// In front of moto for `deployer`: answers `ValidateResourcePolicy` (moto lacks it) with
    /// a pass, and logs the calls.
    proxy: e2e::aws_proxy::AwsProxy,
    api: RuntimeApi,
    _function: tokio::process::Child,
}

impl Deployed {
    async fn up(bao: &Bao, moto: &Moto, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("deployer.toml");
        std::fs::write(
            &config,
            format!(
                "stack_name = \"c\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"{}\"\n{extra}",
                bao.addr
            ),
        )
        .unwrap();
        let zip = fake_zip(dir.path(), b"\x7fELF");
        let (config, zip) = (config.display().to_string(), zip.display().to_string());
        let proxy = e2e::aws_proxy::AwsProxy::start(&moto.url).await;
        proxy.set(vec![e2e::aws_proxy::Rewrite::Answer {
            op: "ValidateResourcePolicy".into(),
            body: json!({"PolicyValidationPassed": true, "ValidationErrors": []}).to_string(),
        }]);
        let up = e2e::deploy::run_as(
            &moto.sdk_config_at(&proxy.url).await,
            &[
                "--config",
                &config,
                "--lambda-zip",
                &zip,
                "--output",
                "json",
                "up",
                "--yes",
            ],
        )
        .await;
        assert!(up.error.is_none(), "{:?}", up.error);
        let outputs = up.json()["outputs"].clone();

        // What vault-init does: add the credentials to the connection secret.
        let aws = moto.sdk_config().await;
        let side = AwsSide::new(&aws);
        let secret_arn = outputs["connection_secret_arn"].as_str().unwrap();
        assert_eq!(
            side.value(secret_arn).await,
            json!({"vaultAddress": bao.addr}),
            "up writes the address only"
        );
        side.sm
            .put_secret_value()
            .secret_id(secret_arn)
            .secret_string(
                json!({"vaultAddress": bao.addr, "vaultToken": e2e::ROOT_TOKEN}).to_string(),
            )
            .send()
            .await
            .unwrap();

        // The function's environment, exactly as deployed.
        let vars =
            e2e::deploy::function_environment(&aws, outputs["function_name"].as_str().unwrap())
                .await;
        let api = RuntimeApi::start().await;
        let function = tokio::process::Command::new(e2e::bin_path("bootstrap"))
            .env_clear()
            .envs(moto.env())
            .envs(vars.clone())
            .envs(e2e::runtime_api::lambda_env(&api.addr, "replicator"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self {
            _dir: dir,
            config,
            zip,
            outputs,
            side,
            vars,
            proxy,
            api,
            _function: function,
        }
    }

    /// One invocation with an empty event: the report the function answered.
    async fn invoke(&mut self) -> (serde_json::Value, String) {
        let answer = self.api.invoke("r1", "{}", Duration::from_secs(60)).await;
        let Answer::Response(body) = answer else {
            panic!("{answer:?}")
        };
        (serde_json::from_str(&body).unwrap(), body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_lambda_configuration_drives_the_replicator() {
    let (bao, moto) = tokio::join!(Bao::start(), Moto::start());
    bao.enable_kv2("hybrid-aws-secrets").await;
    bao.put(
        "hybrid-aws-secrets",
        "first-secret-for-replication",
        json!({"k": "1"}),
    )
    .await;
    bao.put("hybrid-aws-secrets", "apps/second", json!({"k": "2"}))
        .await;

    let mut d = Deployed::up(&bao, &moto, "notification_email = \"ops@example.com\"\n").await;
    assert_eq!(
        d.vars["REPLICATOR_KMS_KEY_ID"],
        d.outputs["key_arn"].as_str().unwrap()
    );
    // The stack names the function's metrics (their `Stack` dimension).
    let stack = d.outputs["function_name"]
        .as_str()
        .unwrap()
        .trim_end_matches("-replicator");
    assert_eq!(d.vars[contract::env::STACK], stack);
    let (report, body) = d.invoke().await;
    assert_eq!(report["created"], 2, "{body}");
    let side = &d.side;
    let outputs = &d.outputs;
    let secret_arn = outputs["connection_secret_arn"].as_str().unwrap();
    let secrets = side.secrets("hybrid-aws-secrets").await;
    assert_eq!(
        secrets.keys().collect::<Vec<_>>(),
        [
            "hybrid-aws-secrets/apps/second",
            "hybrid-aws-secrets/first-secret-for-replication"
        ]
    );
    // Created with the stack's key.
    let described = side
        .sm
        .describe_secret()
        .secret_id("hybrid-aws-secrets/apps/second")
        .send()
        .await
        .unwrap();
    assert_eq!(described.kms_key_id(), outputs["key_arn"].as_str());

    // `deployer sync-now` invokes the same function synchronously and prints its report; moto
    // runs no function, so a stand-in of Lambda's Invoke hands the call to this bootstrap.
    let stand_in = e2e::lambda_invoke::InvokeStandIn::start(&moto.url, d.api).await;
    let through = moto.sdk_config_at(&stand_in.url).await;
    let base = ["--config", &d.config, "--lambda-zip", &d.zip];
    // Whoever reads the failure topic.
    let topic = outputs["topic_arn"].as_str().unwrap();
    let inbox = side.queue_on(topic, "c-inbox").await;
    let now = e2e::deploy::run_as(
        &through,
        &[&base[..], &["--output", "json", "sync-now"]].concat(),
    )
    .await;
    assert_eq!(now.code, 0, "{:?} {}", now.error, now.stdout);
    assert_eq!(now.json()["unchanged"], 2, "{}", now.stdout);
    // With a notification address, a failed run is to publish its notice itself.
    let asks_notice = format!(r#"{{"notice_topic":"{topic}"}}"#);
    assert_eq!(
        stand_in.invoked.lock().await.clone(),
        [("c-replicator".to_owned(), asks_notice)]
    );
    let text = e2e::deploy::run_as(&through, &[&base[..], &["sync-now"]].concat()).await;
    assert!(
        text.stdout
            .contains("c-replicator: created 0, updated 0, unchanged 2"),
        "{}",
        text.stdout
    );
    // Accepting a Vault rollback is one run's word, carried in its event.
    let accepted = e2e::deploy::run_as(
        &through,
        &[&base[..], &["sync-now", "--accept-vault-rollback"]].concat(),
    )
    .await;
    assert_eq!(accepted.code, 0, "{:?} {}", accepted.error, accepted.stdout);
    assert_eq!(
        stand_in.invoked.lock().await.last().cloned(),
        Some((
            "c-replicator".to_owned(),
            format!(r#"{{"accept_vault_rollback":true,"notice_topic":"{topic}"}}"#)
        ))
    );
    // Where each secret stands, as the function sees it from a dry run.
    let status = e2e::deploy::run_as(
        &through,
        &[&base[..], &["--output", "json", "status", "--secrets"]].concat(),
    )
    .await;
    assert_eq!(status.code, 0, "{:?} {}", status.error, status.stdout);
    assert_eq!(status.json()["summary"]["in_sync"], 2, "{}", status.stdout);
    assert_eq!(
        stand_in.invoked.lock().await.last().cloned(),
        Some(("c-replicator".to_owned(), r#"{"status":true}"#.to_owned()))
    );
    side.delete_now("hybrid-aws-secrets/apps/second").await;
    let behind =
        e2e::deploy::run_as(&through, &[&base[..], &["status", "--secrets"]].concat()).await;
    assert_eq!(behind.code, 2, "{}", behind.stdout);
    assert!(
        behind
            .stdout
            .contains("missing           hybrid-aws-secrets/apps/second\n"),
        "{}",
        behind.stdout
    );
    // Paused: the schedule off, the function marked to sync nothing; `up` keeps it so, and
    // `status` says so; resumed: both back, and a full sync at once (it brings back the
    // replica deleted above).
    let run = async |args: &[&str]| {
        let all: Vec<&str> = [&base[..], args].concat();
        e2e::deploy::run_as(&through, &all).await
    };
    let events = aws_sdk_eventbridge::Client::new(&moto.sdk_config().await);
    let rule_state = || async {
        events
            .describe_rule()
            .name("c-replicator-schedule")
            .send()
            .await
            .unwrap()
            .state()
            .map(|s| s.as_str().to_owned())
            .unwrap()
    };
    let second_there = || async {
        side.sm
            .describe_secret()
            .secret_id("hybrid-aws-secrets/apps/second")
            .send()
            .await
            .is_ok()
    };
    let env_now = || async {
        e2e::deploy::function_environment(&moto.sdk_config().await, "c-replicator").await
    };
    let cw = aws_sdk_cloudwatch::Client::new(&moto.sdk_config().await);
    let alarms_act = || async {
        cw.describe_alarms()
            .alarm_name_prefix("c-")
            .send()
            .await
            .unwrap()
            .metric_alarms()
            .iter()
            .map(|a| a.actions_enabled().unwrap_or(true))
            .collect::<Vec<bool>>()
    };
    assert_eq!(alarms_act().await, [true, true]);
    let paused = run(&["pause"]).await;
    assert_eq!(paused.code, 0, "{:?} {}", paused.error, paused.stdout);
    assert_eq!(rule_state().await, "DISABLED");
    // No run is expected while paused: the alarms say nothing, and `up` keeps them so.
    assert_eq!(alarms_act().await, [false, false]);
    assert_eq!(env_now().await[contract::env::PAUSED], "true");
    let kept = run(&["up", "--yes"]).await;
    assert!(
        kept.mutating.is_empty(),
        "a paused stack stays paused: {:?}",
        kept.mutating
    );
    let shown = run(&["--output", "json", "status"]).await;
    assert_eq!(shown.json()["paused"], true, "{}", shown.stdout);
    let asked = stand_in.invoked.lock().await.len();
    let resumed = run(&["resume"]).await;
    assert_eq!(resumed.code, 0, "{:?} {}", resumed.error, resumed.stdout);
    assert_eq!(rule_state().await, "ENABLED");
    assert_eq!(alarms_act().await, [true, true]);
    assert!(!env_now().await.contains_key(contract::env::PAUSED));
    assert_eq!(
        stand_in.invoked.lock().await.len(),
        asked + 1,
        "one full sync"
    );
    assert!(
        second_there().await,
        "what changed while paused is replicated on resume"
    );
    assert!(run(&["up", "--yes"]).await.mutating.is_empty());
    // A schedule disabled by hand (not by `pause`: no tag) is drift, which `up` repairs.
    events
        .disable_rule()
        .name("c-replicator-schedule")
        .send()
        .await
        .unwrap();
    let repaired = run(&["up", "--yes"]).await;
    assert_eq!(repaired.code, 0, "{:?}", repaired.error);
    assert_eq!(rule_state().await, "ENABLED");
    assert!(!env_now().await.contains_key(contract::env::PAUSED));
    side.delete_now("hybrid-aws-secrets/apps/second").await;
    // A function from before status requests (no REPLICATOR_STACK) is not asked: it would
    // take the event for the schedule's and sync.
    let lambda = aws_sdk_lambda::Client::new(&moto.sdk_config().await);
    let mut older = d.vars.clone();
    older.remove(contract::env::STACK);
    lambda
        .update_function_configuration()
        .function_name("c-replicator")
        .environment(
            aws_sdk_lambda::types::Environment::builder()
                .set_variables(Some(older.into_iter().collect()))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let asked = stand_in.invoked.lock().await.len();
    let old = e2e::deploy::run_as(&through, &[&base[..], &["status", "--secrets"]].concat()).await;
    assert_eq!(old.code, 1, "{}", old.stdout);
    assert!(
        old.stdout.contains("run `deployer up` first"),
        "{}",
        old.stdout
    );
    assert_eq!(stand_in.invoked.lock().await.len(), asked, "not invoked");
    // Nothing written by asking.
    assert!(!second_there().await);
    // A failed sync: exit 1 and the run's notice, no value.
    side.delete_now(secret_arn).await;
    let failed = e2e::deploy::run_as(&through, &[&base[..], &["sync-now"]].concat()).await;
    assert_eq!(failed.code, 1, "{}", failed.stdout);
    assert!(
        failed.stdout.contains("the sync failed"),
        "{}",
        failed.stdout
    );
    assert!(
        failed.stdout.contains("GetSecretValue"),
        "{}",
        failed.stdout
    );
    // A synchronous invocation never reaches the on-failure destination: the failed run that
    // `sync-now` started sent its notice itself, once; the runs that succeeded sent none.
    let notices = side.notices(&inbox, 1).await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("GetSecretValue"), "{notices:?}");
}

/// The Secrets Sync settings as the deployer writes them into the function's environment
/// (a template with braces, lists with `=` and `:`) are what the real `bootstrap` reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_secrets_sync_settings_drive_the_replicator() {
    let (bao, moto) = tokio::join!(Bao::start(), Moto::start());
    bao.enable_kv2("hybrid-aws-secrets").await;
    bao.put(
        "hybrid-aws-secrets",
        "apps/db",
        json!({"user": "app", "port": 5432}),
    )
    .await;
    // Left out: by a pattern, and by its own metadata (the deployed stack opts in).
    for path in ["apps/scratch/tmp", "apps/cache"] {
        bao.put("hybrid-aws-secrets", path, json!({"k": "v"})).await;
    }
    bao.set_custom_metadata("hybrid-aws-secrets", "apps/db", json!({"sync": "true"}))
        .await;
    bao.set_custom_metadata(
        "hybrid-aws-secrets",
        "apps/scratch/tmp",
        json!({"sync": "true"}),
    )
    .await;
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = e2e::deploy::replica_policy_file(policy_dir.path());
    let mut d = Deployed::up(
        &bao,
        &moto,
        &format!(
            "replica_regions = [\"us-west-2\"]\ngranularity = \"secret-key\"\n\
             name_template = \"{{mount}}/{{path}}/{{key}}\"\ntags = {{ team = \"core\" }}\n\
             max_keys_per_secret = 2\nlatest_deleted = \"delete\"\nadopt_sample = true\n\
             region_audit_hours = 1\ninclude = [\"apps/*\"]\nexclude = [\"*/scratch/*\"]\n\
             opt_in = true\nresource_policy = \"{}\"\n",
            policy.display()
        ),
    )
    .await;
    assert!(
        d.vars["REPLICATOR_RESOURCE_POLICY"].contains("${ReplicaArn}"),
        "{:?}",
        d.vars
    );
    // Secrets Manager checked the policy as it would be put on a replica.
    let checked: Vec<String> = d
        .proxy
        .calls()
        .into_iter()
        .filter(|(op, _)| op == "ValidateResourcePolicy")
        .map(|(_, policy)| policy)
        .collect();
    assert_eq!(checked.len(), 1, "{checked:?}");
    assert!(
        checked[0].contains(&format!(
            "arn:aws:secretsmanager:{}:{}:secret:hybrid-aws-secrets/example-AbCdEf",
            e2e::REGION,
            e2e::ACCOUNT
        )) && !checked[0].contains("${"),
        "{checked:?}"
    );
    for (var, value) in [
        ("REPLICATOR_MAX_KEYS_PER_SECRET", "2"),
        ("REPLICATOR_LATEST_DELETED", "delete"),
        ("REPLICATOR_ADOPT_SAMPLE", "true"),
        ("REPLICATOR_REGION_AUDIT_HOURS", "1"),
        ("REPLICATOR_INCLUDE", "apps/*"),
        ("REPLICATOR_EXCLUDE", "*/scratch/*"),
        ("REPLICATOR_OPT_IN", "true"),
    ] {
        assert_eq!(d.vars[var], value, "{var}");
    }
    // The function reads them all (a value it refused would fail every invocation).
    let (report, body) = d.invoke().await;
    assert_eq!(report["created"], 2, "{body}");
    assert_eq!(report["excluded"], 2, "{body}");
    let side = &d.side;
    let secrets = side.secrets("hybrid-aws-secrets").await;
    let port = "hybrid-aws-secrets/hybrid-aws-secrets/apps/db/port";
    assert_eq!(
        secrets.keys().collect::<Vec<_>>(),
        [port, "hybrid-aws-secrets/hybrid-aws-secrets/apps/db/user"]
    );
    assert_eq!(secrets[port].tags["team"], "core");
    let put = side
        .sm
        .get_resource_policy()
        .secret_id(port)
        .send()
        .await
        .unwrap();
    let put: serde_json::Value = serde_json::from_str(put.resource_policy().unwrap()).unwrap();
    assert_eq!(put["Statement"][0]["Resource"], secrets[port].arn.as_str());
    assert_eq!(side.text(port).await, "5432");
    assert_eq!(side.replica_regions(port).await, ["us-west-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_stack_writes_into_another_account_through_its_role() {
    let (bao, moto) = tokio::join!(Bao::start(), Moto::start());
    bao.enable_kv2("hybrid-aws-secrets").await;
    bao.put("hybrid-aws-secrets", "apps/db", json!({"user": "app"}))
        .await;
    let role = "arn:aws:iam::222222222222:role/team-replicas";
    let mut d = Deployed::up(
        &bao,
        &moto,
        &format!("account_role_arn = \"{role}\"\nexternal_id = \"ext-42\"\n"),
    )
    .await;
    assert_eq!(d.vars["REPLICATOR_ACCOUNT_ROLE_ARN"], role);
    assert_eq!(d.vars["REPLICATOR_EXTERNAL_ID"], "ext-42");
    assert!(
        !d.vars.contains_key("REPLICATOR_KMS_KEY_ID"),
        "the stack's key is not used in another account: {:?}",
        d.vars.keys()
    );
    let (report, body) = d.invoke().await;
    assert_eq!(report["created"], 1, "{body}");
    let target = replicator::aws::in_account(
        &moto.sdk_config().await,
        &contract::account::AccountRole::new(role, Some("ext-42")).unwrap(),
    );
    let there = e2e::aws_side::AwsSide::new(&target)
        .secrets("hybrid-aws-secrets")
        .await;
    assert_eq!(
        there.keys().collect::<Vec<_>>(),
        ["hybrid-aws-secrets/apps/db"]
    );
    assert!(
        there["hybrid-aws-secrets/apps/db"]
            .arn
            .contains(":222222222222:")
    );
    assert!(
        d.side.secrets("hybrid-aws-secrets").await.is_empty(),
        "no replica in the stack's own account"
    );
    let args = |extra: &[&'static str]| {
        let mut a = vec!["--config", &d.config, "--lambda-zip", &d.zip];
        a.extend_from_slice(extra);
        a
    };
    let again = run(&moto, &args(&["up", "--yes"])).await;
    assert_eq!(
        (again.error.as_deref(), again.sent.len()),
        (None, 0),
        "a converged up changes nothing: {:?}",
        again.sent
    );
    // A replica the function wrote here before account_role_arn was set: plan says it is
    // left behind, and destroy --delete-replicated-secrets removes it here, while the
    // replicas in the other account (out of the stack's reach) are kept and said so.
    d.side
        .create(
            "hybrid-aws-secrets/apps/old",
            "{}",
            &[
                ("managed-by", "vault-secrets-replicator"),
                ("vault-mount", "hybrid-aws-secrets"),
                ("vault-path", "/"),
                ("replica-prefix", "hybrid-aws-secrets"),
            ],
        )
        .await;
    let plan = run(&moto, &args(&["--output", "json", "plan"])).await;
    assert!(
        plan.json()["warnings"].to_string().contains(
            "1 replica(s) of this stack under hybrid-aws-secrets/ remain in this account"
        ),
        "{}",
        plan.stdout
    );
    let destroyed = run(
        &moto,
        &args(&[
            "--output",
            "json",
            "destroy",
            "--yes",
            "--delete-replicated-secrets",
        ]),
    )
    .await;
    assert!(destroyed.error.is_none(), "{:?}", destroyed.error);
    assert!(
        destroyed.json()["kept"]
            .to_string()
            .contains("in account 222222222222"),
        "{}",
        destroyed.stdout
    );
    assert!(
        d.side.secrets("hybrid-aws-secrets").await["hybrid-aws-secrets/apps/old"].pending_deletion
    );
    let there = e2e::aws_side::AwsSide::new(&target)
        .secrets("hybrid-aws-secrets")
        .await;
    assert!(!there["hybrid-aws-secrets/apps/db"].pending_deletion);
}
