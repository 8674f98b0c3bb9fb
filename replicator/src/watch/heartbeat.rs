//! The watcher's liveness, and its host's disk, in CloudWatch (`--cloudwatch-stack`): every
//! minute one `PutMetricData` (namespace [`host_namespace`], the stack's own; dimension
//! `Stack`) with
//! [`WATCHER_ALIVE`] (1 when the audit log was read within the last minute, else 0) and
//! [`DISK_USED`] (the used share of the audit log's filesystem), which the deployer's alarms of a
//! silent watcher and a filling disk watch. Beside the stack's Vault the host has no log agent,
//! so the watcher sends them itself: a SigV4-signed Query request with the instance role's
//! credentials (the Lambda artifact carries no CloudWatch SDK for one call). Names and numbers
//! only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials as _;
use aws_types::SdkConfig;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::WatchMetrics;
pub use contract::metrics::{DISK_USED, WATCHER_ALIVE, host_namespace};

/// How often the metrics are put.
pub const EVERY: Duration = Duration::from_secs(60);
/// The first put, soon after start: the tail has looked at the log by then.
pub const FIRST: Duration = Duration::from_secs(5);
/// How long a failing put stays quiet in the log after saying so.
const WARN_SPELL: Duration = Duration::from_secs(600);

/// Whether a tail that last read the log at `last_look` (Unix seconds, 0: never) is alive at
/// `now`: it read within the last [`EVERY`] (it looks many times a second while it runs).
pub fn alive(last_look: u64, now: u64) -> bool {
    last_look > 0 && now.saturating_sub(last_look) <= EVERY.as_secs()
}

/// The used share of a filesystem in percent, as `df` counts it: used blocks over what the
/// unprivileged may use (used + available); none for an empty one.
pub fn used_percent(blocks: u64, free: u64, available: u64) -> Option<f64> {
    let used = blocks.saturating_sub(free);
    let total = used.saturating_add(available);
    (total > 0).then(|| used as f64 * 100.0 / total as f64)
}

/// The used share of the filesystem holding `path`.
pub fn disk_used(path: &Path) -> Option<f64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    used_percent(stat.f_blocks, stat.f_bfree, stat.f_bavail)
}

/// What a Query request's value escapes: all but the unreserved characters.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The body of the `PutMetricData` request (the Query protocol).
pub fn form(stack: &str, alive: bool, disk: Option<f64>) -> String {
    let mut pairs: Vec<(String, String)> = vec![
        ("Action".into(), "PutMetricData".into()),
        ("Version".into(), "2010-08-01".into()),
        ("Namespace".into(), host_namespace(stack)),
    ];
    let mut metric = |n: usize, name: &str, value: f64, unit: &str| {
        let m = format!("MetricData.member.{n}");
        pairs.extend([
            (format!("{m}.MetricName"), name.to_owned()),
            (format!("{m}.Value"), format!("{value}")),
            (format!("{m}.Unit"), unit.to_owned()),
            (format!("{m}.Dimensions.member.1.Name"), "Stack".to_owned()),
            (format!("{m}.Dimensions.member.1.Value"), stack.to_owned()),
        ]);
    };
    metric(1, WATCHER_ALIVE, if alive { 1.0 } else { 0.0 }, "Count");
    if let Some(disk) = disk {
        metric(2, DISK_USED, (disk * 100.0).round() / 100.0, "Percent");
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Where CloudWatch is: the configured endpoint (`AWS_ENDPOINT_URL`), else the region's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub host: String,
    pub region: String,
}

impl Endpoint {
    pub fn of(aws: &SdkConfig) -> Result<Self, String> {
        let region = aws
            .region()
            .map(|r| r.as_ref().to_owned())
            .ok_or("no AWS region: set AWS_REGION")?;
        let url = match aws.endpoint_url() {
            // Plain HTTP carries the session token in the clear: only to this host itself.
            Some(url)
                if url.starts_with("http://")
                    && !["http://127.0.0.1", "http://localhost", "http://[::1]"]
                        .iter()
                        .any(|local| {
                            url.strip_prefix(local)
                                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
                        }) =>
            {
                return Err(format!(
                    "{url:?}: plain HTTP would carry the credentials' session token in the clear; use https://"
                ));
            }
            Some(url) => format!("{}/", url.trim_end_matches('/')),
            None => {
                format!(
                    "https://{}/",
                    crate::aws_auth::regional_host("monitoring", &region)
                )
            }
        };
        let host = url
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or_default().to_owned())
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{url:?} is not an endpoint URL"))?;
        Ok(Self { url, host, region })
    }
}

/// Puts `body` into CloudWatch at `endpoint` with `aws`'s credentials.
async fn put(
    http: &reqwest::Client,
    aws: &SdkConfig,
    endpoint: &Endpoint,
    body: String,
) -> Result<(), String> {
    let credentials = aws
        .credentials_provider()
        .ok_or("no AWS credentials")?
        .provide_credentials()
        .await
        .map_err(|e| format!("AWS credentials: {e}"))?;
    let headers = [
        ("host", endpoint.host.as_str()),
        ("content-type", crate::aws_auth::CONTENT_TYPE),
    ];
    let signed = crate::aws_auth::sign_post(
        &credentials,
        ("monitoring", &endpoint.region),
        &endpoint.url,
        &headers,
        body.as_bytes(),
        SystemTime::now(),
    )?;
    let mut request = http
        .post(&endpoint.url)
        .header("content-type", crate::aws_auth::CONTENT_TYPE);
    for (k, v) in &signed {
        request = request.header(k, v);
    }
    let resp = request
        .body(body)
        .send()
        .await
        .map_err(|e| format!("PutMetricData: {e}"))?;
    if resp.status().is_success() {
        return Ok(());
    }
    let status = resp.status();
    let text = contract::vault_http::read_capped(resp, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let code = text
        .split("<Code>")
        .nth(1)
        .and_then(|t| t.split("</Code>").next())
        .unwrap_or("");
    Err(format!("PutMetricData: HTTP {status} {code}"))
}

/// Puts the watcher's liveness and the disk of `audit_log` for `stack`, every [`EVERY`], until
/// the process ends. A put that fails is said in the log (at most every ten minutes) and tried
/// again at the next minute: the alarm of a silent watcher is what tells.
pub async fn run(aws: SdkConfig, stack: String, metrics: Arc<WatchMetrics>, audit_log: PathBuf) {
    let endpoint = match Endpoint::of(&aws) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("--cloudwatch-stack: {e}: no metrics are put");
            return;
        }
    };
    let timeouts = contract::vault_http::Timeouts {
        connect: Duration::from_secs(5),
        request: Duration::from_secs(20),
    };
    let http = match contract::vault_http::client(None, timeouts, 1) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("--cloudwatch-stack: {e}: no metrics are put");
            return;
        }
    };
    let folder = audit_log
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut warned: Option<std::time::Instant> = None;
    tokio::time::sleep(FIRST).await;
    loop {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let live = alive(metrics.last_look.load(Ordering::Relaxed), now);
        let body = form(&stack, live, disk_used(&folder));
        match put(&http, &aws, &endpoint, body).await {
            Ok(()) => {
                metrics.count(|m| &m.heartbeats, 1);
                warned = None;
            }
            Err(e) => {
                metrics.count(|m| &m.heartbeats_failed, 1);
                if warned.is_none_or(|w| w.elapsed() >= WARN_SPELL) {
                    tracing::warn!("putting the watcher's metrics into CloudWatch: {e}");
                    warned = Some(std::time::Instant::now());
                }
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_is_a_look_within_the_last_minute() {
        assert!(alive(1_000, 1_000));
        assert!(alive(1_000, 1_060));
        assert!(!alive(1_000, 1_061));
        assert!(!alive(0, 5), "never looked");
    }

    #[test]
    fn the_disk_is_counted_as_df_counts_it() {
        // 100 blocks, 30 free of which 25 available to the unprivileged: 70 / 95.
        let used = used_percent(100, 30, 25).unwrap();
        assert!((used - 73.684).abs() < 0.001, "{used}");
        assert_eq!(used_percent(0, 0, 0), None);
        assert!(disk_used(Path::new("/")).is_some_and(|p| (0.0..=100.0).contains(&p)));
        assert_eq!(disk_used(Path::new("/no/such/folder")), None);
    }

    #[test]
    fn the_request_names_the_stack_and_escapes_every_value() {
        let body = form("s-1", true, Some(41.236));
        assert_eq!(
            body,
            "Action=PutMetricData&Version=2010-08-01&Namespace=VaultSecretsReplicator%2FHost%2Fs-1\
             &MetricData.member.1.MetricName=WatcherAlive&MetricData.member.1.Value=1\
             &MetricData.member.1.Unit=Count&MetricData.member.1.Dimensions.member.1.Name=Stack\
             &MetricData.member.1.Dimensions.member.1.Value=s-1\
             &MetricData.member.2.MetricName=AuditLogDiskUsedPercent\
             &MetricData.member.2.Value=41.24&MetricData.member.2.Unit=Percent\
             &MetricData.member.2.Dimensions.member.1.Name=Stack\
             &MetricData.member.2.Dimensions.member.1.Value=s-1"
        );
        assert!(form("s", false, None).contains("member.1.Value=0&"));
        assert!(!form("s", false, None).contains("member.2"));
    }

    #[test]
    fn the_endpoint_is_the_regions_unless_one_is_configured() {
        let config = |region: &str, url: Option<&str>| {
            let mut b = SdkConfig::builder()
                .region(aws_types::region::Region::new(region.to_owned()))
                .behavior_version(aws_config::BehaviorVersion::latest());
            if let Some(u) = url {
                b = b.endpoint_url(u);
            }
            b.build()
        };
        assert_eq!(
            Endpoint::of(&config("eu-west-1", None)).unwrap(),
            Endpoint {
                url: "https://monitoring.eu-west-1.amazonaws.com/".into(),
                host: "monitoring.eu-west-1.amazonaws.com".into(),
                region: "eu-west-1".into(),
            }
        );
        assert_eq!(
            Endpoint::of(&config("cn-north-1", None)).unwrap().host,
            "monitoring.cn-north-1.amazonaws.com.cn"
        );
        assert!(
            Endpoint::of(&config("us-east-1", Some("http://proxy.example:80")))
                .unwrap_err()
                .contains("in the clear")
        );
        assert!(Endpoint::of(&config("us-east-1", Some("http://127.0.0.1.example.com"))).is_err());
        let local = Endpoint::of(&config("us-east-1", Some("http://127.0.0.1:5000"))).unwrap();
        assert_eq!(
            (local.url.as_str(), local.host.as_str()),
            ("http://127.0.0.1:5000/", "127.0.0.1:5000")
        );
    }
}
