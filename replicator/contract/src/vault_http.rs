//! The one way both programs talk HTTP to Vault: a client that verifies TLS against the given
//! CA (or the system roots), never follows a redirect (it would carry the token to wherever it
//! points), and has timeouts; and answers read whole or refused (a body over its cap, or cut
//! short, is an error, never an empty answer). Nothing else in the workspace builds an HTTP
//! client for Vault (clippy's `disallowed-methods` in `clippy.toml`).

use std::time::Duration;

/// The largest answer read from Vault (a bulk listing of a large folder is a few MB): a hostile
/// or broken server cannot make either program hold more.
pub const MAX_BODY: u64 = 64 * 1024 * 1024;
/// The largest error answer read.
pub const MAX_ERROR_BODY: u64 = 64 * 1024;

/// How a client waits.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
}

/// A client for Vault at one address. `ca_pem` is trusted *instead of* the system roots when
/// given; certificate verification is never turned off. `idle_per_host`: connections kept.
#[allow(clippy::disallowed_methods)] // the one place a Vault client is built
pub fn client(
    ca_pem: Option<&str>,
    timeouts: Timeouts,
    idle_per_host: usize,
) -> Result<reqwest::Client, String> {
    crate::tls::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        // A redirect would carry the token to wherever it points: never follow one.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .pool_max_idle_per_host(idle_per_host.max(1))
        .user_agent(concat!(
            "vault-secrets-replicator/",
            env!("CARGO_PKG_VERSION")
        ));
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| format!("the CA certificate is not valid PEM: {e}"))?;
        if certs.is_empty() {
            return Err("the CA certificate PEM holds no certificate".into());
        }
        builder = builder.tls_certs_only(certs);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// What a redirect answer says, for the error: Vault itself never redirects a client that
/// talks to its active node's address, so the address is not Vault's own.
pub fn redirect_problem(resp: &reqwest::Response) -> Option<String> {
    resp.status().is_redirection().then(|| {
        let to = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| reqwest::Url::parse(l).ok())
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "elsewhere".into());
        format!(
            "HTTP {}: a redirect to {to}, which is never followed (the token would go with it): use the address of Vault itself",
            resp.status().as_u16()
        )
    })
}

/// Reads a body of at most `cap` bytes, refusing a larger one before or while reading it, and
/// one cut short.
pub async fn read_capped(mut resp: reqwest::Response, cap: u64) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(format!("the answer is over {cap} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("the answer was cut short: {e}"))?
    {
        if body.len() as u64 + chunk.len() as u64 > cap {
            return Err(format!("the answer is over {cap} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Vault's `{"errors": [...]}` of a failed answer (none when the body is not that, or too big).
pub async fn error_messages(resp: reqwest::Response) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        #[serde(default)]
        errors: Vec<String>,
    }
    read_capped(resp, MAX_ERROR_BODY)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<ErrorBody>(&b).ok())
        .map(|b| b.errors)
        .unwrap_or_default()
}

/// What is wrong with some JSON, never quoting it: serde's own message can quote a string of the
/// input (a value, a token), so only the category and the position are said.
pub fn json_problem(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "a field is missing or has the wrong type",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-answer HTTP server on loopback: what it received, once it answered `answer`.
    async fn answering(answer: String) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let Ok(Ok((mut conn, _))) =
                tokio::time::timeout(Duration::from_secs(2), listener.accept()).await
            else {
                return String::new();
            };
            let mut buf = vec![0; 8192];
            let n = conn.read(&mut buf).await.unwrap_or(0);
            let _ = conn.write_all(answer.as_bytes()).await;
            let _ = conn.shutdown().await;
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (url, served)
    }

    const T: Timeouts = Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn a_redirect_is_never_followed_with_the_token() {
        let (elsewhere, seen_elsewhere) =
            answering("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".into()).await;
        let (vault, _) = answering(format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere}/v1/sys/init\r\ncontent-length: 0\r\n\r\n"
        ))
        .await;
        let http = client(None, T, 1).unwrap();
        let resp = http
            .get(format!("{vault}/v1/sys/init"))
            .header("X-Vault-Token", "root-token-never-sent-on")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 307);
        let problem = redirect_problem(&resp).unwrap();
        assert!(
            problem.contains("127.0.0.1") && problem.contains("never followed"),
            "{problem}"
        );
        assert_eq!(
            seen_elsewhere.await.unwrap(),
            "",
            "nothing reached the other host"
        );
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_not_an_empty_answer() {
        let (vault, _) =
            answering("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"initialized\":".into())
                .await;
        let http = client(None, T, 1).unwrap();
        let resp = http
            .get(format!("{vault}/v1/sys/init"))
            .send()
            .await
            .unwrap();
        let err = read_capped(resp, MAX_BODY).await.unwrap_err();
        assert!(err.contains("cut short"), "{err}");
        let (vault, _) = answering("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n".into()).await;
        let resp = http
            .get(format!("{vault}/v1/sys/init"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            read_capped(resp, 10).await.unwrap_err(),
            "the answer is over 10 bytes"
        );
    }
}
