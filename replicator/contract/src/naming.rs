//! How a replica is named: the name template and the granularity (one AWS secret per Vault
//! secret, or per key). Both programs validate them; the replicator renders them. Pure.

use serde::{Deserialize, Serialize};

/// One replica per Vault secret, or one per key of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Granularity {
    /// The whole secret as one JSON object (as the sample does).
    #[default]
    SecretPath,
    /// Each key its own AWS secret, its value the raw string (other values as JSON).
    SecretKey,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Path,
    Mount,
    Key,
}

/// The part of a replica's name after `<prefix>/`, from `{path}`, `{mount}` and `{key}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTemplate {
    parts: Vec<Part>,
    source: String,
}

impl NameTemplate {
    /// The default of a granularity: `{path}`, or `{path}/{key}`.
    pub fn default_for(granularity: Granularity) -> Self {
        let text = match granularity {
            Granularity::SecretPath => "{path}",
            Granularity::SecretKey => "{path}/{key}",
        };
        Self::parse(text, granularity).unwrap_or_else(|_| unreachable!("default template"))
    }

    /// Parses a template; the error says what to fix.
    pub fn parse(text: &str, granularity: Granularity) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let end = after
                    .find('}')
                    .ok_or_else(|| format!("{text:?}: a {{ is not closed"))?;
                parts.push(match &after[..end] {
                    "path" => Part::Path,
                    "mount" => Part::Mount,
                    "key" => Part::Key,
                    other => {
                        return Err(format!(
                            "{text:?}: {{{other}}} is not a placeholder (use {{path}}, {{mount}} or {{key}})"
                        ));
                    }
                });
                rest = &after[end + 1..];
            } else {
                let end = rest.find(['{', '}']).unwrap_or(rest.len());
                if end == 0 {
                    return Err(format!("{text:?}: a }} has no {{"));
                }
                let literal = &rest[..end];
                if let Some(c) = literal.chars().find(|c| !crate::is_aws_name_char(*c)) {
                    return Err(format!(
                        "{text:?}: {c:?} is not allowed in a secret name (letters, digits, /_+=.@-)"
                    ));
                }
                parts.push(Part::Text(literal.to_owned()));
                rest = &rest[end..];
            }
        }
        let has = |p: &Part| parts.contains(p);
        match granularity {
            _ if parts.is_empty() => return Err("the name template is empty".into()),
            Granularity::SecretPath if has(&Part::Key) => {
                return Err(format!(
                    "{text:?}: {{key}} needs --granularity secret-key (one secret per key)"
                ));
            }
            Granularity::SecretKey if !has(&Part::Key) => {
                return Err(format!(
                    "{text:?}: with --granularity secret-key every key of a secret needs its own name: add {{key}}"
                ));
            }
            _ => {}
        }
        Ok(Self {
            parts,
            source: text.to_owned(),
        })
    }

    /// Whether the name says the Vault path alone (`{path}`), as before templates existed: such
    /// replicas need no `vault-secret` tag.
    pub fn is_plain_path(&self) -> bool {
        self.parts == [Part::Path]
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The rendered part after `<prefix>/`.
    pub fn render(&self, path: &str, mount: &str, key: &str) -> String {
        let mut out = String::with_capacity(path.len() + key.len() + 16);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Path => out.push_str(path),
                Part::Mount => out.push_str(mount),
                Part::Key => out.push_str(key),
            }
        }
        out
    }
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecretPath => "secret-path",
            Self::SecretKey => "secret-key",
        }
    }
}

impl std::str::FromStr for Granularity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "secret-path" => Ok(Self::SecretPath),
            "secret-key" => Ok(Self::SecretKey),
            _ => Err(format!("{s:?} must be secret-path or secret-key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_and_refuse_what_cannot_name_a_secret() {
        let t = NameTemplate::parse("{mount}/{path}-copy", Granularity::SecretPath).unwrap();
        assert_eq!(t.render("app/db", "kv", ""), "kv/app/db-copy");
        assert!(!t.is_plain_path());
        assert!(NameTemplate::default_for(Granularity::SecretPath).is_plain_path());
        assert_eq!(
            NameTemplate::default_for(Granularity::SecretKey).render("a/b", "kv", "user"),
            "a/b/user"
        );
        for (text, g, why) in [
            ("{path", Granularity::SecretPath, "not closed"),
            ("{paths}", Granularity::SecretPath, "not a placeholder"),
            ("a}b", Granularity::SecretPath, "has no {"),
            ("{path} x", Granularity::SecretPath, "' ' is not allowed"),
            (
                "{path}/{key}",
                Granularity::SecretPath,
                "needs --granularity",
            ),
            ("{path}", Granularity::SecretKey, "add {key}"),
            ("", Granularity::SecretPath, "empty"),
        ] {
            let e = NameTemplate::parse(text, g).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }
}
