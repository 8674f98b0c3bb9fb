//! The documentation says what the programs do: every flag and variable of `replicator sync`
//! and `replicator watch`, and every key of `deployer.toml`, is in `docs/`, and everything
//! documented there exists. Read from the built binaries' own help and the deployer's own
//! parser, so a flag added, renamed or removed without its line fails here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

/// A documentation page of the repository.
fn page(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of `text` from the heading `from` to the next heading of its level or above.
fn section<'a>(text: &'a str, from: &str) -> Vec<&'a str> {
    let level = from.split(' ').next().unwrap().len();
    let mut lines = text.lines().skip_while(|l| *l != from);
    assert!(lines.next().is_some(), "no heading {from:?}");
    lines
        .take_while(|l| {
            let hashes = l.chars().take_while(|c| *c == '#').count();
            !(hashes > 0 && hashes <= level && l[hashes..].starts_with(' '))
        })
        .collect()
}

/// The backticked words of a table row's `cell` (0-based) that `keep` accepts.
fn cell_words(row: &str, cell: usize, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let Some(text) = row.split('|').nth(cell + 1) else {
        return Vec::new();
    };
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| keep(w))
        .map(str::to_owned)
        .collect()
}

fn is_flag(w: &str) -> bool {
    w.starts_with("--")
        && w[2..]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_variable(w: &str) -> bool {
    !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The flags and variables documented in the tables of `lines`.
fn documented(lines: &[&str]) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut flags, mut vars) = (BTreeSet::new(), BTreeSet::new());
    for row in lines.iter().filter(|l| l.starts_with("| `-")) {
        flags.extend(cell_words(row, 0, is_flag));
        vars.extend(cell_words(row, 1, is_variable));
    }
    (flags, vars)
}

/// The long flags and variables `replicator <command> --help` lists.
fn in_help(command: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = std::process::Command::new(e2e::bin_path("replicator"))
        .args([command, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let (mut flags, mut vars) = (BTreeSet::new(), BTreeSet::new());
    for line in help.lines().map(str::trim_start) {
        // `-v, --verbose`: the long name after a short one.
        let line = match line.split_once(", --") {
            Some((short, long)) if short.starts_with('-') && short.len() == 2 => {
                &line[line.len() - long.len() - 2..]
            }
            _ => line,
        };
        if let Some(rest) = line.strip_prefix("--") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
                .collect();
            flags.insert(format!("--{name}"));
        }
        if let Some(var) = line.strip_prefix("[env: ") {
            // `[env: NAME=value]`, or `[env: NAME]` where values are hidden.
            vars.insert(var.split(['=', ']']).next().unwrap().to_owned());
        }
    }
    flags.remove("--help");
    (flags, vars)
}

fn same(what: &str, documented: &BTreeSet<String>, existing: &BTreeSet<String>) {
    let missing: Vec<_> = existing.difference(documented).collect();
    let gone: Vec<_> = documented.difference(existing).collect();
    assert!(
        missing.is_empty() && gone.is_empty(),
        "{what}: undocumented {missing:?}; documented but not there {gone:?}"
    );
}

#[test]
fn every_flag_and_variable_of_the_replicator_is_documented_and_exists() {
    let config = page("docs/configuration.md");
    let (doc_flags, mut doc_vars) =
        documented(&section(&config, "## The replicator's flags and variables"));
    // Read by the logger, not by a flag.
    doc_vars.remove("RUST_LOG");
    let (flags, vars) = in_help("sync");
    same("replicator sync flags", &doc_flags, &flags);
    same("replicator sync variables", &doc_vars, &vars);

    // The watcher's own, beside every flag of `sync`.
    let replicator = page("docs/replicator.md");
    let (watch_doc_flags, watch_doc_vars) = documented(&section(
        &replicator,
        "## Change-driven replication: `replicator watch`",
    ));
    let (watch_flags, watch_vars) = in_help("watch");
    let own = |all: &BTreeSet<String>, sync: &BTreeSet<String>, documented: &BTreeSet<String>| {
        all.iter()
            .filter(|f| !sync.contains(*f) || documented.contains(*f))
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    same(
        "replicator watch flags",
        &watch_doc_flags,
        &own(&watch_flags, &flags, &watch_doc_flags),
    );
    same(
        "replicator watch variables",
        &watch_doc_vars,
        &own(&watch_vars, &vars, &watch_doc_vars),
    );
}

/// The keys named in the first cells of the tables under `heading` of docs/configuration.md.
fn documented_keys(heading: &str) -> BTreeSet<String> {
    let config = page("docs/configuration.md");
    section(&config, heading)
        .iter()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|row| {
            cell_words(row, 0, |w| {
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
        })
        .collect()
}

/// Every key the deployer's parser knows where `toml` holds one it does not: it names them all.
fn known_keys(toml: &str) -> BTreeSet<String> {
    let err = deployer::config::FileConfig::parse(toml, "probe")
        .unwrap_err()
        .to_string();
    err.split("expected one of")
        .nth(1)
        .unwrap_or_else(|| panic!("{err}"))
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_key_of_deployer_toml_is_documented_and_exists() {
    let known = known_keys("no_such_key_here = 1");
    assert!(known.len() > 30, "{known:?}");
    same(
        "deployer.toml keys",
        &documented_keys("## `deployer.toml`"),
        &known,
    );
    let rule_keys = known_keys("[[sync]]\nname = \"a\"\nprefix = \"p\"\nno_such_key_here = 1");
    assert!(rule_keys.len() > 20, "{rule_keys:?}");
    same(
        "[[sync]] keys",
        &documented_keys("## `[[sync]]` rules"),
        &rule_keys,
    );
}

#[test]
fn every_page_of_docs_is_linked_from_the_readme_and_the_readme_stays_short() {
    let readme = page("README.md");
    assert!(
        readme.len() < 20 * 1024,
        "README.md is {} bytes: keep it under 20 KB, the rest in docs/",
        readme.len()
    );
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    for entry in std::fs::read_dir(docs).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            assert!(
                readme.contains(&format!("](docs/{name})")),
                "docs/{name} is not linked from README.md"
            );
        }
    }
}
