//! `replicator watch --metrics-addr`: the watcher's counters in Prometheus' text format at
//! `/metrics`, served on the address the operator gives (which decides what may scrape it).
//! Names and numbers only. Loopback or LAN network I/O.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The upper bounds (seconds) of the batch lag histogram's buckets (`+Inf` besides).
pub const LAG_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// The watcher's counters, shared between its loop, its reader thread and the endpoint.
#[derive(Debug, Default)]
pub struct WatchMetrics {
    /// Audit log lines read.
    pub lines: AtomicU64,
    /// Changes of a synced secret read from the log (one per successful write).
    pub changes: AtomicU64,
    pub batches_ok: AtomicU64,
    pub batches_failed: AtomicU64,
    pub full_ok: AtomicU64,
    pub full_failed: AtomicU64,
    /// Changes seen and not yet delivered.
    pub pending: AtomicU64,
    /// When the reader last read the log without an error (Unix seconds): the tail's liveness.
    pub last_look: AtomicU64,
    /// Reads of the log that failed (a missing file, no permission).
    pub read_errors: AtomicU64,
    /// Liveness reports put into CloudWatch (`--cloudwatch-stack`), and those that failed.
    pub heartbeats: AtomicU64,
    pub heartbeats_failed: AtomicU64,
    /// Per bucket of [`LAG_BUCKETS`], then `+Inf`: batches delivered within it.
    lag_buckets: [AtomicU64; LAG_BUCKETS.len() + 1],
    /// The lags' sum, in microseconds.
    lag_sum_us: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl WatchMetrics {
    pub fn count(&self, c: impl Fn(&Self) -> &AtomicU64, n: u64) {
        add(c(self), n);
    }

    /// The reader looked at the log now.
    pub fn looked(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.last_look.store(now, Ordering::Relaxed);
    }

    /// A batch delivered `lag` after its first change was read.
    pub fn observe_lag(&self, lag: Duration) {
        let secs = lag.as_secs_f64();
        let bucket = LAG_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LAG_BUCKETS.len());
        add(&self.lag_buckets[bucket], 1);
        add(&self.lag_sum_us, lag.as_micros() as u64);
    }

    /// Prometheus' text format (version 0.0.4).
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP vault_secrets_replicator_{name} {help}");
            let _ = writeln!(out, "# TYPE vault_secrets_replicator_{name} {kind}");
            for (labels, v) in lines {
                let _ = writeln!(out, "vault_secrets_replicator_{name}{labels} {v}");
            }
        };
        metric(
            "audit_lines_total",
            "counter",
            "Audit log lines read.",
            &[(String::new(), get(&self.lines))],
        );
        metric(
            "changes_seen_total",
            "counter",
            "Changes of a synced secret read from the audit log.",
            &[(String::new(), get(&self.changes))],
        );
        let outcomes = |ok: &AtomicU64, failed: &AtomicU64| {
            vec![
                ("{outcome=\"ok\"}".to_owned(), get(ok)),
                ("{outcome=\"failed\"}".to_owned(), get(failed)),
            ]
        };
        metric(
            "batches_total",
            "counter",
            "Batches of changed secrets delivered, by outcome.",
            &outcomes(&self.batches_ok, &self.batches_failed),
        );
        metric(
            "full_syncs_total",
            "counter",
            "Full syncs run, by outcome.",
            &outcomes(&self.full_ok, &self.full_failed),
        );
        metric(
            "pending_changes",
            "gauge",
            "Changes seen and not yet delivered.",
            &[(String::new(), get(&self.pending))],
        );
        metric(
            "tail_last_read_timestamp_seconds",
            "gauge",
            "When the watcher last read the audit log without an error (Unix time): its liveness.",
            &[(String::new(), get(&self.last_look))],
        );
        metric(
            "audit_read_errors_total",
            "counter",
            "Reads of the audit log that failed.",
            &[(String::new(), get(&self.read_errors))],
        );
        metric(
            "cloudwatch_heartbeats_total",
            "counter",
            "Liveness reports put into CloudWatch (--cloudwatch-stack), by outcome.",
            &outcomes(&self.heartbeats, &self.heartbeats_failed),
        );
        let _ = writeln!(
            out,
            "# HELP vault_secrets_replicator_batch_lag_seconds From a batch's first change read to its delivery."
        );
        let _ = writeln!(
            out,
            "# TYPE vault_secrets_replicator_batch_lag_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, bound) in LAG_BUCKETS.iter().enumerate() {
            cumulative += get(&self.lag_buckets[i]);
            let _ = writeln!(
                out,
                "vault_secrets_replicator_batch_lag_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += get(&self.lag_buckets[LAG_BUCKETS.len()]);
        let _ = writeln!(
            out,
            "vault_secrets_replicator_batch_lag_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "vault_secrets_replicator_batch_lag_seconds_sum {}",
            get(&self.lag_sum_us) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "vault_secrets_replicator_batch_lag_seconds_count {cumulative}"
        );
        out
    }
}

/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` on `listener` until the runtime stops; anything else is a 404. At most
/// [`MAX_CONNECTIONS`] at once, each given 5 s for its whole exchange; an accept that fails
/// (no file handle left) is said and tried again a moment later, never the end of the
/// endpoint.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<WatchMetrics>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            Err(e) => {
                tracing::warn!("metrics endpoint: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let exchange = async {
                let mut buf = [0u8; 1024];
                let n = conn.read(&mut buf).await?;
                let request = String::from_utf8_lossy(&buf[..n]);
                let line = request.lines().next().unwrap_or_default();
                let words: Vec<&str> = line.split_whitespace().take(2).collect();
                let (status, body) = match words[..] {
                    ["GET", "/metrics"] => ("200 OK", metrics.render()),
                    _ => ("404 Not Found", "not found: GET /metrics\n".to_owned()),
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(answer.as_bytes()).await?;
                conn.shutdown().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), exchange).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_counters_a_gauge_and_a_cumulative_histogram() {
        let m = WatchMetrics::default();
        m.count(|m| &m.changes, 3);
        m.count(|m| &m.batches_ok, 2);
        m.observe_lag(Duration::from_millis(300));
        m.observe_lag(Duration::from_secs(400));
        let text = m.render();
        assert!(
            text.contains("vault_secrets_replicator_changes_seen_total 3\n"),
            "{text}"
        );
        assert!(text.contains("vault_secrets_replicator_batches_total{outcome=\"ok\"} 2\n"));
        assert!(
            text.contains("vault_secrets_replicator_batch_lag_seconds_bucket{le=\"0.25\"} 0\n")
        );
        assert!(text.contains("vault_secrets_replicator_batch_lag_seconds_bucket{le=\"0.5\"} 1\n"));
        assert!(text.contains("vault_secrets_replicator_batch_lag_seconds_bucket{le=\"300\"} 1\n"));
        assert!(
            text.contains("vault_secrets_replicator_batch_lag_seconds_bucket{le=\"+Inf\"} 2\n")
        );
        assert!(text.contains("vault_secrets_replicator_batch_lag_seconds_count 2\n"));
        assert!(text.contains("vault_secrets_replicator_batch_lag_seconds_sum 400.3\n"));
        // Every sample line belongs to a declared metric.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {base} ")), "{line}");
        }
    }
}
