//! Which Vault secrets a sync selects: the rule's `include` and `exclude` globs over the path
//! under the replicated mount and sub-path, and each secret's own `sync` custom metadata (an
//! opt-out everywhere; an opt-in where the rule asks for one). Decided from the listing and the
//! metadata alone: never from a value. No I/O.
//!
//! In a glob, `*` matches any characters, `/` included (`db/*` is everything under `db/`), and
//! `?` matches one character other than `/`; every other character matches itself.

/// The custom metadata key a secret opts in or out with: `sync = "false"` keeps it out of every
/// sync; under `opt_in`, only `sync = "true"` brings it in.
pub const SYNC_KEY: &str = "sync";

/// The longest pattern accepted.
pub const MAX_PATTERN_LEN: usize = 512;
/// The most patterns of each kind one sync takes (each is tried against every path).
pub const MAX_PATTERNS: usize = 100;

/// Why a secret that exists in Vault is not replicated by a sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Excluded {
    /// Its path matches no `include`, or an `exclude`.
    Path,
    /// Its custom metadata says `sync = "false"`.
    OptedOut,
    /// The sync is opt-in and its custom metadata does not say `sync = "true"`.
    NotOptedIn,
}

impl Excluded {
    /// Said in reports, beside what happens to a replica it had.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Path => "excluded by the sync's include/exclude patterns",
            Self::OptedOut => "opted out in Vault (custom metadata sync = \"false\")",
            Self::NotOptedIn => {
                "not opted in (the sync is opt_in; custom metadata sync = \"true\" brings it in)"
            }
        }
    }
}

/// The default selection, for callers that need one that lives for ever.
pub static EVERY_SECRET: Selection = Selection {
    include: Vec::new(),
    exclude: Vec::new(),
    opt_in: false,
};

/// The selection of one sync. The default selects every secret that does not opt out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    include: Vec<String>,
    exclude: Vec<String>,
    opt_in: bool,
}

impl Selection {
    /// Checks each pattern ([`check_pattern`]); the error names the list and the pattern.
    pub fn new(include: Vec<String>, exclude: Vec<String>, opt_in: bool) -> Result<Self, String> {
        for (list, patterns) in [("include", &include), ("exclude", &exclude)] {
            if patterns.len() > MAX_PATTERNS {
                return Err(format!(
                    "{list} has {} patterns; at most {MAX_PATTERNS} are accepted",
                    patterns.len()
                ));
            }
            for p in patterns {
                check_pattern(p).map_err(|e| format!("{list} pattern {p:?} {e}"))?;
            }
        }
        Ok(Self {
            include,
            exclude,
            opt_in,
        })
    }

    pub fn include(&self) -> &[String] {
        &self.include
    }

    pub fn exclude(&self) -> &[String] {
        &self.exclude
    }

    pub fn opt_in(&self) -> bool {
        self.opt_in
    }

    /// Whether the patterns select the path (relative to the sync's mount and sub-path): it
    /// matches an `include` (or there is none) and no `exclude`.
    pub fn selects_path(&self, rel: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| glob_matches(p, rel)))
            && !self.exclude.iter().any(|p| glob_matches(p, rel))
    }

    /// Whether a secret whose path is selected is excluded by its `sync` custom metadata
    /// (`None`: no such key). A value other than `true` or `false` (in any case) is an error that
    /// says what to write: the secret is then neither written nor deleted.
    pub fn by_metadata(&self, sync: Option<&str>) -> Result<Option<Excluded>, String> {
        let flag = match sync.map(str::trim) {
            None => None,
            Some(v) if v.eq_ignore_ascii_case("true") => Some(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Some(false),
            // The value is not quoted: it is anyone's text, and reports travel.
            Some(_) => {
                return Err(format!(
                    "custom metadata {SYNC_KEY} is neither \"true\" nor \"false\": set it to one of them, or remove it; the secret is neither written nor deleted until then"
                ));
            }
        };
        Ok(match (flag, self.opt_in) {
            (Some(false), _) => Some(Excluded::OptedOut),
            (None, true) => Some(Excluded::NotOptedIn),
            _ => None,
        })
    }
}

/// A pattern is not empty, at most [`MAX_PATTERN_LEN`] characters, relative (no leading `/`),
/// and has no `,` (the function reads the lists comma-separated) and no control character.
pub fn check_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("is empty".into());
    }
    if p.len() > MAX_PATTERN_LEN {
        return Err(format!("is longer than {MAX_PATTERN_LEN} characters"));
    }
    if p.trim() != p {
        return Err("has spaces around it (a list is split at ',' only): remove them".into());
    }
    if p.starts_with('/') {
        return Err(
            "starts with '/': patterns match the path under the sync's mount and path, like \"db/*\""
                .into(),
        );
    }
    if p.contains(',') {
        return Err("has a ',', which cannot be passed to the function (its lists are comma-separated): use '?' for that character".into());
    }
    if p.chars().any(char::is_control) {
        return Err("has a control character".into());
    }
    Ok(())
}

/// Whether `pattern` matches the whole of `text`: `*` any run of characters (`/` included),
/// `?` one character other than `/`. Linear backtracking on the last `*`: no pattern can make it
/// slower than the product of the two lengths.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    // Where the last `*` was, and the text position it is now taken to run to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some('?') if t[ti] != '/' => {
                pi += 1;
                ti += 1;
            }
            Some(&c) if c != '?' && c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_paths() {
        for (p, t, want) in [
            ("db/*", "db/a", true),
            ("db/*", "db/a/b", true),
            ("db/*", "db", false),
            ("db/*", "dbx/a", false),
            ("*/scratch/*", "a/scratch/x", true),
            ("*/scratch/*", "a/b/scratch/x/y", true),
            ("*/scratch/*", "scratch/x", false),
            ("app?", "app1", true),
            ("app?", "app/", false),
            ("app?", "app", false),
            ("a*b*c", "a-b-b-c", true),
            ("a*b*c", "a-b-b-", false),
            ("*", "", true),
            ("exact", "exact", true),
            ("exact", "exact/", false),
            ("**", "x/y/z", true),
            ("é*", "éa", true),
        ] {
            assert_eq!(glob_matches(p, t), want, "{p:?} against {t:?}");
        }
    }

    #[test]
    fn a_pathological_pattern_stays_cheap() {
        let text = "a".repeat(400);
        let pattern = format!("{}b", "*a".repeat(200));
        assert!(!glob_matches(&pattern, &text));
    }

    #[test]
    fn include_then_exclude() {
        let s = Selection::new(
            vec!["db/*".into(), "app".into()],
            vec!["*/tmp/*".into()],
            false,
        )
        .unwrap();
        assert!(s.selects_path("db/x"));
        assert!(s.selects_path("app"));
        assert!(!s.selects_path("db/tmp/x"));
        assert!(!s.selects_path("other"));
        assert!(Selection::default().selects_path("anything/at/all"));
    }

    #[test]
    fn bad_patterns_say_what_to_fix() {
        for (inc, problem) in [
            ("", "is empty"),
            ("/db/*", "starts with '/'"),
            ("a,b", "has a ','"),
            ("a\nb", "control character"),
            (" web", "spaces around it"),
        ] {
            let e = Selection::new(vec![inc.into()], vec![], false).unwrap_err();
            assert!(
                e.starts_with("include pattern") && e.contains(problem),
                "{e}"
            );
        }
        let many = vec!["x".to_owned(); MAX_PATTERNS + 1];
        assert!(Selection::new(vec![], many, false).is_err());
    }

    #[test]
    fn metadata_opts_out_everywhere_and_in_where_asked() {
        let all = Selection::default();
        let opt_in = Selection::new(vec![], vec![], true).unwrap();
        assert_eq!(all.by_metadata(None), Ok(None));
        assert_eq!(all.by_metadata(Some("True")), Ok(None));
        assert_eq!(all.by_metadata(Some("false")), Ok(Some(Excluded::OptedOut)));
        assert_eq!(opt_in.by_metadata(None), Ok(Some(Excluded::NotOptedIn)));
        assert_eq!(opt_in.by_metadata(Some(" TRUE ")), Ok(None));
        assert_eq!(
            opt_in.by_metadata(Some("FALSE")),
            Ok(Some(Excluded::OptedOut))
        );
        let e = all.by_metadata(Some("no")).unwrap_err();
        assert!(
            !e.contains("\"no\"") && e.contains("\"true\" nor \"false\""),
            "{e}"
        );
    }
}
