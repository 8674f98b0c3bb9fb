//! Log setup: `tracing` to stderr, plain text without colour codes where no terminal reads it
//! (Lambda, CI), level from `-v` or `RUST_LOG`. Writes to stderr only.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// `verbose`: 0 = warnings and the run summary, 1 = this tool's debug logs, 2+ = everything.
pub fn init(verbose: u8, force_plain: bool) {
    let default = match verbose {
        0 => "warn,replicator=info",
        1 => "warn,replicator=debug",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // <https://no-color.org>: `NO_COLOR` set and not empty turns colour off.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = !force_plain && !no_color && std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}
