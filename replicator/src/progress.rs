//! Live counters of a run (secrets found in Vault, writes planned and done), for a progress line
//! on a terminal. Counters only; the CLI draws them, the Lambda ignores them. No I/O.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Progress {
    pub found: AtomicU64,
    pub planned: AtomicU64,
    pub done: AtomicU64,
}

impl Progress {
    pub fn add_found(&self, n: u64) {
        self.found.fetch_add(n, Ordering::Relaxed);
    }

    /// One line: `walking Vault: 812 secrets` or `writing: 40/100`.
    pub fn line(&self) -> String {
        let (found, planned, done) = (
            self.found.load(Ordering::Relaxed),
            self.planned.load(Ordering::Relaxed),
            self.done.load(Ordering::Relaxed),
        );
        if planned == 0 {
            format!("walking Vault: {found} secrets found")
        } else {
            format!("{found} secrets in Vault; writing to AWS: {done}/{planned}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_follows_the_phase() {
        let p = Progress::default();
        p.add_found(12);
        assert_eq!(p.line(), "walking Vault: 12 secrets found");
        p.planned.store(4, Ordering::Relaxed);
        p.done.store(1, Ordering::Relaxed);
        assert_eq!(p.line(), "12 secrets in Vault; writing to AWS: 1/4");
    }
}
