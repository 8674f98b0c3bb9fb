//! Scale benchmark on local servers: N secrets (default 100,000; `SCALE_BENCH_N`) in 1,000
//! folders of a fresh OpenBao, and their replicas in a fresh moto written the way the replicator
//! writes them (its tags, its deterministic version ids) but without its 50-a-second pacing, which
//! would take half an hour. Then one no-op run of the shipped `bootstrap` through the Lambda
//! Runtime API with the memory a 128 MB function has: wall time, the report's counts, and the
//! process's peak resident memory (VmHWM).
//!
//! Run: `replicator/package-lambda.sh && cargo bench -p e2e --bench scale`. Seeding 100,000
//! takes several minutes. Prints figures; asserts no timing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::types::Tag;
use e2e::runtime_api::{Answer, RuntimeApi};
use e2e::{Bao, Moto};
use futures::stream::{self, StreamExt};
use replicator::contract::tags;
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
    let token = replicator::plan::version_token(MOUNT, &path, version, &created);
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    sm.create_secret()
        .name(format!("{PREFIX}/{path}"))
        .secret_string(json!({"user": format!("u{i}"), "password": format!("p{i}")}).to_string())
        .client_request_token(token)
        .tags(tag(tags::MANAGED_BY, tags::MANAGED_BY_VALUE))
        .tags(tag(tags::VERSION, &version.to_string()))
        .tags(tag(tags::VERSION_CREATED, &created))
        .tags(tag(tags::VAULT_MOUNT, MOUNT))
        .tags(tag(tags::VAULT_PATH, "/"))
        .tags(tag(tags::PREFIX, PREFIX))
        .send()
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("SCALE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let target = std::env::current_exe()
        .ok()
        .and_then(|p| p.ancestors().nth(3).map(|d| d.to_path_buf()))
        .unwrap();
    let bin = target.join("x86_64-unknown-linux-musl/lambda/bootstrap");
    if !bin.exists() {
        println!(
            "the Lambda bootstrap is not built ({}): run replicator/package-lambda.sh first",
            bin.display()
        );
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

    let mut api = RuntimeApi::start().await;
    let child = tokio::process::Command::new(&bin)
        .env_clear()
        .envs(moto.env())
        .envs(e2e::runtime_api::lambda_env(&api.addr, "replicator"))
        .env("REPLICATOR_PREFIX", PREFIX)
        .env("REPLICATOR_MOUNT", MOUNT)
        .env("VAULT_ADDR", &bao.addr)
        .env("VAULT_TOKEN", e2e::ROOT_TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let t = Instant::now();
    let answer = api.invoke("scale-1", "{}", Duration::from_secs(900)).await;
    let wall = t.elapsed();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
        .unwrap_or_else(|| "?".into());
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
    drop(child);
}
