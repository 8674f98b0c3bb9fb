//! One module per AWS resource, each with the same shape: `observe` (look it up by name or tag),
//! `diff` (pure), `apply` (create or update), `destroy` (absent ⇒ nothing). Shared helpers here.

pub(crate) mod function;
pub(crate) mod iam;
pub(crate) mod key;
pub(crate) mod logs;
pub(crate) mod monitoring;
pub(crate) mod network;
pub(crate) mod replicas;
pub(crate) mod rotation;
pub(crate) mod rule;
pub mod secret;
pub(crate) mod signing;
pub(crate) mod topic;
pub mod vault_server;

use std::future::Future;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::clients::Backoff;
use crate::policy::TemplateError;
use contract::sdk::{AwsError, AwsErrorKind};

/// Why a deployer step failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("policy template")]
    Template(#[from] TemplateError),
    #[error("{what} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("building a request")]
    Build(#[from] aws_smithy_types::error::operation::BuildError),
    #[error("serialising JSON")]
    Serialise(#[from] serde_json::Error),
    #[error("issuing the Vault TLS certificate")]
    Cert(#[from] crate::tls_cert::CertError),
    #[error("{op} returned no {field}")]
    Missing {
        op: &'static str,
        field: &'static str,
    },
    #[error("{what} did not become ready: {detail}")]
    NotReady { what: String, detail: String },
    /// Something found in the account cannot be trusted; the message says what to do.
    #[error("{0}")]
    Untrusted(String),
}

pub fn missing(op: &'static str, field: &'static str) -> DeployError {
    DeployError::Missing { op, field }
}

/// Adds the operation and resource to an SDK error.
pub trait Ctx<T> {
    fn ctx(self, op: &'static str, resource: &str) -> Result<T, AwsError>;
}

impl<T, E, R> Ctx<T> for Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    fn ctx(self, op: &'static str, resource: &str) -> Result<T, AwsError> {
        self.map_err(|e| AwsError::from_sdk(op, resource, e))
    }
}

/// `Ok(None)` for a not-found error.
pub fn found<T>(r: Result<T, AwsError>) -> Result<Option<T>, AwsError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind == AwsErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sends a delete request; a not-found answer means it is already done.
pub async fn delete<T, E, R>(
    op: &'static str,
    resource: &str,
    request: impl Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<(), AwsError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    gone_ok(request.await.map(|_| ()).ctx(op, resource))
}

/// Ignores a not-found error (deleting something already gone).
pub fn gone_ok(r: Result<(), AwsError>) -> Result<(), AwsError> {
    found(r).map(|_| ())
}

/// Retries `f` while it fails with one of `codes` (IAM propagation and the like), with backoff.
pub async fn retry_on<T, F, Fut>(backoff: Backoff, codes: &[&str], mut f: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if codes.contains(&e.code.as_str()) && attempt + 1 < backoff.max_attempts => {
                let delay = backoff.delay(attempt);
                tracing::info!(op = e.op, code = %e.code, ?delay, "not ready yet; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Whether a tag list holds this stack's tag.
pub fn has_stack_tag<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>, stack: &str) -> bool {
    tags.into_iter()
        .any(|(k, v)| k == crate::spec::STACK_TAG && v == stack)
}
