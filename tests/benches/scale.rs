//! Scale benchmark on local servers: N secrets (default 100,000; `SCALE_BENCH_N`) in 1,000
//! folders of a fresh OpenBao, and their replicas in a fresh moto written the way the replicator
//! writes them (its tags, its deterministic version ids) but without its 50-a-second pacing, which
//! would take half an hour. Then one no-op run of the shipped `bootstrap` through the Lambda
//! Runtime API with the memory a 128 MB function has: wall time, the report's counts, and the
//! process's peak resident memory (VmHWM).
//!
//! Run: `replicator/package-lambda.sh && SCALE_BENCH_AWS=stand-in cargo bench -p e2e --bench
//! scale`. Seeding 100,000 into OpenBao takes about half a minute. Prints figures; asserts no
//! timing, only that the no-op is one (every replica unchanged, no write sent).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::types::Tag;
use e2e::runtime_api::Answer;
use e2e::{Bao, Moto};
use futures::stream::{self, StreamExt};
use serde_json::json;

const MOUNT: &str = "scale";
const PREFIX: &str = "scale";

fn path_of(i: usize) -> String {
    format!(
        "team{}/svc{}/grp{}/secret{i}",
        i % 10,
        (i / 10) % 10,
        (i / 100) % 10
    )
}

/// The replica the tool writes for `path` at `version`: made by the tool's own code (its name,
/// version id, tags and description), so the seeded replicas cannot drift from what a sync
/// writes, and the no-op stays a no-op.
fn as_written(path: &str, version: u64, created: &str) -> Box<replicator::plan::Target> {
    let rule = replicator::model::Rule::new(PREFIX, MOUNT);
    let source = replicator::plan::Source {
        rel_path: path.to_owned(),
        vault_path: path.to_owned(),
        version,
        created_time: created.to_owned(),
        user_tags: Default::default(),
        description: replicator::plan::shape::DEFAULT_DESCRIPTION.to_owned(),
        metadata_ignored: vec![],
    };
    source.target(&rule, None)
}

/// Writes secret `i` into Vault and its replica into moto, as a first sync would have.
async fn seed_one(bao: &Bao, sm: &aws_sdk_secretsmanager::Client, i: usize) {
    let path = path_of(i);
    let out = bao
        .api(
            "POST",
            &format!("{MOUNT}/data/{path}"),
            Some(json!({"data": {"user": format!("u{i}"), "password": format!("p{i}")}})),
        )
        .await;
    let version = out["data"]["version"].as_u64().unwrap();
    let created = out["data"]["created_time"].as_str().unwrap().to_owned();
    let target = as_written(&path, version, &created);
    let tags: Vec<Tag> = target
        .tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    // moto answers 500 now and then under this load: try again (the request token makes a
    // retry of a create that went through a no-op).
    for attempt in 1.. {
        let sent = sm
            .create_secret()
            .name(&target.name)
            .secret_string(
                json!({"user": format!("u{i}"), "password": format!("p{i}")}).to_string(),
            )
            .client_request_token(&target.token)
            .description(&target.description)
            .set_tags(Some(tags.clone()))
            .send()
            .await;
        match sent {
            Ok(_) => return,
            // The try before went through after all.
            Err(e)
                if attempt > 1
                    && e.as_service_error()
                        .is_some_and(|e| e.is_resource_exists_exception()) =>
            {
                return;
            }
            Err(e) if attempt < 10 => {
                eprintln!("create {path}: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => panic!("create {path}: {e:?}"),
        }
    }
}

/// A loopback stand-in for the two Secrets Manager calls a no-op run makes, `ListSecrets`
/// (name filters, pages of 100, next tokens) and `DescribeSecret` (not found), answering from
/// replicas held in memory. moto scans every secret on each call, so seeding 100,000 into it
/// takes most of an hour; this takes seconds. Only the replicator's memory is measured with it,
/// never its correctness.
mod fast_aws {
    use std::sync::Arc;

    use serde_json::{Value, json};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    pub(crate) struct Replica {
        pub name: String,
        pub token: String,
        pub tags: Vec<(String, String)>,
        pub description: String,
    }

    fn entry(r: &Replica) -> Value {
        json!({
            "ARN": format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{}-AbCdEf", r.name),
            "Name": r.name,
            "Description": r.description,
            "Tags": r.tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
            "SecretVersionsToStages": {&r.token: ["AWSCURRENT"]},
        })
    }

    fn answer(replicas: &[Replica], target: &str, body: &Value) -> (u16, String) {
        if target.ends_with("DescribeSecret") {
            let err = json!({"__type": "ResourceNotFoundException", "message": "not found"});
            return (400, err.to_string());
        }
        let prefixes: Vec<&str> = body["Filters"][0]["Values"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let from: usize = body["NextToken"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        // Replicas are sorted by name: each prefix is one run; tokens index the joined runs.
        let mut matching: Vec<&Replica> = Vec::new();
        for p in prefixes {
            let start = replicas.partition_point(|r| r.name.as_str() < p);
            matching.extend(
                replicas[start..]
                    .iter()
                    .take_while(|r| r.name.starts_with(p)),
            );
        }
        let page: Vec<Value> = matching
            .iter()
            .skip(from)
            .take(100)
            .map(|r| entry(r))
            .collect();
        let mut out = json!({"SecretList": page});
        if from + 100 < matching.len() {
            out["NextToken"] = json!((from + 100).to_string());
        }
        (200, out.to_string())
    }

    /// Serves `replicas` (sorted by name) on 127.0.0.1; returns its URL.
    pub(crate) async fn serve(replicas: Vec<Replica>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let replicas = Arc::new(replicas);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let replicas = replicas.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    loop {
                        let (mut target, mut len) = (String::new(), 0usize);
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let l = line.trim_end();
                            if l.is_empty() {
                                break;
                            }
                            let lower = l.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                len = v.trim().parse().unwrap_or(0);
                            } else if lower.starts_with("x-amz-target:") {
                                target = l.to_owned();
                            }
                        }
                        let mut body = vec![0; len];
                        if read.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let (status, text) = answer(&replicas, &target, &body);
                        let head = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n",
                            text.len()
                        );
                        if write.write_all(head.as_bytes()).await.is_err()
                            || write.write_all(text.as_bytes()).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        url
    }
}

/// `SCALE_BENCH_AWS=stand-in`: the replicas are served by [`fast_aws`] instead of moto.
async fn with_fast_aws(n: usize, bin: &std::path::Path) {
    let bao = Bao::start().await;
    bao.enable_kv2(MOUNT).await;
    let t = Instant::now();
    let written: Vec<fast_aws::Replica> = stream::iter(0..n)
        .map(|i| {
            let bao = &bao;
            async move {
                let path = path_of(i);
                let out = bao
                    .api(
                        "POST",
                        &format!("{MOUNT}/data/{path}"),
                        Some(
                            json!({"data": {"user": format!("u{i}"), "password": format!("p{i}")}}),
                        ),
                    )
                    .await;
                let version = out["data"]["version"].as_u64().unwrap();
                let created = out["data"]["created_time"].as_str().unwrap().to_owned();
                let target = as_written(&path, version, &created);
                fast_aws::Replica {
                    name: target.name,
                    token: target.token,
                    tags: target.tags.into_iter().collect(),
                    description: target.description,
                }
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut replicas = written;
    replicas.sort_by(|a, b| a.name.cmp(&b.name));
    println!(
        "seeded {n} secrets into OpenBao in {:.0} s; their replicas served by the listing stand-in",
        t.elapsed().as_secs_f64()
    );
    let url = fast_aws::serve(replicas).await;
    no_op(n, bin, e2e::aws_env_at(&url), &bao.addr).await;
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("SCALE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let Some(bin) = e2e::runtime_api::built_bootstrap() else {
        println!("the Lambda bootstrap is not built: run replicator/package-lambda.sh first");
        return;
    };
    if std::env::var("SCALE_BENCH_AWS").as_deref() == Ok("stand-in") {
        with_fast_aws(n, &bin).await;
        return;
    }
    let (bao, moto) = tokio::join!(Bao::start(), Moto::start());
    let aws = moto.sdk_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    bao.enable_kv2(MOUNT).await;
    let t = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let (bao, sm) = (&bao, &sm);
            async move { seed_one(bao, sm, i).await }
        })
        .await;
    println!(
        "seeded {n} secrets in 1,000 folders, and their replicas, in {:.0} s",
        t.elapsed().as_secs_f64()
    );

    no_op(n, &bin, moto.env(), &bao.addr).await;
}

/// One no-op run of the shipped `bootstrap` through the Lambda Runtime API: its figures.
async fn no_op(n: usize, bin: &std::path::Path, aws_env: Vec<(String, String)>, vault: &str) {
    let mut env = aws_env;
    env.extend(
        [
            ("REPLICATOR_PREFIX", PREFIX),
            ("REPLICATOR_MOUNT", MOUNT),
            ("VAULT_ADDR", vault),
            ("VAULT_TOKEN", e2e::ROOT_TOKEN),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let (answer, wall, peak) =
        e2e::runtime_api::invoke_once(bin, env, Duration::from_secs(900)).await;
    let Answer::Response(body) = answer else {
        panic!("the no-op run failed: {answer:?}");
    };
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    println!(
        "bootstrap no-op of {n}: {:.1} s, unchanged {}, values read {}, failures {}, peak memory {peak}",
        wall.as_secs_f64(),
        report["unchanged"],
        report["values_read"],
        report["failures"].as_array().map_or(0, Vec::len),
    );
    println!("   aws:   {}", report["aws_requests"]);
    println!("   vault: {}", report["vault_requests"]);
    assert_eq!(
        report["unchanged"].as_u64(),
        Some(n as u64),
        "the seeded replicas should all be unchanged: {body:.2000}"
    );
    // A no-op sends no write at all.
    let sent: Vec<&String> = report["aws_requests"]
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert!(
        sent.iter()
            .all(|op| op.as_str() == "ListSecrets" || op.as_str() == "DescribeSecret"),
        "a no-op wrote: {sent:?}"
    );
}
