//! A stand-in for Lambda's `Invoke` in front of moto, which runs no function: an `Invoke` of any
//! function becomes an invocation of the real `bootstrap` through the local Runtime API, and its
//! answer the response, as Lambda gives it (`X-Amz-Function-Error` on a failed run). Every other
//! request goes to moto untouched. Loopback network I/O only.

use std::sync::Arc;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use crate::runtime_api::{Answer, RuntimeApi};

/// A running stand-in; give its `url` to the client as the AWS endpoint.
#[derive(Debug)]
pub struct InvokeStandIn {
    pub url: String,
    /// The functions invoked and their payloads, in order.
    pub invoked: Arc<Mutex<Vec<(String, String)>>>,
}

struct Shared {
    upstream: String,
    api: Mutex<RuntimeApi>,
    invoked: Arc<Mutex<Vec<(String, String)>>>,
}

impl InvokeStandIn {
    pub async fn start(moto_url: &str, api: RuntimeApi) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let invoked = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            upstream: moto_url.trim_start_matches("http://").to_owned(),
            api: Mutex::new(api),
            invoked: invoked.clone(),
        });
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, shared.clone()));
            }
        });
        Self { url, invoked }
    }
}

/// The function named by an `Invoke` request line, if it is one.
fn invoked_function(request: &[u8]) -> Option<String> {
    let line = request.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let path = line.strip_prefix("POST ")?.split(' ').next()?;
    let name = path
        .strip_prefix("/2015-03-31/functions/")?
        .split('/')
        .next()?;
    path.contains("/invocations").then(|| {
        percent_decode(name)
            .rsplit(':')
            .find(|part| !part.is_empty())
            .unwrap_or_default()
            .to_owned()
    })
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn serve(client: TcpStream, shared: Arc<Shared>) {
    let mut reader = BufReader::new(client);
    let Some(request) = crate::fault_proxy::read_request(&mut reader).await else {
        return;
    };
    let mut client = reader.into_inner();
    if let Some(function) = invoked_function(&request) {
        let body_at = request
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(request.len(), |p| p + 4);
        let payload = String::from_utf8_lossy(&request[body_at..]).into_owned();
        shared
            .invoked
            .lock()
            .await
            .push((function, payload.clone()));
        let id = format!("invoke-{}", shared.invoked.lock().await.len());
        let answer = shared
            .api
            .lock()
            .await
            .invoke(&id, &payload, std::time::Duration::from_secs(120))
            .await;
        let (error, body) = match answer {
            Answer::Response(b) => (None, b),
            Answer::Error(b) | Answer::InitError(b) => (Some("Unhandled"), b),
        };
        let error = error
            .map(|e| format!("X-Amz-Function-Error: {e}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Amz-Executed-Version: $LATEST\r\n{error}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = client.write_all(head.as_bytes()).await;
        let _ = client.write_all(body.as_bytes()).await;
        let _ = client.shutdown().await;
        return;
    }
    let Some(answer) = crate::fault_proxy::exchange(&shared.upstream, &request).await else {
        return;
    };
    let _ = client.write_all(&answer).await;
    let _ = client.shutdown().await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_invoke_is_told_from_other_requests() {
        let req = |line: &str| format!("{line}\r\nHost: x\r\n\r\n{{}}").into_bytes();
        assert_eq!(
            super::invoked_function(&req(
                "POST /2015-03-31/functions/demo-replicator/invocations HTTP/1.1"
            ))
            .as_deref(),
            Some("demo-replicator")
        );
        assert_eq!(
            super::invoked_function(&req(
                "POST /2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Ademo/invocations HTTP/1.1"
            ))
            .as_deref(),
            Some("demo")
        );
        assert_eq!(
            super::invoked_function(&req("GET /2015-03-31/functions/demo HTTP/1.1")),
            None
        );
    }
}
