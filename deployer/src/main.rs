//! `deployer`: plan, up, status and destroy for the replicator stack. See `deployer --help`.

use std::process::ExitCode;

use clap::Parser;
use deployer::cli::{self, Cli, EXIT_ERROR, EXIT_USAGE};
use deployer::clients::{Backoff, Clients};

/// <https://no-color.org>: `NO_COLOR` set and not empty turns colour off.
fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

fn init_logs(verbose: u8) {
    use std::io::IsTerminal;
    let default = match verbose {
        0 => "warn,deployer=info",
        1 => "warn,deployer=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && !no_color())
        .with_target(false)
        .without_time()
        .try_init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE as u8 } else { 0 });
        }
    };
    init_logs(cli.global.verbose);
    let code = match run(&cli).await {
        Ok(code) => code,
        Err(e) => {
            // Printed, not logged: seen whatever RUST_LOG says.
            eprintln!("error: {}", cli::error_chain(&e));
            EXIT_ERROR
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

async fn run(cli: &Cli) -> Result<i32, cli::CliError> {
    if let Some(done) = cli::run_local(cli, &mut std::io::stdout().lock()) {
        return done;
    }
    // Everything local is checked before the first AWS call.
    let cfg = cli::load_config(&cli.global)?;
    let zip = cli::load_zip(&cli.command, &cli.global)?;
    let mut loader = contract::sdk::config_loader();
    if let Some(region) = cfg.region.clone() {
        loader = loader.region(aws_config::Region::new(region));
    }
    if let Some(profile) = &cli.global.profile {
        loader = loader.profile_name(profile);
    }
    let aws = loader.load().await;
    let region = aws.region().map(|r| r.to_string());
    let clients = Clients::new(&aws, Backoff::DEFAULT);
    // `deployer target`: the replicas' account, through its own profile, in the same region.
    let target = match &cli.command {
        cli::Command::Target(args) => match &args.target_profile {
            Some(profile) => {
                let mut loader = contract::sdk::config_loader().profile_name(profile);
                if let Some(region) = region.clone() {
                    loader = loader.region(aws_config::Region::new(region));
                }
                Some(Clients::new(&loader.load().await, Backoff::DEFAULT))
            }
            None => None,
        },
        _ => None,
    };
    let mut stdout = std::io::stdout().lock();
    cli::execute(
        cli,
        cfg,
        zip,
        &clients,
        target.as_ref(),
        region,
        &mut stdout,
    )
    .await
}
