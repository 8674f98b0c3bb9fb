//! Shared setup of the replicator tests: servers, default sync arguments, one run.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use e2e::aws_side::AwsSide;
use e2e::{Bao, Moto};
use replicator::config::{DeletionPolicy, OnModified, SyncArgs};
use replicator::report::Report;

#[derive(Debug)]
pub struct Env {
    pub bao: Bao,
    pub moto: Moto,
    pub aws: aws_types::SdkConfig,
    pub side: AwsSide,
}

pub async fn env() -> Env {
    let (bao, moto) = tokio::join!(Bao::start(), Moto::start());
    let aws = moto.sdk_config().await;
    let side = AwsSide::new(&aws);
    Env {
        bao,
        moto,
        aws,
        side,
    }
}

/// Sync arguments built field by field, so no variable of the test's environment leaks in.
pub fn args(env: &Env, prefix: &str) -> SyncArgs {
    SyncArgs {
        prefix: prefix.to_owned(),
        mount: None,
        path: String::new(),
        kms_key_id: None,
        sns_topic_arn: None,
        deletion_policy: DeletionPolicy::Keep,
        recovery_window_days: 7,
        max_delete_share: 0.25,
        on_modified: OnModified::Report,
        adopt: vec![],
        connection_secret: None,
        vault_addr: Some(env.bao.addr.clone()),
        vault_token: Some(e2e::ROOT_TOKEN.to_owned()),
        vault_cacert: None,
        vault_role_id: None,
        vault_secret_id: None,
        vault_approle_mount: "approle".to_owned(),
        concurrency: 8,
        writes_per_second: 50,
        dry_run: false,
    }
}

pub async fn sync(env: &Env, args: &SyncArgs) -> Report {
    replicator::run::run(args, &env.aws).await
}

pub fn failure_kinds(r: &Report) -> Vec<(String, String)> {
    r.failures
        .iter()
        .map(|p| (p.name.clone(), p.kind.clone()))
        .collect()
}
