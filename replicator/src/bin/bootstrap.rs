//! The Lambda binary (runtime provided.al2023): one sync per invocation.

use lambda_runtime::{Error, service_fn};
use replicator::lambda::{LambdaArgs, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    replicator::logging::init(0, true);
    // A bad environment is reported by every invocation, not by a crash loop.
    let args = LambdaArgs::from_env();
    let aws = replicator::aws::load_sdk_config().await;
    let (args, aws) = (&args, &aws);
    lambda_runtime::run(service_fn(move |event| handle(event, args, aws))).await
}
