//! `deployer vault-init` against a real, non-dev OpenBao server (file storage, TLS with a
//! certificate made in the test) and moto; then the replicator through TLS with AppRole.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::aws_side::AwsSide;
use e2e::deploy::{fake_zip, run};
use e2e::{BaoTls, Moto};
use replicator::config::SyncArgs;
use tokio::io::AsyncBufReadExt;

struct World {
    bao: BaoTls,
    moto: Moto,
    dir: tempfile::TempDir,
    side: AwsSide,
    aws: aws_types::SdkConfig,
}

async fn world() -> World {
    world_with(None).await
}

/// A stack set up by `deployer up`: with an external Vault (the OpenBao here), or with `config`.
async fn world_with(config: Option<&str>) -> World {
    let (bao, moto) = tokio::join!(BaoTls::start(), Moto::start());
    let dir = tempfile::tempdir().unwrap();
    let external = format!(
        "stack_name = \"vi\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"{}\"\nnotification_email = \"ops@example.com\"\n",
        bao.addr
    );
    std::fs::write(
        dir.path().join("deployer.toml"),
        config.unwrap_or(&external),
    )
    .unwrap();
    fake_zip(dir.path(), b"\x7fELF");
    let aws = moto.sdk_config().await;
    let side = AwsSide::new(&aws);
    let w = World {
        bao,
        moto,
        dir,
        side,
        aws,
    };
    let up = w.deployer(&["up", "--yes"]).await;
    assert!(up.error.is_none(), "{:?}", up.error);
    w
}

impl World {
    async fn deployer(&self, args: &[&str]) -> e2e::deploy::Outcome {
        let config = self.dir.path().join("deployer.toml").display().to_string();
        let zip = self.dir.path().join("replicator.zip").display().to_string();
        let mut all = vec![
            "--config",
            config.as_str(),
            "--lambda-zip",
            zip.as_str(),
            "--output",
            "json",
        ];
        all.extend_from_slice(args);
        run(&self.moto, &all).await
    }

    async fn vault_init(&self, extra: &[&str]) -> e2e::deploy::Outcome {
        let ca = self.bao.ca_file.display().to_string();
        let audit = self.bao.dir.path().join("audit.log").display().to_string();
        let mut args = vec![
            "vault-init",
            "--ca-cert",
            ca.as_str(),
            "--audit-file",
            audit.as_str(),
        ];
        args.extend_from_slice(extra);
        self.deployer(&args).await
    }

    fn sync_args(&self) -> SyncArgs {
        let mut a = e2e::sync_args("hybrid-aws-secrets");
        a.connection_secret = Some("hybrid-aws-secrets-connection/vault".into());
        a
    }

    /// The init-keys secret's resource policy and its ARN.
    async fn init_keys_policy(&self) -> (serde_json::Value, String) {
        let sm = &self.side.sm;
        let name = "vi-vault/init-keys";
        let policy = sm
            .get_resource_policy()
            .secret_id(name)
            .send()
            .await
            .unwrap();
        let arn = sm.describe_secret().secret_id(name).send().await.unwrap();
        (
            serde_json::from_str(policy.resource_policy().unwrap()).unwrap(),
            arn.arn().unwrap().to_owned(),
        )
    }

    /// The root token vault-init stored in the init-keys secret (`--keys-to secret`).
    async fn stored_root_token(&self) -> String {
        let stored = self.side.value("vi-vault/init-keys").await;
        stored["root_token"].as_str().unwrap().to_owned()
    }

    async fn connection(&self) -> serde_json::Value {
        self.side.value("hybrid-aws-secrets-connection/vault").await
    }
}

/// Every file under `dir` as text (lossy).
fn all_text(dir: &std::path::Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push_str(&String::from_utf8_lossy(&b));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_sealed_and_uninitialised_to_a_tls_approle_sync() {
    let w = world().await;
    let first = w.vault_init(&["--sample-secrets"]).await;
    assert!(first.error.is_none(), "{:?}", first.error);
    // One JSON document: the keys first (print mode), then the report's fields.
    let report = first.json();
    let keys = &report;
    assert!(
        first.stdout.starts_with("{\"root_token\"") || first.stdout.starts_with("{\"unseal_keys\""),
        "the keys open the document: {}",
        &first.stdout[..20]
    );
    assert_eq!(keys["unseal_keys"].as_array().unwrap().len(), 5);
    let root = keys["root_token"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            report["initialized_now"].as_bool(),
            report["unsealed_now"].as_bool()
        ),
        (Some(true), Some(true))
    );
    let changed = report["changed"].to_string();
    for step in [
        "enabled KV v2 at hybrid-aws-secrets/",
        "wrote the read-only policy",
        "AppRole",
        "revoked the root token",
        "decoy",
        "enabled the file audit log",
    ] {
        assert!(changed.contains(step), "{step} missing from {changed}");
    }
    // The audit log is readable by its group: the change watcher on the stack's host reads it
    // as a member of vault-audit, and nothing else of Vault's.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let audit = w.bao.dir.path().join("audit.log");
        let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{}", audit.display());
    }

    // The root token no longer works.
    let http = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(w.bao.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let lookup = http
        .get(format!("{}/v1/auth/token/lookup-self", w.bao.addr))
        .header("X-Vault-Token", &root)
        .send()
        .await
        .unwrap();
    assert_eq!(lookup.status().as_u16(), 403);

    // Credentials went straight into the connection secret.
    let conn = w.connection().await;
    assert_eq!(conn["vaultAddress"], w.bao.addr.as_str());
    assert!(conn["vaultRoleId"].is_string() && conn["vaultSecretId"].is_string());
    assert_eq!(conn["vaultCaCert"], w.bao.ca_pem.as_str());
    assert!(conn.get("vaultToken").is_none());

    // A second run changes nothing.
    let again = w.vault_init(&[]).await;
    assert!(again.error.is_none(), "{:?}", again.error);
    assert_eq!(again.json()["changed"], serde_json::json!([]));
    assert!(again.mutating.is_empty(), "{:?}", again.mutating);
    assert_eq!(w.connection().await, conn);

    // The replicator, through TLS with AppRole: the sample secrets, not the decoy mount.
    let r = replicator::run::run(&w.sync_args(), &w.aws).await;
    assert!(!r.failed(), "{}", r.to_text());
    assert_eq!(r.created, 2);
    let names: Vec<String> = w
        .side
        .secrets("hybrid-aws-secrets")
        .await
        .into_keys()
        .collect();
    assert_eq!(
        names,
        [
            "hybrid-aws-secrets/first-secret-for-replication",
            "hybrid-aws-secrets/second-secret-for-replication"
        ]
    );
    assert!(w.side.secrets("super-secret-engine").await.is_empty());

    // No plaintext key or token in any file the test can see.
    let files = all_text(w.bao.dir.path()) + &all_text(w.dir.path());
    for k in keys["unseal_keys"].as_array().unwrap() {
        assert!(
            !files.contains(k.as_str().unwrap()),
            "an unseal key is in a file"
        );
    }
    assert!(!files.contains(&root), "the root token is in a file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_secrets_manager_a_wrong_ca_and_a_revoked_secret_id() {
    let w = world().await;
    let first = w
        .vault_init(&[
            "--keys-to",
            "secret",
            "--keep-root-token",
            "--sample-secrets",
        ])
        .await;
    assert!(first.error.is_none(), "{:?}", first.error);
    let report = first.json();
    assert_eq!(report["keys_stored_in"], "vi-vault/init-keys");
    let root = w.stored_root_token().await;
    assert!(
        !first.stdout.contains(&root),
        "secret mode prints no key or token"
    );
    let (policy, secret_arn) = w.init_keys_policy().await;
    // Who may read the keys, decided from the document as AWS would for this shape (moto
    // enforces no resource policy): the principal that ran vault-init, and nobody else.
    let me = aws_sdk_sts_arn(&w.aws).await;
    only_reader_reads(
        &policy,
        &me,
        &secret_arn,
        &[
            "arn:aws:iam::123456789012:role/vi-replicator",
            "arn:aws:iam::123456789012:root",
            "arn:aws:iam::123456789012:user/someone-else",
            "arn:aws:iam::123456789012:role/AWSReservedSSO_AdministratorAccess_0f1e2d3c",
            "arn:aws:iam::210987654321:root",
        ],
    );

    // A wrong CA: a clear error, and nothing written.
    let other = deployer::tls_cert::issue("other", &["127.0.0.1".parse().unwrap()]).unwrap();
    let wrong = w.dir.path().join("wrong-ca.pem");
    std::fs::write(&wrong, &other.ca_certificate).unwrap();
    let mut args = w.sync_args();
    args.connection_secret = None;
    args.vault_addr = Some(w.bao.addr.clone());
    args.vault_token = Some(root.as_str().into());
    args.vault_cacert = Some(wrong.clone());
    let r = replicator::run::run(&args, &w.aws).await;
    assert_eq!(r.failures[0].kind, "vault_unreachable");
    assert!(
        r.failures[0].message.contains(&w.bao.addr),
        "{}",
        r.failures[0].message
    );
    assert_eq!(r.created, 0);
    assert!(w.side.secrets("hybrid-aws-secrets").await.is_empty());
    let wrong_s = wrong.display().to_string();
    let bad_init = w.deployer(&["vault-init", "--ca-cert", &wrong_s]).await;
    assert!(bad_init.error.unwrap().contains("cannot reach Vault"));
    assert!(bad_init.mutating.is_empty());

    // A revoked secret id: the run fails with a login error and one notice.
    let http = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(w.bao.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let accessor = w
        .side
        .sm
        .describe_secret()
        .secret_id("hybrid-aws-secrets-connection/vault")
        .send()
        .await
        .unwrap()
        .tags()
        .iter()
        .find(|t| t.key() == Some(deployer::vault_init::ACCESSOR_TAG))
        .and_then(|t| t.value())
        .unwrap()
        .to_owned();
    let destroyed = http
        .post(format!(
            "{}/v1/auth/approle/role/vi-replicator/secret-id-accessor/destroy",
            w.bao.addr
        ))
        .header("X-Vault-Token", &root)
        .json(&serde_json::json!({"secret_id_accessor": accessor}))
        .send()
        .await
        .unwrap();
    assert!(destroyed.status().is_success());
    let (topic, queue) = w.side.topic_with_queue("vi-notices").await;
    let mut args = w.sync_args();
    args.sns_topic_arn = Some(topic);
    let r = replicator::run::run(&args, &w.aws).await;
    assert_eq!(r.failures[0].kind, "vault_login_failed", "{}", r.to_text());
    let notices = w.side.notices(&queue, 1).await;
    assert_eq!(notices.len(), 1);
    assert!(notices[0].contains("vault_login_failed"));

    // vault-init with an admin token notices the dead credential and delivers a new one.
    let repaired = w.vault_init(&["--token", &root]).await;
    assert!(repaired.error.is_none(), "{:?}", repaired.error);
    assert!(
        repaired.json()["changed"]
            .to_string()
            .contains("credentials")
    );
    args.sns_topic_arn = None;
    let r = replicator::run::run(&args, &w.aws).await;
    assert!(!r.failed(), "{}", r.to_text());
    assert_eq!(r.created, 2);

    // Sealed (a restart): unsealed from the stored keys; nothing else changes.
    let sealed = http
        .put(format!("{}/v1/sys/seal", w.bao.addr))
        .header("X-Vault-Token", &root)
        .send()
        .await
        .unwrap();
    assert!(sealed.status().is_success());
    let unseal = w.vault_init(&[]).await;
    assert!(unseal.error.is_none(), "{:?}", unseal.error);
    assert_eq!(
        unseal.json()["changed"],
        serde_json::json!(["unsealed Vault"])
    );

    // The scoped-token mode, asked for: a periodic token replaces the AppRole credentials.
    let token_mode = w.vault_init(&["--token", &root, "--auth", "token"]).await;
    assert!(token_mode.error.is_none(), "{:?}", token_mode.error);
    let conn = w.connection().await;
    assert!(conn["vaultToken"].is_string() && conn.get("vaultRoleId").is_none());
    let r = replicator::run::run(&args, &w.aws).await;
    assert!(!r.failed(), "{}", r.to_text());
    assert_eq!(r.unchanged, 2);
    // The periodic token was renewed by the run (it would die a period after vault-init).
    assert!(r.warnings.is_empty(), "{}", r.to_text());
    let lookup: serde_json::Value = http
        .get(format!("{}/v1/auth/token/lookup-self", w.bao.addr))
        .header("X-Vault-Token", conn["vaultToken"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        lookup["data"]["period"].as_u64().unwrap() > 0,
        "{}",
        lookup["data"]["period"]
    );
    assert!(
        lookup["data"]["last_renewal_time"]
            .as_i64()
            .is_some_and(|t| t > 0),
        "renewed: {}",
        lookup["data"]["last_renewal_time"]
    );

    // A KV v1 mount at the prefix (the replicator reads KV v2 only): a clear refusal.
    for (method, body) in [
        (reqwest::Method::DELETE, None),
        (
            reqwest::Method::POST,
            Some(serde_json::json!({"type": "kv", "options": {"version": "1"}})),
        ),
    ] {
        let mut req = http
            .request(
                method,
                format!("{}/v1/sys/mounts/hybrid-aws-secrets", w.bao.addr),
            )
            .header("X-Vault-Token", &root);
        if let Some(b) = body {
            req = req.json(&b);
        }
        assert!(req.send().await.unwrap().status().is_success());
    }
    let v1 = w.vault_init(&["--token", &root]).await;
    let err = v1.error.unwrap();
    assert!(
        err.contains("hybrid-aws-secrets/ is already mounted as kv (version 1)")
            && err.contains("enable-versioning"),
        "{err}"
    );
    assert!(v1.mutating.is_empty(), "{:?}", v1.mutating);
}

/// The caller's ARN as STS reports it.
async fn aws_sdk_sts_arn(aws: &aws_types::SdkConfig) -> String {
    aws_sdk_sts::Client::new(aws)
        .get_caller_identity()
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned()
}

/// Who reads the secret, decided by the IAM evaluator from its resource policy as AWS would
/// (moto enforces none): `principal`, whose own identity policy allows everything when
/// `admin` (an administrator of the account, or any role given AdministratorAccess), nothing
/// otherwise. An explicit deny is told apart from an implicit one.
fn reads(
    policy: &serde_json::Value,
    principal: &str,
    secret_arn: &str,
    admin: bool,
) -> e2e::access::Decision {
    reads_from(policy, principal, secret_arn, admin, None)
}

/// As [`reads`], from inside the Lambda function `function` when one is given.
fn reads_from(
    policy: &serde_json::Value,
    principal: &str,
    secret_arn: &str,
    admin: bool,
    function: Option<&str>,
) -> e2e::access::Decision {
    let account = principal.split(':').nth(4).unwrap_or_default().to_owned();
    let mut context = std::collections::BTreeMap::from([
        ("aws:PrincipalArn".to_owned(), serde_json::json!(principal)),
        (
            "aws:PrincipalAccount".to_owned(),
            serde_json::json!(account),
        ),
    ]);
    if let Some(f) = function {
        context.insert("lambda:SourceFunctionArn".to_owned(), serde_json::json!(f));
    }
    let everything = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"}
    ]});
    e2e::access::decide(&[e2e::access::Request {
        principal: principal.to_owned(),
        action: "secretsmanager:GetSecretValue".into(),
        resource: secret_arn.to_owned(),
        account: secret_arn.split(':').nth(4).unwrap_or_default().to_owned(),
        context,
        identity_policies: if admin { vec![everything] } else { vec![] },
        resource_policy: Some(policy.clone()),
        vpc_endpoint_policy: None,
    }])[0]
}

/// Only `reader` reads: by the policy's own grant, with no identity policy; every other
/// principal is denied explicitly, even one allowed everything (an administrator of the
/// account, the replicator's role, another account's).
fn only_reader_reads(policy: &serde_json::Value, reader: &str, secret_arn: &str, others: &[&str]) {
    use e2e::access::Decision::{Allowed, ExplicitlyDenied};
    assert_eq!(
        reads(policy, reader, secret_arn, false),
        Allowed,
        "{policy}"
    );
    for other in others {
        assert_eq!(
            reads(policy, other, secret_arn, true),
            ExplicitlyDenied,
            "{other}: {policy}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_vault_is_unsealed_from_unseal_keys_given_on_the_command_line() {
    let w = world().await;
    let first = w.vault_init(&["--keep-root-token"]).await;
    assert!(first.error.is_none(), "{:?}", first.error);
    let keys = first.json();
    let unseal: Vec<String> = keys["unseal_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let root = keys["root_token"].as_str().unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(w.bao.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let sealed = http
        .put(format!("{}/v1/sys/seal", w.bao.addr))
        .header("X-Vault-Token", root)
        .send()
        .await
        .unwrap();
    assert!(sealed.status().is_success());

    // No key (print mode stores none): a clear error, nothing written.
    let none = w.vault_init(&[]).await;
    let err = none.error.unwrap();
    assert!(
        err.contains("Vault is sealed: pass 3 unseal keys with --unseal-key"),
        "{err}"
    );
    assert!(none.mutating.is_empty(), "{:?}", none.mutating);
    // Fewer than the threshold: still sealed, said so.
    let two = w
        .vault_init(&["--unseal-key", &unseal[0], "--unseal-key", &unseal[1]])
        .await;
    assert!(two.error.unwrap().contains("Vault is sealed"));
    // Enough: unsealed, and nothing else changes; no key is printed again.
    let three = w
        .vault_init(&[
            "--unseal-key",
            &unseal[2],
            "--unseal-key",
            &unseal[3],
            "--unseal-key",
            &unseal[4],
        ])
        .await;
    assert!(three.error.is_none(), "{:?}", three.error);
    assert_eq!(
        three.json()["changed"],
        serde_json::json!(["unsealed Vault"])
    );
    for k in &unseal {
        assert!(
            !three.stdout.contains(k.as_str()),
            "an unseal key was printed"
        );
    }
    let status: serde_json::Value = http
        .get(format!("{}/v1/sys/seal-status", w.bao.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["sealed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_init_targets_the_stacks_vault_not_an_exported_vault_addr() {
    let w = world().await;
    // The operator's everyday Vault, exported in the shell: nothing listens there.
    let everyday = format!("http://{}", e2e::CLOSED_ADDRESS);
    let config = w.dir.path().join("deployer.toml").display().to_string();
    let zip = w.dir.path().join("replicator.zip").display().to_string();
    let ca = w.bao.ca_file.display().to_string();
    let audit = w.bao.dir.path().join("audit.log").display().to_string();
    let out = std::process::Command::new(e2e::bin_path("deployer"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(w.moto.env())
        .env("VAULT_ADDR", &everyday)
        .args([
            "--config",
            &config,
            "--lambda-zip",
            &zip,
            "vault-init",
            "--audit-file",
            &audit,
            "--ca-cert",
            &ca,
            "--keys-to",
            "secret",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It says which Vault it configured: the stack's.
    assert!(
        stdout.starts_with(&format!("Vault   {}\n", w.bao.addr)),
        "{stdout}"
    );
    assert!(!stdout.contains(&everyday));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stacks_on_one_vault_keep_their_own_policy_role_and_mount() {
    let w = world().await;
    let first = w
        .vault_init(&["--keep-root-token", "--sample-secrets"])
        .await;
    assert!(first.error.is_none(), "{:?}", first.error);
    let keys = first.json();
    let root = keys["root_token"].as_str().unwrap().to_owned();

    // A second stack, another prefix (and so mount), on the same Vault.
    let other = w.dir.path().join("other.toml");
    std::fs::write(
        &other,
        format!(
            "stack_name = \"vj\"\nsecrets_prefix = \"team-b\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"{}\"\n",
            w.bao.addr
        ),
    )
    .unwrap();
    let (other_s, zip) = (
        other.display().to_string(),
        w.dir.path().join("replicator.zip").display().to_string(),
    );
    let ca = w.bao.ca_file.display().to_string();
    let audit = w.bao.dir.path().join("audit.log").display().to_string();
    let up = run(
        &w.moto,
        &["--config", &other_s, "--lambda-zip", &zip, "up", "--yes"],
    )
    .await;
    assert!(up.error.is_none(), "{:?}", up.error);
    let second = run(
        &w.moto,
        &[
            "--config",
            &other_s,
            "--lambda-zip",
            &zip,
            "--output",
            "json",
            "vault-init",
            "--audit-file",
            &audit,
            "--ca-cert",
            &ca,
            "--token",
            &root,
        ],
    )
    .await;
    assert!(second.error.is_none(), "{:?}", second.error);
    let changed = second.json()["changed"].to_string();
    assert!(
        changed.contains("vj-replicator") && changed.contains("team-b/"),
        "{changed}"
    );

    // The first stack still replicates with its own credentials: its policy was not replaced.
    let r = replicator::run::run(&w.sync_args(), &w.aws).await;
    assert!(!r.failed(), "{}", r.to_text());
    assert_eq!(r.created, 2);

    // The second stack's credentials read only its own mount.
    let mut b = e2e::sync_args("team-b");
    b.connection_secret = Some("team-b-connection/vault".into());
    let r = replicator::run::run(&b, &w.aws).await;
    assert!(!r.failed(), "{}", r.to_text());
    b.mount = Some("hybrid-aws-secrets".into());
    b.prefix = "stolen".into();
    let r = replicator::run::run(&b, &w.aws).await;
    assert_eq!(
        r.failures.first().map(|p| p.kind.as_str()),
        Some("vault_permission_denied"),
        "{}",
        r.to_text()
    );
    assert!(w.side.secrets("stolen").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_that_fails_after_init_still_revokes_the_new_root_token() {
    let w = world().await;
    // No connection secret to write into: vault-init fails after initialising Vault.
    w.side
        .delete_now("hybrid-aws-secrets-connection/vault")
        .await;
    let failed = w.vault_init(&[]).await;
    let err = failed.error.unwrap();
    assert!(err.contains("does not exist"), "{err}");
    // The keys were printed before anything could fail; the root token no longer works.
    let keys: serde_json::Value =
        serde_json::from_str(failed.stdout.lines().next().unwrap()).unwrap();
    let root = keys["root_token"].as_str().unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(w.bao.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let lookup = http
        .get(format!("{}/v1/auth/token/lookup-self", w.bao.addr))
        .header("X-Vault-Token", root)
        .send()
        .await
        .unwrap();
    assert_eq!(
        lookup.status().as_u16(),
        403,
        "the root token outlived the failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_stored_by_an_sso_role_are_readable_by_that_role_and_its_real_arn() {
    let w = world().await;
    // An SSO permission set's role: it always has an IAM path, which the session ARN omits.
    let iam = aws_sdk_iam::Client::new(&w.aws);
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}]});
    let role = iam
        .create_role()
        .role_name("AWSReservedSSO_Admin_0f1e2d3c")
        .path("/aws-reserved/sso.amazonaws.com/")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .unwrap();
    let role_arn = role.role().unwrap().arn().to_owned();
    assert!(role_arn.contains(":role/aws-reserved/sso.amazonaws.com/"));
    let session = aws_sdk_sts::Client::new(&w.aws)
        .assume_role()
        .role_arn(&role_arn)
        .role_session_name("alice")
        .send()
        .await
        .unwrap();
    let creds = session.credentials().unwrap();
    let as_sso = replicator::aws::config_loader()
        .endpoint_url(&w.moto.url)
        .region(aws_config::Region::new(e2e::REGION))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            creds.access_key_id(),
            creds.secret_access_key(),
            Some(creds.session_token().to_owned()),
            None,
            "sso",
        ))
        .load()
        .await;
    let config = w.dir.path().join("deployer.toml").display().to_string();
    let zip = w.dir.path().join("replicator.zip").display().to_string();
    let ca = w.bao.ca_file.display().to_string();
    let audit = w.bao.dir.path().join("audit.log").display().to_string();
    let out = e2e::deploy::run_as(
        &as_sso,
        &[
            "--config",
            &config,
            "--lambda-zip",
            &zip,
            "--output",
            "json",
            "vault-init",
            "--audit-file",
            &audit,
            "--ca-cert",
            &ca,
            "--keys-to",
            "secret",
        ],
    )
    .await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let (policy, secret_arn) = w.init_keys_policy().await;
    // aws:PrincipalArn of the role's sessions is the role ARN with its path.
    let me = aws_sdk_sts_arn(&w.aws).await;
    only_reader_reads(
        &policy,
        &role_arn,
        &secret_arn,
        &[
            "arn:aws:iam::123456789012:role/AWSReservedSSO_Admin_0f1e2d3c",
            me.as_str(),
        ],
    );
    // The keys went in after the policy: the secret was created empty (one version: the keys),
    // then given its policy, then the keys.
    let first = |op: &str| {
        out.sent
            .iter()
            .position(|o| o == op)
            .unwrap_or_else(|| panic!("no {op} in {:?}", out.sent))
    };
    assert!(
        first("CreateSecret") < first("PutResourcePolicy")
            && first("PutResourcePolicy") < first("PutSecretValue"),
        "{:?}",
        out.sent
    );
    let versions = w
        .side
        .sm
        .list_secret_version_ids()
        .secret_id("vi-vault/init-keys")
        .send()
        .await
        .unwrap();
    assert_eq!(versions.versions().len(), 1, "{versions:?}");
}

fn tls_client(w: &World) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(w.bao.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// The replicator's AppRole role as Vault holds it.
async fn read_role(w: &World, token: &str) -> serde_json::Value {
    tls_client(w)
        .get(format!("{}/v1/auth/approle/role/vi-replicator", w.bao.addr))
        .header("X-Vault-Token", token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// An AppRole login with these credentials, from here (127.0.0.1): the HTTP status.
async fn approle_login(w: &World, role_id: &str, secret_id: &str) -> u16 {
    tls_client(w)
        .post(format!("{}/v1/auth/approle/login", w.bao.addr))
        .json(&serde_json::json!({"role_id": role_id, "secret_id": secret_id}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_id_with_a_lifetime_is_rotated_and_the_old_one_destroyed() {
    let w = world().await;
    let first = w
        .vault_init(&[
            "--keys-to",
            "secret",
            "--keep-root-token",
            "--sample-secrets",
            "--secret-id-ttl",
            "2160h",
            "--key-shares",
            "3",
            "--key-threshold",
            "2",
            "--token-ttl",
            "5m",
        ])
        .await;
    assert!(first.error.is_none(), "{:?}", first.error);
    let root = w.stored_root_token().await;
    // Three key shares, two needed: as Vault says, and as stored.
    let seal: serde_json::Value = tls_client(&w)
        .get(format!("{}/v1/sys/seal-status", w.bao.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&seal["n"], &seal["t"]),
        (&serde_json::json!(3), &serde_json::json!(2))
    );
    let stored = w.side.value("vi-vault/init-keys").await;
    assert_eq!(stored["keys_base64"].as_array().map(Vec::len), Some(3));
    let role = read_role(&w, &root).await;
    assert_eq!(role["data"]["secret_id_ttl"], 2160 * 3600, "{role}");
    assert_eq!(
        (&role["data"]["token_ttl"], &role["data"]["token_max_ttl"]),
        (&serde_json::json!(300), &serde_json::json!(300)),
        "{role}"
    );
    let unbound = &role["data"]["secret_id_bound_cidrs"];
    assert!(
        unbound.is_null() || unbound == &serde_json::json!([]),
        "an external Vault without vault_client_cidrs: no binding ({role})"
    );
    let old = w.connection().await;
    let (role_id, old_secret) = (
        old["vaultRoleId"].as_str().unwrap().to_owned(),
        old["vaultSecretId"].as_str().unwrap().to_owned(),
    );
    assert_eq!(approle_login(&w, &role_id, &old_secret).await, 200);

    // Rotation: a new secret id in the connection secret, the old one destroyed, even when
    // the connection secret no longer says which it is (its accessor tag removed).
    w.side
        .sm
        .untag_resource()
        .secret_id("hybrid-aws-secrets-connection/vault")
        .tag_keys(deployer::vault_init::ACCESSOR_TAG)
        .send()
        .await
        .unwrap();
    // Beside it: one made by hand (no owner), and one of a stack of the same name in another
    // account sharing this Vault (its owner says so).
    let make = |metadata: Option<serde_json::Value>| {
        let w = &w;
        let root = &root;
        async move {
            let body = match metadata {
                Some(m) => serde_json::json!({"metadata": m.to_string()}),
                None => serde_json::json!({}),
            };
            let made: serde_json::Value = tls_client(w)
                .post(format!(
                    "{}/v1/auth/approle/role/vi-replicator/secret-id",
                    w.bao.addr
                ))
                .header("X-Vault-Token", root.as_str())
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            made["data"]["secret_id"].as_str().unwrap().to_owned()
        }
    };
    let by_hand = make(None).await;
    let other_stack = make(Some(serde_json::json!({
        "replicator-stack": "vi", "account": "210987654321", "region": "us-east-1"
    })))
    .await;
    let rotated = w
        .vault_init(&["--token", &root, "--rotate-secret-id"])
        .await;
    assert!(rotated.error.is_none(), "{:?}", rotated.error);
    let changed = rotated.json()["changed"].to_string();
    assert!(
        changed.contains("destroyed the 2 previous secret ids"),
        "{changed}"
    );
    assert_ne!(approle_login(&w, &role_id, &by_hand).await, 200);
    // A run without --secret-id-ttl keeps the lifetime set earlier.
    assert_eq!(
        read_role(&w, &root).await["data"]["secret_id_ttl"],
        2160 * 3600
    );
    assert_eq!(
        approle_login(&w, &role_id, &other_stack).await,
        200,
        "another stack's secret id is never touched"
    );
    assert!(!rotated.stdout.contains(&old_secret));
    let new = w.connection().await;
    let new_secret = new["vaultSecretId"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    assert_eq!(approle_login(&w, &role_id, &new_secret).await, 200);
    assert_ne!(approle_login(&w, &role_id, &old_secret).await, 200);
    let r = replicator::run::run(&w.sync_args(), &w.aws).await;
    assert!(!r.failed(), "{}", r.to_text());
    assert_eq!(r.created, 2);

    // A run without the flag keeps the working credential.
    let again = w.vault_init(&["--token", &root]).await;
    assert!(again.error.is_none(), "{:?}", again.error);
    assert_eq!(w.connection().await["vaultSecretId"], new_secret.as_str());

    // The operator knows the replicator's egress addresses: the secret id and its tokens work
    // only from there (elsewhere, here, refused; then here too once it is listed).
    let config = w.dir.path().join("deployer.toml");
    let external = std::fs::read_to_string(&config).unwrap();
    for (cidrs, works) in [("198.51.100.0/24", false), ("127.0.0.1/32", true)] {
        std::fs::write(
            &config,
            format!("{external}vault_client_cidrs = [\"{cidrs}\"]\n"),
        )
        .unwrap();
        let bound = w.vault_init(&["--token", &root]).await;
        assert!(bound.error.is_none(), "{:?}", bound.error);
        assert!(
            bound.json()["changed"]
                .to_string()
                .contains("wrote AppRole role"),
            "{}",
            bound.stdout
        );
        let role = read_role(&w, &root).await;
        let listed = |v: &serde_json::Value| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().trim_end_matches("/32").to_owned())
                .collect::<Vec<_>>()
        };
        let want = [cidrs.trim_end_matches("/32").to_owned()];
        assert_eq!(listed(&role["data"]["secret_id_bound_cidrs"]), want);
        assert_eq!(listed(&role["data"]["token_bound_cidrs"]), want);
        let status = approle_login(&w, &role_id, &new_secret).await;
        assert_eq!(status == 200, works, "{cidrs}: {status}");
        // The same configuration again: nothing to write (Vault reads a /32 back bare).
        let again = w.vault_init(&["--token", &root]).await;
        assert_eq!(
            again.json()["changed"],
            serde_json::json!([]),
            "{}",
            again.stdout
        );
    }
    // The binding dropped from the configuration is dropped in Vault.
    std::fs::write(&config, &external).unwrap();
    let unbound = w.vault_init(&["--token", &root]).await;
    assert!(unbound.error.is_none(), "{:?}", unbound.error);
    let role = read_role(&w, &root).await;
    let bound = &role["data"]["secret_id_bound_cidrs"];
    assert!(bound.is_null() || bound == &serde_json::json!([]), "{role}");

    // Token mode has no secret id to rotate: said before anything is done.
    let refused = w
        .vault_init(&["--token", &root, "--auth", "token", "--rotate-secret-id"])
        .await;
    assert!(refused.error.unwrap().contains("--auth approle"));
    assert!(refused.mutating.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_stacks_own_vault_the_secret_id_works_only_from_the_replicators_subnet() {
    let config = "stack_name = \"vi\"\nvault_inbound_cidr = \"198.51.100.0/24\"\nnotification_email = \"ops@example.com\"\n";
    let w = world_with(Some(config)).await;
    // The stack's Vault is this OpenBao (its EC2 address is moto's, unreachable from here).
    let addr = w.bao.addr.clone();
    let out = w
        .vault_init(&[
            "--vault-addr",
            &addr,
            "--keys-to",
            "secret",
            "--keep-root-token",
        ])
        .await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let root = w.stored_root_token().await;
    let role = read_role(&w, &root).await;
    assert_eq!(
        role["data"]["secret_id_bound_cidrs"],
        serde_json::json!(["10.42.0.0/24"])
    );
    assert_eq!(
        role["data"]["token_bound_cidrs"],
        serde_json::json!(["10.42.0.0/24"])
    );
    // The delivered credential, taken out of the connection secret: refused from here.
    let conn = w.connection().await;
    let status = approle_login(
        &w,
        conn["vaultRoleId"].as_str().unwrap(),
        conn["vaultSecretId"].as_str().unwrap(),
    )
    .await;
    assert!(
        (400..500).contains(&status),
        "a login from outside the subnet is refused: {status}"
    );
}

/// With `--output json` stdout is one JSON document, also when a step after `init` fails: the
/// keys (shown nowhere else) and the error, never half a document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_init_still_prints_one_json_document_with_the_keys() {
    let w = world().await;
    // No connection secret: the run fails at the step after init and unseal.
    w.side
        .delete_now("hybrid-aws-secrets-connection/vault")
        .await;
    let failed = w.vault_init(&[]).await;
    let error = failed.error.clone().expect("the run fails");
    assert!(
        error.contains("does not exist: run `deployer up` first"),
        "{error}"
    );
    let doc = failed.json();
    assert_eq!(doc["unseal_keys"].as_array().unwrap().len(), 5);
    assert!(doc["root_token"].is_string());
    assert!(
        doc["error"].as_str().unwrap().contains("does not exist"),
        "{doc}"
    );
    assert_eq!(failed.stdout.trim().lines().count(), 1, "{}", failed.stdout);
}

/// `--vault-namespace`: the mount, policy and AppRole go into that namespace (made when
/// missing), init and audit stay in the root namespace, and the connection secret names it, so
/// the replicator reads there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_holds_the_mount_policy_and_approle_and_the_replicator_follows() {
    let w = world().await;
    let first = w
        .vault_init(&["--keep-root-token", "--vault-namespace", "team/"])
        .await;
    assert!(first.error.is_none(), "{:?}", first.error);
    let report = first.json();
    let root = report["root_token"].as_str().unwrap().to_owned();
    assert_eq!(report["namespace"], "team");
    assert!(
        report["changed"]
            .to_string()
            .contains("created namespace team/"),
        "{report}"
    );
    let conn = w.connection().await;
    assert_eq!(conn["vaultNamespace"], "team");

    // The mount is in the namespace, not the root.
    let http = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(w.bao.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let mounts = |ns: Option<&'static str>| {
        let (http, root, addr) = (http.clone(), root.clone(), w.bao.addr.clone());
        async move {
            let mut req = http
                .get(format!("{addr}/v1/sys/mounts"))
                .header("X-Vault-Token", root);
            if let Some(ns) = ns {
                req = req.header("X-Vault-Namespace", ns);
            }
            req.send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    assert!(mounts(Some("team")).await["hybrid-aws-secrets/"].is_object());
    assert!(mounts(None).await.get("hybrid-aws-secrets/").is_none());

    // A secret written in the namespace replicates; the connection secret sends the sync there.
    http.post(format!("{}/v1/hybrid-aws-secrets/data/in-team", w.bao.addr))
        .header("X-Vault-Token", &root)
        .header("X-Vault-Namespace", "team")
        .json(&serde_json::json!({"data": {"k": "v"}}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let r = replicator::run::run(&w.sync_args(), &w.aws).await;
    assert_eq!((r.created, r.failures.len()), (1, 0), "{}", r.to_text());

    // A second run in the namespace changes nothing.
    let again = w
        .vault_init(&["--vault-namespace", "team", "--token", &root])
        .await;
    assert!(again.error.is_none(), "{:?}", again.error);
    assert_eq!(again.json()["changed"], serde_json::json!([]));
}

/// The rotation function as Lambda runs it (the real `bootstrap`, through the Runtime API, with
/// the environment `up` gave the deployed function), and one invocation of it.
struct RotationFunction {
    api: e2e::runtime_api::RuntimeApi,
    child: tokio::process::Child,
}

impl RotationFunction {
    async fn start(w: &World) -> Self {
        Self::start_at(w, &w.moto.url).await
    }

    /// With AWS at `aws_url` (a proxy in front of moto).
    async fn start_at(w: &World, aws_url: &str) -> Self {
        let env = e2e::deploy::function_environment(&w.aws, "vi-replicator-rotate").await;
        let api = e2e::runtime_api::RuntimeApi::start().await;
        let child = tokio::process::Command::new(e2e::bin_path("bootstrap"))
            .env_clear()
            .envs(e2e::aws_env_at(aws_url))
            .envs(e2e::runtime_api::lambda_env(
                &api.addr,
                "vi-replicator-rotate",
            ))
            .envs(env)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self { api, child }
    }

    /// One step as Secrets Manager asks it: `Ok(answer)` or `Err(error)`.
    async fn step(&mut self, step: &str, secret: &str, token: &str) -> Result<String, String> {
        let event = serde_json::json!({
            "Step": step, "SecretId": secret, "ClientRequestToken": token
        });
        self.event(&event.to_string()).await
    }

    async fn event(&mut self, event: &str) -> Result<String, String> {
        use e2e::runtime_api::Answer;
        let id = format!("req-{}", uuid_like());
        match self
            .api
            .invoke(&id, event, std::time::Duration::from_secs(60))
            .await
        {
            Answer::Response(body) => Ok(body),
            Answer::Error(e) => Err(e),
            other => panic!("{other:?}"),
        }
    }

    async fn logs(mut self) -> String {
        self.child.start_kill().unwrap();
        let out = self.child.wait_with_output().await.unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:08x}-0000-4000-8000-{:012x}", n, nanos % (1 << 48))
}

/// The stages of each version of the connection secret.
async fn stages(w: &World) -> std::collections::HashMap<String, Vec<String>> {
    w.side
        .sm
        .describe_secret()
        .secret_id("hybrid-aws-secrets-connection/vault")
        .send()
        .await
        .unwrap()
        .version_ids_to_stages()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_manager_rotates_the_secret_id_through_the_rotation_function() {
    const CONN: &str = "hybrid-aws-secrets-connection/vault";
    const ROTATOR: &str = "hybrid-aws-secrets-connection/rotator";
    let w = world().await;
    let first = w
        .vault_init(&[
            "--keys-to",
            "secret",
            "--keep-root-token",
            "--sample-secrets",
        ])
        .await;
    assert!(first.error.is_none(), "{:?}", first.error);
    let changed = first.json()["changed"].to_string();
    assert!(
        changed.contains("wrote the rotator's token into hybrid-aws-secrets-connection/rotator")
            && changed.contains("a new secret id every 10 days by vi-replicator-rotate"),
        "{changed}"
    );
    let root = w.stored_root_token().await;
    // By default a secret id lives three rotation periods.
    assert_eq!(
        read_role(&w, &root).await["data"]["secret_id_ttl"],
        720 * 3600
    );
    // Secrets Manager rotates the connection secret with the rotation function, every 10 days.
    let described = w
        .side
        .sm
        .describe_secret()
        .secret_id(CONN)
        .send()
        .await
        .unwrap();
    assert_eq!(described.rotation_enabled(), Some(true));
    assert!(
        described
            .rotation_lambda_arn()
            .unwrap()
            .ends_with(":function:vi-replicator-rotate")
    );
    assert_eq!(
        described
            .rotation_rules()
            .and_then(|r| r.automatically_after_days()),
        Some(10)
    );
    // The rotator's token is read only by the rotation role, from inside its function.
    let policy = w
        .side
        .sm
        .get_resource_policy()
        .secret_id(ROTATOR)
        .send()
        .await
        .unwrap();
    let policy: serde_json::Value =
        serde_json::from_str(policy.resource_policy().unwrap()).unwrap();
    let rotator_arn = w
        .side
        .sm
        .describe_secret()
        .secret_id(ROTATOR)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned();
    let role = |name: &str| format!("arn:aws:iam::123456789012:role/{name}");
    let rotate_fn = "arn:aws:lambda:us-east-1:123456789012:function:vi-replicator-rotate";
    let sync_fn = "arn:aws:lambda:us-east-1:123456789012:function:vi-replicator";
    {
        use e2e::access::Decision::{Allowed, ExplicitlyDenied};
        let rotation = role("vi-replicator-rotation");
        let read = |who: &str, admin, from| reads_from(&policy, who, &rotator_arn, admin, from);
        assert_eq!(read(&rotation, false, Some(rotate_fn)), Allowed, "{policy}");
        // Its credentials used elsewhere, or from the sync function: denied.
        assert_eq!(read(&rotation, true, None), ExplicitlyDenied);
        assert_eq!(read(&rotation, true, Some(sync_fn)), ExplicitlyDenied);
        for other in [role("vi-replicator"), role("Admin")] {
            assert_eq!(
                read(&other, true, Some(rotate_fn)),
                ExplicitlyDenied,
                "{other}"
            );
        }
    }
    // The rotator's token mints secret ids of the replicator's role, and nothing else.
    let rotator_token = w.side.value(ROTATOR).await["vaultToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let as_rotator = |method: reqwest::Method, path: &str| {
        tls_client(&w)
            .request(method, format!("{}/v1/{path}", w.bao.addr))
            .header("X-Vault-Token", rotator_token.as_str())
            .send()
    };
    for (method, path) in [
        (
            reqwest::Method::GET,
            "hybrid-aws-secrets/data/first-secret-for-replication",
        ),
        (
            reqwest::Method::GET,
            "auth/approle/role/vi-replicator/role-id",
        ),
        (reqwest::Method::POST, "auth/approle/role/vi-replicator"),
        (reqwest::Method::POST, "auth/token/create"),
        (reqwest::Method::GET, "sys/policies/acl/vi-replicator"),
    ] {
        let status = as_rotator(method.clone(), path).await.unwrap().status();
        assert_eq!(status.as_u16(), 403, "{method} {path}");
    }

    // A new id's lifetime, use count or CIDRs are not the rotator's to choose.
    for body in [
        serde_json::json!({"ttl": "87600h"}),
        serde_json::json!({"num_uses": 0, "metadata": "{}"}),
        serde_json::json!({"cidr_list": "0.0.0.0/0"}),
    ] {
        let status = tls_client(&w)
            .post(format!(
                "{}/v1/auth/approle/role/vi-replicator/secret-id",
                w.bao.addr
            ))
            .header("X-Vault-Token", rotator_token.as_str())
            .json(&body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 403, "{body}");
    }
    let old = w.connection().await;
    let (role_id, old_secret) = (
        old["vaultRoleId"].as_str().unwrap().to_owned(),
        old["vaultSecretId"].as_str().unwrap().to_owned(),
    );
    let mut f = RotationFunction::start(&w).await;
    // Anything but a rotation step of its one secret is refused.
    let refused = f.event(r#"{"paths": ["a"]}"#).await.unwrap_err();
    assert!(refused.contains("rotation events only"), "{refused}");
    let token = uuid_like();
    let other = f
        .step("createSecret", "vi-vault/init-keys", &token)
        .await
        .unwrap_err();
    assert!(
        other.contains("rotates hybrid-aws-secrets-connection/vault only"),
        "{other}"
    );

    // The four steps, as Secrets Manager takes them (each once more, as a retry would).
    for step in [
        "createSecret",
        "createSecret",
        "setSecret",
        "testSecret",
        "finishSecret",
    ] {
        let done = f.step(step, CONN, &token).await;
        assert!(done.is_ok(), "{step}: {done:?}");
    }
    let now = w.connection().await;
    let new_secret = now["vaultSecretId"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    assert_eq!(now["vaultRoleId"], role_id.as_str());
    assert_eq!(now["vaultAddress"], old["vaultAddress"]);
    assert_eq!(now["vaultCaCert"], old["vaultCaCert"]);
    let staged = stages(&w).await;
    assert_eq!(staged[&token], vec!["AWSCURRENT".to_owned()], "{staged:?}");
    // The old id is gone, the new one logs in, the replicator syncs with it.
    assert_ne!(approle_login(&w, &role_id, &old_secret).await, 200);
    assert_eq!(approle_login(&w, &role_id, &new_secret).await, 200);
    let r = replicator::run::run(&w.sync_args(), &w.aws).await;
    assert!(!r.failed(), "{}", r.to_text());
    assert_eq!(r.created, 2);
    // The accessor tag names the new id.
    let lookup = w
        .bao
        .api(
            &root,
            "POST",
            "auth/approle/role/vi-replicator/secret-id/lookup",
            Some(serde_json::json!({"secret_id": new_secret})),
        )
        .await;
    let tags = w
        .side
        .sm
        .describe_secret()
        .secret_id(CONN)
        .send()
        .await
        .unwrap();
    let tagged = tags
        .tags()
        .iter()
        .find(|t| t.key() == Some(deployer::vault_init::ACCESSOR_TAG))
        .and_then(|t| t.value())
        .unwrap()
        .to_owned();
    assert_eq!(lookup["data"]["secret_id_accessor"], tagged.as_str());
    // The new id carries this stack's metadata, as vault-init's do.
    assert_eq!(
        lookup["data"]["metadata"]["replicator-stack"], "vi",
        "{lookup}"
    );
    // A finish taken again changes nothing.
    f.step("finishSecret", CONN, &token).await.unwrap();
    assert_eq!(approle_login(&w, &role_id, &new_secret).await, 200);

    // A second rotation: the id of the first goes in its turn.
    let second = uuid_like();
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        f.step(step, CONN, &second).await.unwrap();
    }
    let newest = w.connection().await["vaultSecretId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(approle_login(&w, &role_id, &new_secret).await, 200);
    assert_eq!(approle_login(&w, &role_id, &newest).await, 200);

    // Nothing secret in what the function logged or answered.
    let logs = f.logs().await;
    for secret in [&old_secret, &new_secret, &newest, &rotator_token] {
        assert!(!logs.contains(secret.as_str()), "a credential in the logs");
    }
    assert!(logs.contains("rotation step"), "{logs}");

    // vault-init again: the rotator's token and the rotation are kept.
    let again = w.vault_init(&["--token", &root]).await;
    assert!(again.error.is_none(), "{:?}", again.error);
    assert_eq!(
        again.json()["changed"],
        serde_json::json!([]),
        "{}",
        again.stdout
    );
    assert_eq!(w.connection().await["vaultSecretId"], newest.as_str());
    // A connection that does not say what it was made for (an earlier version's) gets new
    // credentials, so that it agrees with the rotator's.
    w.side
        .sm
        .untag_resource()
        .secret_id(CONN)
        .tag_keys(deployer::vault_init::CONNECTION_FOR_TAG)
        .send()
        .await
        .unwrap();
    let renewed = w.vault_init(&["--token", &root]).await;
    assert!(
        renewed.json()["changed"]
            .to_string()
            .contains("wrote the replicator's AppRole credentials"),
        "{}",
        renewed.stdout
    );
    assert_ne!(approle_login(&w, &role_id, &newest).await, 200);
}

/// The secret ids of the replicator's role in Vault, by accessor.
async fn secret_id_accessors(w: &World, root: &str) -> Vec<String> {
    let listed = w
        .bao
        .api(
            root,
            "LIST",
            "auth/approle/role/vi-replicator/secret-id",
            None,
        )
        .await;
    let mut keys: Vec<String> = listed["data"]["keys"]
        .as_array()
        .map(|k| k.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rotation_keeps_the_current_id_and_up_turns_rotation_off_and_on() {
    use e2e::aws_proxy::{AwsProxy, Rewrite};
    const CONN: &str = "hybrid-aws-secrets-connection/vault";
    let w = world().await;
    let first = w
        .vault_init(&["--keys-to", "secret", "--keep-root-token"])
        .await;
    assert!(first.error.is_none(), "{:?}", first.error);
    let root = w.stored_root_token().await;
    let old = w.connection().await;
    let (role_id, old_secret) = (
        old["vaultRoleId"].as_str().unwrap().to_owned(),
        old["vaultSecretId"].as_str().unwrap().to_owned(),
    );
    let ids = secret_id_accessors(&w, &root).await;
    assert_eq!(ids.len(), 1);

    // Each failed step is told on the stack's failure topic (Secrets Manager tells nobody).
    let queue = w
        .side
        .queue_on(
            "arn:aws:sns:us-east-1:123456789012:vi-replicator-failures",
            "rotation-notices",
        )
        .await;
    // The new version cannot be written: the id minted for it is destroyed at once.
    let proxy = AwsProxy::start(&w.moto.url).await;
    proxy.set(vec![Rewrite::Fail {
        op: "PutSecretValue".into(),
        name: CONN.into(),
        code: "InternalServiceError".into(),
    }]);
    let mut f = RotationFunction::start_at(&w, &proxy.url).await;
    let token = uuid_like();
    let failed = f.step("createSecret", CONN, &token).await.unwrap_err();
    assert!(failed.contains("PutSecretValue"), "{failed}");
    assert_eq!(
        secret_id_accessors(&w, &root).await,
        ids,
        "no id left behind"
    );
    assert!(!stages(&w).await.contains_key(&token));
    proxy.set(vec![]);

    // Vault refuses the rotator (its token revoked): nothing minted, nothing written.
    let rotator = w
        .side
        .sm
        .describe_secret()
        .secret_id("hybrid-aws-secrets-connection/rotator")
        .send()
        .await
        .unwrap();
    let accessor = rotator
        .tags()
        .iter()
        .find(|t| t.key() == Some(deployer::vault_init::ACCESSOR_TAG))
        .and_then(|t| t.value())
        .unwrap()
        .to_owned();
    let revoked = tls_client(&w)
        .post(format!("{}/v1/auth/token/revoke-accessor", w.bao.addr))
        .header("X-Vault-Token", root.as_str())
        .json(&serde_json::json!({"accessor": accessor}))
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success());
    let refused = f.step("createSecret", CONN, &token).await.unwrap_err();
    assert!(refused.contains("Vault"), "{refused}");
    assert!(!stages(&w).await.contains_key(&token));
    assert_eq!(w.connection().await["vaultSecretId"], old_secret.as_str());
    assert_eq!(approle_login(&w, &role_id, &old_secret).await, 200);
    drop(f);
    let notices = w.side.notices(&queue, 2).await;
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(
        notices.iter().all(|n| n.contains(
            "The Create step of the rotation of hybrid-aws-secrets-connection/vault failed"
        )),
        "{notices:?}"
    );
    assert!(notices[0].contains("PutSecretValue"), "{}", notices[0]);
    assert!(!notices.concat().contains(&old_secret));
    // vault-init finds the rotator's token gone and writes a new one.
    let again = w.vault_init(&["--token", &root]).await;
    assert!(
        again.json()["changed"]
            .to_string()
            .contains("wrote the rotator's token"),
        "{}",
        again.stdout
    );

    // A pending id destroyed behind the rotation's back is never made current.
    let mut f = RotationFunction::start(&w).await;
    let third = uuid_like();
    f.step("createSecret", CONN, &third).await.unwrap();
    let pending = w
        .side
        .sm
        .get_secret_value()
        .secret_id(CONN)
        .version_id(&third)
        .send()
        .await
        .unwrap();
    let pending: serde_json::Value =
        serde_json::from_str(pending.secret_string().unwrap()).unwrap();
    let destroyed = tls_client(&w)
        .post(format!(
            "{}/v1/auth/approle/role/vi-replicator/secret-id/destroy",
            w.bao.addr
        ))
        .header("X-Vault-Token", root.as_str())
        .json(&serde_json::json!({"secret_id": pending["vaultSecretId"]}))
        .send()
        .await
        .unwrap();
    assert!(destroyed.status().is_success());
    let refused = f.step("finishSecret", CONN, &third).await.unwrap_err();
    assert!(refused.contains("login"), "{refused}");
    assert_eq!(w.connection().await["vaultSecretId"], old_secret.as_str());
    assert_eq!(approle_login(&w, &role_id, &old_secret).await, 200);

    // A version naming another Vault (written by whoever could) never receives the rotator's
    // token or a login, and is never made current.
    let elsewhere = uuid_like();
    let mut forged = w.connection().await;
    forged["vaultAddress"] = serde_json::json!("https://127.0.0.1:9");
    w.side
        .sm
        .put_secret_value()
        .secret_id(CONN)
        .client_request_token(&elsewhere)
        .secret_string(forged.to_string())
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    for step in ["testSecret", "finishSecret"] {
        let refused = f.step(step, CONN, &elsewhere).await.unwrap_err();
        assert!(refused.contains("names another Vault"), "{step}: {refused}");
    }
    assert_eq!(w.connection().await["vaultSecretId"], old_secret.as_str());

    // A rotation left pending: the next one destroys its id.
    let left = uuid_like();
    f.step("createSecret", CONN, &left).await.unwrap();
    let left_id = pending_id(&w, &left).await;
    assert_eq!(approle_login(&w, &role_id, &left_id).await, 200);
    let next = uuid_like();
    f.step("createSecret", CONN, &next).await.unwrap();
    assert_ne!(approle_login(&w, &role_id, &left_id).await, 200);
    assert!(!stages(&w).await[&left].contains(&"AWSPENDING".to_owned()));

    // A credential written after this rotation began (as vault-init does, before it could
    // abandon the rotation) is newer: finish leaves it current and destroys the pending id.
    let next_id = pending_id(&w, &next).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let minted = w
        .bao
        .api(
            &root,
            "POST",
            "auth/approle/role/vi-replicator/secret-id",
            Some(serde_json::json!({})),
        )
        .await;
    let newer_id = minted["data"]["secret_id"].as_str().unwrap().to_owned();
    let mut newer = w.connection().await;
    newer["vaultSecretId"] = serde_json::json!(newer_id);
    w.side
        .sm
        .put_secret_value()
        .secret_id(CONN)
        .secret_string(newer.to_string())
        .send()
        .await
        .unwrap();
    let overtaken = f.step("finishSecret", CONN, &next).await.unwrap_err();
    assert!(overtaken.contains("newer credential"), "{overtaken}");
    assert_eq!(w.connection().await["vaultSecretId"], newer_id.as_str());
    assert_eq!(approle_login(&w, &role_id, &newer_id).await, 200);
    assert_ne!(approle_login(&w, &role_id, &next_id).await, 200);

    // vault-init replacing the id while a rotation is under way abandons that rotation: its
    // pending id is destroyed with the old one, and its finish refused.
    let fourth = uuid_like();
    f.step("createSecret", CONN, &fourth).await.unwrap();
    let replaced = w
        .vault_init(&["--token", &root, "--rotate-secret-id"])
        .await;
    assert!(replaced.error.is_none(), "{:?}", replaced.error);
    assert!(
        replaced.json()["changed"]
            .to_string()
            .contains("abandoned the rotation under way"),
        "{}",
        replaced.stdout
    );
    let by_hand = w.connection().await["vaultSecretId"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = f.step("finishSecret", CONN, &fourth).await.unwrap_err();
    assert!(refused.contains("not set as AWSPENDING"), "{refused}");
    assert_eq!(w.connection().await["vaultSecretId"], by_hand.as_str());
    assert_eq!(approle_login(&w, &role_id, &by_hand).await, 200);
    assert_eq!(
        secret_id_accessors(&w, &root).await.len(),
        1,
        "one id lives"
    );
    drop(f);

    // A rotation under way when rotation is turned off is given up with it (or it would block
    // the next rotation).
    let mut f = RotationFunction::start(&w).await;
    let under_way = uuid_like();
    f.step("createSecret", CONN, &under_way).await.unwrap();
    drop(f);
    // Rotation off in the configuration: up turns it off, then the function and role go.
    let describe = || async {
        w.side
            .sm
            .describe_secret()
            .secret_id(CONN)
            .send()
            .await
            .unwrap()
    };
    let off = w
        .deployer(&["--set", "secret_id_rotation_days=0", "up", "--yes"])
        .await;
    assert!(off.error.is_none(), "{:?}", off.error);
    assert_ne!(describe().await.rotation_enabled(), Some(true));
    assert!(
        !stages(&w).await[&under_way].contains(&"AWSPENDING".to_owned()),
        "{:?}",
        stages(&w).await
    );
    let functions = aws_sdk_lambda::Client::new(&w.aws);
    assert!(
        functions
            .get_function()
            .function_name("vi-replicator-rotate")
            .send()
            .await
            .is_err()
    );
    let roles = aws_sdk_iam::Client::new(&w.aws);
    assert!(
        roles
            .get_role()
            .role_name("vi-replicator-rotation")
            .send()
            .await
            .is_err()
    );
    let still = w
        .deployer(&["--set", "secret_id_rotation_days=0", "up", "--yes"])
        .await;
    assert!(still.mutating.is_empty(), "{:?}", still.mutating);
    // vault-init with rotation off leaves nothing that could mint an id: the rotator's token
    // is revoked and its secret scheduled for deletion.
    let rotator_accessor = w
        .side
        .sm
        .describe_secret()
        .secret_id("hybrid-aws-secrets-connection/rotator")
        .send()
        .await
        .unwrap()
        .tags()
        .iter()
        .find(|t| t.key() == Some(deployer::vault_init::ACCESSOR_TAG))
        .and_then(|t| t.value())
        .unwrap()
        .to_owned();
    let retired = w
        .deployer(&[
            "--set",
            "secret_id_rotation_days=0",
            "vault-init",
            "--ca-cert",
            &w.bao.ca_file.display().to_string(),
            "--token",
            &root,
        ])
        .await;
    assert!(retired.error.is_none(), "{:?}", retired.error);
    let changed = retired.json()["changed"].to_string();
    assert!(changed.contains("revoked the rotator's token"), "{changed}");
    let looked = tls_client(&w)
        .post(format!("{}/v1/auth/token/lookup-accessor", w.bao.addr))
        .header("X-Vault-Token", root.as_str())
        .json(&serde_json::json!({"accessor": rotator_accessor}))
        .send()
        .await
        .unwrap();
    assert!(!looked.status().is_success(), "the rotator's token is gone");
    let gone = w
        .side
        .sm
        .describe_secret()
        .secret_id("hybrid-aws-secrets-connection/rotator")
        .send()
        .await
        .unwrap();
    assert!(gone.deleted_date().is_some());
    // And on again, every 20 days: the function, its role and the rotation are back.
    let on = w
        .deployer(&["--set", "secret_id_rotation_days=20", "up", "--yes"])
        .await;
    assert!(on.error.is_none(), "{:?}", on.error);
    // The rotator is gone: vault-init stores a new one and turns the rotation on.
    assert_ne!(describe().await.rotation_enabled(), Some(true));
    let restored = w
        .deployer(&[
            "--set",
            "secret_id_rotation_days=20",
            "vault-init",
            "--ca-cert",
            &w.bao.ca_file.display().to_string(),
            "--token",
            &root,
        ])
        .await;
    assert!(restored.error.is_none(), "{:?}", restored.error);
    let d = describe().await;
    assert_eq!(d.rotation_enabled(), Some(true));
    assert_eq!(
        d.rotation_rules()
            .and_then(|r| r.automatically_after_days()),
        Some(20)
    );
    let converged = w
        .deployer(&["--set", "secret_id_rotation_days=20", "up", "--yes"])
        .await;
    assert!(converged.mutating.is_empty(), "{:?}", converged.mutating);
}

/// The secret id a version of the connection secret holds.
async fn pending_id(w: &World, version: &str) -> String {
    let v = w
        .side
        .sm
        .get_secret_value()
        .secret_id("hybrid-aws-secrets-connection/vault")
        .version_id(version)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(v.secret_string().unwrap()).unwrap();
    v["vaultSecretId"].as_str().unwrap().to_owned()
}

/// `[[sync]]` rules end to end: `up` sends them to the function, `vault-init` makes each rule's
/// namespace and mount and one policy that reads each rule's path and nothing else, and the
/// deployed function (the real `bootstrap`, with the environment `up` gave it) syncs each rule
/// into its prefix and account. A second `vault-init` and a second `up` change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_in_deployer_toml_each_sync_what_vault_init_lets_them_read() {
    let config = |addr: &str| {
        format!(
            "stack_name = \"vi\"\ndeploy_vault_on_ec2 = false\nexternal_vault_address = \"{addr}\"\n\
             [[sync]]\nname = \"payments\"\nprefix = \"pay\"\nmount = \"kv\"\npath = \"payments\"\ndeletion_policy = \"delete\"\n\
             [[sync]]\nname = \"web\"\nprefix = \"web\"\nmount = \"kv\"\npath = \"web\"\n\
             [[sync]]\nname = \"team-b\"\nprefix = \"team\"\nmount = \"kv\"\nnamespace = \"team-b\"\n\
             account_role_arn = \"arn:aws:iam::222222222222:role/replicas\"\nexternal_id = \"0123456789abcdef\"\n\
             account_kms_key = \"create\"\n"
        )
    };
    // The Vault's address is known once it runs: the configuration is written after.
    let w = world().await;
    std::fs::write(w.dir.path().join("deployer.toml"), config(&w.bao.addr)).unwrap();
    let up = w.deployer(&["up", "--yes"]).await;
    assert!(up.error.is_none(), "{:?}", up.error);

    let first = w.vault_init(&["--keep-root-token"]).await;
    assert!(first.error.is_none(), "{:?}", first.error);
    let report = first.json();
    let root = report["root_token"].as_str().unwrap().to_owned();
    let changed = report["changed"].to_string();
    for step in [
        "created namespace team-b/",
        "enabled KV v2 at kv/",
        "enabled KV v2 at team-b/kv/",
        "wrote the read-only policy",
    ] {
        assert!(changed.contains(step), "{step} missing from {changed}");
    }
    assert!(
        !changed.contains("enabled KV v2 at hybrid-aws-secrets/"),
        "with rules, the top level's mount is no sync's: {changed}"
    );
    let http = tls_client(&w);
    let put = |ns: Option<&'static str>, path: &'static str| {
        let (http, root, addr) = (http.clone(), root.clone(), w.bao.addr.clone());
        async move {
            let mut req = http
                .post(format!("{addr}/v1/kv/data/{path}"))
                .header("X-Vault-Token", root)
                .json(&serde_json::json!({"data": {"k": "v"}}));
            if let Some(ns) = ns {
                req = req.header("X-Vault-Namespace", ns);
            }
            req.send().await.unwrap().error_for_status().unwrap();
        }
    };
    put(None, "payments/db").await;
    put(None, "web/app").await;
    put(None, "other/secret").await;
    put(Some("team-b"), "app").await;

    // The replicator's own token reads each rule's path, and not what no rule syncs.
    let conn = w.connection().await;
    let login: serde_json::Value = http
        .post(format!("{}/v1/auth/approle/login", w.bao.addr))
        .json(&serde_json::json!({"role_id": conn["vaultRoleId"], "secret_id": conn["vaultSecretId"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["auth"]["client_token"].as_str().unwrap().to_owned();
    let status = |ns: Option<&'static str>, path: &'static str| {
        let (http, token, addr) = (http.clone(), token.clone(), w.bao.addr.clone());
        async move {
            let mut req = http
                .get(format!("{addr}/v1/{path}"))
                .header("X-Vault-Token", token);
            if let Some(ns) = ns {
                req = req.header("X-Vault-Namespace", ns);
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(status(None, "kv/data/payments/db").await, 200);
    assert_eq!(status(None, "kv/data/web/app").await, 200);
    assert_eq!(status(Some("team-b"), "kv/data/app").await, 200);
    assert_eq!(status(None, "kv/data/other/secret").await, 403);
    assert_eq!(status(None, "kv/metadata/other/secret").await, 403);

    // The other account's side: its role, and the key its replicas are encrypted with.
    let config_path = w.dir.path().join("deployer.toml").display().to_string();
    let team_b = replicator::aws::in_account(
        &w.aws,
        &contract::account::AccountRole::new("arn:aws:iam::222222222222:role/admin", Some("any"))
            .unwrap(),
    );
    let target = e2e::deploy::run_in_accounts(
        &w.aws,
        &team_b,
        &[
            "--config",
            config_path.as_str(),
            "--output",
            "json",
            "target",
            "up",
            "--yes",
            "--sync",
            "team-b",
            "--target-profile",
            "team-b",
        ],
    )
    .await;
    assert!(target.error.is_none(), "{:?}", target.error);
    assert!(
        target.sent.contains(&"CreateKey".to_owned()),
        "{:?}",
        target.sent
    );

    // The deployed function syncs each rule.
    let env = e2e::deploy::function_environment(&w.aws, "vi-replicator").await;
    assert!(env.contains_key("REPLICATOR_RULES"), "{:?}", env.keys());
    let mut api = e2e::runtime_api::RuntimeApi::start().await;
    let mut function = tokio::process::Command::new(e2e::bin_path("bootstrap"))
        .env_clear()
        .envs(e2e::aws_env_at(&w.moto.url))
        .envs(e2e::runtime_api::lambda_env(&api.addr, "vi-replicator"))
        .envs(env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let answer = api
        .invoke("r1", "{}", std::time::Duration::from_secs(60))
        .await;
    // The function's log: its metrics documents, one per rule, reach the log group as
    // Lambda would send them, and `status` reads each rule's last run back.
    let mut out = tokio::io::BufReader::new(function.stdout.take().unwrap()).lines();
    let mut documents = Vec::new();
    while documents.len() < 3 {
        let line = tokio::time::timeout(std::time::Duration::from_secs(10), out.next_line())
            .await
            .expect("a metrics document per rule")
            .unwrap()
            .expect("the function's stdout open");
        if line.contains("CloudWatchMetrics") {
            documents.push(line);
        }
    }
    let logs = aws_sdk_cloudwatchlogs::Client::new(&w.aws);
    logs.create_log_stream()
        .log_group_name("/aws/lambda/vi-replicator")
        .log_stream_name("2026/12/06/[$LATEST]r1")
        .send()
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut put = logs
        .put_log_events()
        .log_group_name("/aws/lambda/vi-replicator")
        .log_stream_name("2026/12/06/[$LATEST]r1");
    for line in &documents {
        put = put.log_events(
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(now)
                .message(line)
                .build()
                .unwrap(),
        );
    }
    put.send().await.unwrap();
    let status = w.deployer(&["status"]).await;
    assert!(status.error.is_none(), "{:?}", status.error);
    let runs = status.json()["last_runs"].clone();
    let counts: Vec<(String, u64, u64)> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_owned(),
                r["last_run"]["created"].as_u64().unwrap(),
                r["last_run"]["failed"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("payments".to_owned(), 1, 0),
            ("web".to_owned(), 1, 0),
            ("team-b".to_owned(), 1, 0)
        ],
        "{runs}"
    );
    // `plan` prices each rule: its replicas here, or 1,000 for one in another account.
    let plan = w.deployer(&["plan"]).await;
    assert!(plan.error.is_none(), "{:?}", plan.error);
    let items = plan.json()["cost"]["lines"].to_string();
    for line in [
        "rule payments: 1 secrets under pay/",
        "rule web: 1 secrets under web/",
        "rule team-b: 1000 secrets under team/",
    ] {
        assert!(items.contains(line), "{line} missing from {items}");
    }
    let e2e::runtime_api::Answer::Response(body) = answer else {
        panic!("{answer:?}")
    };
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["created"], 3, "{body}");
    assert_eq!(report["failures"], serde_json::json!([]), "{body}");
    let rules: Vec<&str> = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["payments", "web", "team-b"], "{body}");
    let home: Vec<String> = [w.side.secrets("pay").await, w.side.secrets("web").await]
        .into_iter()
        .flat_map(|s| s.into_keys())
        .collect();
    assert_eq!(home, ["pay/db", "web/app"]);
    assert!(
        w.side.secrets("team").await.is_empty(),
        "not in the home account"
    );
    let there = replicator::aws::in_account(
        &w.aws,
        &contract::account::AccountRole::new(
            "arn:aws:iam::222222222222:role/replicas",
            Some("0123456789abcdef"),
        )
        .unwrap(),
    );
    let encrypted = aws_sdk_secretsmanager::Client::new(&there)
        .describe_secret()
        .secret_id("team/app")
        .send()
        .await
        .unwrap();
    assert_eq!(
        encrypted.kms_key_id(),
        Some("alias/vi-replicas"),
        "encrypted with the key `target up` made there"
    );
    let there = AwsSide::new(&there).secrets("team").await;
    assert_eq!(there.keys().collect::<Vec<_>>(), ["team/app"]);

    // Converged: nothing to do for vault-init or up.
    let again = w.vault_init(&["--token", &root]).await;
    assert!(again.error.is_none(), "{:?}", again.error);
    assert_eq!(again.json()["changed"], serde_json::json!([]));
    let up = w.deployer(&["up", "--yes"]).await;
    assert!(up.error.is_none(), "{:?}", up.error);
    assert_eq!(
        up.sent,
        Vec::<String>::new(),
        "a converged up sends nothing"
    );

    // Each rule here writes with a role of its own, under the stack's path, assumed by the
    // function's role alone with the rule's external id.
    let iam = aws_sdk_iam::Client::new(&w.aws);
    let roles = || async {
        let listed = iam
            .list_roles()
            .path_prefix("/vault-secrets-replicator/vi/")
            .send()
            .await
            .unwrap();
        let mut names: Vec<String> = listed
            .roles()
            .iter()
            .map(|r| r.role_name().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(roles().await, ["vi.sync.payments", "vi.sync.web"]);
    let trust = iam
        .get_role()
        .role_name("vi.sync.web")
        .send()
        .await
        .unwrap();
    let trust = deployer::policy::parse_returned(
        trust.role().unwrap().assume_role_policy_document().unwrap(),
    )
    .unwrap();
    // One statement (IAM may hand it back unwrapped from its list).
    let only = match &trust["Statement"] {
        serde_json::Value::Array(all) => all[0].clone(),
        one => one.clone(),
    };
    assert_eq!(
        only["Principal"]["AWS"], "arn:aws:iam::123456789012:role/vi-replicator",
        "{trust}"
    );
    assert_eq!(
        only["Condition"]["StringEquals"]["sts:ExternalId"],
        "vi.sync.web"
    );
    // A rule removed: its role goes, once the function no longer names it.
    let without_web = config(&w.bao.addr).replace(
        "[[sync]]\nname = \"web\"\nprefix = \"web\"\nmount = \"kv\"\npath = \"web\"\n",
        "",
    );
    std::fs::write(w.dir.path().join("deployer.toml"), without_web).unwrap();
    let plan = w.deployer(&["plan"]).await;
    assert!(
        plan.stdout.contains("vi.sync.web") && plan.stdout.contains("no longer configured"),
        "{}",
        plan.stdout
    );
    let up = w.deployer(&["up", "--yes"]).await;
    assert!(up.error.is_none(), "{:?}", up.error);
    let (function, delete) = (
        up.sent
            .iter()
            .position(|s| s == "UpdateFunctionConfiguration"),
        up.sent.iter().position(|s| s == "DeleteRole"),
    );
    assert!(
        function.is_some() && delete > function,
        "the function leaves the role before it goes: {:?}",
        up.sent
    );
    assert_eq!(roles().await, ["vi.sync.payments"]);
    let destroy = w.deployer(&["destroy", "--yes"]).await;
    assert!(destroy.error.is_none(), "{:?}", destroy.error);
    assert!(roles().await.is_empty(), "destroy removes the rules' roles");
}
