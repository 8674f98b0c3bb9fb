//! Runs `deployer` commands in-process against moto, with zero retry delays, capturing stdout
//! and counting the AWS requests each command sent.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Parser;
use deployer::cli::{self, Cli};
use deployer::clients::{Backoff, Clients};

use crate::Moto;

/// A valid Lambda zip (a stand-in `bootstrap`, executable) in `dir`.
pub fn fake_zip(dir: &Path, content: &[u8]) -> PathBuf {
    let path = dir.join("replicator.zip");
    let file = std::fs::File::create(&path).unwrap();
    let mut w = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .unix_permissions(0o755);
    w.start_file("bootstrap", opts).unwrap();
    w.write_all(content).unwrap();
    w.finish().unwrap();
    path
}

#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    /// The error, when the command failed.
    pub error: Option<String>,
    /// Mutating requests sent, by operation.
    pub mutating: Vec<(String, u64)>,
    pub requests: u64,
}

impl Outcome {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// `deployer ARGS` against moto; `--config` and `--lambda-zip` are the caller's business.
pub async fn run(moto: &Moto, args: &[&str]) -> Outcome {
    let mut argv = vec!["deployer"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).unwrap();
    let aws = moto.sdk_config().await;
    let clients = Clients::new(&aws, Backoff::NONE);
    let mut out = Vec::new();
    let result = async {
        let cfg = cli::load_config(&cli.global)?;
        let zip = cli::load_zip(&cli.command, &cli.global)?;
        cli::execute(
            &cli,
            cfg,
            zip,
            &clients,
            Some(crate::REGION.to_owned()),
            &mut out,
        )
        .await
    }
    .await;
    let (code, error) = match result {
        Ok(code) => (code, None),
        Err(e) => (cli::EXIT_ERROR, Some(e.to_string())),
    };
    Outcome {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        error,
        mutating: clients.mutating_requests(),
        requests: clients.requests.snapshot().values().sum(),
    }
}
