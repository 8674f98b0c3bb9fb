//! Follows a log file that is appended to, rotated (renamed away, a new file in its place) or
//! truncated: complete lines only, each once, read in bounded chunks (the work and the memory
//! of one call are bounded however large the backlog), each byte looked at once. A rotated file
//! is read to its end, and kept being read until it has been quiet for a while: Vault writes to
//! it until it reopens its log. File I/O; meant to run off the async runtime.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The most one call reads.
pub const CHUNK: usize = 256 * 1024;
/// A longer line is skipped (an audit entry is far shorter: values are hashed).
pub const MAX_LINE: usize = 4 << 20;
/// How long a rotated file must stay quiet before it is let go.
pub const DRAIN_QUIET: Duration = Duration::from_secs(5);

/// Where the watcher is in the log: the file (by inode) and the offset after the last complete
/// line it handed out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offset {
    pub inode: u64,
    pub offset: u64,
}

fn inode(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

/// One open file being read.
#[derive(Debug)]
struct Reader {
    file: File,
    at: Offset,
    /// Bytes read after `at`: the start of a line not yet complete.
    partial: Vec<u8>,
    /// Inside a line over [`MAX_LINE`]: dropped up to its end.
    skipping: bool,
}

impl Reader {
    fn new(file: File, inode: u64, offset: u64) -> Self {
        Self {
            file,
            at: Offset { inode, offset },
            partial: Vec::new(),
            skipping: false,
        }
    }

    /// Reads at most [`CHUNK`] bytes and hands out each complete line; the bytes read (0: none
    /// new). Each byte is looked at once; only the incomplete line's bytes are kept.
    fn read(&mut self, line: &mut dyn FnMut(&[u8])) -> std::io::Result<usize> {
        let mut chunk = vec![0; CHUNK];
        self.file
            .seek(SeekFrom::Start(self.at.offset + self.partial.len() as u64))?;
        let n = self.file.read(&mut chunk)?;
        chunk.truncate(n);
        let mut rest = &chunk[..];
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let (head, tail) = rest.split_at(end);
            let length = self.partial.len() + head.len() + 1;
            if self.skipping {
                self.skipping = false;
            } else if length > MAX_LINE {
                too_long();
            } else if self.partial.is_empty() {
                line(head);
            } else {
                self.partial.extend_from_slice(head);
                line(&self.partial);
            }
            self.partial.clear();
            self.at.offset += length as u64;
            rest = &tail[1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_LINE {
            tracing::warn!("an audit log line is over {} MiB: skipped", MAX_LINE >> 20);
            self.at.offset += self.partial.len() as u64;
            self.partial.clear();
            self.skipping = true;
        }
        Ok(n)
    }
}

fn too_long() {
    tracing::warn!("an audit log line is over {} MiB: skipped", MAX_LINE >> 20);
}

/// A rotated file, read until it has been quiet for [`DRAIN_QUIET`].
#[derive(Debug)]
struct Draining {
    reader: Reader,
    quiet_since: Option<Instant>,
}

#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    current: Option<Reader>,
    /// Rotated files not read to their end yet, oldest first.
    old: std::collections::VecDeque<Draining>,
}

/// Where the file last rotated away lies (logrotate's first old file, kept uncompressed one
/// rotation long with `delaycompress`).
fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The file at `path`, when it is there and not the file `except`: (file, inode, length).
fn open_other(path: &Path, except: &[u64]) -> Option<(File, u64, u64)> {
    let file = File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    let here = inode(&meta);
    (!except.contains(&here)).then_some((file, here, meta.len()))
}

impl Tail {
    /// Starts at `from` when it is the same file and not past its end. When `from` is in the
    /// file rotated away since (`<path>.1`), reads that one on from there, then the current
    /// file from its start. Otherwise starts at the end of the file (what came before is the
    /// start-up full sync's business). A missing file is waited for.
    pub fn open(path: &Path, from: Option<Offset>) -> Self {
        let mut tail = Self {
            path: path.to_owned(),
            current: None,
            old: std::collections::VecDeque::new(),
        };
        if let Ok(file) = File::open(path)
            && let Ok(meta) = file.metadata()
        {
            let here = inode(&meta);
            let mut offset = meta.len();
            if let Some(o) = from {
                if o.inode == here && o.offset <= meta.len() {
                    offset = o.offset;
                } else if let Some((old, there, len)) = open_other(&rotated(path), &[here])
                    && there == o.inode
                    && o.offset <= len
                {
                    tail.old.push_back(Draining {
                        reader: Reader::new(old, there, o.offset),
                        quiet_since: None,
                    });
                    offset = 0;
                }
            }
            tail.current = Some(Reader::new(file, here, offset));
        }
        tail
    }

    /// Where the next line starts that has not been handed out: in the oldest rotated file not
    /// read to its end, else in the current file. (Saved there, a restart reads on from it and
    /// reads the current file again from its start: a change may come twice, never not.)
    pub fn position(&self) -> Offset {
        self.old
            .front()
            .map(|d| d.reader.at)
            .or_else(|| self.current.as_ref().map(|r| r.at))
            .unwrap_or_default()
    }

    /// Reads at most one chunk, handing each complete line to `line`: from a rotated file
    /// while it drains, then from the current one (a new or truncated file from its start). The
    /// bytes read; 0 when nothing new was there. An error leaves the position after the last
    /// line handed out: nothing is skipped.
    pub fn read(&mut self, line: &mut dyn FnMut(&[u8])) -> std::io::Result<usize> {
        // Rotated files in order: each read to its end before the next one; a file let go once
        // it was quiet for DRAIN_QUIET (Vault writes to it until it reopens its log).
        let mut i = 0;
        while let Some(old) = self.old.get_mut(i) {
            let n = old.reader.read(line)?;
            if n > 0 {
                old.quiet_since = None;
                return Ok(n);
            }
            let since = *old.quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= DRAIN_QUIET {
                self.old.remove(i);
            } else {
                i += 1;
            }
        }
        match std::fs::metadata(&self.path) {
            Ok(meta)
                if self
                    .current
                    .as_ref()
                    .is_none_or(|r| inode(&meta) != r.at.inode) =>
            {
                // Rotated (or created): the new file from its start, the old one read on. Rotated
                // twice since the last look (the watcher held up): the file between them, now
                // `<path>.1`, is read whole in between.
                let file = File::open(&self.path)?;
                let here = inode(&meta);
                if let Some(previous) = self.current.replace(Reader::new(file, here, 0)) {
                    let between = open_other(&rotated(&self.path), &[here, previous.at.inode]);
                    self.old.push_back(Draining {
                        reader: previous,
                        quiet_since: None,
                    });
                    if let Some((file, there, _)) = between {
                        self.old.push_back(Draining {
                            reader: Reader::new(file, there, 0),
                            quiet_since: None,
                        });
                    }
                    // The rest of the old file first.
                    return self.read(line);
                }
            }
            Ok(meta) => {
                if let Some(r) = &mut self.current
                    && meta.len() < r.at.offset + r.partial.len() as u64
                {
                    // Truncated in place: from its start again. (A truncation followed, before
                    // the next look, by as many bytes as were read looks like no change: the
                    // reconcile sync covers that case.)
                    r.at.offset = 0;
                    r.partial.clear();
                    r.skipping = false;
                }
            }
            // Renamed away and not yet created again: the handle reads on.
            Err(_) => {}
        }
        match &mut self.current {
            Some(r) => r.read(line),
            None => Ok(0),
        }
    }

    /// Every complete line there is now, chunk by chunk (tests, and the last look at stop).
    pub fn read_all(&mut self) -> std::io::Result<Vec<String>> {
        let mut lines = Vec::new();
        let mut take = |l: &[u8]| lines.push(String::from_utf8_lossy(l).into_owned());
        while self.read(&mut take)? > 0 {}
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn whole_lines_once_through_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        append(&log, "old 1\nold 2\n");
        // From the end: what was there is the start-up sync's.
        let mut tail = Tail::open(&log, None);
        assert!(tail.read_all().unwrap().is_empty());
        append(&log, "a\nb");
        assert_eq!(tail.read_all().unwrap(), ["a"]);
        append(&log, "\n");
        assert_eq!(tail.read_all().unwrap(), ["b"]);
        // Resumed from a saved position: nothing again, nothing lost.
        let at = tail.position();
        append(&log, "c\n");
        let mut resumed = Tail::open(&log, Some(at));
        assert_eq!(resumed.read_all().unwrap(), ["c"]);
        // Rotated: the old file's last lines, then the new file's; and what Vault still writes
        // to the old file before it reopens its log.
        append(&log, "d\n");
        let rotated = dir.path().join("audit.log.1");
        std::fs::rename(&log, &rotated).unwrap();
        append(&rotated, "e\n");
        append(&log, "f\n");
        assert_eq!(resumed.read_all().unwrap(), ["d", "e", "f"]);
        append(&rotated, "late\n");
        append(&log, "g\n");
        assert_eq!(resumed.read_all().unwrap(), ["late", "g"]);
        append(&log, "a longer line\n");
        assert_eq!(resumed.read_all().unwrap(), ["a longer line"]);
        // Truncated in place (shorter than what was read when next looked at): from its start.
        std::fs::write(&log, "").unwrap();
        append(&log, "h\n");
        assert_eq!(resumed.read_all().unwrap(), ["h"]);
        // A saved position of another file is not trusted: from the end.
        let stale = Offset {
            inode: 1,
            offset: 0,
        };
        let mut other = Tail::open(&log, Some(stale));
        assert!(other.read_all().unwrap().is_empty());
    }

    #[test]
    fn a_restart_amid_a_rotation_reads_the_rotated_file_on_then_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        append(&log, "a\n");
        let mut tail = Tail::open(&log, None);
        append(&log, "b\n");
        let mut first = Vec::new();
        tail.read(&mut |l: &[u8]| first.push(String::from_utf8_lossy(l).into_owned()))
            .unwrap();
        assert_eq!(first, ["b"]);
        let saved = tail.position();
        // Stopped here; meanwhile the old file got more, was rotated, and the new one began.
        append(&log, "c\n");
        std::fs::rename(&log, dir.path().join("audit.log.1")).unwrap();
        append(&log, "d\n");
        let mut resumed = Tail::open(&log, Some(saved));
        assert_eq!(resumed.read_all().unwrap(), ["c", "d"]);
        // Still draining the rotated file: the saved position is there, so a restart now
        // reads the new file again (a change twice, never not).
        let mut again = Tail::open(&log, Some(resumed.position()));
        assert_eq!(again.read_all().unwrap(), ["d"]);
    }

    #[test]
    fn two_rotations_between_two_looks_lose_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        append(&log, "");
        let mut tail = Tail::open(&log, None);
        append(&log, "first\n");
        // Rotated twice while the reader was held up: first -> .2, middle -> .1, a new file.
        std::fs::rename(&log, dir.path().join("audit.log.2")).unwrap();
        append(&log, "middle\n");
        std::fs::rename(&log, dir.path().join("audit.log.1")).unwrap();
        append(&log, "newest\n");
        assert_eq!(tail.read_all().unwrap(), ["first", "middle", "newest"]);
    }

    #[test]
    fn a_large_backlog_is_read_in_bounded_chunks_each_byte_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        std::fs::write(&log, "").unwrap();
        let mut tail = Tail::open(&log, None);
        // 20 MiB of 1 KiB lines, and one line over the cap in the middle.
        let line = format!("{}\n", "x".repeat(1023));
        let mut text = line.repeat(10 * 1024);
        text.push_str(&"y".repeat(MAX_LINE + 10));
        text.push('\n');
        text.push_str(&line.repeat(10 * 1024));
        text.push_str("last\n");
        append(&log, &text);
        let (mut calls, mut lines, mut last) = (0, 0, String::new());
        loop {
            let mut seen = 0;
            let n = tail
                .read(&mut |l: &[u8]| {
                    seen += 1;
                    last = String::from_utf8_lossy(l).into_owned();
                })
                .unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= CHUNK);
            calls += 1;
            lines += seen;
        }
        assert_eq!(
            lines,
            20 * 1024 + 1,
            "the long line skipped, every other one read"
        );
        assert_eq!(last, "last");
        assert!(calls >= text.len() / CHUNK);
        assert_eq!(tail.position().offset, text.len() as u64);
    }
}
