//! A loopback stand-in for Vault's HTTP API, for what a real OpenBao cannot show: an AWS IAM
//! login (no such auth method in OpenBao) and answers only a busy server gives (a KV v2 mount
//! still upgrading, a standby node). Serves canned answers in order, one request per
//! connection, and records what it received.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request as received: request line, header block, body.
#[derive(Debug, Clone)]
pub struct Seen {
    pub line: String,
    pub headers: String,
    pub body: String,
}

/// Starts the stand-in; it answers `answers` (status, JSON body) in order, then stops and
/// yields what it received. Returns its `http://127.0.0.1:port` address.
pub async fn fake_vault(answers: Vec<(u16, &'static str)>) -> (String, JoinHandle<Vec<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for (status, answer) in answers {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            let mut headers = String::new();
            let mut len = 0;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).await.unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                headers.push_str(&h);
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).await.unwrap();
            seen.push(Seen {
                line: line.trim().to_owned(),
                headers,
                body: String::from_utf8(body).unwrap(),
            });
            let resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{answer}",
                answer.len()
            );
            w.write_all(resp.as_bytes()).await.unwrap();
        }
        seen
    });
    (addr, task)
}
