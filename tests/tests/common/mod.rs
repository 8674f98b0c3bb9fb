//! Shared setup of the replicator tests: servers, default sync arguments, one run.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use e2e::aws_side::AwsSide;
use e2e::{Bao, Moto};
use replicator::config::SyncArgs;
use replicator::report::Report;

#[derive(Debug)]
pub(crate) struct Env {
    pub bao: Bao,
    pub moto: Moto,
    pub aws: aws_types::SdkConfig,
    pub side: AwsSide,
}

pub(crate) async fn env() -> Env {
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

/// Sync arguments for the dev server with its root token.
pub(crate) fn args(env: &Env, prefix: &str) -> SyncArgs {
    let mut a = e2e::sync_args(prefix);
    a.vault_addr = Some(env.bao.addr.clone());
    a.vault_token = Some(e2e::ROOT_TOKEN.into());
    a
}

pub(crate) async fn sync(env: &Env, args: &SyncArgs) -> Report {
    replicator::run::run(args, &env.aws).await
}

pub(crate) fn failure_kinds(r: &Report) -> Vec<(String, String)> {
    r.failures
        .iter()
        .map(|p| (p.name.clone(), p.kind.clone()))
        .collect()
}
