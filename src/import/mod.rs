//! `import`: rows of another system's CSV export into the input tables, upserted by `ref`.
//!
//! Two streaming passes over the file. The first checks every row on its own, against the rest
//! of the file, and (a batch at a time) against the database, keeping only the refs and ids
//! seen and the lines that are bad. Unless a row is bad (and `--skip-bad` was not given), the
//! second reads the file again and hands the store the good rows a batch at a time; the store
//! writes the whole file in one transaction. The checks themselves are in [`check`].

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use crate::progress::{Progress, Unit};
use crate::store::{ImportBatch, ImportCounts, ImportLookup, ImportTable, Store, StoreError};

pub mod check;

pub use check::{Context, Header, HeaderError, Problem};

/// Rows per batch: per database lookup in the first pass, per statement in the second.
const BATCH_ROWS: usize = 1000;

/// Problems a report lists; the rest are counted.
pub const SHOWN_PROBLEMS: usize = 100;

/// What to import, from where.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    pub table: ImportTable,
    pub path: &'a Path,
    /// Write the good rows when some are bad, instead of nothing.
    pub skip_bad: bool,
    pub ctx: Context,
}

/// Why an import could not run at all (a bad row is not that: it is in the report).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Open(std::io::Error),
    #[error("line {line}: {message}")]
    Read { line: u64, message: String },
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an import found and did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub table: ImportTable,
    pub file: String,
    /// Data rows in the file (the header not counted).
    pub rows: u64,
    pub bad_rows: u64,
    /// The first [`SHOWN_PROBLEMS`] problems, by line.
    pub problems: Vec<Problem>,
    pub problems_total: u64,
    pub skip_bad: bool,
    /// Whether the good rows were written: false when a row was bad and `--skip-bad` not given.
    pub written: bool,
    pub counts: ImportCounts,
}

/// The problems of a file: the first few by line, and how many in all. Problems found against
/// the database arrive a batch late, so they are kept sorted as they come.
#[derive(Debug, Default)]
struct Problems {
    first: Vec<Problem>,
    total: u64,
    bad_lines: HashSet<u64>,
}

impl Problems {
    fn add(&mut self, problems: impl IntoIterator<Item = Problem>) {
        for p in problems {
            self.total += 1;
            self.bad_lines.insert(p.line);
            self.first.push(p);
        }
        if self.first.len() > 2 * SHOWN_PROBLEMS {
            self.trim();
        }
    }

    fn trim(&mut self) {
        // Stable: a row's problems keep their column order.
        self.first.sort_by_key(|p| p.line);
        self.first.truncate(SHOWN_PROBLEMS);
    }
}

/// Imports one file into `options.table`.
pub async fn import(store: &dyn Store, options: &Options<'_>) -> Result<ImportReport, ImportError> {
    let size = std::fs::metadata(options.path).map_or(0, |m| m.len());
    let progress = Progress::new("checking", size, Unit::Bytes);
    let (mut reader, header) = open(options.table, options.path)?;
    let mut seen = check::Seen::default();
    let mut problems = Problems::default();
    let mut pending = Pending::default();
    let mut record = csv::ByteRecord::new();
    let mut rows = 0u64;
    while read(&mut reader, &mut record)? {
        rows += 1;
        let (line, byte) = position(&record);
        progress.set(byte);
        match header.check(line, &record, &options.ctx) {
            Ok(row) => {
                let twice = seen.check(line, Some(&row.r#ref), row.id);
                if twice.is_empty() {
                    pending.good.push(row);
                } else {
                    problems.add(twice);
                    pending.contacts.extend(row.contact_ref.map(|c| (line, c)));
                }
            }
            Err(bad) => {
                problems.add(bad.problems);
                problems.add(seen.check(line, bad.r#ref.as_deref(), bad.id));
                pending.contacts.extend(bad.contact_ref.map(|c| (line, c)));
            }
        }
        if pending.good.len() + pending.contacts.len() >= BATCH_ROWS {
            against_database(store, options, &mut pending, &mut problems).await?;
        }
    }
    against_database(store, options, &mut pending, &mut problems).await?;
    drop(seen);
    problems.trim();
    let bad_rows = problems.bad_lines.len() as u64;
    let mut report = ImportReport {
        table: options.table,
        file: options.path.display().to_string(),
        rows,
        bad_rows,
        problems: std::mem::take(&mut problems.first),
        problems_total: problems.total,
        skip_bad: options.skip_bad,
        written: false,
        counts: ImportCounts::default(),
    };
    if bad_rows > 0 && !options.skip_bad {
        progress.finish();
        return Ok(report);
    }
    progress.restart("writing", size);
    let (reader, again) = open(options.table, options.path)?;
    let mut batches = Batches {
        reader,
        header: &header,
        changed: again != header,
        ctx: options.ctx,
        bad: &problems.bad_lines,
        progress: &progress,
        record: csv::ByteRecord::new(),
        rows: 0,
        expected: rows,
        done: false,
    };
    let written = store.import(options.table, &mut batches).await;
    progress.finish();
    report.counts = written?;
    report.written = true;
    Ok(report)
}

/// Rows waiting for the check against the database.
#[derive(Debug, Default)]
struct Pending {
    good: Vec<check::Row>,
    /// Bad rows' contacts, by line: checked too, so that one run lists every problem.
    contacts: Vec<(u64, String)>,
}

/// Checks the pending rows against what the database holds, then forgets them.
async fn against_database(
    store: &dyn Store,
    options: &Options<'_>,
    pending: &mut Pending,
    problems: &mut Problems,
) -> Result<(), StoreError> {
    let mut contact_refs: Vec<String> = pending
        .good
        .iter()
        .filter_map(|r| r.contact_ref.clone())
        .chain(pending.contacts.iter().map(|(_, c)| c.clone()))
        .collect();
    contact_refs.sort_unstable();
    contact_refs.dedup();
    let contacts = if contact_refs.is_empty() {
        ImportLookup::default()
    } else {
        store.import_lookup(ImportTable::Contacts, &contact_refs, &[]).await?
    };
    for (line, contact) in &pending.contacts {
        problems.add(check::missing_contact(*line, contact, &contacts));
    }
    if !pending.good.is_empty() {
        let refs: Vec<String> = pending.good.iter().map(|r| r.r#ref.clone()).collect();
        let ids: Vec<i64> = pending.good.iter().filter_map(|r| r.id).collect();
        let own = store.import_lookup(options.table, &refs, &ids).await?;
        let bad = check::check_against(options.table, &pending.good, &own, &contacts, &options.ctx);
        problems.add(bad);
    }
    pending.good.clear();
    pending.contacts.clear();
    Ok(())
}

fn open(table: ImportTable, path: &Path) -> Result<(csv::Reader<File>, Header), ImportError> {
    let file = File::open(path).map_err(ImportError::Open)?;
    // Flexible: a row with too few or too many fields is reported with its line, not a stop.
    let mut reader = csv::ReaderBuilder::new().flexible(true).has_headers(true).from_reader(file);
    let names = reader.byte_headers().map_err(read_error)?;
    let names: Vec<&[u8]> = names.iter().collect();
    let header = Header::parse(table, &names)?;
    Ok((reader, header))
}

fn read(reader: &mut csv::Reader<File>, record: &mut csv::ByteRecord) -> Result<bool, ImportError> {
    reader.read_byte_record(record).map_err(read_error)
}

fn read_error(e: csv::Error) -> ImportError {
    let line = e.position().map_or(0, csv::Position::line);
    let message = e.to_string();
    match e.into_kind() {
        csv::ErrorKind::Io(io) => ImportError::Open(io),
        _ => ImportError::Read { line, message },
    }
}

/// Where a record starts: its line (from 1, the header's) and byte offset.
fn position(record: &csv::ByteRecord) -> (u64, u64) {
    record.position().map_or((0, 0), |p| (p.line(), p.byte()))
}

/// The second pass: the good rows, read again and checked again, a batch at a time. A file
/// that changed since the first pass stops the import, and the store rolls it back.
struct Batches<'a> {
    reader: csv::Reader<File>,
    header: &'a Header,
    /// The header now differs from the one checked.
    changed: bool,
    ctx: Context,
    bad: &'a HashSet<u64>,
    progress: &'a Progress,
    record: csv::ByteRecord,
    rows: u64,
    expected: u64,
    done: bool,
}

const CHANGED: &str = "the file changed while it was imported; nothing was written";

impl Iterator for Batches<'_> {
    type Item = Result<ImportBatch, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.changed {
            self.done = true;
            return Some(Err(CHANGED.to_string()));
        }
        let mut rows = Vec::with_capacity(BATCH_ROWS);
        while rows.len() < BATCH_ROWS {
            match self.reader.read_byte_record(&mut self.record) {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    if self.rows != self.expected {
                        return Some(Err(CHANGED.to_string()));
                    }
                    break;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(format!(
                        "cannot read the file again: {e}; nothing was written"
                    )));
                }
            }
            self.rows += 1;
            let (line, byte) = position(&self.record);
            self.progress.set(byte);
            if self.bad.contains(&line) {
                continue;
            }
            let Ok(row) = self.header.check(line, &self.record, &self.ctx) else {
                self.done = true;
                return Some(Err(CHANGED.to_string()));
            };
            rows.push(row);
        }
        (!rows.is_empty()).then(|| Ok(check::batch(self.header, rows)))
    }
}
