//! What the replicator's Vault client does where OpenBao cannot show it, against a loopback
//! stand-in for Vault's HTTP API: the AWS IAM login as Vault receives it (OpenBao has no AWS
//! auth method), and transient answers (a KV v2 mount still upgrading, a standby node) tried
//! again while other errors are not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use e2e::stand_in::fake_vault;
use replicator::vault::{VaultClient, VaultLogin};

#[tokio::test]
async fn the_client_logs_in_with_a_signed_get_caller_identity() {
    let (addr, server) = fake_vault(vec![
        (
            200,
            r#"{"auth":{"client_token":"s.from-aws-login","lease_duration":900}}"#,
        ),
        (200, r#"{"data":{"keys":["a"]}}"#),
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
        VaultLogin::AwsIam {
            mount: "aws".into(),
            role: "replicator".into(),
            server_id: Some("vault.example.com".into()),
            sts: replicator::aws_auth::StsEndpoint::default(),
        },
        None,
        2,
    )
    .unwrap()
    .with_aws_credentials(Some(
        aws_credential_types::provider::SharedCredentialsProvider::new(creds),
    ));
    let listing = client.list("kv", "").await.unwrap();
    assert_eq!(listing.keys, ["a"]);
    let seen = server.finish().await;

    let (line, body) = (&seen[0].line, &seen[0].body);
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
        !seen[0].body.contains("not-a-real-secret-key"),
        "the secret key never leaves the process"
    );

    let (line, headers) = (&seen[1].line, &seen[1].headers);
    assert_eq!(line, "LIST /v1/kv/metadata/ HTTP/1.1");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("x-vault-token: s.from-aws-login")
    );
}

const UPGRADING: &str = r#"{"errors":["Upgrading from non-versioned to versioned data. This backend will be unavailable for a brief period and will resume service shortly."]}"#;

fn token_client(addr: &str) -> VaultClient {
    VaultClient::new(
        addr,
        VaultLogin::Token(contract::secret::SecretString::new("s.test".into())),
        None,
        2,
    )
    .unwrap()
}

#[tokio::test]
async fn an_upgrading_mount_and_a_standby_node_are_tried_again() {
    let (addr, server) = fake_vault(vec![
        (400, UPGRADING),
        (503, r#"{"errors":["Vault is sealed"]}"#),
        (200, r#"{"data":{"keys":["a","b/"]}}"#),
    ])
    .await;
    let client = token_client(&addr);
    let listing = client.list("kv", "").await.unwrap();
    assert_eq!(listing.keys, ["a", "b/"]);
    assert_eq!(server.finish().await.len(), 3);
    assert_eq!(client.counters.snapshot()["retry"], 2);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_tried_again() {
    for status in [429, 500, 502, 504] {
        let (addr, server) = fake_vault(vec![
            (status, r#"{"errors":["busy"]}"#),
            (200, r#"{"data":{"keys":["a"]}}"#),
        ])
        .await;
        let client = token_client(&addr);
        let listing = client.list("kv", "").await.unwrap();
        assert_eq!(listing.keys, ["a"], "{status}");
        assert_eq!(server.finish().await.len(), 2, "{status}");
        assert_eq!(client.counters.snapshot()["retry"], 1, "{status}");
    }
    // A client error is not: 403 fails at once.
    let (addr, server) = fake_vault(vec![(403, r#"{"errors":["permission denied"]}"#)]).await;
    let client = token_client(&addr);
    assert!(client.list("kv", "").await.is_err());
    assert_eq!(server.finish().await.len(), 1);
}

#[tokio::test]
async fn a_value_read_is_tried_again_and_gives_up_after_four_tries() {
    let (addr, server) = fake_vault(vec![(400, UPGRADING); 4]).await;
    let client = token_client(&addr);
    let err = client
        .read_version("kv", "a", 3, 1 << 20)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("Upgrading"), "{err}");
    let seen = server.finish().await;
    assert_eq!(seen.len(), 4);
    assert!(
        seen.iter()
            .all(|s| s.line == "GET /v1/kv/data/a?version=3 HTTP/1.1")
    );
}

#[tokio::test]
async fn other_errors_fail_at_once() {
    let (addr, server) = fake_vault(vec![(400, r#"{"errors":["invalid path"]}"#)]).await;
    let client = token_client(&addr);
    let err = client.read_metadata("kv", "a").await.unwrap_err();
    assert!(!err.is_transient());
    assert_eq!(err.kind(), "vault_error");
    assert_eq!(server.finish().await.len(), 1);
    assert_eq!(client.counters.snapshot()["retry"], 0);
}

#[tokio::test]
async fn a_404_that_is_not_vaults_is_an_error_not_an_empty_folder() {
    // A web server (or Vault behind a wrong path) answers 404 with its own page.
    let (addr, server) = fake_vault(vec![(404, "<html><body>Not Found</body></html>")]).await;
    let client = token_client(&addr);
    let err = client.list("kv", "").await.unwrap_err();
    assert_eq!(err.kind(), "vault_bad_response", "{err}");
    assert!(err.to_string().contains("not Vault's"), "{err}");
    assert_eq!(server.finish().await.len(), 1);

    // Vault's own 404 for a missing path: an empty folder.
    let (addr, server) = fake_vault(vec![(404, r#"{"errors":[]}"#)]).await;
    let listing = token_client(&addr).list("kv", "nothing/").await.unwrap();
    assert!(listing.keys.is_empty());
    assert_eq!(server.finish().await.len(), 1);
}

#[tokio::test]
async fn a_redirect_is_never_followed_so_the_token_stays_home() {
    let (elsewhere, other) = fake_vault(vec![(200, r#"{"data":{"keys":["stolen"]}}"#)]).await;
    let (addr, server) = e2e::stand_in::fake_http(vec![format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {elsewhere}/v1/kv/metadata/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )])
    .await;
    let err = token_client(&addr).list("kv", "").await.unwrap_err();
    // Not Vault's own answer: the address reaches something else, and the error says where.
    assert_eq!(err.kind(), "vault_bad_response", "{err}");
    assert!(
        err.to_string()
            .contains("HTTP 307: a redirect to 127.0.0.1"),
        "{err}"
    );
    assert_eq!(server.finish().await.len(), 1);
    assert!(other.finish().await.is_empty(), "the redirect was followed");
}

#[tokio::test]
async fn an_answer_over_the_size_cap_is_refused_unread() {
    let (addr, server) = e2e::stand_in::fake_http(vec![format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{\"data\":",
        replicator::vault::MAX_BODY + 1
    )])
    .await;
    let err = token_client(&addr).list("kv", "").await.unwrap_err();
    assert_eq!(err.kind(), "vault_bad_response", "{err}");
    assert!(err.to_string().contains("bytes"), "{err}");
    assert_eq!(server.finish().await.len(), 1);
}

fn walk_of(
    addr: &str,
) -> impl Future<Output = Result<replicator::inventory::Inventory, replicator::vault::VaultError>> {
    let client = token_client(addr);
    async move {
        let now = aws_smithy_types::DateTime::from_secs(1_795_867_200);
        replicator::inventory::walk(
            &client,
            "kv",
            "",
            1,
            replicator::inventory::Classify {
                now,
                latest_deleted: replicator::config::LatestDeleted::Fallback,
                selection: &Default::default(),
            },
            &replicator::progress::Progress::default(),
        )
        .await
    }
}

#[tokio::test]
async fn listed_dot_segments_are_failures_never_followed_and_nesting_is_bounded() {
    // One bulk listing with a good secret, `..` as a secret and as a folder, `./` and `a/b`.
    let meta = r#"{"current_version":1,"versions":{"1":{"created_time":"2026-11-01T10:00:00Z","deletion_time":"","destroyed":false}}}"#;
    let listing: &'static str = Box::leak(
        format!(
            r#"{{"data":{{"keys":["ok","..","../","./","a/b"],"key_info":{{"ok":{meta},"..":{meta},"a/b":{meta}}}}}}}"#
        )
        .into_boxed_str(),
    );
    let (addr, server) = fake_vault(vec![(200, listing)]).await;
    let inventory = walk_of(&addr).await.unwrap();
    let states: Vec<(String, &str)> = inventory
        .entries
        .iter()
        .map(|e| {
            let kind = match &e.state {
                replicator::inventory::EntryState::Live { .. } => "live",
                replicator::inventory::EntryState::Unreadable { kind, .. } => kind,
                replicator::inventory::EntryState::Deleted => "deleted",
                replicator::inventory::EntryState::Excluded(_) => "excluded",
            };
            (e.rel_path.to_string(), kind)
        })
        .collect();
    assert_eq!(
        states,
        [
            ("..".to_owned(), "vault_bad_response"),
            ("../".to_owned(), "vault_bad_response"),
            ("./".to_owned(), "vault_bad_response"),
            ("a/b".to_owned(), "vault_bad_response"),
            ("ok".to_owned(), "live"),
        ]
    );
    assert_eq!(server.finish().await.len(), 1, "no folder was followed");

    // A listing of more entries than a run holds: refused, with what to do, before any is kept.
    let many: &'static str = {
        let mut keys = String::with_capacity(12 * replicator::inventory::MAX_ENTRIES);
        for i in 0..=replicator::inventory::MAX_ENTRIES {
            if i > 0 {
                keys.push(',');
            }
            keys.push_str(&format!("\"s{i}\""));
        }
        Box::leak(format!(r#"{{"data":{{"keys":[{keys}],"key_info":{{}}}}}}"#).into_boxed_str())
    };
    let (addr, server) = fake_vault(vec![(200, many)]).await;
    let err = walk_of(&addr).await.unwrap_err();
    assert!(
        err.to_string().contains("split the sync with --path"),
        "{err}"
    );
    // Nothing of what it listed was read.
    assert!(
        server
            .finish()
            .await
            .iter()
            .all(|r| !r.line.contains("/data/")),
        "a value was read"
    );

    // A server that lists a folder inside every folder: the walk stops at the depth bound.
    let deeper = r#"{"data":{"keys":["d/"],"key_info":{}}}"#;
    let (addr, server) =
        fake_vault(vec![(200, deeper); replicator::inventory::MAX_DEPTH + 5]).await;
    let err = walk_of(&addr).await.unwrap_err();
    assert!(err.to_string().contains("deeper than"), "{err}");
    // The root and one LIST per level, then one look at the mount (which cannot tell).
    assert_eq!(
        server.finish().await.len(),
        replicator::inventory::MAX_DEPTH + 2
    );
}
