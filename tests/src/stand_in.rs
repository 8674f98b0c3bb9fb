//! A loopback stand-in for Vault's HTTP API, for what a real OpenBao cannot show: an AWS IAM
//! login (no such auth method in OpenBao) and answers only a busy server gives (a KV v2 mount
//! still upgrading, a standby node). Serves canned answers in order, one request per
//! connection, and records what it received, extra requests included (answered 500), so a
//! test that counts requests sees every one. Never waits forever: no connection for 30 s, or a
//! request not read within 10 s, ends it.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One request as received: request line, header block, body.
#[derive(Debug, Clone)]
pub struct Seen {
    pub line: String,
    pub headers: String,
    pub body: String,
}

/// The answer to a request past the canned ones.
pub const UNEXPECTED: (u16, &str) = (500, r#"{"errors":["stand-in: unexpected request"]}"#);

/// A running stand-in; [`StandIn::finish`] stops it and gives what it received.
#[derive(Debug)]
pub struct StandIn {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Vec<Seen>>,
}

impl StandIn {
    /// Stops accepting and returns every request received, in order, extra ones included.
    pub async fn finish(mut self) -> Vec<Seen> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the stand-in did not stop")
            .expect("the stand-in panicked")
    }
}

/// An HTTP response with a JSON body.
pub fn json_response(status: u16, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Starts the stand-in; it answers `answers` (status, JSON body) in order, then [`UNEXPECTED`].
/// Returns its `http://127.0.0.1:port` address.
pub async fn fake_vault(answers: Vec<(u16, &'static str)>) -> (String, StandIn) {
    fake_http(
        answers
            .into_iter()
            .map(|(status, body)| json_response(status, body))
            .collect(),
    )
    .await
}

/// [`fake_vault`] with whole HTTP responses (status line, headers, body) as written.
pub async fn fake_http(answers: Vec<String>) -> (String, StandIn) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, mut stop) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut answers = answers.into_iter();
        loop {
            let accepted = tokio::select! {
                biased;
                _ = &mut stop => break,
                a = tokio::time::timeout(Duration::from_secs(30), listener.accept()) => a,
            };
            let Ok(Ok((stream, _))) = accepted else { break };
            let answer = answers
                .next()
                .unwrap_or_else(|| json_response(UNEXPECTED.0, UNEXPECTED.1));
            match tokio::time::timeout(Duration::from_secs(10), serve(stream, &answer)).await {
                Ok(Some(request)) => seen.push(request),
                _ => break,
            }
        }
        seen
    });
    (
        addr,
        StandIn {
            stop: Some(stop_tx),
            task,
        },
    )
}

/// Reads one request and writes the answer; `None` when the request could not be read.
async fn serve(stream: TcpStream, answer: &str) -> Option<Seen> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line).await.ok()?;
    let mut headers = String::new();
    let mut len = 0;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await.ok()? == 0 {
            return None;
        }
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
        headers.push_str(&h);
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await.ok()?;
    w.write_all(answer.as_bytes()).await.ok()?;
    Some(Seen {
        line: line.trim().to_owned(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
