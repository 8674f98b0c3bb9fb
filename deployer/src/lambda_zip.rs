//! The replicator's Lambda artifact: a zip with an executable `bootstrap` at its root. Checked
//! before any AWS call; its SHA-256 (base64, as Lambda reports `CodeSha256`) decides whether the
//! code is uploaded. Reads the file.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Where `replicator/package-lambda.sh` puts the zip.
pub const DEFAULT_PATH: &str = "target/lambda/replicator.zip";

#[derive(Debug, thiserror::Error)]
pub enum ZipError {
    #[error(
        "Lambda zip {path}: {message}; build it with replicator/package-lambda.sh or pass --lambda-zip PATH"
    )]
    Bad { path: PathBuf, message: String },
}

#[derive(Clone)]
pub struct LambdaZip {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// base64 SHA-256, comparable with Lambda's `CodeSha256`.
    pub sha256: String,
}

impl std::fmt::Debug for LambdaZip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaZip")
            .field("path", &self.path)
            .field("size", &self.bytes.len())
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl LambdaZip {
    pub fn load(path: &Path) -> Result<Self, ZipError> {
        let bad = |message: String| ZipError::Bad {
            path: path.to_owned(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
        // The absolute path, links resolved: what `plan` and `up` say they upload.
        let path = std::fs::canonicalize(path)
            .map_err(|e| bad(format!("cannot resolve its absolute path ({e})")))?;
        Self::from_bytes(&path, bytes).map_err(bad)
    }

    /// What is uploaded, as `plan` and `up` print it: the absolute path, the size and the
    /// SHA-256 in hex (`sha256sum`) and in base64 (Lambda's `CodeSha256`).
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "path": self.path.display().to_string(),
            "bytes": self.bytes.len(),
            "sha256": self.sha256_hex(),
            "code_sha256": self.sha256,
        })
    }

    /// [`Self::summary`] as one line of text.
    pub fn summary_line(&self) -> String {
        format!(
            "Function code: {} ({} bytes), SHA-256 {} (Lambda's CodeSha256 {})\n",
            self.path.display(),
            self.bytes.len(),
            self.sha256_hex(),
            self.sha256
        )
    }

    /// The SHA-256 in hex, as `sha256sum` prints it: the digest the Vault host checks the
    /// watcher's code against.
    pub fn sha256_hex(&self) -> String {
        Sha256::digest(&self.bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() > 50 * 1024 * 1024 {
            return Err(format!(
                "{} bytes is over Lambda's 50 MB direct upload limit",
                bytes.len()
            ));
        }
        let mut archive = zip::ZipArchive::new(Cursor::new(&bytes))
            .map_err(|e| format!("not a zip archive ({e})"))?;
        let entry = archive
            .by_name("bootstrap")
            .map_err(|_| "holds no `bootstrap` file at its root".to_owned())?;
        if !entry.is_file() {
            return Err("`bootstrap` is not a file".into());
        }
        if let Some(mode) = entry.unix_mode()
            && mode & 0o111 == 0
        {
            return Err("`bootstrap` is not executable (mode lacks x bits)".into());
        }
        drop(entry);
        let sha256 = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&bytes));
        Ok(Self {
            path: path.to_owned(),
            bytes,
            sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_with(name: &str, mode: u32) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(mode);
        w.start_file(name, opts).unwrap();
        w.write_all(b"\x7fELF").unwrap();
        w.finish().unwrap();
        buf.into_inner()
    }

    #[test]
    fn accepts_an_executable_bootstrap_only() {
        let p = Path::new("x.zip");
        let ok = LambdaZip::from_bytes(p, zip_with("bootstrap", 0o755)).unwrap();
        assert_eq!(ok.sha256.len(), 44);
        let hex = ok.sha256_hex();
        assert_eq!(hex.len(), 64);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&ok.sha256)
            .unwrap();
        assert_eq!(
            hex,
            raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        assert!(
            LambdaZip::from_bytes(p, zip_with("main", 0o755))
                .unwrap_err()
                .contains("no `bootstrap`")
        );
        assert!(
            LambdaZip::from_bytes(p, zip_with("bootstrap", 0o644))
                .unwrap_err()
                .contains("not executable")
        );
        assert!(
            LambdaZip::from_bytes(p, b"hello".to_vec())
                .unwrap_err()
                .contains("not a zip")
        );
    }
}
