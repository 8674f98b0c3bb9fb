//! Splits the listing of every secret under `<prefix>/` into disjoint name ranges that
//! `ListSecrets` can page through at the same time. Pure: no I/O.
//!
//! `ListSecrets` pages hold 100 secrets and each page waits for the previous page's token, so one
//! listing of 10,000 secrets is a chain of 100 round trips. Its `name` filter is a case-sensitive
//! prefix match that takes up to 10 values (any of them matches). The names Vault is expected to
//! have say where the secrets are: a prefix with more than `per_range` of them is split into one
//! prefix per next character a name may have, and the name equal to the split prefix itself
//! (which no longer prefix matches) is looked up on its own. Every name under the root then
//! matches exactly one range or is one of the looked-up names, whatever AWS holds: the split is
//! only ever guided by Vault, never trusted to be complete.

use contract::is_aws_name_char;

/// Every character AWS accepts in a secret name, in byte order.
pub const NAME_CHARS: &[u8] =
    b"+-./0123456789=@ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

/// Names a range is expected to hold: ten pages, about a second's chain on AWS.
pub const NAMES_PER_RANGE: usize = 1000;

/// Values one `name` filter accepts.
pub const MAX_FILTER_VALUES: usize = 10;

/// Longest secret name AWS accepts (and longest filter value).
const MAX_NAME_LEN: usize = 512;

/// How the names under one root are listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Partition {
    /// Each is one `ListSecrets` page chain: a `name` filter with these values (at most
    /// [`MAX_FILTER_VALUES`]); no name matches two values of the whole partition.
    pub ranges: Vec<Vec<String>>,
    /// Names looked up one by one (`DescribeSecret`): the prefixes that were split.
    pub exact: Vec<String>,
}

impl Partition {
    /// How many of the partition's filters and lookups `name` matches (1 for any name under the
    /// root, by construction).
    pub fn matches(&self, name: &str) -> usize {
        let ranged = self
            .ranges
            .iter()
            .flatten()
            .filter(|p| name.starts_with(p.as_str()))
            .count();
        ranged + self.exact.iter().filter(|e| *e == name).count()
    }
}

/// Splits `root` (`<prefix>/`) so that no range is expected to hold more than `per_range` names.
/// `expected` are the names Vault says exist, each starting with `root`; names AWS would refuse
/// are ignored (they can't be there).
pub fn partition<'a>(
    root: &str,
    expected: impl IntoIterator<Item = &'a str>,
    per_range: usize,
) -> Partition {
    let mut names: Vec<&str> = expected
        .into_iter()
        .filter(|n| {
            n.starts_with(root) && n.len() <= MAX_NAME_LEN && n.chars().all(is_aws_name_char)
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut leaves = Vec::new();
    let mut exact = Vec::new();
    let mut prefix = root.to_owned();
    split(
        &mut prefix,
        &names,
        per_range.max(1),
        &mut leaves,
        &mut exact,
    );
    Partition {
        ranges: pack(leaves, per_range.max(1)),
        exact,
    }
}

/// Covers `names` (sorted, all starting with `prefix`): one leaf, or the prefix split by its
/// next character.
fn split(
    prefix: &mut String,
    names: &[&str],
    per_range: usize,
    leaves: &mut Vec<(String, usize)>,
    exact: &mut Vec<String>,
) {
    if names.len() <= per_range || prefix.len() >= MAX_NAME_LEN {
        leaves.push((prefix.clone(), names.len()));
        return;
    }
    exact.push(prefix.clone());
    let at = prefix.len();
    // Sorted, so the name equal to the prefix comes first and each next character's names are
    // one run.
    let mut rest = match names.first() {
        Some(first) if first.len() == at => &names[1..],
        _ => names,
    };
    for &c in NAME_CHARS {
        let end = rest.partition_point(|n| n.as_bytes()[at] <= c);
        let (run, tail) = rest.split_at(end);
        prefix.push(char::from(c));
        split(prefix, run, per_range, leaves, exact);
        prefix.pop();
        rest = tail;
    }
}

/// Groups leaves, in name order, into filters of at most [`MAX_FILTER_VALUES`] values expected to
/// hold at most `per_range` names together.
fn pack(leaves: Vec<(String, usize)>, per_range: usize) -> Vec<Vec<String>> {
    let mut ranges = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut count = 0;
    for (prefix, n) in leaves {
        if !current.is_empty() && (current.len() == MAX_FILTER_VALUES || count + n > per_range) {
            ranges.push(std::mem::take(&mut current));
            count = 0;
        }
        current.push(prefix);
        count += n;
    }
    if !current.is_empty() {
        ranges.push(current);
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
        /// A name under `root` built from a few characters, so names share prefixes often.
        fn name(&mut self, root: &str, alphabet: &[u8]) -> String {
            let len = 1 + self.below(6);
            let mut s = root.to_owned();
            for _ in 0..len {
                s.push(char::from(alphabet[self.below(alphabet.len())]));
            }
            s
        }
    }

    #[test]
    fn a_small_store_is_one_range_of_the_root() {
        let p = partition("app/", ["app/a", "app/b"], 100);
        assert_eq!(p.ranges, vec![vec!["app/".to_owned()]]);
        assert!(p.exact.is_empty());
        let empty = partition("app/", [], 100);
        assert_eq!(empty.ranges, vec![vec!["app/".to_owned()]]);
    }

    #[test]
    fn every_name_under_the_root_matches_exactly_once() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let root = "r/";
        for round in 0..200 {
            // Vault's names from a narrow alphabet (deep shared prefixes); AWS's from every
            // character a name may have, plus the split prefixes themselves.
            let narrow = b"ab/0-";
            let expected: Vec<String> = (0..rng.below(400))
                .map(|_| rng.name(root, narrow))
                .collect();
            let per_range = 1 + rng.below(30);
            let p = partition(root, expected.iter().map(String::as_str), per_range);
            for range in &p.ranges {
                assert!(
                    !range.is_empty() && range.len() <= MAX_FILTER_VALUES,
                    "{range:?}"
                );
            }
            let mut probes: Vec<String> = (0..300).map(|_| rng.name(root, NAME_CHARS)).collect();
            probes.extend(expected.iter().cloned());
            probes.extend(p.exact.iter().cloned());
            probes.push(root.to_owned());
            for name in &probes {
                assert_eq!(p.matches(name), 1, "round {round}: {name} in {p:?}");
            }
            // A name outside the root matches nothing.
            assert_eq!(p.matches("other/a"), 0);
        }
    }

    #[test]
    fn ranges_hold_at_most_per_range_expected_names_unless_one_name_is_a_whole_prefix() {
        let names: Vec<String> = (0..10_000)
            .map(|i| format!("bulk/team{}/svc{}/secret{i}", i % 10, (i / 10) % 10))
            .collect();
        let p = partition("bulk/", names.iter().map(String::as_str), 1000);
        for range in &p.ranges {
            let n = names
                .iter()
                .filter(|n| range.iter().any(|r| n.starts_with(r.as_str())))
                .count();
            assert!(n <= 1000, "{range:?} holds {n}");
        }
        // Ten teams of 1,000 are ten ranges; the split prefixes' other characters pack into
        // filters of ten.
        assert!(p.ranges.len() < 60, "{} ranges", p.ranges.len());
        assert!(p.exact.contains(&"bulk/team".to_owned()));
    }

    #[test]
    fn names_aws_refuses_do_not_steer_the_split() {
        let p = partition("r/", ["r/a b", "r/ü", "r/a b2"], 1);
        assert_eq!(p.ranges, vec![vec!["r/".to_owned()]]);
    }
}
