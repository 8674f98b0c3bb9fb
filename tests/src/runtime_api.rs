//! A small Lambda Runtime API server (the HTTP protocol Lambda speaks to a `provided.al2023`
//! runtime), so the real `bootstrap` binary can be invoked in tests. Loopback network I/O.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};

/// The environment Lambda gives a `provided.al2023` runtime, pointing at `api_addr`.
pub fn lambda_env(api_addr: &str, function: &str) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", api_addr),
        ("AWS_LAMBDA_FUNCTION_NAME", function),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "stream"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/replicator"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// What the runtime posted back for an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Response(String),
    Error(String),
    InitError(String),
}

#[derive(Debug)]
pub struct RuntimeApi {
    pub addr: String,
    events: mpsc::UnboundedSender<(String, String, u128)>,
    answers: mpsc::UnboundedReceiver<(String, Answer)>,
}

struct Shared {
    events: Mutex<mpsc::UnboundedReceiver<(String, String, u128)>>,
    answers: mpsc::UnboundedSender<(String, Answer)>,
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (an_tx, an_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            events: Mutex::new(ev_rx),
            answers: an_tx,
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Self {
            addr,
            events: ev_tx,
            answers: an_rx,
        }
    }

    /// Queues one invocation (its deadline two minutes on) and waits (up to `timeout`) for
    /// the runtime's answer.
    pub async fn invoke(
        &mut self,
        request_id: &str,
        event: &str,
        timeout: std::time::Duration,
    ) -> Answer {
        self.invoke_with_deadline(
            request_id,
            event,
            std::time::Duration::from_secs(120),
            timeout,
        )
        .await
    }

    /// [`RuntimeApi::invoke`] with the invocation's deadline `deadline_in` from now.
    pub async fn invoke_with_deadline(
        &mut self,
        request_id: &str,
        event: &str,
        deadline_in: std::time::Duration,
        timeout: std::time::Duration,
    ) -> Answer {
        let deadline = (std::time::SystemTime::now() + deadline_in)
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        self.events
            .send((request_id.to_owned(), event.to_owned(), deadline))
            .unwrap();
        let (id, answer) = tokio::time::timeout(timeout, self.answers.recv())
            .await
            .expect("the runtime did not answer in time")
            .expect("runtime API closed");
        if !matches!(answer, Answer::InitError(_)) {
            assert_eq!(id, request_id);
        }
        answer
    }
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if read.read_line(&mut h).await.unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if read.read_exact(&mut body).await.is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let response = if method == "GET" && path.ends_with("/runtime/invocation/next") {
            let next = shared.events.lock().await.recv().await;
            let Some((id, event, deadline)) = next else {
                return;
            };
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: {id}\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:replicator\r\nLambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000\r\nContent-Length: {}\r\n\r\n{event}",
                event.len()
            )
        } else if method == "POST" {
            let segments: Vec<&str> = path.split('/').collect();
            let answer = match segments.as_slice() {
                [.., "invocation", id, "response"] => {
                    Some((id.to_string(), Answer::Response(body)))
                }
                [.., "invocation", id, "error"] => Some((id.to_string(), Answer::Error(body))),
                [.., "init", "error"] => Some((String::new(), Answer::InitError(body))),
                _ => None,
            };
            match answer {
                Some(a) => {
                    let _ = shared.answers.send(a);
                    "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}".to_owned()
                }
                None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
            }
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()
        };
        if write.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The shipped `bootstrap` (profile `lambda`, musl), when `replicator/package-lambda.sh` built it
/// into the target directory this executable runs from.
pub fn built_bootstrap() -> Option<std::path::PathBuf> {
    let target = std::env::current_exe()
        .ok()?
        .ancestors()
        .nth(3)?
        .to_path_buf();
    Some(target.join("x86_64-unknown-linux-musl/lambda/bootstrap")).filter(|b| b.exists())
}

/// One invocation of the `bootstrap` at `bin` with `env` (beside a 128 MB function's Lambda
/// environment): its answer, the wall time, and its peak resident memory (VmHWM, as
/// `/proc` prints it).
pub async fn invoke_once(
    bin: &std::path::Path,
    env: Vec<(String, String)>,
    timeout: std::time::Duration,
) -> (Answer, std::time::Duration, String) {
    let mut api = RuntimeApi::start().await;
    let child = tokio::process::Command::new(bin)
        .env_clear()
        .envs(env)
        .envs(lambda_env(&api.addr, "replicator"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the bootstrap");
    let pid = child.id().expect("a running bootstrap");
    let started = std::time::Instant::now();
    let answer = api.invoke("bench-1", "{}", timeout).await;
    let wall = started.elapsed();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map_or_else(|| "?".to_owned(), |v| v.trim().to_owned());
    drop(child);
    (answer, wall, peak)
}
