//! Where the watcher's changes go: synced by this process, or sent to the replicator function
//! (`{"paths": [...]}`, or `{"changes": [...]}` for many rules; `{}` for a full sync;
//! `{"scope": true}` to learn where the sync reads).
//! A synchronous invocation never reaches the function's on-failure destination, so the watcher
//! sends a failed run's notice to the topic itself. Network I/O.

use std::time::Instant;

use crate::progress::Progress;
use crate::report::NoticeGate;
use crate::run::{Change, Replicator, Request, VaultScope};

/// What one delivery did.
#[derive(Debug)]
pub struct Delivered {
    /// The run's report (the function's answer in invoke mode; on failure, `function_error`
    /// and the run's notice as `error`).
    pub report: serde_json::Value,
    /// Every change it was given is in AWS: not failed, not cut short by its deadline.
    pub ok: bool,
}

impl Delivered {
    fn of(report: serde_json::Value) -> Self {
        let failed = crate::report::Summary::of(&report).failed();
        // An answer that is no report (none, or not JSON) says nothing was done.
        let ok = report.is_object() && !failed && report["partial"] != true;
        Self { report, ok }
    }
}

/// Where the changes go.
#[derive(Debug)]
pub enum Delivery {
    /// Synced by this process (which notifies a failure itself, with `--sns-topic-arn`).
    InProcess(Box<Replicator>),
    /// Sent to the replicator function, which syncs them: the watcher itself holds no Vault or
    /// Secrets Manager access.
    Invoke {
        lambda: aws_sdk_lambda::Client,
        function: String,
        /// The topic a failed run's notice goes to (`--sns-topic-arn`).
        notices: Option<(crate::aws::Notifier, String)>,
        gate: NoticeGate,
    },
}

impl Delivery {
    /// Whether a full sync may run beside a batch: in this process, yes; a function takes one
    /// run at a time (reserved concurrency 1), so a second invocation would only be refused.
    pub fn runs_beside(&self) -> bool {
        matches!(self, Delivery::InProcess(_))
    }

    /// A full sync.
    pub async fn full(&self, progress: &Progress) -> Delivered {
        match self {
            Delivery::InProcess(r) => Delivered::of(to_value(&r.run(None, progress).await)),
            Delivery::Invoke { .. } => self.invoke(serde_json::json!({})).await,
        }
    }

    /// A sync of `paths`.
    pub async fn paths(&self, paths: &[String], progress: &Progress) -> Delivered {
        match self {
            Delivery::InProcess(r) => {
                Delivered::of(to_value(&r.run_paths(paths, None, progress).await))
            }
            Delivery::Invoke { .. } => self.invoke(serde_json::json!({ "paths": paths })).await,
        }
    }

    /// A sync of `changes` (a watcher following many rules): each to every rule it falls in.
    pub async fn changes(&self, changes: &[Change], progress: &Progress) -> Delivered {
        match self {
            Delivery::InProcess(r) => {
                let request = Request {
                    changes: Some(changes.to_vec()),
                    ..Request::default()
                };
                Delivered::of(to_value(&r.run_request(&request, progress).await))
            }
            Delivery::Invoke { .. } => self.invoke(serde_json::json!({ "changes": changes })).await,
        }
    }

    /// Where the sync reads in Vault, rule by rule, as the sync itself resolves it.
    pub async fn scopes(&self) -> Result<Vec<VaultScope>, String> {
        match self {
            Delivery::InProcess(r) => r.scopes().await.map_err(|e| e.to_string()),
            Delivery::Invoke { .. } => {
                let mut answer = self.invoke(serde_json::json!({ "scope": true })).await;
                if !answer.ok {
                    return Err(answer.report["error"]
                        .as_str()
                        .unwrap_or("the function failed")
                        .to_owned());
                }
                let not_scope = |e: serde_json::Error| {
                    format!("the function's scope is not what the watcher reads: {e}")
                };
                match answer.report.get_mut("scopes") {
                    Some(many) => serde_json::from_value(many.take()).map_err(not_scope),
                    None => serde_json::from_value(answer.report)
                        .map(|one| vec![one])
                        .map_err(not_scope),
                }
            }
        }
    }

    /// Invokes the function and waits for its answer; a failed invocation or run is a report
    /// with `function_error` (and the run's notice as `error`), which goes to the topic.
    async fn invoke(&self, event: serde_json::Value) -> Delivered {
        let Delivery::Invoke {
            lambda,
            function,
            notices,
            gate,
        } = self
        else {
            return Delivered::of(serde_json::Value::Null);
        };
        let sent = lambda
            .invoke()
            .function_name(function)
            .invocation_type(aws_sdk_lambda::types::InvocationType::RequestResponse)
            .payload(aws_sdk_lambda::primitives::Blob::new(event.to_string()))
            .send()
            .await;
        let report = match sent {
            Ok(out) => {
                let body: serde_json::Value = out
                    .payload()
                    .and_then(|p| serde_json::from_slice(p.as_ref()).ok())
                    .unwrap_or_default();
                match out.function_error() {
                    Some(kind) => serde_json::json!({
                        "function_error": kind,
                        "error": body["errorMessage"],
                    }),
                    None => body,
                }
            }
            // The function busy (its reserved slot taken by another run): no run failed, the
            // batch is only tried again.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_too_many_requests_exception()) =>
            {
                serde_json::json!({
                    "function_error": "Throttled",
                    "error": format!("the function {function} is busy with another run"),
                })
            }
            Err(e) => serde_json::json!({
                "function_error": "Invoke",
                "error": contract::sdk::AwsError::from_sdk("Invoke", function, e).to_string(),
            }),
        };
        // The run's notice, as the function made it; a function that could not be reached
        // ran nothing, and the watcher says so instead.
        if let (Some((sns, topic)), Some(kind)) = (notices, report["function_error"].as_str())
            && kind != "Throttled"
        {
            let notice = match report["error"].as_str() {
                Some(text) if kind != "Invoke" => text.to_owned(),
                other => format!(
                    "vault-secrets-replicator: the change watcher could not run the function {function}: {}",
                    other.unwrap_or(kind)
                ),
            };
            if gate.admits(&notice, Instant::now())
                && let Err(e) = sns.publish(topic, contract::NOTICE_SUBJECT, &notice).await
            {
                tracing::error!("cannot publish the failure notice: {e}");
            }
        }
        Delivered::of(report)
    }
}

fn to_value(report: &crate::report::Report) -> serde_json::Value {
    serde_json::to_value(report).unwrap_or_default()
}
