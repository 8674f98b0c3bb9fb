//! What every subcommand uses: exit codes, the error type, output (JSON or text, the ticker on
//! stderr), and the caller's identity. Below the subcommands: it imports none of them.

use std::io::Write;

use crate::clients::Clients;
use crate::config::ConfigError;
use crate::lambda_zip;
use crate::resources::Ctx;
use crate::spec::Identity;

pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_CHANGES: i32 = 2;
pub const EXIT_USAGE: i32 = 64;

/// Terraform's convention: exit 0 when the command worked, whatever it found, unless asked.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct ExitCodeArgs {
    /// Exit 2 (instead of 0) when there are changes: 0 none, 1 error, 2 changes.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

impl ExitCodeArgs {
    /// The exit code of a command that worked and found `changes`.
    pub fn code(self, changes: bool) -> i32 {
        if changes && self.detailed_exitcode {
            EXIT_CHANGES
        } else {
            EXIT_OK
        }
    }
}

/// Why a command failed before or while talking to AWS.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Zip(#[from] lambda_zip::ZipError),
    #[error("no AWS region: pass --region, set `region` in the config file, or set AWS_REGION")]
    NoRegion,
    #[error("reading the account identity: {0}")]
    Identity(contract::sdk::AwsError),
    #[error(transparent)]
    Deploy(#[from] crate::resources::DeployError),
    #[error("{0}")]
    Refused(String),
    #[error("vault-init")]
    VaultInit(#[source] crate::vault_init::InitError),
    #[error("writing the output")]
    Io(#[from] std::io::Error),
}

/// One status line on stderr, redrawn while a long step runs: what, and for how long. Only on a
/// terminal (the caller decides); log lines go above it.
pub struct Ticker {
    state: std::sync::Arc<std::sync::Mutex<TickerState>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

struct TickerState {
    label: Option<(String, std::time::Instant)>,
    out: Box<dyn Write + Send>,
}

impl std::fmt::Debug for Ticker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticker").finish_non_exhaustive()
    }
}

impl Ticker {
    /// Draws to stderr when it is a terminal; otherwise does nothing.
    pub fn on_stderr() -> Self {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            Self::new(
                Box::new(std::io::stderr()),
                std::time::Duration::from_millis(500),
            )
        } else {
            Self {
                state: std::sync::Arc::new(std::sync::Mutex::new(TickerState {
                    label: None,
                    out: Box::new(std::io::sink()),
                })),
                task: None,
            }
        }
    }

    /// Redraws on `out` every `every`.
    pub fn new(out: Box<dyn Write + Send>, every: std::time::Duration) -> Self {
        let state = std::sync::Arc::new(std::sync::Mutex::new(TickerState { label: None, out }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Ok(mut s) = shared.lock()
                    && let Some((label, since)) = s.label.clone()
                {
                    let secs = since.elapsed().as_secs();
                    let _ = write!(s.out, "\r\x1b[2K{label} … {secs} s");
                    let _ = s.out.flush();
                }
            }
        });
        Self {
            state,
            task: Some(task),
        }
    }

    /// The step now running.
    pub fn set(&self, label: String) {
        self.clear();
        if let Ok(mut s) = self.state.lock()
            && self.task.is_some()
        {
            s.label = Some((label, std::time::Instant::now()));
        }
    }

    /// Removes the line (before a log line or the result is printed).
    pub fn clear(&self) {
        if let Ok(mut s) = self.state.lock()
            && s.label.take().is_some()
        {
            let _ = write!(s.out, "\r\x1b[2K");
            let _ = s.out.flush();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.clear();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// An error and its causes, as one line: each cause after a `: ` unless the message before
/// already says it (a transparent or `{0}` message).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Account, partition (from the caller's ARN) and region.
pub async fn identity(c: &Clients, region: Option<String>) -> Result<Identity, CliError> {
    let region = region.ok_or(CliError::NoRegion)?;
    let me = c
        .sts
        .get_caller_identity()
        .send()
        .await
        .ctx("GetCallerIdentity", "")
        .map_err(CliError::Identity)?;
    let arn = me.arn().unwrap_or_default();
    Ok(Identity {
        account: me.account().unwrap_or_default().to_owned(),
        partition: Identity::partition_of(arn).unwrap_or_else(|| "aws".into()),
        region,
    })
}

/// Writes JSON or text.
pub fn emit(
    out: &mut dyn Write,
    json: bool,
    value: &serde_json::Value,
    text: &str,
) -> Result<(), CliError> {
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        )?;
    } else {
        out.write_all(text.as_bytes())?;
    }
    Ok(())
}

pub fn outputs_text(o: &crate::stack::Outputs) -> String {
    let mut s = String::from("Outputs:\n");
    let rows = [
        ("vault_url", &o.vault_url),
        ("vault_ui_url", &o.vault_ui_url),
        ("function_name", &o.function_name),
        ("watch_function_name", &o.watch_function_name),
        ("connection_secret_arn", &o.connection_secret_arn),
        ("topic_arn", &o.topic_arn),
        ("key_arn", &o.key_arn),
        ("schedule", &o.schedule),
    ];
    for (k, v) in rows {
        if let Some(v) = v {
            s.push_str(&format!("  {k:<22} {v}\n"));
        }
    }
    s
}

#[cfg(test)]
mod ticker_tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    #[tokio::test]
    async fn the_ticker_redraws_the_running_step_then_clears_it() {
        let out = Shared::default();
        let ticker = Ticker::new(Box::new(out.clone()), Duration::from_millis(10));
        ticker.set("creating ec2 instance s-vault".into());
        // Until it has drawn twice (bounded), however slowly this machine runs it.
        let until = std::time::Instant::now() + Duration::from_secs(30);
        while out.text().matches("creating").count() < 2 && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let drawn = out.text();
        assert!(
            drawn.contains("\r\x1b[2Kcreating ec2 instance s-vault … 0 s"),
            "{drawn:?}"
        );
        assert!(drawn.matches("creating").count() > 1, "redrawn: {drawn:?}");
        ticker.clear();
        let cleared = out.text();
        assert!(cleared.ends_with("\r\x1b[2K"), "{cleared:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(out.text(), cleared, "nothing drawn once cleared");
    }
}
