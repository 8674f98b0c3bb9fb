//! The changes seen and not yet delivered, and what the watcher keeps across restarts: its
//! position in the log with those changes, saved together, so that a change is never dropped
//! between reading its line and its successful sync. A batch that fails is tried again with
//! backoff. Pure, but for saving and loading the state file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::tail::Offset;

/// The most paths kept one by one; past it (a long outage of the function while changes go on)
/// a full sync is owed instead.
pub const MAX_PENDING: usize = 100_000;
/// The most paths one batch sends; a larger batch is a full sync instead.
pub const MAX_BATCH: usize = 1_000;
/// How long a failing change is tried again before it is left to the next full sync.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(30 * 60);

/// The delay before try number `attempt` (1: the first try again).
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// What is kept across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    #[serde(flatten)]
    pub at: Offset,
    /// Changes read and not delivered yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
    /// More changes were seen than are kept one by one: a full sync is owed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_sync_owed: bool,
}

impl Saved {
    /// The state saved in `state`, if there is one; a file that cannot be read says so (the
    /// watcher then starts at the end of the log, and its start-up full sync covers the gap).
    pub fn load(state: &Path) -> Option<Self> {
        let bytes = match std::fs::read(state) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(
                    "cannot read {}: {e}; starting at the end of the log",
                    state.display()
                );
                return None;
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(saved) => Some(saved),
            Err(e) => {
                tracing::warn!(
                    "{} is not a state this watcher wrote ({e}); starting at the end of the log",
                    state.display()
                );
                None
            }
        }
    }

    /// Saves it whole or not at all, and durably: a new file, flushed to disk, renamed over the
    /// old one, and the directory flushed (a crash leaves the old state or the new one).
    pub fn save(&self, state: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut name = state.as_os_str().to_owned();
        name.push(".new");
        let tmp = std::path::PathBuf::from(name);
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(self).unwrap_or_default())?;
        file.sync_all()?;
        std::fs::rename(&tmp, state)?;
        if let Some(dir) = state.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct Retry {
    attempts: u32,
    due: Instant,
    since: Instant,
}

/// Which of the two deliveries that may be under way at once a result is for: a batch of
/// paths, or a full sync (which runs beside the batches).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    Paths,
    Full,
}

/// What to deliver next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    Paths(Vec<String>),
    /// Too many at once: a full sync covers them.
    Full,
}

/// Paths seen and not yet synced: a fresh batch gathered until it is quiet, and the paths of
/// failed batches waiting for their next try.
#[derive(Debug, Default)]
pub struct Pending {
    fresh: BTreeSet<String>,
    first: Option<Instant>,
    last: Option<Instant>,
    retry: BTreeMap<String, Retry>,
    /// The batch under way: each path's tries so far and when it was first tried.
    sending: BTreeMap<String, (u32, Instant)>,
    /// A full sync owed (too many changes at once, or one that failed): when it is due.
    full: Option<Retry>,
    /// The full sync under way: its tries so far and when it was first tried.
    full_sending: Option<(u32, Instant)>,
}

impl Pending {
    /// The pending changes a previous run saved: due at once.
    pub fn restored(saved: &Saved, now: Instant) -> Self {
        let mut p = Self {
            full: saved.full_sync_owed.then_some(Retry {
                attempts: 0,
                due: now,
                since: now,
            }),
            ..Self::default()
        };
        for path in &saved.pending {
            p.add(path.clone(), now);
        }
        p
    }

    pub fn add(&mut self, path: String, now: Instant) {
        self.retry.remove(&path);
        self.fresh.insert(path);
        self.first.get_or_insert(now);
        self.last = Some(now);
        if self.len() > MAX_PENDING {
            self.owe_full_sync(now);
        }
    }

    /// A full sync covers every change seen (too many at once, or the scopes followed changed):
    /// the paths one by one are dropped.
    pub fn owe_full(&mut self, now: Instant) {
        self.owe_full_sync(now);
    }

    fn owe_full_sync(&mut self, now: Instant) {
        self.fresh.clear();
        self.retry.clear();
        self.sending.clear();
        self.first = None;
        self.last = None;
        self.full.get_or_insert(Retry {
            attempts: 0,
            due: now,
            since: now,
        });
    }

    /// A full sync that ran besides the batches (at start, or the reconcile) failed: it is
    /// owed, tried again with backoff, as a failed batch is.
    pub fn full_failed(&mut self, now: Instant) {
        if self.full.is_none() && self.full_sending.is_none() {
            self.full = Some(Retry {
                attempts: 1,
                due: now + backoff(1),
                since: now,
            });
        }
    }

    /// A full sync that ran besides the batches, started at `started`, succeeded: one owed
    /// since before it started is paid (one owed since, for changes it may not have seen, is
    /// not).
    pub fn full_done(&mut self, started: Instant) {
        if self.full.as_ref().is_some_and(|f| f.since <= started) {
            self.full = None;
        }
    }

    /// When the first change of the fresh batch was seen, if there is one.
    pub fn fresh_since(&self) -> Option<Instant> {
        self.first
    }

    /// When the batch under way was first tried (its oldest path), if one is.
    pub fn sending_since(&self) -> Option<Instant> {
        self.sending.values().map(|(_, since)| *since).min()
    }

    pub fn len(&self) -> usize {
        self.fresh.len() + self.retry.len() + self.sending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.full.is_none()
    }

    /// When something may be due next. `full_busy`: a full sync is under way (none other is
    /// started, and a batch too large for one run waits for it).
    pub fn next_check(
        &self,
        quiet: Duration,
        longest: Duration,
        full_busy: bool,
    ) -> Option<Instant> {
        if full_busy && self.len() > MAX_BATCH {
            return None;
        }
        let full = self.full.as_ref().filter(|_| !full_busy).map(|f| f.due);
        let fresh = match (self.first, self.last) {
            (Some(first), Some(last)) => Some((last + quiet).min(first + longest)),
            _ => None,
        };
        let retry = self.retry.values().map(|r| r.due).min();
        [full, fresh, retry].into_iter().flatten().min()
    }

    /// What is due now: the fresh batch when nothing new came for `quiet` or its first has
    /// waited `longest` (with the retries due by then), or the retries due; taken out until
    /// [`Self::failed`] puts them back.
    pub fn take_due(
        &mut self,
        now: Instant,
        quiet: Duration,
        longest: Duration,
        full_busy: bool,
    ) -> Option<Due> {
        if full_busy && self.len() > MAX_BATCH {
            return None;
        }
        // A full sync owed goes first when due; the changes seen one by one go on being sent
        // besides it (one owed after too many at once has dropped them: it covers them).
        if let Some(full) = &self.full
            && full.due <= now
            && !full_busy
        {
            self.full_sending = Some((full.attempts, full.since));
            self.full = None;
            return Some(Due::Full);
        }
        let fresh_due = match (self.first, self.last) {
            (Some(first), Some(last)) => now - last >= quiet || now - first >= longest,
            _ => false,
        };
        let mut sending: BTreeMap<String, (u32, Instant)> = BTreeMap::new();
        if fresh_due {
            for path in std::mem::take(&mut self.fresh) {
                sending.insert(path, (0, now));
            }
            self.first = None;
            self.last = None;
        }
        let due: Vec<String> = self
            .retry
            .iter()
            .filter(|(_, r)| r.due <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for path in due {
            if let Some(r) = self.retry.remove(&path) {
                sending.insert(path, (r.attempts, r.since));
            }
        }
        if sending.is_empty() {
            return None;
        }
        if sending.len() > MAX_BATCH {
            // The paths are dropped: the full sync, kept owed until it succeeded, covers them.
            self.full_sending = Some((0, now));
            return Some(Due::Full);
        }
        let paths = sending.keys().cloned().collect();
        self.sending = sending;
        Some(Due::Paths(paths))
    }

    /// The batch, or the full sync, under way was delivered.
    pub fn delivered(&mut self, sent: Sent) {
        match sent {
            Sent::Paths => self.sending.clear(),
            Sent::Full => self.full_sending = None,
        }
    }

    /// Puts back the batch under way, which failed: each path due after its backoff; those that
    /// have failed for [`GIVE_UP_AFTER`] are given up (the next full sync covers them) and
    /// returned.
    pub fn failed(&mut self, sent: Sent, now: Instant) -> Vec<String> {
        let mut given_up = Vec::new();
        if sent == Sent::Full {
            let Some((tried, since)) = self.full_sending.take() else {
                return given_up;
            };
            if now.duration_since(since) >= GIVE_UP_AFTER {
                given_up.push("(a full sync)".to_owned());
            } else {
                let attempts = tried + 1;
                self.full = Some(Retry {
                    attempts,
                    due: now + backoff(attempts),
                    since,
                });
            }
            return given_up;
        }
        for (path, (tried, since)) in std::mem::take(&mut self.sending) {
            if self.fresh.contains(&path) {
                // Changed again meanwhile: the fresh batch sends it.
                continue;
            }
            if now.duration_since(since) >= GIVE_UP_AFTER {
                given_up.push(path);
                continue;
            }
            let attempts = tried + 1;
            self.retry.insert(
                path,
                Retry {
                    attempts,
                    due: now + backoff(attempts),
                    since,
                },
            );
        }
        given_up
    }

    /// Everything not delivered yet (the batch under way included), for the state file.
    pub fn to_save(&self, at: Offset) -> Saved {
        let mut pending: BTreeSet<String> = self.fresh.clone();
        pending.extend(self.retry.keys().cloned());
        pending.extend(self.sending.keys().cloned());
        Saved {
            at,
            pending: pending.into_iter().collect(),
            full_sync_owed: self.full.is_some() || self.full_sending.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_batch_is_due_after_a_quiet_spell_or_its_longest_wait() {
        let t0 = Instant::now();
        let mut p = Pending::default();
        assert_eq!(p.take_due(t0, MS(200), MS(1000), false), None);
        p.add("a".into(), t0);
        assert_eq!(p.take_due(t0 + MS(100), MS(200), MS(1000), false), None);
        assert_eq!(p.next_check(MS(200), MS(1000), false), Some(t0 + MS(200)));
        // Changes that keep coming: due at the longest wait all the same.
        for i in 1..=10 {
            p.add(format!("p{i}"), t0 + MS(i * 100));
        }
        p.add("a".into(), t0 + MS(1000));
        let Some(Due::Paths(batch)) = p.take_due(t0 + MS(1000), MS(200), MS(1000), false) else {
            panic!()
        };
        assert_eq!(batch.len(), 11, "each path once");
        assert!(!p.is_empty(), "kept while it is sent");
        p.delivered(Sent::Paths);
        assert!(p.is_empty());
    }

    #[test]
    fn a_failed_batch_is_tried_again_with_backoff_then_left_to_the_full_sync() {
        let t0 = Instant::now();
        let mut p = Pending::default();
        p.add("a".into(), t0);
        let Some(Due::Paths(batch)) = p.take_due(t0 + MS(300), MS(200), MS(1000), false) else {
            panic!()
        };
        assert_eq!(batch, ["a"]);
        assert_eq!(
            p.to_save(Offset::default()).pending,
            ["a"],
            "kept while sent"
        );
        assert!(p.failed(Sent::Paths, t0 + MS(400)).is_empty());
        assert_eq!(p.len(), 1, "kept");
        assert_eq!(
            p.take_due(t0 + MS(900), MS(200), MS(1000), false),
            None,
            "not before its backoff"
        );
        let Some(Due::Paths(again)) = p.take_due(t0 + MS(1400), MS(200), MS(1000), false) else {
            panic!()
        };
        assert_eq!(again, ["a"]);
        // Delivered: gone.
        p.delivered(Sent::Paths);
        assert!(p.is_empty());
        // Failing for half an hour: given up.
        p.add("b".into(), t0);
        let Some(Due::Paths(_)) = p.take_due(t0 + MS(300), MS(200), MS(1000), false) else {
            panic!()
        };
        assert_eq!(p.failed(Sent::Paths, t0 + MS(300) + GIVE_UP_AFTER), ["b"]);
        assert!(p.is_empty());
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(30), Duration::from_secs(60));
    }

    #[test]
    fn too_many_changes_owe_a_full_sync_and_the_state_keeps_everything_undelivered() {
        let t0 = Instant::now();
        let mut p = Pending::default();
        for i in 0..=MAX_PENDING {
            p.add(format!("s{i}"), t0);
        }
        assert!(!p.is_empty(), "a full sync is owed");
        assert_eq!(p.len(), 0, "no path kept one by one");
        assert!(p.to_save(Offset::default()).full_sync_owed);
        assert_eq!(p.take_due(t0, MS(200), MS(1000), false), Some(Due::Full));
        // What is saved: the fresh, the retried and the batch under way, with the position.
        let mut p = Pending::default();
        p.add("sending".into(), t0);
        let Some(Due::Paths(_)) = p.take_due(t0 + MS(300), MS(200), MS(1000), false) else {
            panic!()
        };
        p.add("fresh".into(), t0 + MS(300));
        let at = Offset {
            inode: 7,
            offset: 42,
        };
        let saved = p.to_save(at);
        assert_eq!(saved.pending, ["fresh", "sending"]);
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("watch.offset");
        saved.save(&state).unwrap();
        assert_eq!(Saved::load(&state), Some(saved.clone()));
        // A state file from before (an offset alone) still reads.
        std::fs::write(&state, r#"{"inode":7,"offset":42}"#).unwrap();
        assert_eq!(Saved::load(&state).unwrap().at, at);
        std::fs::write(&state, "{").unwrap();
        assert_eq!(Saved::load(&state), None, "a torn file is not trusted");
        let restored = Pending::restored(&saved, t0);
        assert_eq!(restored.len(), 2);
    }

    #[test]
    fn a_full_sync_that_failed_stays_owed_and_is_tried_again_with_backoff() {
        let t0 = Instant::now();
        // A batch too large for one run: a full sync, saved as owed until it succeeded.
        let mut p = Pending::default();
        for i in 0..=MAX_BATCH {
            p.add(format!("s{i}"), t0);
        }
        assert_eq!(
            p.take_due(t0 + MS(300), MS(200), MS(1000), false),
            Some(Due::Full)
        );
        assert!(
            p.to_save(Offset::default()).full_sync_owed,
            "owed while under way"
        );
        assert!(p.failed(Sent::Full, t0 + MS(400)).is_empty());
        assert!(
            p.to_save(Offset::default()).full_sync_owed,
            "owed after it failed"
        );
        assert_eq!(p.next_check(MS(200), MS(1000), false), Some(t0 + MS(1400)));
        assert_eq!(
            p.take_due(t0 + MS(900), MS(200), MS(1000), false),
            None,
            "backoff"
        );
        assert_eq!(
            p.take_due(t0 + MS(1400), MS(200), MS(1000), false),
            Some(Due::Full)
        );
        p.delivered(Sent::Full);
        assert!(p.is_empty());
        assert!(!p.to_save(Offset::default()).full_sync_owed);
        // A start-up or reconcile full sync that failed: owed, after a backoff; one that
        // succeeded pays what is owed.
        p.full_failed(t0);
        assert_eq!(p.take_due(t0, MS(200), MS(1000), false), None);
        // Changes seen meanwhile are not held up by it.
        p.add("x".into(), t0);
        assert_eq!(
            p.take_due(t0 + MS(300), MS(200), MS(1000), false),
            Some(Due::Paths(vec!["x".into()]))
        );
        p.delivered(Sent::Paths);
        assert_eq!(
            p.take_due(t0 + backoff(1), MS(200), MS(1000), false),
            Some(Due::Full)
        );
        assert!(p.failed(Sent::Full, t0 + backoff(1)).is_empty());
        // A full sync that started before the debt was raised does not pay it.
        p.full_done(t0 - MS(1));
        assert!(!p.is_empty());
        p.full_done(t0 + backoff(1));
        assert!(p.is_empty());
        // Failing for half an hour: left to the schedule, and said.
        p.full_failed(t0);
        let Some(Due::Full) = p.take_due(t0 + GIVE_UP_AFTER, MS(200), MS(1000), false) else {
            panic!()
        };
        assert_eq!(p.failed(Sent::Full, t0 + GIVE_UP_AFTER), ["(a full sync)"]);
        assert!(p.is_empty());
        // While a full sync runs beside the batches, no other starts, and a batch too large for
        // one run waits for it.
        p.full_failed(t0);
        let later = t0 + backoff(1) + MS(300);
        assert_eq!(p.take_due(later, MS(200), MS(1000), true), None);
        for i in 0..=MAX_BATCH {
            p.add(format!("s{i}"), t0 + backoff(1));
        }
        assert_eq!(p.next_check(MS(200), MS(1000), true), None);
        assert_eq!(p.take_due(later, MS(200), MS(1000), true), None);
        assert_eq!(p.take_due(later, MS(200), MS(1000), false), Some(Due::Full));
    }
}
