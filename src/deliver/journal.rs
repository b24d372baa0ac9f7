//! Results a pass could not write to its database (a full disk, a lock held too long, a lost
//! PostgreSQL connection), kept in a small local file and written by the next pass before it
//! claims anything. Without it, those messages would come back when their lease ends and be
//! sent again; with it, they are recorded as they happened.
//!
//! One file per pass (`<database key>-<claim token>.jsonl`, JSON lines, flushed to disk before
//! the pass reports). The database key is a hash of the URL without its password, so a journal
//! is only ever replayed into the database it belongs to. Files are locked while written and
//! while replayed, so two passes never apply the same file at once.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::outbox::Outcome;
use crate::store::Store;

/// Where unrecorded results of one database are kept.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
    key: String,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    token: String,
    outcome: Outcome,
}

/// What replaying the journal did.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    /// Results written to the database.
    pub written: u64,
    /// Of those, results another pass had overtaken (kept in history only, marked late).
    pub late: u64,
}

/// A journal that could not be replayed: the pass must not claim, or it could send again what
/// the journal says was sent.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {count} result(s) kept in {path} by an earlier pass: {reason}")]
pub struct ReplayError {
    pub path: String,
    pub count: usize,
    pub reason: String,
}

impl Journal {
    /// The journal of the database at `url`, in `dir`.
    pub fn new(dir: PathBuf, url: &str) -> Self {
        Self { dir, key: database_key(url) }
    }

    fn path(&self, token: &str) -> PathBuf {
        let token: String =
            token.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        self.dir.join(format!("{}-{token}.jsonl", self.key))
    }

    /// Appends outcomes that could not be written, and flushes them to disk.
    pub fn keep(&self, token: &str, outcomes: &[Outcome]) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(token);
        let mut buffer = Vec::new();
        for outcome in outcomes {
            let entry = Entry { token: token.to_string(), outcome: outcome.clone() };
            serde_json::to_writer(&mut buffer, &entry)?;
            buffer.push(b'\n');
        }
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        file.lock()?;
        let written = file.write_all(&buffer).and_then(|()| file.sync_data());
        let _ = file.unlock();
        written.map(|()| path)
    }

    /// Writes every kept result of this database, oldest file first, and removes the files.
    pub async fn replay(&self, store: &dyn Store) -> Result<Replayed, ReplayError> {
        let mut done = Replayed::default();
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return Ok(done) };
        let prefix = format!("{}-", self.key);
        let mut files: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(&prefix) && Path::new(n).extension().is_some_and(|e| e == "jsonl")
                })
            })
            .collect();
        files.sort();
        for path in files {
            let Ok(file) = File::open(&path) else { continue };
            // A pass still writing it holds the lock; its results are its own business.
            if file.try_lock().is_err() {
                continue;
            }
            let entries = read_entries(&file, &path);
            let mut by_token: Vec<(String, Vec<Outcome>)> = Vec::new();
            for entry in entries {
                match by_token.iter_mut().find(|(t, _)| *t == entry.token) {
                    Some((_, list)) => list.push(entry.outcome),
                    None => by_token.push((entry.token, vec![entry.outcome])),
                }
            }
            for (token, outcomes) in &by_token {
                let recorded = store.record(token, outcomes).await.map_err(|e| ReplayError {
                    path: path.display().to_string(),
                    count: outcomes.len(),
                    reason: e.to_string(),
                })?;
                done.written += outcomes.len() as u64;
                done.late += recorded.lost.len() as u64;
            }
            let _ = std::fs::remove_file(&path);
            let _ = file.unlock();
            tracing::info!(
                file = %path.display(),
                results = by_token.iter().map(|(_, o)| o.len()).sum::<usize>(),
                "wrote results an earlier pass could not store"
            );
        }
        Ok(done)
    }
}

fn read_entries(file: &File, path: &Path) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry>(&line) {
            Ok(e) => entries.push(e),
            // A pass killed mid-write leaves at most a partial last line.
            Err(e) => tracing::warn!(
                file = %path.display(),
                line = n + 1,
                error = %e,
                "skipping an unreadable journal line"
            ),
        }
    }
    entries
}

/// A stable name for a database: its URL without credentials (an SQLite path made absolute),
/// hashed (FNV-1a), so that the file name reveals nothing and is the same from any directory.
fn database_key(url: &str) -> String {
    let identity = if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.trim_start_matches("//");
        let path = path.split('?').next().unwrap_or(path);
        std::path::absolute(path).map_or_else(|_| path.to_string(), |p| p.display().to_string())
    } else {
        match url::Url::parse(url) {
            Ok(mut u) => {
                let _ = u.set_password(None);
                u.set_query(None);
                u.to_string()
            }
            Err(_) => url.to_string(),
        }
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in identity.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_ignores_the_password_and_the_working_directory() {
        assert_eq!(
            database_key("postgres://u:secret@db/x"),
            database_key("postgres://u:other@db/x")
        );
        assert_ne!(database_key("postgres://u@db/x"), database_key("postgres://u@db/y"));
        let here = std::env::current_dir().unwrap();
        let absolute = format!("sqlite:{}", here.join("r.db").display());
        assert_eq!(database_key("sqlite:r.db"), database_key(&absolute));
    }

    #[test]
    fn kept_results_are_read_back_and_a_partial_line_is_skipped() {
        use crate::domain::channel::ChannelKind;
        use crate::domain::outbox::Resolution;
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().to_path_buf(), "sqlite:x.db");
        let outcome = Outcome {
            id: 9,
            channel: ChannelKind::Email,
            attempts: 0,
            request: None,
            resolution: Resolution::Released { reason: "stop".into() },
            at: chrono::DateTime::UNIX_EPOCH,
        };
        let path = journal.keep("123-abc", std::slice::from_ref(&outcome)).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"token\":\"123-abc\",\"outc")
            .unwrap();
        let file = File::open(&path).unwrap();
        let entries = read_entries(&file, &path);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].outcome, outcome);
        assert_eq!(entries[0].token, "123-abc");
    }
}
