//! Sync benchmark on local servers: seeds N nested secrets (default 1,000; `SYNC_BENCH_N`) into a
//! fresh OpenBao, syncs into a fresh moto, and prints for the first sync, a no-op sync and a sync
//! with 10 % changed: wall time, Vault requests by kind, AWS requests by operation, values read.
//! Also with the per-secret metadata fallback (HashiCorp Vault's API), and, when the Lambda
//! artifact was built (`replicator/package-lambda.sh`), its zip size and the `bootstrap`'s peak
//! memory for a first sync of the N secrets through the Lambda Runtime API.
//!
//! Run: `cargo bench -p e2e --bench sync`. Prints figures; asserts no timing, only what each
//! run must do (all created, a no-op reads and writes nothing, exactly the changed ones
//! updated), so CI runs it at a small N (`tests/run.sh`) and a broken benchmark fails there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use e2e::runtime_api::Answer;
use e2e::{Bao, Moto};
use futures::stream::{self, StreamExt};
use replicator::config::SyncArgs;
use replicator::report::Report;
use serde_json::json;

fn path_of(i: usize) -> String {
    format!("team{}/svc{}/secret{}", i % 10, (i / 10) % 10, i)
}

fn sync_args(bao: &Bao, token: &str, prefix: &str) -> SyncArgs {
    let mut a = e2e::sync_args(prefix);
    a.mount = Some("bench".into());
    a.vault_addr = Some(bao.addr.clone());
    a.vault_token = Some(token.into());
    a.concurrency = 16;
    a
}

fn print(label: &str, wall: Duration, r: &Report) {
    println!(
        "{label:<34} {:>8.3} s  created {:>4} updated {:>4} unchanged {:>4}  values read {:>4}  failures {}",
        wall.as_secs_f64(),
        r.created,
        r.updated,
        r.unchanged,
        r.values_read,
        r.failures.len()
    );
    println!("{:<34}   vault: {:?}", "", r.vault_requests);
    println!("{:<34}   aws:   {:?}", "", r.aws_requests);
}

async fn timed(label: &str, args: &SyncArgs, aws: &aws_types::SdkConfig) -> Report {
    let t = Instant::now();
    let r = replicator::run::run(args, aws).await;
    print(label, t.elapsed(), &r);
    r
}

/// What a run must have done: (created, updated, unchanged, values read), no failure, and
/// without a change no write at all.
fn expect(label: &str, r: &Report, want: (usize, usize, usize, usize)) {
    let got = (r.created, r.updated, r.unchanged, r.values_read);
    assert_eq!(
        got,
        (want.0 as u64, want.1 as u64, want.2 as u64, want.3 as u64),
        "{label}: {}",
        r.to_text()
    );
    assert!(r.failures.is_empty(), "{label}: {}", r.to_text());
    if want.0 + want.1 == 0 {
        let writes: Vec<&String> = r
            .aws_requests
            .keys()
            .filter(|op| !(op.starts_with("List") || op.starts_with("Describe")))
            .collect();
        assert!(writes.is_empty(), "{label}: a no-op wrote {writes:?}");
    }
}

async fn seed(bao: &Bao, n: usize, round: u32) {
    stream::iter(0..n)
        .map(|i| async move {
            bao.put(
                "bench",
                &path_of(i),
                json!({"user": format!("u{i}"), "password": format!("p{i}-{round}")}),
            )
            .await
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("SYNC_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let (bao, moto) = tokio::join!(Bao::start(), Moto::start());
    let aws = moto.sdk_config().await;
    bao.enable_kv2("bench").await;
    let t = Instant::now();
    seed(&bao, n, 1).await;
    println!(
        "seeded {n} secrets in 100 folders in {:.2} s\n",
        t.elapsed().as_secs_f64()
    );

    println!("== OpenBao, bulk detailed-metadata listing ==");
    let a = sync_args(&bao, e2e::ROOT_TOKEN, "bulk");
    expect(
        "first sync",
        &timed("first sync", &a, &aws).await,
        (n, 0, 0, n),
    );
    let noop = timed("no-op sync", &a, &aws).await;
    expect("no-op", &noop, (0, 0, n, 0));
    listing(&aws, "bulk", n).await;
    rules(&bao, &aws, n, &noop).await;
    stream::iter((0..n).step_by(10))
        .map(|i| {
            let bao = &bao;
            async move {
                bao.put("bench", &path_of(i), json!({"user": "changed", "i": i}))
                    .await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let changed = n.div_ceil(10);
    expect(
        "10 % changed",
        &timed("10 % changed", &a, &aws).await,
        (0, changed, n - changed, changed),
    );

    println!("\n== per-secret metadata reads (HashiCorp Vault's API) ==");
    let token = bao
        .token_with_policy(
            "no-bulk",
            "path \"bench/data/*\" { capabilities = [\"read\"] }\npath \"bench/metadata/*\" { capabilities = [\"read\", \"list\"] }",
        )
        .await;
    let b = sync_args(&bao, &token, "fallback");
    expect(
        "fallback first",
        &timed("first sync", &b, &aws).await,
        (n, 0, 0, n),
    );
    expect(
        "fallback no-op",
        &timed("no-op sync", &b, &aws).await,
        (0, 0, n, 0),
    );

    lambda(&bao, &moto, n).await;
}

/// Ten sync rules over the one mount (a rules document, one process), each choosing one team
/// folder with `include`: a first sync and a no-op. The rules share one Vault walk: the no-op
/// lists as many folders as the one rule over the whole mount did (`whole`), where ten
/// processes would list ten times as many.
async fn rules(bao: &Bao, aws: &aws_types::SdkConfig, n: usize, whole: &Report) {
    println!("\n== 10 rules over the mount, one process ==");
    let doc: Vec<serde_json::Value> = (0..10)
        .map(|k| {
            json!({"name": format!("team{k}"), "prefix": format!("rules/r{k}"), "mount": "bench",
                   "include": [format!("team{k}/*")]})
        })
        .collect();
    let mut a = sync_args(bao, e2e::ROOT_TOKEN, "unused");
    a.rules = Some(serde_json::Value::Array(doc).to_string());
    expect(
        "10 rules, first",
        &timed("10 rules: first sync", &a, aws).await,
        (n, 0, 0, n),
    );
    let noop = timed("10 rules: no-op sync", &a, aws).await;
    expect("10 rules, no-op", &noop, (0, 0, n, 0));
    let lists = |r: &Report| {
        ["list", "list_detailed_metadata"]
            .iter()
            .filter_map(|k| r.vault_requests.get(*k))
            .sum::<u64>()
    };
    println!(
        "{:<34}   Vault folder listings: {} for 10 rules, {} for one rule over the mount",
        "",
        lists(&noop),
        lists(whole)
    );
    assert_eq!(lists(&noop), lists(whole), "one walk serves the 10 rules");
    assert_eq!(noop.rules.len(), 10);
}

/// The AWS listing alone: one page chain against the ranges the Vault names suggest.
async fn listing(aws: &aws_types::SdkConfig, prefix: &str, n: usize) {
    let sm = replicator::aws::SecretsManager::new(aws, 50, Default::default());
    let t = Instant::now();
    let chain = sm.list(prefix).await.unwrap();
    let chain_wall = t.elapsed();
    let root = format!("{prefix}/");
    let names: Vec<String> = (0..n).map(|i| format!("{root}{}", path_of(i))).collect();
    let t = Instant::now();
    let partition = replicator::listing::partition(
        &root,
        names.iter().map(String::as_str),
        replicator::listing::NAMES_PER_RANGE,
    );
    let ranged = sm.list_partitioned(&partition, 16, 0).await.unwrap();
    let ranged_wall = t.elapsed();
    assert_eq!(chain.len(), ranged.len());
    println!(
        "{:<34} {:>8.3} s  one page chain of {} secrets",
        "AWS listing alone",
        chain_wall.as_secs_f64(),
        chain.len()
    );
    println!(
        "{:<34} {:>8.3} s  {} ranges and {} lookups, 16 at a time",
        "",
        ranged_wall.as_secs_f64(),
        partition.ranges.len(),
        partition.exact.len()
    );
}

/// Zip size and peak memory of the shipped `bootstrap`, when it was built.
async fn lambda(bao: &Bao, moto: &Moto, n: usize) {
    println!("\n== Lambda artifact ==");
    let Some(bin) = e2e::runtime_api::built_bootstrap() else {
        println!("not built: run replicator/package-lambda.sh first");
        return;
    };
    let zip =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lambda/replicator.zip");
    let cached = bin
        .ancestors()
        .nth(3)
        .map(|t| t.join("lambda/replicator.zip"));
    for z in [Some(zip), cached].into_iter().flatten() {
        if let Ok(meta) = std::fs::metadata(&z) {
            println!("zip {}: {:.2} MB", z.display(), meta.len() as f64 / 1e6);
        }
    }
    let mut env = moto.env();
    env.extend(
        [
            ("REPLICATOR_PREFIX", "lambda"),
            ("REPLICATOR_MOUNT", "bench"),
            ("REPLICATOR_WRITES_PER_SECOND", "50"),
            ("VAULT_ADDR", bao.addr.as_str()),
            ("VAULT_TOKEN", e2e::ROOT_TOKEN),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let (answer, wall, peak) =
        e2e::runtime_api::invoke_once(&bin, env, Duration::from_secs(600)).await;
    let ok = matches!(answer, Answer::Response(_));
    println!(
        "bootstrap first sync of {n}: {:.3} s, ok={ok}, peak memory {peak}",
        wall.as_secs_f64(),
    );
    let Answer::Response(body) = answer else {
        panic!("the bootstrap's first sync failed: {answer:?}");
    };
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["created"].as_u64(), Some(n as u64), "{body:.2000}");
}
