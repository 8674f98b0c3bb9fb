//! AWS SDK plumbing shared by the replicator and the deployer (both use it from this crate, with
//! its `aws` feature): the configuration loader with this project's HTTP client and retries,
//! errors classified by modelled error code, and request counters. No I/O of its own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_types::SdkConfig;

/// The standard AWS configuration loader (credential chain, region, `AWS_ENDPOINT_URL`) with
/// this crate's HTTP client and retries with backoff on throttling.
pub fn config_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(super::tls::aws_http_client())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(6)
                .with_initial_backoff(Duration::from_millis(200)),
        )
}

/// Loads the AWS configuration from the environment, as [`config_loader`] sets it up.
pub async fn load_sdk_config() -> SdkConfig {
    config_loader().load().await
}

/// Why an AWS call failed, by error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AwsErrorKind {
    NotFound,
    AlreadyExists,
    AccessDenied,
    Throttled,
    InvalidRequest,
    Unreachable,
    Other,
}

impl AwsErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "aws_not_found",
            Self::AlreadyExists => "aws_already_exists",
            Self::AccessDenied => "aws_access_denied",
            Self::Throttled => "aws_throttled",
            Self::InvalidRequest => "aws_invalid_request",
            Self::Unreachable => "aws_unreachable",
            Self::Other => "aws_error",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{op} {resource}: {message}")]
pub struct AwsError {
    pub op: &'static str,
    pub resource: String,
    pub kind: AwsErrorKind,
    /// The service's error code, for the few cases a caller must tell apart.
    pub code: String,
    pub message: String,
}

impl AwsError {
    pub fn from_sdk<E, R>(op: &'static str, resource: &str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let kind = match &err {
            // The request never left: its credentials could not be had (a role that cannot be
            // assumed, say). Not the network's fault, and not fixed by waiting.
            SdkError::DispatchFailure(d)
                if d.as_connector_error()
                    .is_some_and(|c| credentials_failed(c)) =>
            {
                AwsErrorKind::AccessDenied
            }
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => AwsErrorKind::Unreachable,
            other => classify(other.code()),
        };
        let message = match err.message() {
            Some(m) => format!("{}: {m}", err.code().unwrap_or("error")),
            None => DisplayErrorContext(&err).to_string(),
        };
        Self {
            op,
            resource: resource.to_owned(),
            kind,
            code: err.code().unwrap_or("").to_owned(),
            message,
        }
    }
}

/// Whether `err` was caused by credentials that could not be loaded.
fn credentials_failed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if e.is::<aws_credential_types::provider::error::CredentialsError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The kind of an AWS error code, across the services this project calls.
pub fn classify(code: Option<&str>) -> AwsErrorKind {
    let Some(code) = code else {
        return AwsErrorKind::Other;
    };
    match code {
        "ResourceNotFoundException"
        // CloudWatch's for a dashboard.
        | "ResourceNotFound"
        | "NotFound"
        | "NotFoundException"
        | "NoSuchEntity"
        | "ParameterNotFound" => AwsErrorKind::NotFound,
        c if c.ends_with(".NotFound") => AwsErrorKind::NotFound,
        "ResourceExistsException"
        | "ResourceAlreadyExistsException"
        | "EntityAlreadyExists"
        | "AlreadyExistsException"
        | "ResourceConflictException"
        | "InvalidPermission.Duplicate" => AwsErrorKind::AlreadyExists,
        "AccessDeniedException"
        | "AccessDenied"
        | "AuthorizationError"
        | "UnauthorizedOperation"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "KMSAccessDeniedException" => AwsErrorKind::AccessDenied,
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded" => AwsErrorKind::Throttled,
        "InvalidRequestException"
        | "InvalidParameterException"
        | "InvalidParameter"
        | "InvalidParameterValue"
        | "InvalidParameterValueException"
        | "ValidationException"
        | "ValidationError"
        | "MalformedPolicyDocument"
        | "MalformedPolicyDocumentException"
        | "LimitExceededException" => AwsErrorKind::InvalidRequest,
        _ => AwsErrorKind::Other,
    }
}

/// Counts HTTP requests sent to AWS by operation (retries included).
#[derive(Debug, Default)]
pub struct AwsCounters(Mutex<BTreeMap<String, u64>>);

impl AwsCounters {
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The counts since the last `take`, and zero again (one report per run of a process).
    pub fn take(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

impl AwsCounters {
    fn add(&self, operation: &str) {
        if let Ok(mut map) = self.0.lock() {
            *map.entry(operation.to_owned()).or_default() += 1;
        }
    }
}

tokio::task_local! {
    /// The counters of the runs being polled, outermost first, when they asked for their own
    /// ([`counting`]).
    static RUN_REQUESTS: Arc<[Arc<AwsCounters>]>;
}

/// Runs `f` with its own request counters besides the client's: two runs under way at once in
/// one process (a full sync beside a batch of changes) each count only their own requests. A
/// count within another (a rule's within its run) counts in both.
pub async fn counting<F: std::future::Future>(counters: Arc<AwsCounters>, f: F) -> F::Output {
    let mut all = RUN_REQUESTS
        .try_with(|outer| outer.to_vec())
        .unwrap_or_default();
    all.push(counters);
    RUN_REQUESTS.scope(all.into(), f).await
}

/// Counts each request in the client's counters, and in the run's ([`counting`]) when it has
/// its own.
#[derive(Debug)]
pub struct CountRequests(pub Arc<AwsCounters>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(meta) = cfg.load::<Metadata>() {
            self.0.add(meta.name());
            let _ = RUN_REQUESTS.try_with(|runs| runs.iter().for_each(|run| run.add(meta.name())));
        }
        Ok(())
    }
}
