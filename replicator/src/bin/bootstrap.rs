//! The Lambda binary (runtime provided.al2023): one sync per invocation.

use lambda_runtime::{Error, service_fn};
use replicator::lambda::{from_env, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    replicator::logging::init(0, true);
    let aws = replicator::aws::load_sdk_config().await;
    // Resolved once, clients included; a bad environment is reported by every invocation, not
    // by a crash loop.
    let replicator = from_env(&aws);
    let replicator = &replicator;
    lambda_runtime::run(service_fn(move |event| handle(event, replicator))).await
}
