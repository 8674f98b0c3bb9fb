//! A fault-injecting HTTP/1.1 proxy for the tests: it sits between the replicator and a real
//! server (OpenBao or moto) on 127.0.0.1 and, for a share of the requests, resets the
//! connection, answers 5xx or a throttling error in the server's own dialect, adds latency, or
//! cuts the answer in the middle of its body. The rest it forwards untouched. Whether a request
//! meets a fault, and which, is a function of the seed, the request itself (its request line and
//! body, never the headers that carry a time or an attempt number) and how many times that same
//! request came before: a failing run replays with the seed it prints, whatever order the
//! requests of a concurrent run arrive in. Loopback network I/O only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Whose dialect an injected error answer speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `{"errors": [...]}` with 429 or 503.
    Vault,
    /// AWS's JSON protocol: `{"__type": "ThrottlingException", ...}` with 400, or a 503.
    Aws,
}

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// The connection is closed without an answer.
    Reset,
    /// 503 Service Unavailable.
    Unavailable,
    /// 429 (Vault) or ThrottlingException (AWS).
    Throttled,
    /// 200 ms before forwarding.
    Latency,
    /// The answer's headers and half its body, then the connection is closed.
    CutMidBody,
}

const ALL: [Fault; 5] = [
    Fault::Reset,
    Fault::Unavailable,
    Fault::Throttled,
    Fault::Latency,
    Fault::CutMidBody,
];

#[derive(Debug)]
struct State {
    upstream: String,
    dialect: Dialect,
    /// Faults per 1,000 requests.
    per_mille: AtomicU32,
    seed: u64,
    /// How many times each request (by its digest) came so far.
    seen: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
    /// Requests seen, and faults injected by kind (indexed as `ALL`).
    requests: AtomicU64,
    injected: [AtomicU64; 5],
    stopped: AtomicBool,
}

/// A running proxy; dropping it stops accepting.
#[derive(Debug)]
pub struct FaultProxy {
    /// `http://127.0.0.1:port`, to give the client instead of the server's address.
    pub url: String,
    pub seed: u64,
    state: Arc<State>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://127.0.0.1:port`) injecting faults into
    /// `per_mille` of 1,000 requests, drawn from `seed`.
    pub async fn start(upstream: &str, dialect: Dialect, per_mille: u32, seed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let state = Arc::new(State {
            upstream: upstream
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned(),
            dialect,
            per_mille: AtomicU32::new(per_mille),
            seed,
            seen: Default::default(),
            requests: AtomicU64::new(0),
            injected: Default::default(),
            stopped: AtomicBool::new(false),
        });
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if s.stopped.load(Ordering::Relaxed) {
                    break;
                }
                tokio::spawn(serve(client, s.clone()));
            }
        });
        Self { url, seed, state }
    }

    /// Changes the share of faulty requests (0 stops injecting).
    pub fn set_per_mille(&self, per_mille: u32) {
        self.state.per_mille.store(per_mille, Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Faults injected so far, by kind.
    pub fn injected(&self) -> Vec<(Fault, u64)> {
        ALL.iter()
            .zip(&self.state.injected)
            .map(|(f, n)| (*f, n.load(Ordering::Relaxed)))
            .collect()
    }

    pub fn injected_total(&self) -> u64 {
        self.injected().iter().map(|(_, n)| n).sum()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::Relaxed);
    }
}

/// splitmix64: a well-mixed 64-bit value of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a over the request line and the body: what identifies a request across runs (the
/// headers carry the time, a signature, an attempt number).
fn request_digest(request: &[u8]) -> u64 {
    let head_end = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(request.len(), |p| p + 4);
    let line_end = request
        .iter()
        .position(|b| *b == b'\r')
        .unwrap_or(head_end)
        .min(head_end);
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in request[..line_end].iter().chain(&request[head_end..]) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01B3);
    }
    h
}

impl State {
    /// The fault of `request`, the n-th time it comes: a function of the seed, the request and n.
    fn draw(&self, request: &[u8]) -> Option<Fault> {
        let per_mille = u64::from(self.per_mille.load(Ordering::Relaxed));
        if per_mille == 0 {
            return None;
        }
        let digest = request_digest(request);
        let n = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let n = seen.entry(digest).or_default();
            *n += 1;
            *n
        };
        let x = mix(self.seed ^ mix(digest ^ mix(n)));
        if x % 1000 >= per_mille {
            return None;
        }
        let fault = ALL[(mix(x) % ALL.len() as u64) as usize];
        let i = ALL.iter().position(|f| *f == fault).unwrap_or(0);
        self.injected[i].fetch_add(1, Ordering::Relaxed);
        Some(fault)
    }

    fn error_answer(&self, fault: Fault) -> String {
        let (status, body) = match (self.dialect, fault) {
            (Dialect::Vault, Fault::Throttled) => (
                429,
                r#"{"errors":["injected: request rate limit exceeded"]}"#,
            ),
            (Dialect::Vault, _) => (503, r#"{"errors":["injected: service unavailable"]}"#),
            (Dialect::Aws, Fault::Throttled) => (
                400,
                r#"{"__type":"ThrottlingException","message":"injected: Rate exceeded"}"#,
            ),
            (Dialect::Aws, _) => (
                503,
                r#"{"__type":"ServiceUnavailable","message":"injected: service unavailable"}"#,
            ),
        };
        format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nx-amzn-ErrorType: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            if status == 400 {
                "ThrottlingException"
            } else {
                "ServiceUnavailable"
            },
            body.len()
        )
    }
}

/// Reads one request (head and body) from the client; `None` at the end of the connection.
pub(crate) async fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut content_length = 0usize;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().ok()?;
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        // Every forwarded request closes its upstream connection after the answer, so the
        // answer ends where the upstream closes, however it is framed.
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" || line == "\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    if chunked {
        loop {
            let mut size_line = String::new();
            if reader.read_line(&mut size_line).await.ok()? == 0 {
                return None;
            }
            head.extend_from_slice(size_line.as_bytes());
            let size = usize::from_str_radix(size_line.trim(), 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await.ok()?;
            head.extend_from_slice(&chunk);
            if size == 0 {
                break;
            }
        }
    } else {
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body).await.ok()?;
        head.extend_from_slice(&body);
    }
    Some(head)
}

/// Sends one request (which asks to close the connection after it) to `upstream`
/// (`host:port`) and reads its answer; `None` when it cannot be sent or takes over a minute.
pub(crate) async fn exchange(upstream: &str, request: &[u8]) -> Option<Vec<u8>> {
    let mut upstream = TcpStream::connect(upstream).await.ok()?;
    upstream.write_all(request).await.ok()?;
    let mut answer = Vec::new();
    // What came before a read error is forwarded as it is (a cut answer stays cut).
    let _ = tokio::time::timeout(Duration::from_secs(60), upstream.read_to_end(&mut answer))
        .await
        .ok()?;
    Some(answer)
}

/// Makes the coming close a reset rather than an orderly end: linger 0. (Deprecated in tokio
/// because a lingering close blocks the thread on drop; a zero linger does not wait.)
#[allow(deprecated)]
fn reset(client: &TcpStream) {
    let _ = client.set_linger(Some(Duration::ZERO));
}

async fn serve(client: TcpStream, state: Arc<State>) {
    let mut reader = BufReader::new(client);
    let Some(request) = tokio::time::timeout(Duration::from_secs(30), read_request(&mut reader))
        .await
        .ok()
        .flatten()
    else {
        return;
    };
    state.requests.fetch_add(1, Ordering::Relaxed);
    let mut client = reader.into_inner();
    let fault = state.draw(&request);
    match fault {
        Some(Fault::Reset) => {
            reset(&client);
            return;
        }
        Some(f @ (Fault::Unavailable | Fault::Throttled)) => {
            let _ = client.write_all(state.error_answer(f).as_bytes()).await;
            let _ = client.shutdown().await;
            return;
        }
        Some(Fault::Latency) => tokio::time::sleep(Duration::from_millis(200)).await,
        _ => {}
    }
    let Some(answer) = exchange(&state.upstream, &request).await else {
        return;
    };
    if fault == Some(Fault::CutMidBody) {
        let body_start = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |p| p + 4);
        let cut = body_start + (answer.len() - body_start) / 2;
        let _ = client.write_all(&answer[..cut.max(body_start)]).await;
        reset(&client);
        return;
    }
    let _ = client.write_all(&answer).await;
    let _ = client.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(seed: u64, per_mille: u32) -> State {
        State {
            upstream: String::new(),
            dialect: Dialect::Aws,
            per_mille: AtomicU32::new(per_mille),
            seed,
            seen: Default::default(),
            requests: AtomicU64::new(0),
            injected: Default::default(),
            stopped: AtomicBool::new(false),
        }
    }

    /// The same seed gives each request the same fault in whatever order the requests come,
    /// a retry of one its own draw; headers (a time, an attempt number) change nothing.
    #[test]
    fn a_seed_replays_each_requests_fault_whatever_the_order() {
        let requests: Vec<Vec<u8>> = (0..200)
            .map(|i| {
                format!(
                    "POST / HTTP/1.1\r\nX-Amz-Date: {i}\r\n\r\n{{\"SecretId\":\"s{}\"}}",
                    i % 150
                )
                .into_bytes()
            })
            .collect();
        let draws = |order: &mut dyn Iterator<Item = usize>| {
            let s = state(42, 300);
            let mut out: Vec<(usize, Option<Fault>)> =
                order.map(|i| (i, s.draw(&requests[i]))).collect();
            out.sort_by_key(|(i, _)| *i);
            out
        };
        let forward = draws(&mut (0..200));
        // Reversed, except that the repeats of one request keep their order (a retry comes
        // after the attempt it retries).
        let mut reversed: Vec<usize> = (0..150).rev().collect();
        reversed.extend(150..200);
        assert_eq!(forward, draws(&mut reversed.into_iter()));
        let faulty = forward.iter().filter(|(_, f)| f.is_some()).count();
        assert!((30..90).contains(&faulty), "{faulty} of 200 at 30 %");
        // Another seed, other faults.
        let s = state(43, 300);
        let other: Vec<Option<Fault>> = requests.iter().map(|r| s.draw(r)).collect();
        assert_ne!(forward.iter().map(|(_, f)| *f).collect::<Vec<_>>(), other);
    }
}
