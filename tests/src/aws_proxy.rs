//! A loopback proxy in front of moto for what moto itself cannot show: a `ListSecrets` that lags
//! behind (a name left out of its pages), a `DescribeSecret` that resolves a name to another
//! secret (as AWS does with a partial ARN), an AWS error on one call for one secret, the answer
//! of an operation moto lacks (`ValidateResourcePolicy`); and a log of every Secrets Manager
//! call in the order it arrived (operation and secret, never a value), and of STS `AssumeRole`.
//! Everything else is forwarded untouched. Loopback network I/O only.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::fault_proxy::{exchange, read_request};

/// What the proxy changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// `ListSecrets` answers leave this secret out.
    HideFromListing(String),
    /// A `DescribeSecret` of `asked` is answered with `answer`'s description.
    DescribeAs { asked: String, answer: String },
    /// `op` on the secret `name` is answered with the AWS error `code` (400).
    Fail {
        op: String,
        name: String,
        code: String,
    },
    /// `op` (any secret) is answered with this JSON (200), as an operation moto lacks
    /// (`ValidateResourcePolicy`) would be.
    Answer { op: String, body: String },
}

#[derive(Debug)]
struct State {
    upstream: String,
    rewrites: Mutex<Vec<Rewrite>>,
    calls: Mutex<Vec<(String, String)>>,
}

/// A running proxy; it stops with the test's runtime.
#[derive(Debug, Clone)]
pub struct AwsProxy {
    /// `http://127.0.0.1:port`, to give the client instead of moto's address.
    pub url: String,
    state: Arc<State>,
}

impl AwsProxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let state = Arc::new(State {
            upstream: upstream
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned(),
            rewrites: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, s.clone()));
            }
        });
        Self { url, state }
    }

    pub fn set(&self, rewrites: Vec<Rewrite>) {
        *self.state.rewrites.lock().unwrap() = rewrites;
    }

    /// Every Secrets Manager call so far, in arrival order: (operation, secret id or name).
    pub fn calls(&self) -> Vec<(String, String)> {
        self.state.calls.lock().unwrap().clone()
    }

    /// The calls that change something (not `List*`, `Describe*` or `Get*`), in order.
    pub fn writes(&self) -> Vec<(String, String)> {
        self.calls()
            .into_iter()
            .filter(|(op, _)| {
                !(op.starts_with("List") || op.starts_with("Describe") || op.starts_with("Get"))
            })
            .collect()
    }

    pub fn clear_calls(&self) {
        self.state.calls.lock().unwrap().clear();
    }
}

/// The operation a JSON-protocol request names (`X-Amz-Target: secretsmanager.ListSecrets`).
fn operation(head: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("x-amz-target")
            .then(|| v.trim().rsplit('.').next().unwrap_or("").to_owned())
    })
}

/// An STS `AssumeRole` (query protocol, a form body): `("AssumeRole", "<role ARN>
/// external-id=<id>")`, what the trust policy of the role would check.
fn assumed_role(body: &[u8]) -> Option<(String, String)> {
    let form = std::str::from_utf8(body).ok()?;
    let field = |name: &str| {
        form.split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(percent_decoded)
    };
    (field("Action")? == "AssumeRole").then(|| {
        let id = format!(
            "{} external-id={}",
            field("RoleArn").unwrap_or_default(),
            field("ExternalId").unwrap_or_default()
        );
        ("AssumeRole".to_owned(), id)
    })
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits raw HTTP bytes at the blank line: (head, body).
fn split(raw: &[u8]) -> (String, Vec<u8>) {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |p| p + 4);
    (
        String::from_utf8_lossy(&raw[..at]).into_owned(),
        raw[at..].to_vec(),
    )
}

/// `head` (ending with the blank line) with its Content-Length set to `len`.
fn with_length(head: &str, len: usize) -> String {
    let mut out = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        if line.to_ascii_lowercase().starts_with("content-length:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {len}\r\n\r\n"));
    out
}

fn error_answer(code: &str) -> Vec<u8> {
    let body = serde_json::json!({"__type": code, "message": format!("injected by the test proxy: {code}")})
        .to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-ErrorType: {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn serve(client: TcpStream, state: Arc<State>) {
    let mut reader = BufReader::new(client);
    let Some(request) = read_request(&mut reader).await else {
        return;
    };
    let mut client = reader.into_inner();
    let (head, body) = split(&request);
    let mut json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (op, id) = match operation(&head) {
        Some(op) => {
            // A policy checked (`ValidateResourcePolicy`) is named by itself.
            let id = json["SecretId"]
                .as_str()
                .or_else(|| json["Name"].as_str())
                .or_else(|| json["ResourcePolicy"].as_str())
                .unwrap_or("")
                .to_owned();
            (op, id)
        }
        None => assumed_role(&body).unwrap_or_default(),
    };
    if !op.is_empty() {
        state.calls.lock().unwrap().push((op.clone(), id.clone()));
    }
    let rewrites = state.rewrites.lock().unwrap().clone();
    let mut request = request;
    for rewrite in &rewrites {
        match rewrite {
            Rewrite::Fail { op: o, name, code } if *o == op && *name == id => {
                let _ = client.write_all(&error_answer(code)).await;
                let _ = client.shutdown().await;
                return;
            }
            Rewrite::Answer { op: o, body } if *o == op => {
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = client.write_all(answer.as_bytes()).await;
                let _ = client.shutdown().await;
                return;
            }
            Rewrite::DescribeAs { asked, answer } if op == "DescribeSecret" && *asked == id => {
                json["SecretId"] = Value::String(answer.clone());
                let body = json.to_string();
                let mut bytes = with_length(&head, body.len()).into_bytes();
                bytes.extend_from_slice(body.as_bytes());
                request = bytes;
            }
            _ => {}
        }
    }
    let Some(answer) = exchange(&state.upstream, &request).await else {
        return;
    };
    let hidden: Vec<&String> = rewrites
        .iter()
        .filter_map(|r| match r {
            Rewrite::HideFromListing(name) => Some(name),
            _ => None,
        })
        .collect();
    let answer = if op == "ListSecrets" && !hidden.is_empty() {
        let (head, body) = split(&answer);
        match serde_json::from_slice::<Value>(&body) {
            Ok(mut page) => {
                if let Some(list) = page["SecretList"].as_array_mut() {
                    list.retain(|s| !hidden.iter().any(|h| s["Name"].as_str() == Some(h)));
                }
                let body = page.to_string();
                let mut bytes = with_length(&head, body.len()).into_bytes();
                bytes.extend_from_slice(body.as_bytes());
                bytes
            }
            Err(_) => answer,
        }
    } else {
        answer
    };
    let _ = client.write_all(&answer).await;
    let _ = client.shutdown().await;
}
