//! The replicator's two binaries as a user meets them: `replicator sync` from a shell, and the
//! Lambda `bootstrap` driven through the Lambda Runtime API; with AppRole and a connection
//! secret. Real OpenBao and moto servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{args, env, failure_kinds, sync};
use e2e::runtime_api::{Answer, RuntimeApi};
use replicator::contract::{ConnectionSecret, env as vars};
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
    assert!(stdout2.contains("0 created, 1 updated"), "{stdout2}");
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

    // A bad flag value: exit 1 with the flag named; nothing written.
    let (code, stdout, _) = replicator(
        &envs,
        &["sync", "--prefix", "kv", "--recovery-window-days", "3"],
    );
    assert_eq!(code, 1);
    assert!(stdout.contains("--recovery-window-days"), "{stdout}");
    // A bad command line: exit 2.
    assert_eq!(
        replicator(&envs, &["sync", "--deletion-policy", "purge"]).0,
        2
    );
}

/// Enables AppRole with a role that may read `kv`, returning (role id, secret id).
async fn approle(bao: &e2e::Bao, token_ttl: &str) -> (String, String) {
    bao.api("POST", "sys/auth/approle", Some(json!({"type": "approle"})))
        .await;
    bao.api(
        "PUT",
        "sys/policies/acl/replicator",
        Some(json!({"policy": "path \"kv/data/*\" { capabilities = [\"read\"] }\npath \"kv/metadata/*\" { capabilities = [\"read\", \"list\"] }\npath \"kv/detailed-metadata/*\" { capabilities = [\"list\"] }"})),
    )
    .await;
    bao.api(
        "POST",
        "auth/approle/role/replicator",
        Some(json!({"token_policies": ["replicator"], "token_ttl": token_ttl, "token_max_ttl": token_ttl})),
    )
    .await;
    let role = bao
        .api("GET", "auth/approle/role/replicator/role-id", None)
        .await;
    let secret = bao
        .api("POST", "auth/approle/role/replicator/secret-id", None)
        .await;
    (
        role["data"]["role_id"].as_str().unwrap().to_owned(),
        secret["data"]["secret_id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_from_the_connection_secret_logs_in_again_before_expiry() {
    let env = env().await;
    let bao = &env.bao;
    bao.enable_kv2("kv").await;
    for i in 0..3 {
        bao.put("kv", &format!("s{i}"), json!({"i": i})).await;
    }
    let (role_id, secret_id) = approle(bao, "6s").await;
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

    // One client across a token's life: it logs in again instead of failing.
    let vault = replicator::vault::VaultClient::new(
        &bao.addr,
        replicator::vault::VaultAuth::AppRole {
            mount: "approle".into(),
            role_id: conn.vault_role_id.clone().unwrap(),
            secret_id: secret_id.as_str().into(),
        },
        None,
        4,
    )
    .unwrap();
    vault.list("kv", "").await.unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await; // past the 6 s token TTL
    vault.list("kv", "").await.unwrap();
    assert_eq!(
        vault
            .counters
            .logins
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );

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
    // The sample's connection secret shape: two keys.
    let conn = json!({"vaultAddress": bao.addr, "vaultToken": e2e::ROOT_TOKEN}).to_string();
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
    assert_eq!(
        env.side
            .value("hybrid-aws-secrets/first-secret-for-replication")
            .await["k"],
        PLANTED
    );

    // Connection secret gone: the invocation errors, so Lambda's error metric counts it.
    env.side
        .sm
        .delete_secret()
        .secret_id("hybrid-aws-secrets-connection/vault")
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    let answer = api
        .invoke("req-2", &scheduled, Duration::from_secs(60))
        .await;
    let Answer::Error(err) = answer else {
        panic!("expected an error, got {answer:?}")
    };
    assert!(err.contains("hybrid-aws-secrets-connection/vault"), "{err}");
    let notices = env.side.notices(&queue, 1).await;
    assert_eq!(notices.len(), 1);
    assert!(notices[0].contains("GetSecretValue"));

    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let logs = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
    assert!(logs.contains("sync finished"), "{logs}");
    assert!(
        !logs.contains(PLANTED),
        "a value leaked into the Lambda logs"
    );
    assert!(!logs.contains('\u{1b}'), "no colour codes in Lambda logs");
}
