//! The Lambda binary (runtime provided.al2023): one sync per invocation. Run as `bootstrap watch
//! …` (beside the stack's Vault, from its systemd unit) it is the change watcher instead, the
//! same as `replicator watch`. With `REPLICATOR_ROTATOR_SECRET` set it is the rotation function
//! of the connection secret instead ([`replicator::rotate`]).

use lambda_runtime::{Error, service_fn};
use replicator::lambda::{from_env, handle};

/// `bootstrap watch`: the watcher's flags and the sync's.
#[derive(Debug, clap::Parser)]
#[command(name = "bootstrap watch")]
struct Watch {
    #[command(flatten)]
    sync: replicator::config::SyncArgs,
    #[command(flatten)]
    watch: replicator::watch::WatchArgs,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    if std::env::args().nth(1).as_deref() == Some("watch") {
        use clap::Parser as _;
        replicator::logging::init(0, false);
        let cli = match Watch::try_parse_from(std::env::args().skip(1)) {
            Ok(cli) => cli,
            Err(e) => {
                let _ = e.print();
                std::process::exit(if e.use_stderr() { 64 } else { 0 });
            }
        };
        let code = replicator::watch::main(&cli.sync, &cli.watch).await;
        std::process::exit(i32::from(code));
    }
    replicator::logging::init(0, true);
    let aws = replicator::aws::load_sdk_config().await;
    if replicator::rotate::is_rotation_function() {
        // The rotation function: Secrets Manager's steps for the connection secret, nothing else.
        let rotation = replicator::rotate::from_env(&aws);
        let rotation = &rotation;
        return lambda_runtime::run(service_fn(move |event| {
            replicator::rotate::handle(event, rotation)
        }))
        .await;
    }
    // Resolved once, clients included; a bad environment is reported by every invocation, not
    // by a crash loop.
    let replicator = from_env(&aws);
    let replicator = &replicator;
    lambda_runtime::run(service_fn(move |event| handle(event, replicator))).await
}
