//! `replicator watch`: change-driven replication on any Vault. It follows Vault's file audit log
//! (paths in plain text, values hashed), picks the successful requests that change a KV v2
//! secret where the sync reads ([`filter`]), and after a short debounce syncs exactly those
//! secrets. The log is read off the async runtime in bounded chunks ([`tail`]), so a backlog
//! never stalls the loop or its signals. A change is kept until its sync succeeded, across
//! restarts too ([`pending`]): a failed batch is tried again with backoff. A full sync at start
//! (and, without the function's schedule, every reconcile interval) catches anything missed.
//! Changes go to this process's replicator or to the function ([`delivery`]).

pub mod delivery;
pub mod filter;
pub mod heartbeat;
pub mod metrics;
pub mod pending;
pub mod tail;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use delivery::{Delivered, Delivery};
pub use filter::{AuditFilter, Follow, Health, Line};
pub use metrics::WatchMetrics;
pub use pending::{Due, Pending, Saved, Sent};
pub use tail::{Offset, Tail};

/// `250ms`, `30s`, `10m`, `1h`: a whole number and its unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: use ms, s, m or h (e.g. 10m)"))?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 10m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    if d.is_zero() {
        return Err(format!("{text:?} must be more than zero"));
    }
    Ok(d)
}

/// A stack name for `--cloudwatch-stack`.
fn parse_host_stack(text: &str) -> Result<String, String> {
    contract::metrics::check_host_stack(text).map(|()| text.to_owned())
}

/// How often the watcher runs a full sync besides the one at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reconcile {
    Off,
    Every(Duration),
}

/// `off`, or a duration (`30m`).
pub fn parse_reconcile(text: &str) -> Result<Reconcile, String> {
    match text.trim() {
        "off" | "0" => Ok(Reconcile::Off),
        other => parse_duration(other).map(Reconcile::Every),
    }
}

/// The reconcile interval of a watcher that syncs in-process when none is given: as the
/// stack's schedule would.
pub const DEFAULT_RECONCILE: Duration = Duration::from_secs(30 * 60);

/// How long a batch under way at SIGTERM or SIGINT may still take; then its changes are saved
/// for the next start.
pub const STOP_GRACE: Duration = Duration::from_millis(1500);

/// How often the watcher says so when the lines it reads can never match.
pub const HEALTH_SPELL: Duration = Duration::from_secs(60);
/// Lines enough to say so before the spell ends.
pub const HEALTH_EARLY_LINES: u64 = 100;

/// How the watcher runs.
#[derive(Clone, Debug)]
pub struct WatchSettings {
    pub audit_log: PathBuf,
    pub state_file: PathBuf,
    /// `None`: only the full sync at start.
    pub reconcile: Option<Duration>,
    /// Quiet time that ends a batch.
    pub debounce: Duration,
    /// The longest a change waits while others keep coming.
    pub longest_wait: Duration,
    pub poll: Duration,
    /// The counters `--metrics-addr` serves (kept whether served or not).
    pub metrics: Arc<WatchMetrics>,
}

/// What one batch, or one full sync, did: the report (the Lambda's answer in invoke mode).
#[derive(Debug)]
pub enum Ran {
    Full(serde_json::Value),
    Paths(Vec<String>, serde_json::Value),
}

impl Ran {
    /// Whether the run failed (its report has failures, or the function failed).
    pub fn failed(&self) -> bool {
        let report = match self {
            Ran::Full(r) | Ran::Paths(_, r) => r,
        };
        crate::report::Summary::of(report).failed()
    }
}

/// `watch`'s own flags (the sync's come beside them).
#[derive(Clone, Debug, clap::Args)]
pub struct WatchArgs {
    /// Vault's file audit log (the `file_path` of its file audit device, format json, no
    /// prefix).
    #[arg(long, env = "REPLICATOR_AUDIT_LOG")]
    pub audit_log: PathBuf,

    /// Where the position in the log, and the changes not yet synced, are kept across restarts
    /// [default: $STATE_DIRECTORY/watch.offset under systemd, else ./replicator-watch.offset].
    #[arg(long, env = "REPLICATOR_STATE_FILE")]
    pub state_file: Option<PathBuf>,

    /// How often a full sync runs besides the one at start, the backstop for anything missed,
    /// or `off` [default: off with --invoke-function (the function's schedule does it), else
    /// 30m].
    #[arg(long, env = "REPLICATOR_RECONCILE_INTERVAL", value_parser = parse_reconcile)]
    pub reconcile_interval: Option<Reconcile>,

    /// Quiet time that ends a batch of changes.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub debounce: Duration,

    /// Send each batch to this replicator function (`{"paths": [...]}`) instead of syncing
    /// here: the watcher then needs only `lambda:InvokeFunction` on it (and `sns:Publish` on
    /// --sns-topic-arn, for the notice of a run that failed). Where to look in Vault (mount,
    /// path, namespace) is the function's own.
    #[arg(long, env = "REPLICATOR_INVOKE_FUNCTION")]
    pub invoke_function: Option<String>,

    /// One report per batch on stdout.
    #[arg(long, value_enum, default_value = "text")]
    pub output: crate::config::OutputFormat,

    /// Serve the watcher's metrics in Prometheus' text format at http://HOST:PORT/metrics
    /// (e.g. 127.0.0.1:9464: only what can reach the address can scrape it).
    #[arg(long, env = "REPLICATOR_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Every minute, put the watcher's liveness and the used share of the audit log's disk
    /// into CloudWatch as metrics of this stack (namespace VaultSecretsReplicator/Host/STACK):
    /// the stack's alarms of a silent watcher and a filling disk watch them.
    #[arg(long, env = "REPLICATOR_CLOUDWATCH_STACK", value_parser = parse_host_stack)]
    pub cloudwatch_stack: Option<String>,
}

impl WatchArgs {
    pub fn settings(&self) -> WatchSettings {
        let reconcile = match self.reconcile_interval {
            Some(Reconcile::Off) => None,
            Some(Reconcile::Every(d)) => Some(d),
            None if self.invoke_function.is_some() => None,
            None => Some(DEFAULT_RECONCILE),
        };
        WatchSettings {
            audit_log: self.audit_log.clone(),
            state_file: self.state_file.clone().unwrap_or_else(|| {
                std::env::var_os("STATE_DIRECTORY")
                    .map(|d| PathBuf::from(d).join("watch.offset"))
                    .unwrap_or_else(|| "replicator-watch.offset".into())
            }),
            reconcile,
            debounce: self.debounce,
            longest_wait: Duration::from_secs(1),
            poll: Duration::from_millis(50),
            metrics: Arc::default(),
        }
    }

    /// Where the changes go: the function named, or this process with `sync`'s settings.
    pub fn delivery(
        &self,
        sync: &crate::config::SyncArgs,
        aws: &aws_types::SdkConfig,
    ) -> Result<Delivery, crate::config::ConfigError> {
        Ok(match &self.invoke_function {
            Some(function) => Delivery::Invoke {
                lambda: aws_sdk_lambda::Client::new(aws),
                function: function.clone(),
                notices: sync
                    .sns_topic_arn
                    .clone()
                    .filter(|t| !t.is_empty())
                    .map(|topic| (crate::aws::Notifier::new(aws, Arc::default()), topic)),
                gate: crate::report::NoticeGate::default(),
            },
            None => Delivery::InProcess(Box::new(crate::run::Replicator::new(sync, aws)?)),
        })
    }
}

/// What the tail thread read: the changes named, where it is now, and what the lines were.
#[derive(Debug, Default)]
struct Chunk {
    paths: Vec<String>,
    at: Offset,
    health: Health,
}

/// Reads the log on a thread of its own, chunk by chunk, and sends what each chunk said; waits
/// `poll` when there is nothing new. The channel is bounded: a watcher busy delivering holds
/// the thread, and the memory, where they are. Stops when `stop` is set or nobody listens.
fn spawn_tail(
    mut tail: Tail,
    follow: Arc<std::sync::Mutex<Arc<Follow>>>,
    poll: Duration,
    tx: tokio::sync::mpsc::Sender<Chunk>,
    stop: Arc<AtomicBool>,
    metrics: Arc<WatchMetrics>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut at = tail.position();
        let mut warned: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            let mut chunk = Chunk::default();
            // What to follow, as the loop last learnt it from the sync.
            let filter = current(&follow);
            let read = tail.read(&mut |line| {
                let what = filter.classify(line);
                chunk.health.count(&what);
                if let Line::Change(path) = what {
                    chunk.paths.push(path);
                }
            });
            chunk.at = tail.position();
            let idle = match read {
                Ok(n) => {
                    metrics.looked();
                    n == 0
                }
                Err(e) => {
                    metrics.count(|m| &m.read_errors, 1);
                    // What was read before the error is sent all the same; the position stays
                    // after the last line handed out. Said once a minute, not at every look.
                    if warned.is_none_or(|w| w.elapsed() >= HEALTH_SPELL) {
                        tracing::warn!("reading the audit log: {e}");
                        warned = Some(Instant::now());
                    }
                    true
                }
            };
            if (chunk.at != at || !chunk.paths.is_empty() || chunk.health.lines > 0)
                && tx.blocking_send(chunk).is_err()
            {
                return;
            }
            at = tail.position();
            if idle {
                std::thread::sleep(poll);
            }
        }
    })
}

/// A batch's paths, and when its oldest change was read or first tried.
type Batch = (Vec<String>, Option<Instant>);

/// A delivery under way, polled beside the rest of the loop.
type Under<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Delivered> + 'a>>;

/// Why a full sync runs: owed by the pending changes (too many at once, or one that failed),
/// or the one at start or the reconcile interval's (started then).
#[derive(Clone, Copy, Debug)]
enum FullFor {
    Pending,
    Start(Instant),
    Reconcile(Instant),
}

/// The result of what is under way in `slot`, once it is there; never, while there is none.
async fn under<T>(slot: &mut Option<(T, Under<'_>)>) -> Delivered {
    match slot {
        Some((_, run)) => run.as_mut().await,
        None => std::future::pending().await,
    }
}

/// After a batch, or a full sync the pending changes owed, was delivered or failed.
fn settle(pending: &mut Pending, sent: Sent, ok: bool) {
    if ok {
        pending.delivered(sent);
        return;
    }
    let given_up = pending.failed(sent, Instant::now());
    if !given_up.is_empty() {
        tracing::warn!(
            paths = given_up.len(),
            "changes whose sync failed for {} minutes are left to the next full sync",
            pending::GIVE_UP_AFTER.as_secs() / 60
        );
    }
}

/// After a full sync run besides the batches, started at `started`: one that failed is owed
/// (tried again with backoff, saved across restarts); one that succeeded pays any owed since
/// before it started.
fn settle_full(pending: &mut Pending, ok: bool, started: Instant) {
    if ok {
        pending.full_done(started);
    } else {
        pending.full_failed(Instant::now());
    }
}

/// The signals that stop the watcher.
struct Stop {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Stop {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }

    /// Runs `work` unless a signal comes first; then gives it [`STOP_GRACE`] more. `(its
    /// output if it finished, whether a signal came)`.
    async fn around<F: std::future::Future>(&mut self, work: F) -> (Option<F::Output>, bool) {
        tokio::pin!(work);
        tokio::select! {
            out = &mut work => (Some(out), false),
            () = self.recv() => (tokio::time::timeout(STOP_GRACE, &mut work).await.ok(), true),
        }
    }
}

/// Follows the log until SIGTERM or SIGINT. First it learns where the sync reads in Vault (the
/// function's scope, or the connection's namespace); then a targeted sync of each batch of
/// changes, one batch at a time, with a full sync beside them at start, at each reconcile and
/// when one is owed (a full sync of many secrets takes seconds: the changes do not wait for it;
/// each run counts its own requests). A change stays pending, saved with the position in the
/// log, until a sync of it succeeded; a failed one is tried again with backoff. At a signal what
/// is under way has [`STOP_GRACE`] to finish; what is pending then is saved for the next start.
pub async fn run(
    delivery: &Delivery,
    settings: &WatchSettings,
    mut emit: impl FnMut(Ran),
) -> std::io::Result<()> {
    let progress = crate::progress::Progress::default();
    let mut stop = Stop::new()?;
    let mut attempt = 0;
    let mut scopes = loop {
        let (found, stopped) = stop.around(delivery.scopes()).await;
        match found {
            Some(Ok(scopes)) if !scopes.is_empty() => break scopes,
            _ if stopped => return Ok(()),
            Some(other) => {
                let e = other
                    .err()
                    .unwrap_or_else(|| "the sync names no scope".into());
                attempt += 1;
                tracing::warn!("cannot learn where the sync reads in Vault (tried again): {e}");
                let (_, stopped) = stop
                    .around(tokio::time::sleep(pending::backoff(attempt)))
                    .await;
                if stopped {
                    return Ok(());
                }
            }
            None => return Ok(()),
        }
    };
    let follow = Arc::new(std::sync::Mutex::new(Arc::new(Follow::new(&scopes))));
    say_scopes(&scopes, "following the audit log");
    let saved = Saved::load(&settings.state_file);
    let mut pending = saved
        .as_ref()
        .map(|s| Pending::restored(s, Instant::now()))
        .unwrap_or_default();
    let tail = Tail::open(&settings.audit_log, saved.as_ref().map(|s| s.at));
    let mut at = tail.position();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let halt = Arc::new(AtomicBool::new(false));
    let metrics = settings.metrics.clone();
    let reader = spawn_tail(
        tail,
        follow.clone(),
        settings.poll,
        tx,
        halt.clone(),
        metrics.clone(),
    );
    let save = |pending: &Pending, at: Offset| {
        if let Err(e) = pending.to_save(at).save(&settings.state_file) {
            tracing::warn!("saving {}: {e}", settings.state_file.display());
        }
    };

    let mut reconcile = settings.reconcile.map(|every| {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        // A sync that outlasts the interval is followed by one interval, not a burst.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    let mut health = Health::default();
    let mut spell = Instant::now();
    let mut warned = false;
    // What is under way: one batch of paths, and one full sync beside it (a full sync of many
    // secrets takes seconds; the changes meanwhile do not wait for it).
    // With the time its oldest change was read, for the lag.
    let mut batch: Option<(Batch, Under<'_>)> = None;
    // The full sync at start: batches wait for it (it sets the deletion allowance they share).
    let mut full: Option<(FullFor, Under<'_>)> = Some((
        FullFor::Start(Instant::now()),
        Box::pin(delivery.full(&progress)),
    ));
    // The sync's scopes are asked again after each full sync and at this interval: a rule
    // added to the function, or a namespace the connection secret now names, is followed
    // without a restart.
    let mut rescope_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + RESCOPE_EVERY, RESCOPE_EVERY);
    rescope_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let beside = delivery.runs_beside();
    let mut stopped = false;
    while !stopped {
        // What may start: a batch while no full sync runs, or beside one after the start-up
        // one in this process; a full sync while no batch runs, or beside one in this process.
        let started_up = !matches!(full, Some((FullFor::Start(_), _)));
        let may_batch = batch.is_none() && (full.is_none() || (beside && started_up));
        let may_full = full.is_none() && (batch.is_none() || beside);
        let next = if may_batch {
            pending.next_check(settings.debounce, settings.longest_wait, !may_full)
        } else {
            None
        };
        let wake = next.map_or_else(
            || tokio::time::Instant::now() + Duration::from_secs(3600),
            tokio::time::Instant::from_std,
        );
        tokio::select! {
            chunk = rx.recv() => {
                let Some(chunk) = chunk else { break };
                let now = Instant::now();
                metrics.count(|m| &m.lines, chunk.health.lines);
                metrics.count(|m| &m.changes, chunk.paths.len() as u64);
                for path in chunk.paths {
                    pending.add(path, now);
                }
                at = chunk.at;
                health.add(&chunk.health);
                let spell_over = spell.elapsed() >= HEALTH_SPELL;
                if !warned
                    && (spell_over || health.lines >= HEALTH_EARLY_LINES)
                    && let Some(warning) = health.warning(&current(&follow))
                {
                    tracing::warn!("{warning}");
                    warned = true;
                }
                if spell_over {
                    health = Health::default();
                    spell = Instant::now();
                    warned = false;
                }
                save(&pending, at);
                metrics.pending.store(pending.len() as u64, Ordering::Relaxed);
            }
            () = tokio::time::sleep_until(wake), if next.is_some() => {
                let since = pending.fresh_since();
                let due = pending.take_due(
                    Instant::now(),
                    settings.debounce,
                    settings.longest_wait,
                    !may_full,
                );
                // Saved as pending while under way: a stop or a crash now loses none of them.
                save(&pending, at);
                match due {
                    Some(Due::Paths(paths)) => {
                        // Its oldest change: seen fresh, or first tried in an earlier batch.
                        let since = since.into_iter().chain(pending.sending_since()).min();
                        let sent = paths.clone();
                        let progress = &progress;
                        let qualified = current(&follow).qualified();
                        let one = scopes[0].clone();
                        batch = Some((
                            (paths, since),
                            Box::pin(async move {
                                if qualified {
                                    delivery.changes(&changes_of(&sent), progress).await
                                } else {
                                    delivery.paths(&paths_of(&sent, &one), progress).await
                                }
                            }),
                        ));
                    }
                    Some(Due::Full) => full = Some((FullFor::Pending, Box::pin(delivery.full(&progress)))),
                    None => {}
                }
            }
            d = under(&mut batch) => {
                if let Some(((paths, since), _)) = batch.take() {
                    settle(&mut pending, Sent::Paths, d.ok);
                    save(&pending, at);
                    if d.ok {
                        metrics.count(|m| &m.batches_ok, 1);
                        if let Some(since) = since {
                            metrics.observe_lag(since.elapsed());
                        }
                    } else {
                        metrics.count(|m| &m.batches_failed, 1);
                    }
                    metrics.pending.store(pending.len() as u64, Ordering::Relaxed);
                    emit(Ran::Paths(paths, d.report));
                }
            }
            d = under(&mut full) => {
                if let Some((reason, _)) = full.take() {
                    // The scopes were learnt just before the start-up sync.
                    let learnt = matches!(reason, FullFor::Start(_));
                    match reason {
                        FullFor::Pending => settle(&mut pending, Sent::Full, d.ok),
                        FullFor::Start(started) | FullFor::Reconcile(started) => {
                            settle_full(&mut pending, d.ok, started);
                        }
                    }
                    save(&pending, at);
                    metrics.count(|m| if d.ok { &m.full_ok } else { &m.full_failed }, 1);
                    metrics.pending.store(pending.len() as u64, Ordering::Relaxed);
                    emit(Ran::Full(d.report));
                    // The next reconcile one interval after this one ended, not at once.
                    if let Some(tick) = reconcile.as_mut() {
                        tick.reset();
                    }
                    if d.ok && !learnt {
                        let asked = rescope(delivery, &mut scopes, &follow, &mut pending);
                        stopped |= stop.around(asked).await.1;
                        save(&pending, at);
                    }
                }
            }
            () = async {
                match reconcile.as_mut() {
                    Some(tick) => {
                        tick.tick().await;
                    }
                    None => std::future::pending().await,
                }
            }, if may_full => {
                full = Some((FullFor::Reconcile(Instant::now()), Box::pin(delivery.full(&progress))));
            }
            _ = rescope_tick.tick(), if batch.is_none() && full.is_none() => {
                // A signal meanwhile is not kept waiting for the answer.
                let asked = rescope(delivery, &mut scopes, &follow, &mut pending);
                stopped |= stop.around(asked).await.1;
                save(&pending, at);
            }
            () = stop.recv() => stopped = true,
        }
    }
    // What is under way has [`STOP_GRACE`] to finish; what does not stays pending.
    let grace = tokio::time::sleep(STOP_GRACE);
    tokio::pin!(grace);
    while batch.is_some() || full.is_some() {
        tokio::select! {
            d = under(&mut batch) => {
                if let Some(((paths, _), _)) = batch.take() {
                    settle(&mut pending, Sent::Paths, d.ok);
                    emit(Ran::Paths(paths, d.report));
                }
            }
            d = under(&mut full) => {
                if let Some((reason, _)) = full.take() {
                    match reason {
                        FullFor::Pending => settle(&mut pending, Sent::Full, d.ok),
                        FullFor::Start(started) | FullFor::Reconcile(started) => {
                            settle_full(&mut pending, d.ok, started);
                        }
                    }
                    emit(Ran::Full(d.report));
                }
            }
            () = &mut grace => break,
        }
    }
    halt.store(true, Ordering::Relaxed);
    // What the reader still had: its changes are kept with its position.
    while let Ok(chunk) = rx.try_recv() {
        for path in chunk.paths {
            pending.add(path, Instant::now());
        }
        at = chunk.at;
    }
    drop(rx);
    let _ = reader.join();
    pending.to_save(at).save(&settings.state_file)
}

/// Logs each scope followed, with `what`.
fn say_scopes(scopes: &[crate::run::VaultScope], what: &str) {
    for scope in scopes {
        tracing::info!(
            mount = %scope.mount,
            path = %scope.path,
            namespace = scope.namespace.as_deref().unwrap_or(""),
            "{what}"
        );
    }
}

/// How often a watcher asks the sync where it reads, besides after each full sync.
const RESCOPE_EVERY: Duration = Duration::from_secs(300);

/// The loop's view of what the tail follows.
fn current(follow: &std::sync::Mutex<Arc<Follow>>) -> Arc<Follow> {
    follow
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Asks the sync where it reads now; when that changed, follows the new scopes from the next
/// line read, and owes a full sync (which covers what was seen under the old ones, whatever
/// their names). A sync that does not answer in time leaves everything as it was.
async fn rescope(
    delivery: &Delivery,
    scopes: &mut Vec<crate::run::VaultScope>,
    follow: &std::sync::Mutex<Arc<Follow>>,
    pending: &mut Pending,
) {
    let asked = tokio::time::timeout(Duration::from_secs(10), delivery.scopes()).await;
    let now = match asked {
        Ok(Ok(now)) => now,
        Ok(Err(e)) => {
            tracing::warn!("cannot ask the sync where it reads (asked again later): {e}");
            return;
        }
        Err(_) => {
            tracing::warn!("the sync did not say where it reads within 10 s (asked again later)");
            return;
        }
    };
    if now.is_empty() || now == *scopes {
        return;
    }
    say_scopes(
        &now,
        "the sync reads elsewhere now: following the audit log there",
    );
    *follow
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Follow::new(&now));
    *scopes = now;
    pending.owe_full(Instant::now());
}

/// The changes a watcher of many scopes named; a name that is none (saved by a watcher that
/// followed one scope) is left to the full sync, which the watcher runs at start.
fn changes_of(names: &[String]) -> Vec<crate::run::Change> {
    names.iter().filter_map(|n| Follow::change(n)).collect()
}

/// The paths a watcher of one scope named: a change saved by a watcher of many scopes is its
/// path when it is of this scope's mount and namespace, and is left to the full sync the
/// watcher runs at start when it is not.
fn paths_of(names: &[String], scope: &crate::run::VaultScope) -> Vec<String> {
    names
        .iter()
        .filter_map(|n| match Follow::change(n) {
            None => Some(n.clone()),
            Some(c)
                if c.mount.trim_matches('/') == scope.mount.trim_matches('/')
                    && contract::namespace(c.namespace.as_deref())
                        == contract::namespace(scope.namespace.as_deref()) =>
            {
                Some(c.path)
            }
            Some(_) => None,
        })
        .collect()
}

/// `watch` as a command, for both binaries (`replicator watch`, and `bootstrap watch` beside
/// Vault on the stack's instance): one line per run on stdout, JSON or text. Exit 0 when
/// stopped by a signal, 1 when it could not start.
pub async fn main(sync: &crate::config::SyncArgs, args: &WatchArgs) -> u8 {
    let json = args.output == crate::config::OutputFormat::Json;
    use std::io::Write;
    let aws = crate::aws::load_sdk_config().await;
    let delivery = match args.delivery(sync, &aws) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let emit = |ran: Ran| {
        let (paths, mut report) = match ran {
            Ran::Full(r) => (None, r),
            Ran::Paths(p, r) => (Some(p), r),
        };
        let line = if json {
            report["scope"] = serde_json::json!(if paths.is_some() { "paths" } else { "full" });
            if let Some(p) = &paths {
                report["paths"] = serde_json::json!(p);
            }
            format!("{report}\n")
        } else {
            format!(
                "{}: {}\n",
                paths.map_or_else(|| "full sync".to_owned(), |p| p.join(", ")),
                crate::report::Summary::of(&report).line()
            )
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
    };
    let settings = args.settings();
    if let Some(addr) = args.metrics_addr {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "serving metrics at /metrics");
                tokio::spawn(metrics::serve(listener, settings.metrics.clone()));
            }
            Err(e) => {
                eprintln!("error: --metrics-addr {addr}: {e}");
                return 1;
            }
        }
    }
    if let Some(stack) = args.cloudwatch_stack.clone().filter(|s| !s.is_empty()) {
        tokio::spawn(heartbeat::run(
            aws.clone(),
            stack,
            settings.metrics.clone(),
            settings.audit_log.clone(),
        ));
    }
    match run(&delivery, &settings, emit).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["10", "m", "10 d", "0s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_reconcile("off"), Ok(Reconcile::Off));
        assert_eq!(
            parse_reconcile("45m"),
            Ok(Reconcile::Every(Duration::from_secs(2700)))
        );
    }

    #[test]
    fn the_reconcile_never_doubles_the_functions_schedule() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            watch: WatchArgs,
        }
        let parse = |extra: &[&str]| {
            let mut argv = vec!["w", "--audit-log", "/a"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).unwrap().watch.settings()
        };
        assert_eq!(parse(&[]).reconcile, Some(DEFAULT_RECONCILE));
        assert_eq!(parse(&["--invoke-function", "f"]).reconcile, None);
        assert_eq!(
            parse(&["--invoke-function", "f", "--reconcile-interval", "2h"]).reconcile,
            Some(Duration::from_secs(7200))
        );
        assert_eq!(parse(&["--reconcile-interval", "off"]).reconcile, None);
    }

    #[test]
    fn a_change_saved_by_a_watcher_of_many_scopes_is_its_path_to_one_of_its_scope() {
        let scope = crate::run::VaultScope {
            mount: "kv".into(),
            path: String::new(),
            namespace: Some("team".into()),
        };
        let names = [
            "app/db".to_owned(),
            r#"{"namespace":"team/","mount":"kv/","path":"web"}"#.to_owned(),
            r#"{"mount":"kv","path":"root-only"}"#.to_owned(),
            r#"{"namespace":"team","mount":"other","path":"x"}"#.to_owned(),
        ];
        assert_eq!(paths_of(&names, &scope), ["app/db", "web"]);
    }
}
