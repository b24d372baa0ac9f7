//! The checks of `import`, all pure: a file's header, each row on its own, each row against the
//! rest of the file (a `ref` or `id` given twice), and each row against what the database holds
//! (the contact it names, an id that belongs to another row, a one-off message already past).
//! A bad row is named by its line and column, with what was found and what is expected.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::domain::channel::parse_preference;
use crate::domain::dates;
use crate::domain::phone;
use crate::domain::recurrence::{next_occurrence, Recurrence};
use crate::store::{shown, ImportBatch, ImportColumn, ImportLookup, ImportTable, ImportValues};

/// Longest `ref` accepted: a key, not a text.
const MAX_REF_CHARS: usize = 200;

/// What is wrong with a row: its line in the file (the first line of a record that spans
/// several), the column when one is to blame, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub line: u64,
    pub column: Option<&'static str>,
    pub message: String,
}

impl Problem {
    fn at(line: u64, column: &'static str, message: impl Into<String>) -> Self {
        Self { line, column: Some(column), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(column) => write!(f, "line {}, column {column}: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// What a column holds, and so how its cells are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The row's key in the other system.
    Ref,
    /// An explicit id.
    Id,
    /// The `ref` of the row's contact.
    ContactRef,
    /// Text, trimmed.
    Text,
    /// A message text, kept exactly as written.
    Body,
    Phone,
    Email,
    TelegramChat,
    /// An ordered channel preference (`whatsapp,email`).
    Channels,
    /// An instant; a naive value is local time in `REMINDER_TIMEZONE`.
    Timestamp,
    /// A local date.
    Date,
    /// Whole rupiah.
    Amount,
    InvoiceStatus,
    Recurrence,
    Url,
}

struct Column {
    name: &'static str,
    kind: Kind,
    /// The header must name it, and no cell may be empty.
    required: bool,
    /// What an empty cell stands for, in a column the table keeps `NOT NULL`.
    default: Option<&'static str>,
}

const fn column(name: &'static str, kind: Kind) -> Column {
    Column { name, kind, required: false, default: None }
}

const fn required(name: &'static str, kind: Kind) -> Column {
    Column { name, kind, required: true, default: None }
}

const fn defaulted(name: &'static str, kind: Kind, default: &'static str) -> Column {
    Column { name, kind, required: false, default: Some(default) }
}

const CONTACTS: &[Column] = &[
    required("ref", Kind::Ref),
    defaulted("name", Kind::Text, ""),
    column("phone", Kind::Phone),
    column("email", Kind::Email),
    column("telegram_chat_id", Kind::TelegramChat),
    defaulted("channels", Kind::Channels, "whatsapp"),
    column("opted_out_at", Kind::Timestamp),
    column("id", Kind::Id),
];

const INVOICES: &[Column] = &[
    required("ref", Kind::Ref),
    defaulted("number", Kind::Text, ""),
    required("contact_ref", Kind::ContactRef),
    required("amount", Kind::Amount),
    required("due_date", Kind::Date),
    defaulted("status", Kind::InvoiceStatus, "unpaid"),
    column("paid_at", Kind::Timestamp),
    column("id", Kind::Id),
];

const VEHICLES: &[Column] = &[
    required("ref", Kind::Ref),
    required("contact_ref", Kind::ContactRef),
    required("plate_no", Kind::Text),
    column("last_visit_date", Kind::Date),
    column("next_visit_date", Kind::Date),
    column("id", Kind::Id),
];

const SCHEDULED: &[Column] = &[
    required("ref", Kind::Ref),
    required("contact_ref", Kind::ContactRef),
    defaulted("channel", Kind::Channels, "whatsapp"),
    defaulted("body", Kind::Body, ""),
    column("media_url", Kind::Url),
    column("caption", Kind::Text),
    required("scheduled_at", Kind::Timestamp),
    defaulted("recurrence", Kind::Recurrence, "none"),
    column("created_by", Kind::Text),
    column("id", Kind::Id),
];

fn columns(table: ImportTable) -> &'static [Column] {
    match table {
        ImportTable::Contacts => CONTACTS,
        ImportTable::Invoices => INVOICES,
        ImportTable::Vehicles => VEHICLES,
        ImportTable::Scheduled => SCHEDULED,
    }
}

/// Columns of which a file needs at least one, because a row needs at least one of them.
fn one_of(table: ImportTable) -> &'static [&'static str] {
    match table {
        ImportTable::Vehicles => &["next_visit_date", "last_visit_date"],
        ImportTable::Scheduled => &["body", "media_url"],
        ImportTable::Contacts | ImportTable::Invoices => &[],
    }
}

/// The column names a file of `table` may have, in the documented order.
pub fn known_columns(table: ImportTable) -> Vec<&'static str> {
    columns(table).iter().map(|c| c.name).collect()
}

/// The next run of a scheduled message, derived at import: written with a new row, and on
/// update only when `scheduled_at` or `recurrence` changed (a series keeps its progress).
const NEXT_RUN_AT: &str = "next_run_at";
const NEXT_RUN_FOLLOWS: &[&str] = &["scheduled_at", "recurrence"];

/// Why a file's first line is not a header this import can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the file is empty: its first line must name the columns ({known})")]
    Empty { known: String },
    #[error("the header line is not UTF-8 text (save the file as CSV UTF-8)")]
    NotUtf8,
    #[error(
        "the header has no commas but has '{found}' ({shown}): save the file as comma-separated \
         CSV"
    )]
    Delimiter { found: char, shown: String },
    #[error("column {position} of the header has no name")]
    Unnamed { position: usize },
    #[error("column {name} is named twice in the header")]
    Duplicate { name: String },
    #[error("{}", columns_problem(.unknown, .missing, *.table))]
    Columns {
        /// Names not known, each with the known name it is closest to.
        unknown: Vec<(String, Option<&'static str>)>,
        /// Required columns the header does not name.
        missing: Vec<&'static str>,
        table: ImportTable,
    },
    #[error("a {table} file needs a {} column", .names.join(" or a "))]
    NeedsOneOf { names: Vec<&'static str>, table: &'static str },
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn columns_problem(
    unknown: &[(String, Option<&'static str>)],
    missing: &[&'static str],
    table: ImportTable,
) -> String {
    let mut parts = Vec::new();
    if !unknown.is_empty() {
        let list: Vec<String> = unknown
            .iter()
            .map(|(name, close)| match close {
                Some(close) => format!("'{name}' (did you mean {close}?)"),
                None => format!("'{name}'"),
            })
            .collect();
        parts.push(format!("unknown column{} {}", plural(unknown.len()), list.join(", ")));
    }
    if !missing.is_empty() {
        parts.push(format!("missing column{} {}", plural(missing.len()), missing.join(", ")));
    }
    let required: Vec<&str> =
        columns(table).iter().filter(|c| c.required).map(|c| c.name).collect();
    format!(
        "{}; {} files have the columns {}, of which {} are required",
        parts.join("; "),
        table.name(),
        known_columns(table).join(", "),
        required.join(", ")
    )
}

/// A file's header, read: which column each field holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    table: ImportTable,
    /// For each field of a record, the column of `columns(table)` it holds.
    fields: Vec<usize>,
    /// For each column of `columns(table)`, the field that holds it.
    present: Vec<Option<usize>>,
}

impl Header {
    /// Reads the header's field names: case does not matter, surrounding whitespace (and a
    /// UTF-8 byte order mark, as spreadsheets write) is ignored.
    pub fn parse(table: ImportTable, raw: &[&[u8]]) -> Result<Self, HeaderError> {
        let cols = columns(table);
        let mut names = Vec::with_capacity(raw.len());
        for (i, bytes) in raw.iter().enumerate() {
            let bytes =
                if i == 0 { bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes) } else { bytes };
            let name = std::str::from_utf8(bytes).map_err(|_| HeaderError::NotUtf8)?;
            names.push(name.trim().to_lowercase());
        }
        if names.iter().all(String::is_empty) {
            return Err(HeaderError::Empty { known: known_columns(table).join(", ") });
        }
        let mut fields: Vec<usize> = Vec::with_capacity(names.len());
        let mut present = vec![None; cols.len()];
        let mut unknown = Vec::new();
        for (field, name) in names.iter().enumerate() {
            if name.is_empty() {
                return Err(HeaderError::Unnamed { position: field + 1 });
            }
            match cols.iter().position(|c| c.name == name) {
                Some(_) if fields.iter().any(|&f| cols[f].name == name) => {
                    return Err(HeaderError::Duplicate { name: name.clone() });
                }
                Some(index) => {
                    fields.push(index);
                    present[index] = Some(field);
                }
                None => unknown.push(name.clone()),
            }
        }
        if let ([only], 1) = (unknown.as_slice(), names.len()) {
            if let Some(found) = [';', '\t', '|'].into_iter().find(|c| only.contains(*c)) {
                return Err(HeaderError::Delimiter { found, shown: shown(only) });
            }
        }
        let missing: Vec<&'static str> = cols
            .iter()
            .zip(&present)
            .filter(|(c, p)| c.required && p.is_none())
            .map(|(c, _)| c.name)
            .collect();
        if !unknown.is_empty() || !missing.is_empty() {
            let unknown = unknown
                .iter()
                .map(|name| {
                    let close = cols
                        .iter()
                        .map(|c| (crate::config::edit_distance(name, c.name), c.name))
                        .filter(|(d, _)| *d <= 2)
                        .min()
                        .map(|(_, c)| c);
                    (shown(name), close)
                })
                .collect();
            return Err(HeaderError::Columns { unknown, missing, table });
        }
        let needs = one_of(table);
        if !needs.is_empty()
            && !needs
                .iter()
                .any(|n| cols.iter().zip(&present).any(|(c, p)| c.name == *n && p.is_some()))
        {
            return Err(HeaderError::NeedsOneOf { names: needs.to_vec(), table: table.name() });
        }
        Ok(Self { table, fields, present })
    }

    pub fn table(&self) -> ImportTable {
        self.table
    }

    /// How many fields every record must have.
    pub fn width(&self) -> usize {
        self.fields.len()
    }

    /// Whether the file gives explicit ids.
    pub fn has_ids(&self) -> bool {
        self.has("id")
    }

    fn has(&self, name: &str) -> bool {
        columns(self.table).iter().zip(&self.present).any(|(c, p)| c.name == name && p.is_some())
    }

    /// The table columns the file writes besides `ref`, `id` and the contact, in table order.
    fn written(&self) -> impl Iterator<Item = &'static Column> + '_ {
        columns(self.table).iter().zip(&self.present).filter_map(|(c, p)| {
            (p.is_some() && !matches!(c.kind, Kind::Ref | Kind::Id | Kind::ContactRef)).then_some(c)
        })
    }

    /// Checks one record on its own. `line` is where it starts in the file.
    pub fn check(&self, line: u64, record: &csv::ByteRecord, ctx: &Context) -> Result<Row, Bad> {
        if record.len() != self.width() {
            let message = format!(
                "has {} field{}, the header has {}",
                record.len(),
                plural(record.len()),
                self.width()
            );
            return Err(Bad::new(line, vec![Problem { line, column: None, message }]));
        }
        let cols = columns(self.table);
        let mut problems = Vec::new();
        let mut row = Row {
            line,
            r#ref: String::new(),
            id: None,
            contact_ref: None,
            values: Vec::new(),
            schedule: None,
        };
        let mut cells: HashMap<&'static str, Value> = HashMap::new();
        for (field, &index) in self.fields.iter().enumerate() {
            let c = &cols[index];
            let Ok(text) = std::str::from_utf8(&record[field]) else {
                problems.push(Problem::at(
                    line,
                    c.name,
                    "is not UTF-8 text (save the file as CSV UTF-8)",
                ));
                continue;
            };
            match cell(self.table, c, text, ctx) {
                Ok(Cell::Ref(r)) => row.r#ref = r,
                Ok(Cell::Id(id)) => row.id = Some(id),
                Ok(Cell::ContactRef(r)) => row.contact_ref = Some(r),
                Ok(Cell::Value(v)) => {
                    cells.insert(c.name, v);
                }
                Err(message) => problems.push(Problem::at(line, c.name, message)),
            }
        }
        if problems.is_empty() {
            problems.extend(self.across(line, &cells));
        }
        if !problems.is_empty() {
            return Err(Bad {
                line,
                problems,
                r#ref: Some(row.r#ref).filter(|r| !r.is_empty()),
                id: row.id,
                contact_ref: row.contact_ref,
            });
        }
        if self.table == ImportTable::Scheduled {
            // Required, so checked as filled above.
            let Some(Value::Instant(Some(at))) = cells.get("scheduled_at") else {
                return Err(Bad::new(line, vec![Problem::at(line, "scheduled_at", "is empty")]));
            };
            let recurrence = match cells.get("recurrence") {
                Some(Value::Text(Some(r))) => r.parse().unwrap_or(Recurrence::None),
                _ => Recurrence::None,
            };
            row.schedule = Some(Schedule { at: *at, recurrence });
        }
        for c in self.written() {
            row.values.push(cells.remove(c.name).unwrap_or_else(|| empty(c.kind)));
        }
        if let Some(s) = &row.schedule {
            row.values.push(Value::Instant(Some(s.first_run(ctx))));
        }
        Ok(row)
    }

    /// Checks that need several cells of one row.
    fn across(&self, line: u64, cells: &HashMap<&'static str, Value>) -> Vec<Problem> {
        let filled = |name: &str| match cells.get(name) {
            Some(Value::Text(v)) => v.as_deref().is_some_and(|t| !t.trim().is_empty()),
            Some(Value::Int(v)) => v.is_some(),
            Some(Value::Date(v)) => v.is_some(),
            Some(Value::Instant(v)) => v.is_some(),
            None => false,
        };
        let mut problems = Vec::new();
        match self.table {
            ImportTable::Invoices if filled("paid_at") => {
                // An export that marks payment only by a date must not make paid invoices
                // look unpaid: their customers would be reminded of money already paid.
                match cells.get("status") {
                    Some(Value::Text(Some(s))) if s == "unpaid" => problems.push(Problem::at(
                        line,
                        "status",
                        "is unpaid but paid_at is set: write paid (or cancelled), or leave \
                         paid_at empty",
                    )),
                    None => problems.push(Problem::at(
                        line,
                        "paid_at",
                        "is set, but the file has no status column, so the invoice would be \
                         unpaid: add a status column (paid)",
                    )),
                    _ => {}
                }
            }
            ImportTable::Vehicles if !filled("next_visit_date") && !filled("last_visit_date") => {
                let column =
                    if self.has("next_visit_date") { "next_visit_date" } else { "last_visit_date" };
                problems.push(Problem::at(
                    line,
                    column,
                    "is empty, and so is last_visit_date or next_visit_date: a vehicle needs one \
                     to be reminded",
                ));
            }
            ImportTable::Scheduled if !filled("body") && !filled("media_url") => {
                let column = if self.has("body") { "body" } else { "media_url" };
                problems.push(Problem::at(
                    line,
                    column,
                    "is empty, and the row has no body or media_url: a message needs one",
                ));
            }
            _ => {}
        }
        problems
    }
}

/// What a row is checked with: the zone naive times are read in, and the business clock.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub tz: Tz,
    pub now: DateTime<Utc>,
}

/// A value as the table stores it.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Date(Option<NaiveDate>),
    Instant(Option<DateTime<Utc>>),
}

/// When a scheduled message first runs, and how it repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Schedule {
    at: DateTime<Utc>,
    recurrence: Recurrence,
}

impl Schedule {
    /// Its time, or for a series that started before now its next occurrence after now: the
    /// occurrences the other system already had are not sent again in a burst.
    fn first_run(&self, ctx: &Context) -> DateTime<Utc> {
        if self.at >= ctx.now || self.recurrence == Recurrence::None {
            return self.at;
        }
        next_occurrence(self.at, self.recurrence, ctx.now, ctx.tz).unwrap_or(self.at)
    }
}

/// A row that passed the checks of its own cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub line: u64,
    pub r#ref: String,
    pub id: Option<i64>,
    pub contact_ref: Option<String>,
    /// One value per written column (`Header::written`), then `next_run_at` for scheduled.
    values: Vec<Value>,
    schedule: Option<Schedule>,
}

/// A row that failed the checks of its own cells, with what could be read of its keys: it is
/// still checked for a ref or id given twice, and for its contact, so that one run lists every
/// problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub line: u64,
    pub problems: Vec<Problem>,
    pub r#ref: Option<String>,
    pub id: Option<i64>,
    pub contact_ref: Option<String>,
}

impl Bad {
    fn new(line: u64, problems: Vec<Problem>) -> Self {
        Self { line, problems, r#ref: None, id: None, contact_ref: None }
    }
}

enum Cell {
    Ref(String),
    Id(i64),
    ContactRef(String),
    Value(Value),
}

/// How a column of this kind is stored, and so what its empty cell is.
fn empty(kind: Kind) -> Value {
    match kind {
        Kind::Amount => Value::Int(None),
        Kind::Date => Value::Date(None),
        Kind::Timestamp => Value::Instant(None),
        _ => Value::Text(None),
    }
}

fn text(s: &str) -> Value {
    Value::Text(Some(s.to_string()))
}

/// Checks one cell. Errors quote the value (escaped, cut short) and say what is expected.
fn cell(table: ImportTable, c: &Column, raw: &str, ctx: &Context) -> Result<Cell, String> {
    let t = raw.trim();
    if t.is_empty() {
        return match (c.kind, c.required, c.default) {
            (Kind::Ref, ..) => Err("is empty: every row needs a ref (its key in the other \
                                    system)"
                .into()),
            (Kind::ContactRef, ..) => {
                Err(format!("is empty: every {} needs the ref of its contact", table.row()))
            }
            (Kind::Id, ..) => Err("is empty: when the file has an id column, every row needs \
                                   an id"
                .into()),
            (_, true, _) => Err(format!("is empty: every {} needs its {}", table.row(), c.name)),
            (_, false, Some(default)) => Ok(Cell::Value(text(default))),
            (kind, false, None) => Ok(Cell::Value(empty(kind))),
        };
    }
    let quoted = || format!("'{}'", shown(t));
    match c.kind {
        Kind::Ref | Kind::ContactRef => {
            if t.chars().count() > MAX_REF_CHARS {
                return Err(format!("{} is longer than {MAX_REF_CHARS} characters", quoted()));
            }
            if t.chars().any(char::is_control) {
                return Err(format!("{} contains control characters", quoted()));
            }
            Ok(if c.kind == Kind::Ref { Cell::Ref(t.into()) } else { Cell::ContactRef(t.into()) })
        }
        Kind::Id => match t.parse::<i64>() {
            Ok(id) if id >= 1 && t.bytes().all(|b| b.is_ascii_digit()) => Ok(Cell::Id(id)),
            _ => Err(format!("{} is not an id (a whole number from 1)", quoted())),
        },
        Kind::Text => Ok(Cell::Value(text(t))),
        Kind::Body => Ok(Cell::Value(text(raw))),
        Kind::Phone => {
            phone::normalize(t).map_err(|e| e.to_string())?;
            // Stored as written: the user's own notation, normalized again on every send.
            Ok(Cell::Value(text(t)))
        }
        Kind::Email => t
            .parse::<lettre::message::Mailbox>()
            .map(|_| Cell::Value(text(t)))
            .map_err(|_| format!("{} is not an email address", quoted())),
        Kind::TelegramChat => {
            let numeric = t.parse::<i64>().is_ok();
            let username = t.strip_prefix('@').is_some_and(|u| {
                (5..=32).contains(&u.len())
                    && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
            if numeric || username {
                Ok(Cell::Value(text(t)))
            } else {
                Err(format!(
                    "{} is not a Telegram chat id (a number such as 123456789 or \
                     -1001234567890, or @channelname)",
                    quoted()
                ))
            }
        }
        Kind::Channels => {
            let preference = parse_preference(t).map_err(|e| format!("'{}': {e}", t.trim()))?;
            Ok(Cell::Value(text(&preference)))
        }
        Kind::Timestamp => dates::instant(t, ctx.tz)
            .map(|at| Cell::Value(Value::Instant(Some(at))))
            .map_err(|e| e.to_string()),
        Kind::Date => dates::local_date(t, ctx.tz)
            .map(|d| Cell::Value(Value::Date(Some(d))))
            .map_err(|e| e.to_string()),
        Kind::Amount => amount(t).map(|a| Cell::Value(Value::Int(Some(a)))),
        Kind::InvoiceStatus => {
            let s = t.to_lowercase();
            if ["unpaid", "paid", "cancelled"].contains(&s.as_str()) {
                Ok(Cell::Value(text(&s)))
            } else {
                Err(format!("{} is not an invoice status (unpaid, paid or cancelled)", quoted()))
            }
        }
        Kind::Recurrence => {
            let r: Recurrence = t.parse()?;
            Ok(Cell::Value(text(r.as_str())))
        }
        Kind::Url => match url::Url::parse(t) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Ok(Cell::Value(text(t)))
            }
            _ => Err(format!("{} is not an http(s) URL", quoted())),
        },
    }
}

/// Whole rupiah, digits only. `150.000` and `Rp 150.000` are refused rather than guessed at:
/// a dot is a thousands separator in Indonesia and a decimal point elsewhere.
fn amount(t: &str) -> Result<i64, String> {
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return match t.parse::<i64>() {
            Ok(0) => Err("'0' is not an amount: an invoice is for at least 1 rupiah".into()),
            Ok(n) => Ok(n),
            Err(_) => Err(format!("'{}' is too large for an amount", shown(t))),
        };
    }
    Err(format!(
        "'{}' is not a whole number of rupiah: write digits only, e.g. 150000 (no 'Rp', dots, \
         commas or spaces)",
        shown(t)
    ))
}

/// The refs and ids seen so far in a file, to refuse a second row with either: which one
/// would win is a guess.
#[derive(Debug, Default)]
pub struct Seen {
    refs: HashMap<Box<str>, u64>,
    ids: HashMap<i64, u64>,
}

impl Seen {
    /// Records a row's ref and id; one seen on an earlier line is a problem of this row. The
    /// first row keeps them even when it is bad, so that fixing it does not reveal a duplicate
    /// only on the next run.
    pub fn check(&mut self, line: u64, r#ref: Option<&str>, id: Option<i64>) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(r) = r#ref {
            match self.refs.get(r) {
                Some(first) => problems.push(Problem::at(
                    line,
                    "ref",
                    format!("'{}' is already on line {first}", shown(r)),
                )),
                None => {
                    self.refs.insert(r.into(), line);
                }
            }
        }
        if let Some(id) = id {
            match self.ids.get(&id) {
                Some(first) => {
                    problems.push(Problem::at(
                        line,
                        "id",
                        format!("{id} is already on line {first}"),
                    ));
                }
                None => {
                    self.ids.insert(id, line);
                }
            }
        }
        problems
    }
}

/// "a contact", "an invoice": one row of `table`, in a sentence.
fn a_row(table: ImportTable) -> String {
    let row = table.row();
    let article = if row.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {row}")
}

/// The problem of a row whose contact is not in the database.
pub fn missing_contact(line: u64, contact_ref: &str, contacts: &ImportLookup) -> Option<Problem> {
    (!contacts.by_ref.contains_key(contact_ref)).then(|| {
        Problem::at(
            line,
            "contact_ref",
            format!(
                "no contact has ref '{}' (import contacts first, with that ref)",
                shown(contact_ref)
            ),
        )
    })
}

/// Checks rows against the database: `own` is what the table holds of their refs and ids,
/// `contacts` what `contacts` holds of the contacts they name.
pub fn check_against(
    table: ImportTable,
    rows: &[Row],
    own: &ImportLookup,
    contacts: &ImportLookup,
    ctx: &Context,
) -> Vec<Problem> {
    let mut out = Vec::new();
    for row in rows {
        let line = row.line;
        if let Some(contact) = &row.contact_ref {
            out.extend(missing_contact(line, contact, contacts));
        }
        let existing = own.by_ref.get(&row.r#ref);
        if let Some(id) = row.id {
            let message = match (existing, own.by_id.get(&id)) {
                (Some(e), _) if e.id != id => Some(format!(
                    "'{}' was imported with id {}; a row keeps its id (write {}, or leave the id \
                     column out)",
                    shown(&row.r#ref),
                    e.id,
                    e.id
                )),
                (_, Some(Some(other))) if *other != row.r#ref => Some(format!(
                    "{id} is taken by the {} with ref '{}'",
                    table.row(),
                    shown(other)
                )),
                (_, Some(None)) => Some(format!(
                    "{id} is taken by {} that was not imported (it has no ref)",
                    a_row(table)
                )),
                _ => None,
            };
            out.extend(message.map(|m| Problem::at(line, "id", m)));
        }
        if let Some(s) = &row.schedule {
            // SQLite keeps timestamps to the millisecond: a time within one of the stored one
            // is the same time.
            let unchanged = existing
                .and_then(|e| e.scheduled_at)
                .is_some_and(|stored| (stored - s.at).abs() < chrono::TimeDelta::milliseconds(1));
            if s.recurrence == Recurrence::None && s.at < ctx.now && !unchanged {
                let local = |t: DateTime<Utc>| t.with_timezone(&ctx.tz).format("%Y-%m-%d %H:%M");
                out.push(Problem::at(
                    line,
                    "scheduled_at",
                    format!(
                        "{} is before now ({}, {}) and the message does not repeat, so it \
                         would go out at once: leave the row out if the other system sent it, \
                         or give a later time",
                        local(s.at),
                        local(ctx.now),
                        ctx.tz
                    ),
                ));
            }
        }
    }
    out
}

/// Checked rows as one batch for the store, column by column.
pub fn batch(header: &Header, rows: Vec<Row>) -> ImportBatch {
    let mut columns: Vec<ImportColumn> = header
        .written()
        .map(|c| ImportColumn {
            name: c.name,
            values: match empty(c.kind) {
                Value::Int(_) => ImportValues::Int(Vec::with_capacity(rows.len())),
                Value::Date(_) => ImportValues::Date(Vec::with_capacity(rows.len())),
                Value::Instant(_) => ImportValues::Instant(Vec::with_capacity(rows.len())),
                Value::Text(_) => ImportValues::Text(Vec::with_capacity(rows.len())),
            },
            follows: &[],
        })
        .collect();
    if header.table == ImportTable::Scheduled {
        columns.push(ImportColumn {
            name: NEXT_RUN_AT,
            values: ImportValues::Instant(Vec::with_capacity(rows.len())),
            follows: NEXT_RUN_FOLLOWS,
        });
    }
    let has_contact = header.has("contact_ref");
    let mut out = ImportBatch {
        refs: Vec::with_capacity(rows.len()),
        ids: header.has_ids().then(|| Vec::with_capacity(rows.len())),
        contact_refs: has_contact.then(|| Vec::with_capacity(rows.len())),
        columns,
    };
    for row in rows {
        out.refs.push(row.r#ref);
        if let (Some(ids), Some(id)) = (out.ids.as_mut(), row.id) {
            ids.push(id);
        }
        if let (Some(contacts), Some(contact)) = (out.contact_refs.as_mut(), row.contact_ref) {
            contacts.push(contact);
        }
        for (column, value) in out.columns.iter_mut().zip(row.values) {
            // Every cell of a column has the column's storage (`empty` decides both), so the
            // arms agree; a mismatch would be a bug here, and writes NULL rather than panic.
            match (&mut column.values, value) {
                (ImportValues::Text(v), Value::Text(x)) => v.push(x),
                (ImportValues::Int(v), Value::Int(x)) => v.push(x),
                (ImportValues::Date(v), Value::Date(x)) => v.push(x),
                (ImportValues::Instant(v), Value::Instant(x)) => v.push(x),
                (values, other) => {
                    debug_assert!(false, "{} got {other:?}", column.name);
                    match values {
                        ImportValues::Text(v) => v.push(None),
                        ImportValues::Int(v) => v.push(None),
                        ImportValues::Date(v) => v.push(None),
                        ImportValues::Instant(v) => v.push(None),
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ImportedRow;

    const TZ: Tz = chrono_tz::Asia::Jakarta;

    fn ctx() -> Context {
        Context { tz: TZ, now: "2025-11-17T02:00:00Z".parse().unwrap() }
    }

    fn header(table: ImportTable, names: &str) -> Result<Header, HeaderError> {
        let fields: Vec<&[u8]> = names.split(',').map(str::as_bytes).collect();
        Header::parse(table, &fields)
    }

    /// One record from comma-separated cells; a `;` inside a cell stands for a comma.
    fn check(h: &Header, cells: &str) -> Result<Row, Bad> {
        h.check(
            2,
            &csv::ByteRecord::from(
                cells.split(',').map(|c| c.replace(';', ",")).collect::<Vec<_>>(),
            ),
            &ctx(),
        )
    }

    /// The problems of one row, as the report prints them.
    fn problems(h: &Header, cells: &str) -> Vec<String> {
        match check(h, cells) {
            Ok(_) => Vec::new(),
            Err(bad) => bad.problems.iter().map(ToString::to_string).collect(),
        }
    }

    fn invoices() -> Header {
        header(ImportTable::Invoices, "ref,number,contact_ref,amount,due_date,status,paid_at")
            .unwrap()
    }

    #[test]
    fn header_names_ignore_case_surrounding_whitespace_and_a_byte_order_mark() {
        let h = header(ImportTable::Contacts, "\u{feff}Ref , NAME,\tPhone").unwrap();
        assert_eq!(h.width(), 3);
        assert!(h.has("phone") && !h.has_ids());
        let h = header(ImportTable::Contacts, "ref,id").unwrap();
        assert!(h.has_ids());
    }

    #[test]
    fn unknown_and_missing_columns_are_named_with_the_closest_known_name() {
        let e = header(ImportTable::Invoices, "ref,contact_ref,amout,due_date,colour").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown columns 'amout' (did you mean amount?), 'colour'; missing column amount; \
             invoices files have the columns ref, number, contact_ref, amount, due_date, status, \
             paid_at, id, of which ref, contact_ref, amount, due_date are required"
        );
        let e = header(ImportTable::Vehicles, "ref,contact_ref,plate_no").unwrap_err();
        assert_eq!(
            e.to_string(),
            "a vehicles file needs a next_visit_date or a last_visit_date column"
        );
        let e = header(ImportTable::Scheduled, "ref,contact_ref,scheduled_at").unwrap_err();
        assert!(e.to_string().contains("needs a body or a media_url column"), "{e}");
    }

    #[test]
    fn a_header_that_is_not_comma_separated_or_names_a_column_twice_is_refused() {
        let e = header(ImportTable::Contacts, "ref;name;phone").unwrap_err();
        assert!(e.to_string().contains("has no commas but has ';'"), "{e}");
        let e = header(ImportTable::Contacts, "ref,phone,Phone").unwrap_err();
        assert_eq!(e.to_string(), "column phone is named twice in the header");
        let e = header(ImportTable::Contacts, "ref,,phone").unwrap_err();
        assert_eq!(e.to_string(), "column 2 of the header has no name");
        let e = header(ImportTable::Contacts, "").unwrap_err();
        assert!(e.to_string().starts_with("the file is empty"), "{e}");
        let e = Header::parse(ImportTable::Contacts, &[b"ref", b"na\xffme"]).unwrap_err();
        assert_eq!(e, HeaderError::NotUtf8);
    }

    #[test]
    fn a_bad_cell_is_named_by_line_and_column_with_what_was_expected() {
        let h = invoices();
        assert_eq!(
            problems(&h, "I-1,INV-1,C-1,150000,18/11/2025,,"),
            ["line 2, column due_date: '18/11/2025' is not a date (YYYY-MM-DD, or an ISO-8601 \
              timestamp)"]
        );
        assert_eq!(
            problems(&h, "I-1,INV-1,C-1,150000"),
            ["line 2: has 4 fields, the header has 7"]
        );
        let bad = h
            .check(
                9,
                &csv::ByteRecord::from(vec![
                    &b"I-1"[..],
                    b"\xff",
                    b"C",
                    b"1",
                    b"2025-11-20",
                    b"",
                    b"",
                ]),
                &ctx(),
            )
            .unwrap_err();
        assert_eq!(
            bad.problems[0].to_string(),
            "line 9, column number: is not UTF-8 text (save the file as CSV UTF-8)"
        );
        // What could be read of the keys stays, for the checks across the file and database.
        assert_eq!((bad.r#ref.as_deref(), bad.contact_ref.as_deref()), (Some("I-1"), Some("C")));
    }

    #[test]
    fn amounts_are_whole_rupiah_in_digits_only() {
        let h = invoices();
        let amount = |a: &str| check(&h, &format!("I-1,,C-1,{a},2025-11-20,,"));
        let Ok(row) = amount(" 150000 ") else { panic!("150000 is an amount") };
        assert_eq!(row.values[1], Value::Int(Some(150_000)));
        for bad in ["150.000", "Rp 150.000", "Rp150000", "150000.00", "1.5", "-5", "1e5", "150 000"]
        {
            let p = problems(&h, &format!("I-1,,C-1,{bad},2025-11-20,,")).join("");
            assert!(
                p.contains(&format!("'{bad}' is not a whole number of rupiah: write digits only")),
                "{bad}: {p}"
            );
        }
        assert!(problems(&h, "I-1,,C-1,0,2025-11-20,,")[0].contains("at least 1 rupiah"));
        assert!(problems(&h, "I-1,,C-1,99999999999999999999,2025-11-20,,")[0].contains("too large"));
        assert!(problems(&h, "I-1,,C-1,,2025-11-20,,")[0]
            .ends_with("column amount: is empty: every invoice needs its amount"));
    }

    #[test]
    fn dates_are_local_dates_and_timestamps_instants_in_the_zone() {
        let h = invoices();
        let row = check(&h, "I-1,,C-1,1,2025-11-20T01:00:00+07:00,paid,2025-11-18 09:00").unwrap();
        assert_eq!(row.values[2], Value::Date(Some("2025-11-20".parse().unwrap())));
        assert_eq!(row.values[4], Value::Instant(Some("2025-11-18T02:00:00Z".parse().unwrap())));
        assert!(problems(&h, "I-1,,C-1,1,2025-11-20,paid,kemarin")[0]
            .contains("'kemarin' is not a timestamp"));
    }

    #[test]
    fn statuses_recurrences_and_channels_come_from_their_fixed_sets() {
        let h = invoices();
        let row = check(&h, "I-1,,C-1,1,2025-11-20,PAID,").unwrap();
        assert_eq!(row.values[3], Value::Text(Some("paid".into())));
        let row = check(&h, "I-1,,C-1,1,2025-11-20,,").unwrap();
        assert_eq!(row.values[3], Value::Text(Some("unpaid".into())), "empty is the default");
        assert!(problems(&h, "I-1,,C-1,1,2025-11-20,lunas,")[0]
            .contains("'lunas' is not an invoice status (unpaid, paid or cancelled)"));

        let s =
            header(ImportTable::Scheduled, "ref,contact_ref,channel,body,scheduled_at,recurrence")
                .unwrap();
        assert!(problems(&s, "S-1,C-1,sms,Halo,2025-12-01 09:00,")[0]
            .contains("unknown channel 'sms' (known: whatsapp, telegram, email)"));
        assert!(problems(&s, "S-1,C-1,,Halo,2025-12-01 09:00,yearly")[0]
            .contains("invalid recurrence 'yearly'"));
        let row = check(&s, "S-1,C-1,whatsapp+email,Halo,2025-12-01 09:00,").unwrap();
        assert_eq!(row.values[0], Value::Text(Some("whatsapp+email".into())));
        let row = check(&s, "S-1,C-1,Email,Halo,2025-12-01 09:00,Weekly").unwrap();
        assert_eq!(row.values[0], Value::Text(Some("email".into())));
        assert_eq!(row.values[3], Value::Text(Some("weekly".into())));

        let c = header(ImportTable::Contacts, "ref,channels").unwrap();
        let row = check(&c, "C-1, WhatsApp ").unwrap();
        assert_eq!(row.values[0], Value::Text(Some("whatsapp".into())));
        let row = check(&c, "C-1, WhatsApp + Email;telegram").unwrap();
        assert_eq!(row.values[0], Value::Text(Some("whatsapp+email,telegram".into())));
        assert!(problems(&c, "C-1,whatsapp+sms")[0].contains("unknown channel 'sms'"));
        let row = check(&c, "C-1,").unwrap();
        assert_eq!(row.values[0], Value::Text(Some("whatsapp".into())), "empty is the default");
    }

    #[test]
    fn phones_are_kept_as_written_and_refused_when_they_cannot_be_normalized() {
        let h = header(ImportTable::Contacts, "ref,phone,email,telegram_chat_id").unwrap();
        let row = check(&h, "C-1, (0812) 3456-7890 ,budi@example.com,-1001234567890").unwrap();
        assert_eq!(row.values[0], Value::Text(Some("(0812) 3456-7890".into())));
        let p = problems(&h, "C-1,021-5550123,budi,x y");
        assert!(
            p[0].starts_with("line 2, column phone: invalid phone number '021-5550123'"),
            "{p:?}"
        );
        assert!(p[0].contains("not an Indonesian mobile number"), "{p:?}");
        assert_eq!(p[1], "line 2, column email: 'budi' is not an email address");
        assert!(p[2].contains("'x y' is not a Telegram chat id"), "{p:?}");
        assert!(check(&h, "C-1,,,@budi_santoso").is_ok());
    }

    #[test]
    fn an_unpaid_invoice_with_a_payment_date_is_refused() {
        let h = invoices();
        assert_eq!(
            problems(&h, "I-1,,C-1,1,2025-11-20,unpaid,2025-11-01"),
            ["line 2, column status: is unpaid but paid_at is set: write paid (or cancelled), \
              or leave paid_at empty"]
        );
        let without =
            header(ImportTable::Invoices, "ref,contact_ref,amount,due_date,paid_at").unwrap();
        assert!(problems(&without, "I-1,C-1,1,2025-11-20,2025-11-01")[0]
            .contains("the file has no status column"));
        assert!(check(&h, "I-1,,C-1,1,2025-11-20,paid,2025-11-01").is_ok());
    }

    #[test]
    fn a_vehicle_needs_a_visit_date_and_a_message_a_body_or_media() {
        let v = header(
            ImportTable::Vehicles,
            "ref,contact_ref,plate_no,last_visit_date,next_visit_date",
        )
        .unwrap();
        assert!(problems(&v, "V-1,C-1,B 1234 CD,,")[0].contains("a vehicle needs one"));
        assert!(problems(&v, "V-1,C-1,,2025-07-01,")[0]
            .contains("column plate_no: is empty: every vehicle needs its plate_no"));
        let s =
            header(ImportTable::Scheduled, "ref,contact_ref,body,media_url,scheduled_at").unwrap();
        assert!(problems(&s, "S-1,C-1, ,,2025-12-01 09:00")[0].contains("a message needs one"));
        assert!(check(&s, "S-1,C-1,,https://example.com/a.jpg,2025-12-01 09:00").is_ok());
        assert!(problems(&s, "S-1,C-1,,ftp://example.com/a.jpg,2025-12-01 09:00")[0]
            .contains("is not an http(s) URL"));
    }

    #[test]
    fn a_series_that_began_before_now_first_runs_at_its_next_occurrence() {
        let s =
            header(ImportTable::Scheduled, "ref,contact_ref,body,scheduled_at,recurrence").unwrap();
        let next = |cells: &str| check(&s, cells).unwrap().values.last().cloned();
        // Daily at 08:00 since January, imported at 09:00 on 17 November: 08:00 on the 18th.
        assert_eq!(
            next("S-1,C-1,Halo,2025-01-01 08:00,daily"),
            Some(Value::Instant(Some("2025-11-18T01:00:00Z".parse().unwrap())))
        );
        assert_eq!(
            next("S-1,C-1,Halo,2025-12-01 08:00,daily"),
            Some(Value::Instant(Some("2025-12-01T01:00:00Z".parse().unwrap())))
        );
    }

    #[test]
    fn a_past_one_off_message_is_refused_unless_imported_before_at_that_time() {
        let s = header(ImportTable::Scheduled, "ref,contact_ref,body,scheduled_at").unwrap();
        let row = check(&s, "S-1,C-1,Halo,2025-11-01 08:00").unwrap();
        let contacts = ImportLookup {
            by_ref: [("C-1".to_string(), ImportedRow { id: 1, scheduled_at: None })].into(),
            by_id: HashMap::new(),
        };
        let p = check_against(
            ImportTable::Scheduled,
            std::slice::from_ref(&row),
            &ImportLookup::default(),
            &contacts,
            &ctx(),
        );
        assert_eq!(
            p[0].to_string(),
            "line 2, column scheduled_at: 2025-11-01 08:00 is before now (2025-11-17 09:00, \
             Asia/Jakarta) and the message does not repeat, so it would go out at once: leave \
             the row out if the other system sent it, or give a later time"
        );
        let imported = |at: &str| ImportLookup {
            by_ref: [(
                "S-1".to_string(),
                ImportedRow { id: 7, scheduled_at: Some(at.parse().unwrap()) },
            )]
            .into(),
            by_id: HashMap::new(),
        };
        let same = imported("2025-11-01T01:00:00Z");
        assert!(check_against(
            ImportTable::Scheduled,
            std::slice::from_ref(&row),
            &same,
            &contacts,
            &ctx()
        )
        .is_empty());
        let stored_to_the_millisecond = imported("2025-11-01T01:00:00.000400Z");
        assert!(check_against(
            ImportTable::Scheduled,
            std::slice::from_ref(&row),
            &stored_to_the_millisecond,
            &contacts,
            &ctx()
        )
        .is_empty());
        let moved = imported("2025-11-02T01:00:00Z");
        assert_eq!(
            check_against(ImportTable::Scheduled, &[row], &moved, &contacts, &ctx()).len(),
            1
        );
    }

    #[test]
    fn a_missing_contact_or_an_id_of_another_row_is_a_problem_of_the_row() {
        let h = header(ImportTable::Invoices, "ref,id,contact_ref,amount,due_date").unwrap();
        let rows: Vec<Row> =
            ["I-1,5,C-1,1,2025-11-20", "I-2,6,C-9,1,2025-11-20", "I-3,7,C-1,1,2025-11-20"]
                .iter()
                .map(|r| check(&h, r).unwrap())
                .collect();
        let contacts = ImportLookup {
            by_ref: [("C-1".to_string(), ImportedRow { id: 1, scheduled_at: None })].into(),
            by_id: HashMap::new(),
        };
        let own = ImportLookup {
            by_ref: [("I-1".to_string(), ImportedRow { id: 4, scheduled_at: None })].into(),
            by_id: [(6, Some("I-77".to_string())), (7, None)].into(),
        };
        let p: Vec<String> = check_against(ImportTable::Invoices, &rows, &own, &contacts, &ctx())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            p,
            [
                "line 2, column id: 'I-1' was imported with id 4; a row keeps its id (write 4, or \
                 leave the id column out)",
                "line 2, column contact_ref: no contact has ref 'C-9' (import contacts first, \
                 with that ref)",
                "line 2, column id: 6 is taken by the invoice with ref 'I-77'",
                "line 2, column id: 7 is taken by an invoice that was not imported (it has no ref)",
            ]
        );
    }

    #[test]
    fn a_ref_or_id_given_twice_names_the_first_line() {
        let mut seen = Seen::default();
        assert!(seen.check(2, Some("C-1"), Some(1)).is_empty());
        assert!(seen.check(3, Some("C-2"), Some(2)).is_empty());
        let p: Vec<String> =
            seen.check(9, Some("C-1"), Some(2)).iter().map(ToString::to_string).collect();
        assert_eq!(
            p,
            [
                "line 9, column ref: 'C-1' is already on line 2",
                "line 9, column id: 2 is already on line 3"
            ]
        );
        assert!(seen.check(10, None, None).is_empty());
    }

    #[test]
    fn a_batch_is_column_major_and_next_run_at_follows_the_schedule() {
        let s = header(ImportTable::Scheduled, "ref,id,contact_ref,body,scheduled_at").unwrap();
        let rows = vec![
            check(&s, "S-1,10,C-1,Halo,2025-12-01 09:00").unwrap(),
            check(&s, "S-2,11,C-2,Hai,2025-12-02 09:00").unwrap(),
        ];
        let b = batch(&s, rows);
        assert_eq!(b.refs, ["S-1", "S-2"]);
        assert_eq!(b.ids, Some(vec![10, 11]));
        assert_eq!(b.contact_refs, Some(vec!["C-1".to_string(), "C-2".to_string()]));
        let names: Vec<&str> = b.columns.iter().map(|c| c.name).collect();
        assert_eq!(names, ["body", "scheduled_at", "next_run_at"]);
        assert_eq!(
            b.columns[0].values,
            ImportValues::Text(vec![Some("Halo".into()), Some("Hai".into())])
        );
        assert_eq!(b.columns[2].follows, ["scheduled_at", "recurrence"]);
        assert!(b.columns[..2].iter().all(|c| c.follows.is_empty()));
    }
}
