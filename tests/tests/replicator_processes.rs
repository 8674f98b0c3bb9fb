//! The replicator's two binaries as a user meets them: `replicator sync` from a shell, and the
//! Lambda `bootstrap` driven through the Lambda Runtime API; with AppRole and a connection
//! secret. Real OpenBao and moto servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{args, env, failure_kinds, sync};
use contract::{ConnectionSecret, env as vars};
use e2e::runtime_api::{Answer, RuntimeApi};
use serde_json::{Value, json};

const PLANTED: &str = "PLANTED-c0ffee-42";

/// Runs `replicator` with only the given environment (plus PATH), returning (code, stdout, stderr).
fn replicator(envs: &[(String, String)], argv: &[&str]) -> (i32, String, String) {
    let out = Command::new(e2e::bin_path("replicator"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .args(argv)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn completions_cover_every_subcommand_and_flag_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = replicator(&[], &["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for word in ["sync", "connection-secret", "vault-aws-sts-region"] {
            assert!(out.contains(word), "{shell} completions lack {word}");
        }
    }
    assert_eq!(replicator(&[], &["completions", "tcsh"]).0, 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_never_shows_a_value_or_token_and_exits_by_outcome() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "app/db", json!({"password": PLANTED})).await;
    bao.put(
        "kv",
        "big",
        json!({"v": format!("{PLANTED}{}", "x".repeat(70_000))}),
    )
    .await;
    let token = bao
        .token_with_policy(
            "all",
            "path \"kv/*\" { capabilities = [\"read\", \"list\"] }",
        )
        .await;
    let mut envs = env.moto.env();
    envs.push(("VAULT_ADDR".into(), bao.addr.clone()));
    envs.push(("VAULT_TOKEN".into(), token.clone()));
    envs.push(("RUST_LOG".into(), "debug".into()));

    let (code, stdout, stderr) = replicator(
        &envs,
        &["sync", "--prefix", "kv", "-vv", "--output", "json"],
    );
    assert_eq!(code, 1, "a failed secret fails the run: {stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["created"], 1);
    assert_eq!(report["failures"][0]["kind"], "value_too_large");

    bao.put("kv", "app/db", json!({"password": format!("{PLANTED}-2")}))
        .await;
    bao.api("DELETE", "kv/metadata/big", None).await;
    let (code2, stdout2, stderr2) = replicator(&envs, &["sync", "--prefix", "kv", "-vv"]);
    assert_eq!(code2, 0, "{stdout2}{stderr2}");
    assert!(stdout2.contains("created 0, updated 1"), "{stdout2}");
    assert_eq!(
        env.side.value("kv/app/db").await["password"],
        format!("{PLANTED}-2")
    );

    for text in [&stdout, &stderr, &stdout2, &stderr2] {
        assert!(!text.contains(PLANTED), "a value leaked:\n{text}");
        assert!(!text.contains(&token), "the token leaked:\n{text}");
    }
    assert!(
        stderr.contains("inventories read"),
        "debug logs were on: {stderr}"
    );

    // For CI: --dry-run --detailed-exitcode says whether AWS is behind Vault (2) or not (0),
    // writing nothing; a real run with it says whether it wrote.
    let detailed = |extra: &[&str]| {
        let mut args = vec!["sync", "--prefix", "kv", "--detailed-exitcode"];
        args.extend_from_slice(extra);
        replicator(&envs, &args)
    };
    let (code, out, err) = detailed(&["--dry-run"]);
    assert_eq!(code, 0, "in sync: {out}{err}");
    bao.put("kv", "app/new", json!({"k": "v"})).await;
    let (code, out, err) = detailed(&["--dry-run"]);
    assert_eq!(code, 2, "behind: {out}{err}");
    assert!(out.contains("to create 1"), "{out}");
    assert_eq!(detailed(&["--dry-run"]).0, 2, "a dry run wrote nothing");
    assert_eq!(detailed(&[]).0, 2, "a run that wrote");
    assert_eq!(detailed(&[]).0, 0, "then nothing to write");
    bao.put("kv", "app/newer", json!({"k": "v"})).await;
    assert_eq!(
        replicator(&envs, &["sync", "--prefix", "kv"]).0,
        0,
        "without the flag, a run that succeeds exits 0 whatever it wrote"
    );

    // A bad flag value: exit 1 with the flag named; nothing written.
    let (code, stdout, _) = replicator(
        &envs,
        &["sync", "--prefix", "kv", "--recovery-window-days", "3"],
    );
    assert_eq!(code, 1);
    assert!(stdout.contains("--recovery-window-days"), "{stdout}");
    // A bad command line: exit 64, as the deployer.
    assert_eq!(
        replicator(&envs, &["sync", "--deletion-policy", "purge"]).0,
        64
    );
}

/// Enables AppRole with a role that may read `kv`, returning (role id, secret id).
async fn approle(bao: &e2e::Bao, token_ttl: &str) -> (String, String) {
    approle_at(bao, "approle", token_ttl).await
}

/// [`approle`] with AppRole enabled at `mount`.
async fn approle_at(bao: &e2e::Bao, mount: &str, token_ttl: &str) -> (String, String) {
    bao.api(
        "POST",
        &format!("sys/auth/{mount}"),
        Some(json!({"type": "approle"})),
    )
    .await;
    bao.api(
        "PUT",
        "sys/policies/acl/replicator",
        Some(json!({"policy": "path \"kv/data/*\" { capabilities = [\"read\"] }\npath \"kv/metadata/*\" { capabilities = [\"read\", \"list\"] }\npath \"kv/detailed-metadata/*\" { capabilities = [\"list\"] }"})),
    )
    .await;
    bao.api(
        "POST",
        &format!("auth/{mount}/role/replicator"),
        Some(json!({"token_policies": ["replicator"], "token_ttl": token_ttl, "token_max_ttl": token_ttl})),
    )
    .await;
    let role = bao
        .api(
            "GET",
            &format!("auth/{mount}/role/replicator/role-id"),
            None,
        )
        .await;
    let secret = bao
        .api(
            "POST",
            &format!("auth/{mount}/role/replicator/secret-id"),
            None,
        )
        .await;
    (
        role["data"]["role_id"].as_str().unwrap().to_owned(),
        secret["data"]["secret_id"].as_str().unwrap().to_owned(),
    )
}

/// AppRole enabled at a mount of its own: the connection secret's `vaultApproleMount` says
/// where to log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_at_another_mount_is_logged_in_where_the_connection_says() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "s", json!({"i": 1})).await;
    let (role_id, secret_id) = approle_at(bao, "robots", "10m").await;
    let conn = ConnectionSecret {
        vault_address: bao.addr.clone(),
        vault_role_id: Some(role_id),
        vault_secret_id: Some(secret_id.as_str().into()),
        vault_approle_mount: Some("robots".into()),
        ..ConnectionSecret::default()
    };
    env.side
        .create(
            "kv-connection/vault",
            &serde_json::to_string(&conn).unwrap(),
            &[],
        )
        .await;
    let mut a = args(&env, "kv");
    a.vault_addr = None;
    a.vault_token = None;
    a.connection_secret = Some("kv-connection/vault".into());
    let r = sync(&env, &a).await;
    assert_eq!((r.created, r.failures.len()), (1, 0), "{}", r.to_text());
    assert_eq!(r.vault_requests["login"], 1);
    let audit = std::fs::read_to_string(bao.audit_log()).unwrap();
    assert!(
        audit.contains("\"path\":\"auth/robots/login\""),
        "logged in at robots/"
    );
    assert!(!audit.contains("\"path\":\"auth/approle/login\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_from_the_connection_secret_logs_in_again_before_expiry() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    for i in 0..3 {
        bao.put("kv", &format!("s{i}"), json!({"i": i})).await;
    }
    // A token life long enough for a sync on a loaded machine: one login per run.
    let (role_id, secret_id) = approle(bao, "10m").await;
    let conn = ConnectionSecret {
        vault_address: bao.addr.clone(),
        vault_role_id: Some(role_id),
        vault_secret_id: Some(secret_id.as_str().into()),
        ..ConnectionSecret::default()
    };
    env.side
        .create(
            "kv-connection/vault",
            &serde_json::to_string(&conn).unwrap(),
            &[],
        )
        .await;
    let mut a = args(&env, "kv");
    a.vault_addr = None;
    a.vault_token = None;
    a.connection_secret = Some("kv-connection/vault".into());
    let r = sync(&env, &a).await;
    assert_eq!((r.created, r.failures.len()), (3, 0), "{}", r.to_text());
    assert_eq!(r.vault_requests["login"], 1);

    // One client across a token's life: it logs in again at two thirds of the TTL (here 1 s of
    // 6 s), before the token expires, so no request meets a 403. A role of its own, so the
    // sync's long TTL above stays as it is.
    bao.api(
        "POST",
        "auth/approle/role/short",
        Some(json!({"token_policies": ["replicator"], "token_ttl": "6s", "token_max_ttl": "6s"})),
    )
    .await;
    let short_role = bao
        .api("GET", "auth/approle/role/short/role-id", None)
        .await;
    let short_secret = bao
        .api("POST", "auth/approle/role/short/secret-id", None)
        .await;
    let vault = replicator::vault::VaultClient::new(
        &bao.addr,
        replicator::vault::VaultLogin::AppRole {
            mount: "approle".into(),
            role_id: short_role["data"]["role_id"].as_str().unwrap().to_owned(),
            secret_id: short_secret["data"]["secret_id"].as_str().unwrap().into(),
        },
        None,
        4,
    )
    .unwrap();
    let logins = || {
        vault
            .counters
            .logins
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    vault.list("kv", "").await.unwrap();
    assert_eq!(logins(), 1);
    // Past the renewal point (1 s), well before the expiry (6 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    vault.list("kv", "").await.unwrap();
    assert_eq!(logins(), 2, "logged in again before the token expired");
    // By Vault's own clock (its audit log), not the test's: the second login came before the
    // first token's expiry.
    let audit = std::fs::read_to_string(bao.audit_log()).unwrap();
    let short_logins: Vec<(f64, f64)> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["type"] == "response"
                && e["request"]["path"] == "auth/approle/login"
                && e["auth"]["metadata"]["role_name"] == "short"
        })
        .map(|e| {
            let at = aws_smithy_types::DateTime::from_str(
                e["time"].as_str().unwrap(),
                aws_smithy_types::date_time::Format::DateTime,
            )
            .unwrap();
            (at.as_secs_f64(), e["auth"]["token_ttl"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(short_logins.len(), 2, "{short_logins:?}");
    let ((first, ttl), (second, _)) = (short_logins[0], short_logins[1]);
    assert_eq!(ttl, 6.0);
    assert!(
        second - first < ttl,
        "the second login came {} s after the first, past its token's expiry",
        second - first
    );
    // Vault saw no request refused for an expired token.
    let denied: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("permission denied"))
        .collect();
    assert!(denied.is_empty(), "a request met a 403: {denied:?}");

    // A revoked secret id: the run fails with a login error and a notice.
    let (topic, queue) = env.side.topic_with_queue("failures").await;
    bao.api(
        "POST",
        "auth/approle/role/replicator/secret-id/destroy",
        Some(json!({ "secret_id": secret_id })),
    )
    .await;
    a.sns_topic_arn = Some(topic);
    let r = sync(&env, &a).await;
    assert_eq!(
        failure_kinds(&r),
        [(String::new(), "vault_login_failed".to_owned())]
    );
    let notices = env.side.notices(&queue, 1).await;
    assert_eq!(notices.len(), 1);
    assert!(!notices[0].contains(&secret_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_bootstrap_answers_through_the_runtime_api() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("hybrid-aws-secrets").await;
    bao.put(
        "hybrid-aws-secrets",
        "first-secret-for-replication",
        json!({"k": PLANTED}),
    )
    .await;
    bao.put("hybrid-aws-secrets", "nested/second", json!({"k": "2"}))
        .await;
    let token = bao
        .token_with_policy(
            "lambda",
            "path \"hybrid-aws-secrets/*\" { capabilities = [\"read\", \"list\"] }",
        )
        .await;
    // The sample's connection secret shape: two keys.
    let conn = json!({"vaultAddress": bao.addr, "vaultToken": token}).to_string();
    env.side
        .create("hybrid-aws-secrets-connection/vault", &conn, &[])
        .await;
    let (topic, queue) = env.side.topic_with_queue("failures").await;

    let mut api = RuntimeApi::start().await;
    let mut child = tokio::process::Command::new(e2e::bin_path("bootstrap"))
        .env_clear()
        .envs(env.moto.env())
        .envs(e2e::runtime_api::lambda_env(&api.addr, "replicator"))
        .env(
            vars::CONNECTION_SECRET,
            "hybrid-aws-secrets-connection/vault",
        )
        .env(vars::SNS_TOPIC_ARN, &topic)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let scheduled = json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}).to_string();
    let Answer::Response(body) = api
        .invoke("req-1", &scheduled, Duration::from_secs(60))
        .await
    else {
        panic!("the first invocation failed");
    };
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["created"], 2, "{body}");
    assert!(
        !body.contains(PLANTED) && !body.contains(&token),
        "the response carries no value or token"
    );
    assert_eq!(
        env.side
            .value("hybrid-aws-secrets/first-secret-for-replication")
            .await["k"],
        PLANTED
    );

    // Connection secret gone: the invocation errors, so Lambda's error metric counts it.
    env.side
        .delete_now("hybrid-aws-secrets-connection/vault")
        .await;
    let answer = api
        .invoke("req-2", &scheduled, Duration::from_secs(60))
        .await;
    let Answer::Error(err) = answer else {
        panic!("expected an error, got {answer:?}")
    };
    assert!(err.contains("hybrid-aws-secrets-connection/vault"), "{err}");
    // What the on-failure destination carries to the topic: the run's notice.
    assert!(
        err.contains(
            "Account: 123456789012, Region: us-east-1. vault-secrets-replicator run failed"
        ),
        "{err}"
    );
    assert!(!err.contains(PLANTED) && !err.contains(&token));
    let notices = env.side.notices(&queue, 1).await;
    assert_eq!(notices.len(), 1);
    assert!(notices[0].contains("GetSecretValue"));

    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let logs = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
    assert!(logs.contains("sync finished"), "{logs}");
    // Each run's metrics: one CloudWatch EMF document on stdout, its counts the report's.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let emf: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 2, "{stdout}");
    let metrics = &emf[0]["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(metrics["Namespace"], "VaultSecretsReplicator");
    assert_eq!(metrics["Dimensions"], json!([["Stack", "Rule"]]));
    // The stack's alarms' two, by stack alone; this full run succeeded.
    let stack = &emf[0]["_aws"]["CloudWatchMetrics"][1];
    assert_eq!(stack["Dimensions"], json!([["Stack"]]));
    assert_eq!(emf[0]["FullSyncsSucceeded"], 1, "{}", emf[0]);
    // The stack's alarms' two, by stack alone; this full run succeeded.
    let stack = &emf[0]["_aws"]["CloudWatchMetrics"][1];
    assert_eq!(stack["Dimensions"], json!([["Stack"]]));
    assert_eq!(emf[0]["FullSyncsSucceeded"], 1, "{}", emf[0]);
    for (metric, field) in [
        ("Created", "created"),
        ("Updated", "updated"),
        ("Deleted", "deleted"),
        ("Unchanged", "unchanged"),
        ("ValuesRead", "values_read"),
        ("DurationMs", "duration_ms"),
    ] {
        assert_eq!(emf[0][metric], report[field], "{metric}");
    }
    assert_eq!(emf[0]["Failed"], 0);
    assert_eq!(emf[0]["Kind"], "full");
    assert_eq!(
        emf[0]["Stack"], "replicator",
        "the function's name without REPLICATOR_STACK"
    );
    // Two writes, each a fresh Vault version: a lag apiece, in seconds.
    let lags = emf[0]["LagSeconds"].as_array().unwrap();
    assert_eq!(lags.len(), 2, "{}", emf[0]);
    assert!(
        lags.iter()
            .all(|l| (0.0..60.0).contains(&l.as_f64().unwrap()))
    );
    assert_eq!(emf[1]["Failed"], 1, "{}", emf[1]);
    assert!(
        !logs.contains(PLANTED),
        "a value leaked into the Lambda logs"
    );
    assert!(
        !logs.contains(&token),
        "the token leaked into the Lambda logs"
    );
    assert!(!logs.contains('\u{1b}'), "no colour codes in Lambda logs");
}

/// A warm Lambda keeps its clients: the second invocation logs in to Vault no more, and each
/// report counts its own requests; a secret id rotated in the connection secret (the old one
/// destroyed) is picked up by the next invocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_lambda_reuses_its_vault_login_and_follows_a_rotated_secret_id() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "a", json!({"k": "1"})).await;
    let (role_id, secret_id) = approle(bao, "10m").await;
    let conn = |secret_id: &str| {
        serde_json::to_string(&ConnectionSecret {
            vault_address: bao.addr.clone(),
            vault_role_id: Some(role_id.clone()),
            vault_secret_id: Some(secret_id.into()),
            ..ConnectionSecret::default()
        })
        .unwrap()
    };
    env.side
        .create("kv-connection/vault", &conn(&secret_id), &[])
        .await;
    let mut api = RuntimeApi::start().await;
    let mut child = tokio::process::Command::new(e2e::bin_path("bootstrap"))
        .env_clear()
        .envs(env.moto.env())
        .envs(e2e::runtime_api::lambda_env(&api.addr, "replicator"))
        .env(vars::PREFIX, "kv")
        .env(vars::CONNECTION_SECRET, "kv-connection/vault")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut invoke = async |id: &str| -> Value {
        match api.invoke(id, "{}", Duration::from_secs(60)).await {
            Answer::Response(body) => serde_json::from_str(&body).unwrap(),
            other => panic!("{id}: {other:?}"),
        }
    };
    let first = invoke("req-1").await;
    assert_eq!(first["created"], 1, "{first}");
    assert_eq!(first["vault_requests"]["login"], 1, "{first}");
    let second = invoke("req-2").await;
    assert_eq!(second["unchanged"], 1, "{second}");
    assert!(
        second["vault_requests"].get("login").is_none(),
        "the warm invocation logged in again: {second}"
    );
    // Per run, not summed over the process's life.
    assert_eq!(second["aws_requests"]["GetSecretValue"], 1, "{second}");

    // Rotation as `vault-init --rotate-secret-id` does it: the new secret id first, then the
    // old one destroyed, and the token the old one gave revoked with it.
    let fresh = bao
        .api("POST", "auth/approle/role/replicator/secret-id", None)
        .await;
    let fresh = fresh["data"]["secret_id"].as_str().unwrap().to_owned();
    env.side
        .sm
        .put_secret_value()
        .secret_id("kv-connection/vault")
        .secret_string(conn(&fresh))
        .send()
        .await
        .unwrap();
    bao.api(
        "POST",
        "auth/approle/role/replicator/secret-id/destroy",
        Some(json!({ "secret_id": secret_id })),
    )
    .await;
    bao.put("kv", "b", json!({"k": "2"})).await;
    let third = invoke("req-3").await;
    assert_eq!(third["created"], 1, "{third}");
    assert_eq!(third["vault_requests"]["login"], 1, "{third}");

    // A payload of paths (what a change watcher sends): those secrets only, no listing.
    bao.put("kv", "c", json!({"k": "3"})).await;
    bao.put("kv", "d", json!({"k": "4"})).await;
    let targeted = match api
        .invoke("req-4", r#"{"paths": ["c"]}"#, Duration::from_secs(60))
        .await
    {
        Answer::Response(body) => serde_json::from_str::<Value>(&body).unwrap(),
        other => panic!("req-4: {other:?}"),
    };
    assert_eq!(targeted["created"], 1, "{targeted}");
    assert!(
        targeted["aws_requests"].get("ListSecrets").is_none(),
        "{targeted}"
    );
    let replicated = env.side.secrets("kv").await;
    assert!(replicated.contains_key("kv/c") && !replicated.contains_key("kv/d"));
    let Answer::Error(err) = api
        .invoke("req-5", r#"{"paths": "c"}"#, Duration::from_secs(60))
        .await
    else {
        panic!("a bad payload must fail the invocation")
    };
    assert!(err.contains("array of Vault paths"), "{err}");
    child.start_kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_lambda_environment_fails_each_invocation_without_an_init_error() {
    let moto = e2e::Moto::start().await;
    let mut api = RuntimeApi::start().await;
    let mut child = tokio::process::Command::new(e2e::bin_path("bootstrap"))
        .env_clear()
        .envs(moto.env())
        .envs(e2e::runtime_api::lambda_env(&api.addr, "replicator"))
        .env(vars::CONNECTION_SECRET, "x-connection/vault")
        .env("REPLICATOR_DELETION_POLICY", "purge")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Not a crash loop and not an init error (which Lambda would retry at every cold start):
    // the runtime keeps serving, and every invocation fails with the variable to fix, so
    // Lambda's error metric and on-failure handling see each one.
    for id in ["req-1", "req-2"] {
        let answer = api.invoke(id, "{}", Duration::from_secs(60)).await;
        let Answer::Error(err) = answer else {
            panic!("expected an invocation error, got {answer:?}")
        };
        assert!(
            err.contains("invalid Lambda environment") && err.contains("purge"),
            "{err}"
        );
        assert!(err.contains("REPLICATOR_DELETION_POLICY"), "{err}");
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the runtime still runs"
    );
    child.start_kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_serving_the_watcher_refuses_to_accept_a_vault_rollback() {
    let moto = e2e::Moto::start().await;
    for serves_watcher in ["true", "false"] {
        let mut api = RuntimeApi::start().await;
        let mut child = tokio::process::Command::new(e2e::bin_path("bootstrap"))
            .env_clear()
            .envs(moto.env())
            .envs(e2e::runtime_api::lambda_env(
                &api.addr,
                "kv-replicator-watch",
            ))
            .env(vars::CONNECTION_SECRET, "x-connection/vault")
            .env(vars::PREFIX, "kv")
            .env(vars::SERVES_WATCHER, serves_watcher)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let answer = api
            .invoke(
                "req-1",
                r#"{"accept_vault_rollback": true}"#,
                Duration::from_secs(60),
            )
            .await;
        let Answer::Error(err) = answer else {
            panic!("expected an invocation error, got {answer:?}")
        };
        // The instance role may invoke the watcher's function with any event: an operator's
        // word is not one of them. The sync function takes it (and fails here only because
        // the connection secret does not exist).
        assert_eq!(
            err.contains("refused: this function serves the change watcher"),
            serves_watcher == "true",
            "{serves_watcher}: {err}"
        );
        // Nor a status request, which only the deployer makes, of the sync function.
        let status = api
            .invoke("req-2", r#"{"status": true}"#, Duration::from_secs(60))
            .await;
        if serves_watcher == "true" {
            let Answer::Error(err) = status else {
                panic!("expected a refusal, got {status:?}")
            };
            assert!(err.contains("deployer status --secrets"), "{err}");
        } else {
            let Answer::Response(body) = status else {
                panic!("expected an answer, got {status:?}")
            };
            // The connection secret does not exist: the answer says so, as a failure.
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["failures"][0]["kind"], "aws_not_found", "{body}");
        }
        child.start_kill().unwrap();
    }
}

/// Paused by `deployer pause`, the function syncs nothing, whatever the event, and says why;
/// where the sync reads, and where each secret stands, it still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_function_refuses_every_sync() {
    let moto = e2e::Moto::start().await;
    let mut api = RuntimeApi::start().await;
    let mut child = tokio::process::Command::new(e2e::bin_path("bootstrap"))
        .env_clear()
        .envs(moto.env())
        .envs(e2e::runtime_api::lambda_env(&api.addr, "kv-replicator"))
        .env(vars::CONNECTION_SECRET, "x-connection/vault")
        .env(vars::PREFIX, "kv")
        .env(vars::PAUSED, "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for (i, event) in [r#"{}"#, r#"{"paths": ["a"]}"#].into_iter().enumerate() {
        let answer = api
            .invoke(&format!("req-{i}"), event, Duration::from_secs(60))
            .await;
        let Answer::Error(err) = answer else {
            panic!("{event}: expected a refusal, got {answer:?}")
        };
        assert!(err.contains("paused by `deployer pause`"), "{err}");
    }
    let status = api
        .invoke("req-s", r#"{"status": true}"#, Duration::from_secs(60))
        .await;
    assert!(matches!(status, Answer::Response(_)), "{status:?}");
    // Where the sync reads is still asked for (here it cannot tell: no connection secret),
    // never refused as paused.
    let scope = api
        .invoke("req-w", r#"{"scope": true}"#, Duration::from_secs(60))
        .await;
    let text = format!("{scope:?}");
    assert!(
        !text.contains("paused") && text.contains("x-connection/vault"),
        "{text}"
    );
    child.start_kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_auth_from_the_connection_secret_approle_then_aws_iam_then_token() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "a", json!({"k": 1})).await;
    let (role_id, secret_id) = approle(bao, "10m").await;
    let token = bao
        .token_with_policy(
            "reader",
            "path \"kv/*\" { capabilities = [\"read\", \"list\"] }",
        )
        .await;
    let name = "kv-connection/vault";
    env.side.create(name, "{}", &[]).await;
    let sm = env.side.sm.clone();
    let set_connection = |conn: Value| {
        let sm = sm.clone();
        async move {
            sm.put_secret_value()
                .secret_id(name)
                .secret_string(conn.to_string())
                .send()
                .await
                .unwrap();
        }
    };
    let mut a = args(&env, "kv");
    a.vault_addr = None;
    a.vault_token = None;
    a.connection_secret = Some(name.into());

    // Everything at once: AppRole wins (the token would be refused, the AWS role unknown).
    set_connection(json!({
        "vaultAddress": bao.addr, "vaultRoleId": role_id, "vaultSecretId": secret_id,
        "vaultToken": "s.refused-if-used", "vaultAwsRole": "unused"
    }))
    .await;
    let r = sync(&env, &a).await;
    assert!(!r.failed(), "{}", r.to_text());
    assert_eq!(r.vault_requests["login"], 1);
    let audit = std::fs::read_to_string(bao.audit_log()).unwrap();
    let logins: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "request" && v["request"]["path"] == "auth/approle/login")
        .collect();
    assert_eq!(logins.len(), 1, "one AppRole login");

    // No AppRole: the AWS IAM login (with its mount) comes before the token. OpenBao has no
    // AWS auth method, so a stand-in of Vault's API answers, refusing the login.
    let (stand_in, server) = e2e::stand_in::fake_vault(vec![(
        400,
        r#"{"errors":["entry for role replicator not found"]}"#,
    )])
    .await;
    set_connection(json!({
        "vaultAddress": stand_in, "vaultAwsRole": "replicator", "vaultAwsAuthMount": "aws-eu",
        "vaultToken": token
    }))
    .await;
    let r = sync(&env, &a).await;
    assert_eq!(
        failure_kinds(&r),
        [(String::new(), "vault_login_failed".to_owned())]
    );
    let seen = server.finish().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].line, "POST /v1/auth/aws-eu/login HTTP/1.1");
    let body: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body["role"], "replicator");
    assert!(!seen[0].headers.contains(&token) && !seen[0].body.contains(&token));

    // The token alone: used as it is, no login.
    set_connection(json!({"vaultAddress": bao.addr, "vaultToken": token})).await;
    let r = sync(&env, &a).await;
    assert!(!r.failed(), "{}", r.to_text());
    assert!(
        !r.vault_requests.contains_key("login"),
        "{:?}",
        r.vault_requests
    );
    assert_eq!(r.unchanged, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_of_the_cli_and_the_lambda_carry_no_value_or_token() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "a", json!({"password": PLANTED})).await;
    let token = bao
        .token_with_policy(
            "all",
            "path \"kv/*\" { capabilities = [\"read\", \"list\"] }",
        )
        .await;
    // The most the SDK and the HTTP stack will say: every target at trace, and the SDK's
    // signable request bodies too.
    let loud = [
        ("RUST_LOG".to_owned(), "trace".to_owned()),
        ("LOG_SIGNABLE_SERIALIZATION".to_owned(), "true".to_owned()),
    ];
    let mut envs = env.moto.env();
    envs.extend(loud.clone());
    envs.push(("VAULT_ADDR".into(), bao.addr.clone()));
    envs.push(("VAULT_TOKEN".into(), token.clone()));
    let (code, stdout, stderr) = replicator(&envs, &["sync", "--prefix", "kv"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stderr.len() > 10_000 && stderr.contains("TRACE"),
        "trace logs were on"
    );
    for text in [&stdout, &stderr] {
        assert!(!text.contains(PLANTED), "a value in the CLI's trace output");
        assert!(
            !text.contains(&token),
            "the token in the CLI's trace output"
        );
    }

    // The Lambda, at trace, through the runtime API: a changed value is read and written.
    bao.put("kv", "a", json!({"password": format!("{PLANTED}-2")}))
        .await;
    let conn = json!({"vaultAddress": bao.addr, "vaultToken": token}).to_string();
    env.side.create("kv-connection/vault", &conn, &[]).await;
    let mut api = RuntimeApi::start().await;
    // To a file: trace output would fill a pipe nobody reads while the Lambda runs.
    let log_path = env.bao.dir.path().join("lambda-trace.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = tokio::process::Command::new(e2e::bin_path("bootstrap"))
        .env_clear()
        .envs(env.moto.env())
        .envs(loud)
        .envs(e2e::runtime_api::lambda_env(&api.addr, "replicator"))
        .env(vars::CONNECTION_SECRET, "kv-connection/vault")
        .env(vars::PREFIX, "kv")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let answer = api.invoke("req-1", "{}", Duration::from_secs(60)).await;
    let Answer::Response(body) = answer else {
        panic!("{answer:?}")
    };
    assert!(
        body.contains("\"updated\": 1") || body.contains("\"updated\":1"),
        "{body}"
    );
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let logs = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap()).into_owned();
    assert!(logs.contains("TRACE"), "trace logs were on");
    assert!(
        !logs.contains(PLANTED),
        "a value in the Lambda's trace logs"
    );
    assert!(
        !logs.contains(&token),
        "the token in the Lambda's trace logs"
    );
    assert!(!body.contains(PLANTED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_stops_starting_writes_before_its_deadline_and_the_next_invocation_goes_on() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let conn = json!({"vaultAddress": bao.addr, "vaultToken": e2e::ROOT_TOKEN}).to_string();
    env.side.create("kv-connection/vault", &conn, &[]).await;
    let mut api = RuntimeApi::start().await;
    let _child = tokio::process::Command::new(e2e::bin_path("bootstrap"))
        .env_clear()
        .envs(env.moto.env())
        .envs(e2e::runtime_api::lambda_env(&api.addr, "replicator"))
        .env(vars::CONNECTION_SECRET, "kv-connection/vault")
        .env(vars::PREFIX, "kv")
        .env(vars::WRITES_PER_SECOND, "3")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The budget is sized from this machine, in this test: a first run over an empty mount
    // takes the cold start, the login and a walk; the second is given that much more than 6 s.
    let started = std::time::Instant::now();
    let warm_up = api.invoke("r0", "{}", Duration::from_secs(60)).await;
    assert!(matches!(warm_up, Answer::Response(_)), "{warm_up:?}");
    let overhead = started.elapsed();
    for i in 0..40 {
        bao.put("kv", &format!("s{i:02}"), json!({"i": i})).await;
    }
    // Writes stop a fifth before the deadline: at 3 a second, about 15 of the 40 go in, and
    // the 40 would take over 13 s.
    let deadline = Duration::from_secs(6) + overhead;
    assert!(deadline < Duration::from_secs(16), "{overhead:?}");
    let answer = api
        .invoke_with_deadline("r1", "{}", deadline, Duration::from_secs(60))
        .await;
    let Answer::Response(body) = answer else {
        panic!("a partial run is a success: {answer:?}")
    };
    let first: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(first["partial"], true, "{body}");
    let (created, remaining) = (
        first["created"].as_u64().unwrap(),
        first["remaining"].as_u64().unwrap(),
    );
    assert!(
        created > 0 && remaining > 0 && created + remaining == 40,
        "{body}"
    );

    let answer = api.invoke("r2", "{}", Duration::from_secs(60)).await;
    let Answer::Response(body) = answer else {
        panic!("{answer:?}")
    };
    let second: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(second["partial"], false, "{body}");
    assert_eq!(second["created"].as_u64(), Some(remaining), "{body}");
    assert_eq!(env.side.secrets("kv").await.len(), 40);
}

#[test]
fn a_bad_command_line_exits_64_as_the_deployer_does_and_help_exits_0() {
    assert_eq!(replicator(&[], &["frobnicate"]).0, 64);
    let (code, _, err) = replicator(&[], &["sync", "--concurrency", "many"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--concurrency"), "{err}");
    let (code, out, _) = replicator(&[], &["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("sync"), "{out}");
}

/// A running `replicator watch --output json`, its reports read line by line.
struct Watcher {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Watcher {
    fn start(env: &common::Env, state: &std::path::Path) -> Self {
        let mut child = e2e::watch_command(
            &env.bao,
            env.moto.env(),
            state,
            &["--deletion-policy", "delete", "--metadata-tag-key", "team"],
        )
        .spawn()
        .unwrap();
        use tokio::io::AsyncBufReadExt;
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines }
    }

    /// The next report of `scope` (`full` or `paths`), within a minute.
    async fn next(&mut self, scope: &str) -> Value {
        let wait = async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                let report: Value = serde_json::from_str(&line).unwrap();
                if report["scope"] == scope {
                    return report;
                }
            }
            panic!("the watcher ended");
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .unwrap_or_else(|_| panic!("no {scope} report within a minute"))
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().unwrap().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success());
    }
}

/// `replicator watch` replicates each change that Vault's audit log records, by name and
/// without listing anything; a full sync comes first; SIGTERM exits 0 after the batch; a watcher
/// killed with -9 while writes go on misses nothing once restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_the_audit_log_and_misses_nothing_across_restarts() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "before", json!({"k": "0"})).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("watch.offset");
    let mut w = Watcher::start(&env, &state);
    assert_eq!(w.next("full").await["created"], 1);

    bao.put("kv", "app/db", json!({"k": "1"})).await;
    let batch = w.next("paths").await;
    assert_eq!(batch["paths"], json!(["app/db"]), "{batch}");
    assert_eq!(batch["created"], 1, "{batch}");
    assert!(
        batch["aws_requests"].get("ListSecrets").is_none(),
        "no listing: {batch}"
    );
    for listing in ["list", "list_detailed_metadata"] {
        assert!(batch["vault_requests"].get(listing).is_none(), "{batch}");
    }
    assert_eq!(env.side.value("kv/app/db").await["k"], "1");

    bao.put("kv", "app/db", json!({"k": "2"})).await;
    let batch = w.next("paths").await;
    assert_eq!(batch["updated"], 1, "{batch}");
    assert_eq!(env.side.value("kv/app/db").await["k"], "2");

    // A change of custom metadata makes no version: the audit log shows it all the same, and
    // the tag reaches the replica with no value read.
    bao.set_custom_metadata("kv", "app/db", json!({"tag:team": "core"}))
        .await;
    let batch = w.next("paths").await;
    assert_eq!(
        (&batch["updated"], &batch["values_read"]),
        (&json!(1), &json!(0)),
        "{batch}"
    );
    assert_eq!(
        env.side.secrets("kv").await["kv/app/db"].tags["team"],
        "core"
    );

    bao.api("DELETE", "kv/metadata/app/db", None).await;
    let batch = w.next("paths").await;
    assert_eq!(batch["deleted"], 1, "{batch}");
    assert!(env.side.secrets("kv").await["kv/app/db"].pending_deletion);

    // SIGTERM: the batch under way ends, then the process, with 0.
    w.signal("-TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), w.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));

    // Killed with -9 amid writes, restarted: every change arrives.
    let mut w = Watcher::start(&env, &state);
    w.next("full").await;
    for i in 0..10 {
        bao.put("kv", &format!("burst/{i}"), json!({"i": i})).await;
        if i == 4 {
            w.signal("-KILL");
            let _ = w.child.wait().await;
        }
    }
    let mut w = Watcher::start(&env, &state);
    w.next("full").await;
    // Its start-up full sync alone would bring them across: the restarted watcher's own
    // batches must name the changes made while it was down, read from its saved offset (not
    // from the end of the log, which would miss them, nor from the start, which would name
    // what the earlier watchers delivered).
    let mut named = std::collections::BTreeSet::new();
    while !(5..10).all(|i| named.contains(&format!("burst/{i}"))) {
        let batch = w.next("paths").await;
        for path in batch["paths"].as_array().unwrap() {
            let path = path.as_str().unwrap();
            assert!(
                path.starts_with("burst/"),
                "read from before the saved offset: {batch}"
            );
            named.insert(path.to_owned());
        }
    }
    let names = env.side.secrets("kv/burst").await;
    assert_eq!(names.len(), 10, "{:?}", names.keys());
    for i in 0..10 {
        assert_eq!(env.side.value(&format!("kv/burst/{i}")).await["i"], i);
    }
    // SIGINT (Ctrl-C at a terminal) ends it as SIGTERM does: 0.
    w.signal("-INT");
    let status = tokio::time::timeout(Duration::from_secs(30), w.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The stack's mode: `bootstrap watch --invoke-function` (the Lambda's own binary, beside Vault)
/// holds no Vault or Secrets Manager access and sends each batch to the function as
/// `{"paths": [...]}`; the function syncs those. moto runs no function: a stand-in of Lambda's
/// Invoke hands the call to a real `bootstrap` through the Runtime API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_beside_vault_sends_each_batch_to_the_function() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    // Consumers hear of each change the function makes (events = true).
    let changes = env.side.bus_with_queue("default", "changes").await;
    let api = RuntimeApi::start().await;
    let _function = tokio::process::Command::new(e2e::bin_path("bootstrap"))
        .env_clear()
        .envs(env.moto.env())
        .envs(e2e::runtime_api::lambda_env(&api.addr, "kv-replicator"))
        .env(vars::PREFIX, "kv")
        .env(vars::EVENTS_BUS, "default")
        .env("VAULT_ADDR", &bao.addr)
        .env("VAULT_TOKEN", e2e::ROOT_TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lambda = e2e::lambda_invoke::InvokeStandIn::start(&env.moto.url, api).await;
    let dir = tempfile::tempdir().unwrap();
    let mut watcher = tokio::process::Command::new(e2e::bin_path("bootstrap"))
        .env_clear()
        .envs(e2e::aws_env_at(&lambda.url))
        .args(["watch", "--prefix", "kv", "--output", "json"])
        .args(["--invoke-function", "kv-replicator"])
        .args(["--cloudwatch-stack", "kv-stack"])
        .arg("--audit-log")
        .arg(bao.audit_log())
        .arg("--state-file")
        .arg(dir.path().join("offset"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(watcher.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("a report within a minute")
            .unwrap()
            .expect("the watcher ended");
        serde_json::from_str(&line).unwrap()
    };
    let full = next().await;
    assert_eq!(full["scope"], "full", "{full}");
    // Its liveness and the disk of the audit log reach CloudWatch, in the host's namespace, by
    // the stack (as the alarms of a silent watcher and a full disk read them).
    let cw = aws_sdk_cloudwatch::Client::new(&env.aws);
    let host_metrics = async || {
        let out = cw
            .list_metrics()
            .namespace("VaultSecretsReplicator/Host/kv-stack")
            .send()
            .await
            .unwrap();
        let mut names: Vec<String> = out
            .metrics()
            .iter()
            .filter(|m| {
                m.dimensions()
                    .iter()
                    .any(|d| (d.name(), d.value()) == (Some("Stack"), Some("kv-stack")))
            })
            .filter_map(|m| m.metric_name().map(str::to_owned))
            .collect();
        names.sort();
        names
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while host_metrics().await.len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        host_metrics().await,
        ["AuditLogDiskUsedPercent", "WatcherAlive"]
    );
    let now = std::time::SystemTime::now();
    let alive = cw
        .get_metric_statistics()
        .namespace("VaultSecretsReplicator/Host/kv-stack")
        .metric_name("WatcherAlive")
        .dimensions(
            aws_sdk_cloudwatch::types::Dimension::builder()
                .name("Stack")
                .value("kv-stack")
                .build(),
        )
        .start_time((now - Duration::from_secs(600)).into())
        .end_time((now + Duration::from_secs(60)).into())
        .period(60)
        .statistics(aws_sdk_cloudwatch::types::Statistic::Maximum)
        .send()
        .await
        .unwrap();
    assert!(
        alive.datapoints().iter().any(|d| d.maximum() == Some(1.0)),
        "the tail is alive: {alive:?}"
    );
    bao.put("kv", "app/db", json!({"k": "1"})).await;
    let batch = next().await;
    assert_eq!(
        (&batch["scope"], &batch["paths"], &batch["created"]),
        (&json!("paths"), &json!(["app/db"]), &json!(1)),
        "{batch}"
    );
    assert_eq!(env.side.value("kv/app/db").await["k"], "1");
    let events = env.side.notices(&changes, 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(
        (
            &event["detail-type"],
            &event["detail"]["name"],
            &event["detail"]["vault_path"]
        ),
        (
            &json!("Replica Created"),
            &json!("kv/app/db"),
            &json!("app/db")
        ),
        "{event}"
    );
    // Where to look comes from the function itself; then the full sync, then the batch.
    assert_eq!(
        lambda.invoked.lock().await.clone(),
        [
            ("kv-replicator".to_owned(), r#"{"scope":true}"#.to_owned()),
            ("kv-replicator".to_owned(), "{}".to_owned()),
            (
                "kv-replicator".to_owned(),
                r#"{"paths":["app/db"]}"#.to_owned()
            ),
        ]
    );
    let _ = watcher.start_kill();
}

/// A function of many rules (a rules document): the watcher beside Vault learns every rule's
/// scope from it, follows them all (namespaces too), and sends each change with its namespace
/// and mount; the function syncs it into every rule it falls in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_of_many_rules_sends_each_change_to_every_rule_it_falls_in() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.namespace_with_kv2("team").await;
    let rules = json!([
        {"name": "app", "prefix": "app", "mount": "kv", "path": "app"},
        {"name": "all", "prefix": "all", "mount": "kv"},
        {"name": "team", "prefix": "team", "mount": "kv", "namespace": "team"},
    ]);
    let api = RuntimeApi::start().await;
    let mut function = tokio::process::Command::new(e2e::bin_path("bootstrap"))
        .env_clear()
        .envs(env.moto.env())
        .envs(e2e::runtime_api::lambda_env(&api.addr, "kv-replicator"))
        .env(vars::RULES, rules.to_string())
        .env("VAULT_ADDR", &bao.addr)
        .env("VAULT_TOKEN", e2e::ROOT_TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lambda = e2e::lambda_invoke::InvokeStandIn::start(&env.moto.url, api).await;
    let dir = tempfile::tempdir().unwrap();
    let mut watcher = tokio::process::Command::new(e2e::bin_path("bootstrap"))
        .env_clear()
        .envs(e2e::aws_env_at(&lambda.url))
        .args(["watch", "--output", "json"])
        .args(["--invoke-function", "kv-replicator"])
        .arg("--audit-log")
        .arg(bao.audit_log())
        .arg("--state-file")
        .arg(dir.path().join("offset"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(watcher.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("a report within a minute")
            .unwrap()
            .expect("the watcher ended");
        serde_json::from_str(&line).unwrap()
    };
    let full = next().await;
    assert_eq!(full["scope"], "full", "{full}");
    assert_eq!(full["rules"].as_array().map(Vec::len), Some(3), "{full}");

    bao.put("kv", "app/db", json!({"k": "1"})).await;
    let batch = next().await;
    assert_eq!(
        (&batch["scope"], &batch["created"]),
        (&json!("paths"), &json!(2)),
        "into the app rule and the whole mount's: {batch}"
    );
    assert_eq!(env.side.value("app/db").await["k"], "1");
    assert_eq!(env.side.value("all/app/db").await["k"], "1");

    bao.api_in(
        "team",
        "POST",
        "kv/data/ledger",
        Some(json!({"data": {"n": "1"}})),
    )
    .await;
    let batch = next().await;
    assert_eq!(batch["created"], 1, "{batch}");
    assert_eq!(env.side.value("team/ledger").await["n"], "1");
    assert!(!env.side.secrets("all").await.contains_key("all/ledger"));

    // Where to look came from the function; each change went with its namespace and mount.
    let invoked: Vec<String> = lambda
        .invoked
        .lock()
        .await
        .iter()
        .map(|(_, payload)| payload.clone())
        .collect();
    assert_eq!(
        invoked,
        [
            r#"{"scope":true}"#.to_owned(),
            "{}".to_owned(),
            r#"{"changes":[{"mount":"kv","path":"app/db"}]}"#.to_owned(),
            r#"{"changes":[{"mount":"kv","namespace":"team","path":"ledger"}]}"#.to_owned(),
        ]
    );
    let _ = watcher.start_kill();

    // Each run's metrics: one EMF document per rule it ran, by the rule's name, its counts
    // the rule's own (the values it read among them).
    function.start_kill().unwrap();
    let out = function.wait_with_output().await.unwrap();
    let emf: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    let seen: Vec<(&str, &str, u64, u64)> = emf
        .iter()
        .map(|d| {
            (
                d["Rule"].as_str().unwrap(),
                d["Kind"].as_str().unwrap(),
                d["Created"].as_u64().unwrap(),
                d["ValuesRead"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("app", "full", 0, 0),
            ("all", "full", 0, 0),
            ("team", "full", 0, 0),
            ("app", "change-driven", 1, 1),
            ("all", "change-driven", 1, 1),
            ("team", "change-driven", 1, 1),
        ]
    );
}

/// A watcher started with `extra` flags (its stderr kept, for what it says), and its reports.
struct Watching {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Watching {
    fn start(
        env: &common::Env,
        state: &std::path::Path,
        extra: &[&str],
        stderr: Option<&std::path::Path>,
    ) -> Self {
        let mut cmd = e2e::watch_command(&env.bao, env.moto.env(), state, extra);
        if let Some(path) = stderr {
            cmd.stderr(std::fs::File::create(path).unwrap());
        }
        let mut child = cmd.spawn().unwrap();
        use tokio::io::AsyncBufReadExt;
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines }
    }

    /// The next report that `want` accepts, within `limit`.
    async fn until(&mut self, limit: Duration, want: impl Fn(&Value) -> bool) -> Value {
        let wait = async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                let report: Value = serde_json::from_str(&line).unwrap();
                if want(&report) {
                    return report;
                }
            }
            panic!("the watcher ended");
        };
        tokio::time::timeout(limit, wait)
            .await
            .unwrap_or_else(|_| panic!("no such report within {limit:?}"))
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().unwrap().to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }
}

/// `count` audit lines of about 1 KiB that change nothing the watcher follows.
fn noise(count: usize, mount: &str) -> String {
    let pad = "x".repeat(900);
    let line = format!(
        "{{\"type\":\"response\",\"request\":{{\"operation\":\"read\",\"path\":\"{mount}/metadata/{pad}\"}}}}\n"
    );
    line.repeat(count)
}

fn append(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A backlog in the log (a watcher down while Vault went on) is read in bounded chunks off the
/// watcher's loop: a change after it arrives, and a signal is seen while the backlog is read.
/// (It was read whole and line by line with a copy of the rest each time: at tens of thousands
/// of lines the watcher never caught up, and saw no signal meanwhile.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_neither_stalls_the_watcher_nor_hides_a_signal() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("watch.offset");
    let quiet = ["--reconcile-interval", "off"];
    let mut w = Watching::start(&env, &state, &quiet, None);
    w.until(Duration::from_secs(60), |r| r["scope"] == "full")
        .await;
    w.signal("-TERM");
    w.child.wait().await.unwrap();
    // 60 MiB written while it was down, half of it naming the mount.
    append(&bao.audit_log(), &noise(30_000, "kv"));
    append(&bao.audit_log(), &noise(30_000, "other"));
    let mut w = Watching::start(&env, &state, &quiet, None);
    w.until(Duration::from_secs(60), |r| r["scope"] == "full")
        .await;
    bao.put("kv", "after", json!({"k": 1})).await;
    let batch = w
        .until(Duration::from_secs(60), |r| r["scope"] == "paths")
        .await;
    assert_eq!(
        (&batch["paths"], &batch["created"]),
        (&json!(["after"]), &json!(1)),
        "{batch}"
    );
    // A larger backlog, and a signal at once: seen while it is read.
    append(&bao.audit_log(), &noise(150_000, "other"));
    w.signal("-TERM");
    let status = tokio::time::timeout(Duration::from_secs(15), w.child.wait())
        .await
        .expect("the signal was seen while the backlog was read")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// A batch whose sync fails (Vault denies the value read) is kept and tried again with
/// backoff; once the policy is fixed, the change reaches AWS with no full sync. (A failed batch
/// was dropped: the change waited for the next full sync.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_is_tried_again_until_it_is_in_aws() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let rules = |data: &str| {
        format!(
            "path \"kv/metadata/*\" {{ capabilities = [\"read\", \"list\"] }}\npath \"kv/data/*\" {{ capabilities = [{data}] }}\n"
        )
    };
    let token = bao.token_with_policy("limited", &rules("\"deny\"")).await;
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = format!("127.0.0.1:{}", e2e::free_port());
    let mut cmd = e2e::watch_command(
        bao,
        env.moto.env(),
        &dir.path().join("o"),
        &[
            "--reconcile-interval",
            "off",
            "--metrics-addr",
            &metrics_addr,
        ],
    );
    cmd.env("VAULT_TOKEN", &token);
    let mut child = cmd.spawn().unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut w = Watching {
        lines: tokio::io::BufReader::new(child.stdout.take().unwrap()).lines(),
        child,
    };
    w.until(Duration::from_secs(60), |r| r["scope"] == "full")
        .await;
    bao.put("kv", "db", json!({"k": 1})).await;
    let failed = w
        .until(Duration::from_secs(60), |r| r["scope"] == "paths")
        .await;
    assert_eq!(
        failed["failures"][0]["kind"], "vault_permission_denied",
        "{failed}"
    );
    // The policy fixed: a later try of the same batch gets it through.
    bao.api(
        "PUT",
        "sys/policies/acl/limited",
        Some(json!({ "policy": rules("\"read\"") })),
    )
    .await;
    let delivered = w
        .until(Duration::from_secs(60), |r| {
            r["scope"] == "paths" && r["created"] == 1
        })
        .await;
    assert_eq!(delivered["paths"], json!(["db"]), "{delivered}");
    assert_eq!(env.side.value("kv/db").await, json!({"k": 1}));
    // What the watcher did, scraped as Prometheus would.
    let scraped = e2e::http_client()
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.unwrap();
    let value = |sample: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {sample} in:\n{text}"))
    };
    let m = |name: &str| format!("vault_secrets_replicator_{name}");
    assert_eq!(value(&m("changes_seen_total")), 1.0);
    assert!(value(&m("audit_lines_total")) >= 1.0);
    assert_eq!(value(&m("full_syncs_total{outcome=\"ok\"}")), 1.0);
    assert!(value(&m("batches_total{outcome=\"failed\"}")) >= 1.0);
    assert_eq!(value(&m("batches_total{outcome=\"ok\"}")), 1.0);
    assert_eq!(value(&m("pending_changes")), 0.0);
    assert_eq!(value(&m("batch_lag_seconds_count")), 1.0);
    assert!(value(&m("batch_lag_seconds_sum")) > 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        now - value(&m("tail_last_read_timestamp_seconds")) < 10.0,
        "the tail is alive"
    );
    assert!(!text.contains("db"), "no path in the metrics");
    let other = e2e::http_client()
        .get(format!("http://{metrics_addr}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    w.signal("-TERM");
    w.child.wait().await.unwrap();
}

/// A run the watcher starts in the function is a synchronous invocation, which Lambda's
/// on-failure destination never sees: the watcher sends its notice to the topic; the same
/// failure again (a batch tried again) is not sent twice within a quarter hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_of_the_function_is_notified_by_the_watcher() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let (topic, queue) = env.side.topic_with_queue("failures").await;
    let api = RuntimeApi::start().await;
    // A function whose Vault token is wrong: every sync fails.
    let _function = tokio::process::Command::new(e2e::bin_path("bootstrap"))
        .env_clear()
        .envs(env.moto.env())
        .envs(e2e::runtime_api::lambda_env(&api.addr, "kv-replicator"))
        .env(vars::PREFIX, "kv")
        .env("VAULT_ADDR", &bao.addr)
        .env("VAULT_TOKEN", "not-a-token")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lambda = e2e::lambda_invoke::InvokeStandIn::start(&env.moto.url, api).await;
    let dir = tempfile::tempdir().unwrap();
    let mut watcher = tokio::process::Command::new(e2e::bin_path("bootstrap"))
        .env_clear()
        .envs(e2e::aws_env_at(&lambda.url))
        .args([
            "watch",
            "--output",
            "json",
            "--invoke-function",
            "kv-replicator",
        ])
        .args(["--sns-topic-arn", &topic])
        .arg("--audit-log")
        .arg(bao.audit_log())
        .arg("--state-file")
        .arg(dir.path().join("offset"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut w = Watching {
        lines: tokio::io::BufReader::new(watcher.stdout.take().unwrap()).lines(),
        child: watcher,
    };
    let full = w
        .until(Duration::from_secs(60), |r| r["scope"] == "full")
        .await;
    assert_eq!(full["function_error"], "Unhandled", "{full}");
    bao.put("kv", "db", json!({"k": 1})).await;
    // The batch fails, and is tried again (after 1 s, then 2 s): the same failure each time.
    for _ in 0..3 {
        w.until(Duration::from_secs(60), |r| r["scope"] == "paths")
            .await;
    }
    let notices = env.side.notices(&queue, 2).await;
    assert_eq!(
        notices.len(),
        2,
        "the full sync's and the batch's: {notices:#?}"
    );
    assert!(
        notices
            .iter()
            .all(|n| n.contains("vault-secrets-replicator run failed")),
        "{notices:#?}"
    );
    assert!(!notices.iter().any(|n| n.contains("not-a-token")));
    w.signal("-TERM");
    w.child.wait().await.unwrap();
}

/// The watcher follows the namespace the sync uses: the connection secret's `vaultNamespace`,
/// with no flag of its own. (It followed the root namespace, so a change in the namespace
/// waited for the next full sync.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_follows_the_connection_secrets_namespace() {
    let env = env().await;
    let bao = &env.bao;
    bao.namespace_with_kv2("team").await;
    let connection =
        json!({"vaultAddress": bao.addr, "vaultToken": e2e::ROOT_TOKEN, "vaultNamespace": "team"});
    env.side
        .create("ns-connection/vault", &connection.to_string(), &[])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(e2e::bin_path("replicator"));
    cmd.env_clear()
        .envs(env.moto.env())
        .args([
            "watch", "--prefix", "ns", "--mount", "kv", "--output", "json",
        ])
        .args([
            "--connection-secret",
            "ns-connection/vault",
            "--reconcile-interval",
            "off",
        ])
        .arg("--audit-log")
        .arg(bao.audit_log())
        .arg("--state-file")
        .arg(dir.path().join("o"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut w = Watching {
        lines: tokio::io::BufReader::new(child.stdout.take().unwrap()).lines(),
        child,
    };
    w.until(Duration::from_secs(60), |r| r["scope"] == "full")
        .await;
    bao.api_in(
        "team",
        "POST",
        "kv/data/app",
        Some(json!({"data": {"k": 1}})),
    )
    .await;
    let batch = w
        .until(Duration::from_secs(30), |r| r["scope"] == "paths")
        .await;
    assert_eq!(
        (&batch["paths"], &batch["created"]),
        (&json!(["app"]), &json!(1)),
        "{batch}"
    );
    w.signal("-TERM");
    w.child.wait().await.unwrap();
}

/// The connection secret names another namespace while the watcher runs: after its next full
/// sync the watcher asks the sync where it reads, and follows the audit log there, no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_follows_the_sync_where_it_reads_now() {
    let env = env().await;
    let bao = &env.bao;
    for ns in ["team", "ops"] {
        bao.namespace_with_kv2(ns).await;
    }
    let connection = |ns: &str| {
        json!({"vaultAddress": bao.addr, "vaultToken": e2e::ROOT_TOKEN, "vaultNamespace": ns})
            .to_string()
    };
    env.side
        .create("ns-connection/vault", &connection("team"), &[])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(e2e::bin_path("replicator"));
    cmd.env_clear()
        .envs(env.moto.env())
        .args([
            "watch", "--prefix", "ns", "--mount", "kv", "--output", "json",
        ])
        .args([
            "--connection-secret",
            "ns-connection/vault",
            "--reconcile-interval",
            "1s",
        ])
        .arg("--audit-log")
        .arg(bao.audit_log())
        .arg("--state-file")
        .arg(dir.path().join("o"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut w = Watching {
        lines: tokio::io::BufReader::new(child.stdout.take().unwrap()).lines(),
        child,
    };
    w.until(Duration::from_secs(60), |r| r["scope"] == "full")
        .await;
    // The sync reads in ops now; two full syncs later the watcher has asked it.
    env.side
        .sm
        .put_secret_value()
        .secret_id("ns-connection/vault")
        .secret_string(connection("ops"))
        .send()
        .await
        .unwrap();
    for _ in 0..2 {
        w.until(Duration::from_secs(60), |r| r["scope"] == "full")
            .await;
    }
    bao.api_in(
        "ops",
        "POST",
        "kv/data/web",
        Some(json!({"data": {"k": 1}})),
    )
    .await;
    let batch = w
        .until(Duration::from_secs(30), |r| r["scope"] == "paths")
        .await;
    assert_eq!(batch["paths"], json!(["web"]), "{batch}");
    w.signal("-TERM");
    w.child.wait().await.unwrap();
}

/// An audit device with `format = "jsonx"` (or a prefix) makes every line unreadable: the
/// watcher says so (it used to drop them without a word).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_in_a_format_the_watcher_cannot_read_is_said() {
    let env = env().await;
    env.bao.enable_kv2("kv").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("jsonx.log");
    std::fs::write(&log, "").unwrap();
    let stderr = dir.path().join("stderr");
    let mut child = tokio::process::Command::new(e2e::bin_path("replicator"))
        .env_clear()
        .envs(env.moto.env())
        .env("VAULT_ADDR", &env.bao.addr)
        .env("VAULT_TOKEN", e2e::ROOT_TOKEN)
        .args(["watch", "--prefix", "kv", "--output", "json"])
        .args(["--reconcile-interval", "off"])
        .arg("--audit-log")
        .arg(&log)
        .arg("--state-file")
        .arg(dir.path().join("o"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut w = Watching {
        lines: tokio::io::BufReader::new(child.stdout.take().unwrap()).lines(),
        child,
    };
    w.until(Duration::from_secs(60), |r| r["scope"] == "full")
        .await;
    let jsonx = "<AuditResponse><type>response</type><request><operation>create</operation><path>kv/data/a</path></request></AuditResponse>\n";
    append(&log, &jsonx.repeat(150));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let said = std::fs::read_to_string(&stderr).unwrap_or_default();
        if said.contains("format = \"json\"") || said.contains("format = \\\"json\\\"") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "nothing said: {said}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.signal("-TERM");
    w.child.wait().await.unwrap();
}

/// Rotation as logrotate does it (rename the file, create an empty one in its place, then
/// SIGHUP, which makes OpenBao reopen its log): what Vault writes to the renamed file between the
/// new file's creation and its reopening is read too. (The watcher moved to the new file as soon
/// as it appeared, and those lines were lost.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_log_is_read_to_its_end() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("o");
    let mut w = Watching::start(&env, &state, &["--reconcile-interval", "off"], None);
    w.until(Duration::from_secs(60), |r| r["scope"] == "full")
        .await;
    let log = bao.audit_log();
    std::fs::rename(&log, log.with_extension("log.1")).unwrap();
    std::fs::write(&log, "").unwrap();
    // The watcher looks every 50 ms: it has seen the new file by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    bao.put("kv", "before-reopen", json!({"k": 1})).await;
    let pid = bao.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Reopened: the next request goes to the new file.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&log).unwrap().len() == 0 {
        bao.api("GET", "sys/health", None).await;
        bao.api("GET", "kv/config", None).await;
        assert!(
            std::time::Instant::now() < deadline,
            "OpenBao did not reopen its log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bao.put("kv", "after-reopen", json!({"k": 2})).await;
    let mut seen: Vec<String> = Vec::new();
    while seen.len() < 2 {
        let batch = w
            .until(Duration::from_secs(30), |r| r["scope"] == "paths")
            .await;
        seen.extend(
            batch["paths"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_owned()),
        );
    }
    seen.sort();
    assert_eq!(seen, ["after-reopen", "before-reopen"]);
    assert_eq!(env.side.value("kv/before-reopen").await, json!({"k": 1}));
    w.signal("-TERM");
    w.child.wait().await.unwrap();
}

/// The stack host's rotation of Vault's audit log, as shipped (`userdata/vault-audit.logrotate`,
/// only its path, size, owner and reload command put to this machine's), run by the real
/// logrotate against a real OpenBao while the watcher follows: each rotation renames the log,
/// creates the next one and has Vault reopen it (SIGHUP, a second later here: Vault writes to the
/// renamed file until then). Changes made before, during and after rotations all reach AWS
/// with no reconcile, and the old files stay bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_rotation_of_the_audit_log_misses_no_change() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("o");
    let mut w = Watching::start(&env, &state, &["--reconcile-interval", "off"], None);
    w.until(Duration::from_secs(60), |r| r["scope"] == "full")
        .await;
    let log = bao.audit_log();
    let id = |flag: &str| {
        let out = Command::new("id").arg(flag).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let shipped = include_str!("../../userdata/vault-audit.logrotate");
    let mut config = shipped.to_owned();
    for (from, to) in [
        ("/var/log/vault/audit.log", log.display().to_string()),
        ("size 100M", "size 1k".to_owned()),
        (
            "create 0640 vault vault-audit",
            format!("create 0640 {} {}", id("-un"), id("-gn")),
        ),
        (
            "systemctl reload vault.service",
            format!("sleep 1; kill -HUP {}", bao.pid()),
        ),
    ] {
        assert!(config.contains(from), "the shipped config says {from:?}");
        config = config.replace(from, &to);
    }
    let conf = dir.path().join("vault-audit.logrotate");
    std::fs::write(&conf, config).unwrap();
    let mut expected = Vec::new();
    for round in 0..7 {
        let mut put = async |step: &str| {
            let path = format!("r{round}-{step}");
            bao.put("kv", &path, json!({ "round": round })).await;
            expected.push(path);
        };
        put("before").await;
        let rotating = tokio::process::Command::new("logrotate")
            .arg("--state")
            .arg(dir.path().join("logrotate.status"))
            .arg(&conf)
            .output();
        let (out, ()) = tokio::join!(rotating, async {
            // Renamed, not reopened yet: this line goes to the old file.
            tokio::time::sleep(Duration::from_millis(400)).await;
            put("during").await;
        });
        let out = out.expect("logrotate (tests/run.sh installs it)");
        assert!(
            out.status.success(),
            "logrotate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        put("after").await;
    }
    let mut seen: Vec<String> = Vec::new();
    while seen.len() < expected.len() {
        let batch = w
            .until(Duration::from_secs(30), |r| r["scope"] == "paths")
            .await;
        seen.extend(
            batch["paths"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_owned()),
        );
    }
    seen.sort();
    seen.dedup();
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(env.side.value("kv/r6-after").await, json!({"round": 6}));
    // Bounded: the live log, one uncompressed old one, the rest compressed, five at most.
    let mut old: Vec<String> = std::fs::read_dir(log.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("audit.log."))
        .collect();
    old.sort();
    assert_eq!(
        old,
        [
            "audit.log.1",
            "audit.log.2.gz",
            "audit.log.3.gz",
            "audit.log.4.gz",
            "audit.log.5.gz"
        ]
    );
    w.signal("-TERM");
    w.child.wait().await.unwrap();
}

/// Under systemd, with no `--state-file`, the state is `$STATE_DIRECTORY/watch.offset`; a
/// change still waiting out `--debounce` at SIGTERM is saved with it and named by the next
/// start's own batch (with `--reconcile-interval off`: no full sync but the one at start),
/// never lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_a_pending_change_and_the_state_goes_where_systemd_says() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "before", json!({"k": 0})).await;
    let state_dir = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let start = || {
        let mut child = tokio::process::Command::new(e2e::bin_path("replicator"))
            .env_clear()
            .envs(env.moto.env())
            .env("VAULT_ADDR", &bao.addr)
            .env("VAULT_TOKEN", e2e::ROOT_TOKEN)
            .env("STATE_DIRECTORY", state_dir.path())
            .current_dir(cwd.path())
            .args(["watch", "--prefix", "kv", "--output", "json"])
            .args(["--debounce", "800ms", "--reconcile-interval", "off"])
            .arg("--audit-log")
            .arg(bao.audit_log())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        use tokio::io::AsyncBufReadExt;
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        Watcher { child, lines }
    };
    let mut w = start();
    w.next("full").await;
    bao.put("kv", "late", json!({"k": 1})).await;
    // Within the debounce: the change is waiting.
    tokio::time::sleep(Duration::from_millis(100)).await;
    w.signal("-TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), w.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let state = state_dir.path().join("watch.offset");
    assert!(state.exists(), "the state went to $STATE_DIRECTORY");
    assert!(
        !cwd.path().join("replicator-watch.offset").exists(),
        "not to the working directory"
    );
    // Not under way yet, so not sent in the stop's grace: saved with the position (on a
    // machine slow enough that the batch was already under way, it went before the exit).
    if env.side.secrets("kv").await.contains_key("kv/late") {
        return;
    }
    // Named by the next start's own batch, read from the state it saved.
    let mut w = start();
    w.next("full").await;
    let batch = w.next("paths").await;
    assert!(batch["paths"].to_string().contains("late"), "{batch}");
    assert!(env.side.secrets("kv").await.contains_key("kv/late"));
    w.signal("-TERM");
    let _ = w.child.wait().await;
}

/// From a shell: a secret another hand made under the prefix is a conflict, reported and left
/// alone, until `REPLICATOR_ADOPT` names it, then it is taken over; `--max-duration 0` starts no write and
/// ends partial (exit 0), the next run finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_and_max_duration_work_from_a_shell() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "app/db", json!({"k": "vault"})).await;
    env.side
        .create("kv/app/db", r#"{"k":"by hand"}"#, &[])
        .await;
    let mut envs = env.moto.env();
    envs.push(("VAULT_ADDR".into(), bao.addr.clone()));
    envs.push(("VAULT_TOKEN".into(), e2e::ROOT_TOKEN.into()));
    let json = |out: &str| -> Value { serde_json::from_str(out).unwrap() };

    let (code, out, err) = replicator(&envs, &["sync", "--prefix", "kv", "--output", "json"]);
    assert_eq!(code, 0, "a conflict is reported, and left alone: {err}");
    assert_eq!(json(&out)["conflicts"][0]["kind"], "foreign", "{out}");
    assert_eq!(env.side.value("kv/app/db").await["k"], "by hand");

    let mut adopting = envs.clone();
    adopting.push(("REPLICATOR_ADOPT".into(), "kv/other,kv/app/db".into()));
    let (code, out, err) = replicator(&adopting, &["sync", "--prefix", "kv", "--output", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(json(&out)["updated"], 1, "{out}");
    assert_eq!(env.side.value("kv/app/db").await["k"], "vault");

    // No time to start a write: partial, a success; the next run writes it.
    bao.put("kv", "new", json!({"k": 1})).await;
    let (code, out, err) = replicator(
        &envs,
        &[
            "sync",
            "--prefix",
            "kv",
            "--output",
            "json",
            "--max-duration",
            "0",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let partial = json(&out);
    assert_eq!(
        (
            &partial["partial"],
            &partial["created"],
            &partial["remaining"]
        ),
        (&json!(true), &json!(0), &json!(1)),
        "{out}"
    );
    let (code, out, _) = replicator(&envs, &["sync", "--prefix", "kv", "--output", "json"]);
    assert_eq!((code, &json(&out)["created"]), (0, &json!(1)), "{out}");
}

/// `replicator status`: every secret's state from metadata and tags only (no value read,
/// nothing written), text or JSON, exit 0 settled, 2 something to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_where_each_secret_stands_without_reading_a_value() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    bao.put("kv", "a", json!({"k": PLANTED})).await;
    bao.put("kv", "b", json!({"k": "1"})).await;
    let mut envs = env.moto.env();
    envs.push(("VAULT_ADDR".into(), bao.addr.clone()));
    envs.push(("VAULT_TOKEN".into(), e2e::ROOT_TOKEN.into()));
    let status = |json: bool| {
        let mut argv = vec!["status", "--prefix", "kv"];
        if json {
            argv.extend(["--output", "json"]);
        }
        replicator(&envs, &argv)
    };
    let reads_before = e2e::audited_value_reads(&bao.audit_log()).len();
    let (code, out, err) = status(false);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("missing           kv/a\n"), "{out}");
    assert!(out.ends_with("2 secrets: 2 missing\n"), "{out}");
    assert!(
        env.side
            .sm
            .list_secrets()
            .send()
            .await
            .unwrap()
            .secret_list()
            .is_empty(),
        "nothing written"
    );

    assert_eq!(replicator(&envs, &["sync", "--prefix", "kv"]).0, 0);
    let (code, out, _) = status(false);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("2 secrets: 2 in_sync\n"), "{out}");

    // Vault ahead, a secret gone from Vault (kept by the default policy), a tag changed by
    // hand in AWS.
    bao.put("kv", "a", json!({"k": "2"})).await;
    bao.api("DELETE", "kv/metadata/b", None).await;
    bao.put("kv", "c", json!({"k": "3"})).await;
    let (code, out, err) = status(true);
    assert_eq!(code, 2, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let state = |name: &str| {
        v["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["state"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(state("kv/a"), "behind", "{v}");
    assert_eq!(state("kv/b"), "orphaned", "{v}");
    assert_eq!(state("kv/c"), "missing", "{v}");
    assert_eq!(v["summary"]["behind"], 1, "{v}");
    // Metadata and tags only: not one value read by status, nothing printed of one.
    let reads: Vec<String> = e2e::audited_value_reads(&bao.audit_log())
        .into_iter()
        .skip(reads_before)
        .collect();
    assert_eq!(reads.len(), 2, "only the sync read values: {reads:?}");
    assert!(!out.contains(PLANTED));
    assert_eq!(
        env.side.value("kv/a").await["k"],
        PLANTED,
        "status wrote nothing"
    );
}
