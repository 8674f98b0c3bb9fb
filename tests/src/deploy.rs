//! Runs `deployer` commands in-process against moto, with zero retry delays, capturing stdout
//! and counting the AWS requests each command sent.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Parser;
use deployer::cli::{self, Cli};
use deployer::clients::{Backoff, Clients};

use crate::Moto;

/// The deployer's spec for stack `s` in eu-west-1 of account 123456789012 in `partition`, with
/// `extra` configuration lines; no AWS call (the policy and access tests render from it).
pub fn spec(extra: &str, partition: &str) -> deployer::spec::Spec {
    let cfg = deployer::config::FileConfig::parse(&format!("stack_name = \"s\"\n{extra}"), "test")
        .unwrap()
        .validate()
        .unwrap();
    deployer::spec::Spec::new(
        cfg,
        deployer::spec::Identity {
            account: "123456789012".into(),
            partition: partition.into(),
            region: "eu-west-1".into(),
        },
    )
}

/// A replica resource policy (the `app` role of the replica's account may read it), written as
/// `policy.json` in `dir`, for the `resource_policy` key.
pub fn replica_policy_file(dir: &Path) -> PathBuf {
    let path = dir.join("policy.json");
    std::fs::write(
        &path,
        r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::${Account}:role/app"}, "Action": "secretsmanager:GetSecretValue", "Resource": "${ReplicaArn}"}]}"#,
    )
    .unwrap();
    path
}

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
    /// The mutating operations sent, in the order they were sent (retries included).
    pub sent: Vec<String>,
    pub requests: u64,
}

impl Outcome {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// `deployer ARGS` against moto; `--config` and `--lambda-zip` are the caller's business.
/// The environment of the function `name`, as deployed.
pub async fn function_environment(
    aws: &aws_types::SdkConfig,
    name: &str,
) -> std::collections::HashMap<String, String> {
    aws_sdk_lambda::Client::new(aws)
        .get_function_configuration()
        .function_name(name)
        .send()
        .await
        .unwrap()
        .environment()
        .unwrap()
        .variables()
        .unwrap()
        .clone()
}

pub async fn run(moto: &Moto, args: &[&str]) -> Outcome {
    run_as(&moto.sdk_config().await, args).await
}

/// [`run`] with this SDK configuration (another principal's credentials, say).
pub async fn run_as(aws: &aws_types::SdkConfig, args: &[&str]) -> Outcome {
    run_in(aws, None, args).await
}

/// [`run`] of `deployer target …`: `home` as the usual credentials, `target` as those of
/// `--target-profile` (in the replicas' account). `sent` holds the mutating calls of both.
pub async fn run_in_accounts(
    home: &aws_types::SdkConfig,
    target: &aws_types::SdkConfig,
    args: &[&str],
) -> Outcome {
    run_in(home, Some(target), args).await
}

async fn run_in(
    aws: &aws_types::SdkConfig,
    target: Option<&aws_types::SdkConfig>,
    args: &[&str],
) -> Outcome {
    // On a thread of its own with a deployer's stack (its `main` thread's 8 MB): a debug
    // build's futures are large, and nested under a test's own they would not fit a test
    // thread's 2 MB. The test's runtime drives the I/O; the test awaits the answer.
    let (aws, target) = (aws.clone(), target.cloned());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let runtime = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("deployer".into())
        .stack_size(8 << 20)
        .spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let outcome = runtime.block_on(run_here(&aws, target.as_ref(), &args));
            let _ = tx.send(outcome);
        })
        .unwrap();
    rx.await.expect("the deployer's thread answers")
}

async fn run_here(
    aws: &aws_types::SdkConfig,
    target: Option<&aws_types::SdkConfig>,
    args: &[&str],
) -> Outcome {
    let mut argv = vec!["deployer"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).unwrap();
    let record = RecordMutating::default();
    let interceptor = || {
        Some(aws_smithy_runtime_api::client::interceptors::SharedInterceptor::new(record.clone()))
    };
    let clients = Clients::with_interceptor(aws, Backoff::NONE, interceptor());
    let target = target.map(|t| Clients::with_interceptor(t, Backoff::NONE, interceptor()));
    let mut out = Vec::new();
    // Boxed: the whole command's future (the EC2 `up` above all) would not fit a test
    // thread's stack.
    let result = Box::pin(async {
        let cfg = cli::load_config(&cli.global)?;
        let zip = cli::load_zip(&cli.command, &cli.global)?;
        cli::execute(
            &cli,
            cfg,
            zip,
            &clients,
            target.as_ref(),
            Some(crate::REGION.to_owned()),
            &mut out,
        )
        .await
    })
    .await;
    let (code, error) = match result {
        Ok(code) => (code, None),
        Err(e) => (cli::EXIT_ERROR, Some(cli::error_chain(&e))),
    };
    Outcome {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        error,
        mutating: clients.mutating_requests(),
        sent: record.0.lock().unwrap().clone(),
        requests: clients.requests.snapshot().values().sum(),
    }
}

/// Records the mutating operations every client sends, in order.
#[derive(Debug, Clone, Default)]
pub struct RecordMutating(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl aws_smithy_runtime_api::client::interceptors::Intercept for RecordMutating {
    fn name(&self) -> &'static str {
        "RecordMutating"
    }

    fn read_before_transmit(
        &self,
        _: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let op = KillAtMutating::operation(cfg);
        if !deployer::clients::is_read_only(&op) {
            self.0.lock().unwrap().push(op);
        }
        Ok(())
    }
}

/// Fails the deployer as a process killed at its N-th mutating request would leave AWS: odd N
/// after AWS answered (the change is made, the deployer never learns of it), even N before the
/// request is sent; every request after it fails too, as nothing more would be sent.
#[derive(Debug)]
pub struct KillAtMutating {
    pub n: u64,
    mutating: std::sync::atomic::AtomicU64,
    /// Set once the N-th mutating request was reached.
    pub fired: std::sync::atomic::AtomicBool,
    /// The mutating operations sent, in order (the last one is where it was killed).
    pub sent: std::sync::Mutex<Vec<String>>,
}

impl KillAtMutating {
    pub fn new(n: u64) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            n,
            mutating: Default::default(),
            fired: Default::default(),
            sent: Default::default(),
        })
    }

    fn operation(cfg: &aws_smithy_types::config_bag::ConfigBag) -> String {
        cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map(|m| m.name().to_owned())
            .unwrap_or_default()
    }

    fn killed(&self) -> aws_smithy_runtime_api::box_error::BoxError {
        format!("killed at mutating request {}", self.n).into()
    }
}

/// Shares one injector with every client.
#[derive(Debug, Clone)]
pub struct Injector(pub std::sync::Arc<KillAtMutating>);

impl aws_smithy_runtime_api::client::interceptors::Intercept for Injector {
    fn name(&self) -> &'static str {
        "KillAtMutating"
    }

    fn read_before_transmit(
        &self,
        _: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        use std::sync::atomic::Ordering;
        let k = &self.0;
        if k.fired.load(Ordering::SeqCst) {
            return Err(k.killed());
        }
        let op = KillAtMutating::operation(cfg);
        if deployer::clients::is_read_only(&op) {
            return Ok(());
        }
        let nth = k.mutating.fetch_add(1, Ordering::SeqCst) + 1;
        k.sent.lock().unwrap().push(op);
        if nth == k.n && k.n.is_multiple_of(2) {
            k.fired.store(true, Ordering::SeqCst);
            return Err(k.killed());
        }
        Ok(())
    }

    fn read_after_transmit(
        &self,
        _: &aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef<'_>,
        _: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        use std::sync::atomic::Ordering;
        let k = &self.0;
        if !k.n.is_multiple_of(2)
            && !k.fired.load(Ordering::SeqCst)
            && !deployer::clients::is_read_only(&KillAtMutating::operation(cfg))
            && k.mutating.load(Ordering::SeqCst) == k.n
        {
            k.fired.store(true, Ordering::SeqCst);
            return Err(k.killed());
        }
        Ok(())
    }
}
