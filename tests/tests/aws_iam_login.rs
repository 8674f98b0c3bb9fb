//! The AWS IAM login as Vault receives it. OpenBao has no built-in AWS auth method, so a small
//! loopback server stands in for Vault's HTTP API and records what the replicator's client sends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use replicator::vault::{VaultAuth, VaultClient};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Serves `answers` in order, one request per connection, and returns what it received.
async fn fake_vault(
    answers: Vec<&'static str>,
) -> (
    String,
    tokio::task::JoinHandle<Vec<(String, String, String)>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for answer in answers {
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
            seen.push((
                line.trim().to_owned(),
                headers,
                String::from_utf8(body).unwrap(),
            ));
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{answer}",
                answer.len()
            );
            w.write_all(resp.as_bytes()).await.unwrap();
        }
        seen
    });
    (addr, task)
}

#[tokio::test]
async fn the_client_logs_in_with_a_signed_get_caller_identity() {
    let (addr, server) = fake_vault(vec![
        r#"{"auth":{"client_token":"s.from-aws-login","lease_duration":900}}"#,
        r#"{"data":{"keys":["a"]}}"#,
    ])
    .await;
    let creds = aws_credential_types::Credentials::new(
        "AKIDTEST",
        "not-a-real-secret-key",
        None,
        None,
        "test",
    );
    let client = VaultClient::new(
        &addr,
        VaultAuth::AwsIam {
            mount: "aws".into(),
            role: "replicator".into(),
            server_id: Some("vault.example.com".into()),
            credentials: aws_credential_types::provider::SharedCredentialsProvider::new(creds),
        },
        None,
        2,
    )
    .unwrap();
    let listing = client.list("kv", "").await.unwrap();
    assert_eq!(listing.keys, ["a"]);
    let seen = server.await.unwrap();

    let (line, _, body) = &seen[0];
    assert_eq!(line, "POST /v1/auth/aws/login HTTP/1.1");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["role"], "replicator");
    let decode = |v: &serde_json::Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        decode(&body["iam_request_body"]),
        "Action=GetCallerIdentity&Version=2011-06-15"
    );
    let headers: serde_json::Value =
        serde_json::from_str(&decode(&body["iam_request_headers"])).unwrap();
    assert!(
        headers["Authorization"][0]
            .as_str()
            .unwrap()
            .contains("Credential=AKIDTEST/")
    );
    assert_eq!(headers["X-Vault-Aws-Iam-Server-Id"][0], "vault.example.com");
    assert!(
        !seen[0].2.contains("not-a-real-secret-key"),
        "the secret key never leaves the process"
    );

    let (line, headers, _) = &seen[1];
    assert_eq!(line, "LIST /v1/kv/metadata/ HTTP/1.1");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("x-vault-token: s.from-aws-login")
    );
}
