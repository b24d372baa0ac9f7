//! A corpus of bad input values (issue 6: bad rows are isolated and visible).
//!
//! A business's app writes the input tables directly, and SQLite keeps whatever it is given,
//! whatever the column's declared type. Each case is one value in one column of one row of its
//! own; all of them go into one database beside good rows, and one pass runs over everything.
//! The promise held for every case: the binary does not panic, every good or merely odd row is
//! delivered, and every unusable row has a reason an operator sees, either a message `failed`,
//! `skipped` or `cancelled` whose `last_error` says what is wrong, or, where no message can be
//! made at all (an unreadable date), an `unreadable` entry naming the table, row and column in
//! the pass's `--json` and in `status --json`. Human output never carries a raw control
//! character from the data.
//!
//! PostgreSQL's typed columns refuse most of these values on insert; the ones it accepts (text
//! in text columns, missing contacts) run there through the same assertions.

use std::collections::HashMap;
use std::process::Output;

use serde_json::Value;

use crate::both;
use crate::helpers::{Pool, TestDb, LOG_CHANNELS};

/// The business instant of the pass: T-3 for invoices due 2025-11-20, visits 17–19 November,
/// scheduled messages at or before 09:00 in Jakarta.
const NOW: &str = "2025-11-17T09:00:00+07:00";

/// The size of the large values.
const MB: usize = 1 << 20;

/// The value a case writes into its column.
enum V {
    /// Nothing: the row as a well-behaved app writes it.
    Good,
    /// Text, bound as a parameter (PostgreSQL too, where the column is text there).
    Text(String),
    /// SQL that both dialects accept (a number, NULL).
    Both(&'static str),
    /// SQL for a value only SQLite keeps in this column: a blob, invalid UTF-8, text in an
    /// integer or date column, a number in a text column. `{id}` is the case's row id.
    Sqlite(&'static str),
}

/// What must become of a case's row.
#[derive(Debug)]
enum Expect {
    /// Usable as it is: its reminder is sent.
    Sent,
    /// Sent, as the reminder of this local date (the message's `event_date`).
    SentFor(&'static str),
    /// Sent, to this address.
    SentTo(&'static str),
    /// Its reminder ends `failed`, `skipped` or `cancelled`, the reason containing this.
    Reason(&'static str),
    /// No reminder can be made: an `unreadable` entry names the table, row and column.
    Unreadable,
    /// The database refuses the write, so the app hears of it at once and no row exists.
    Refused,
}

struct Case {
    id: i64,
    table: &'static str,
    column: &'static str,
    value: V,
    expect: Expect,
}

/// Columns that are text in PostgreSQL too: text values in them are stored there as given.
const PG_TEXT: [(&str, &str); 13] = [
    ("contacts", "name"),
    ("contacts", "phone"),
    ("contacts", "email"),
    ("contacts", "telegram_chat_id"),
    ("contacts", "channels"),
    ("invoices", "number"),
    ("invoices", "status"),
    ("vehicles", "plate_no"),
    ("scheduled_messages", "channel"),
    ("scheduled_messages", "body"),
    ("scheduled_messages", "media_url"),
    ("scheduled_messages", "caption"),
    ("scheduled_messages", "created_by"),
];

impl Case {
    /// Whether PostgreSQL accepts this value in this column.
    fn on_postgres(&self) -> bool {
        match &self.value {
            V::Good | V::Both(_) => true,
            V::Sqlite(_) => false,
            V::Text(t) => PG_TEXT.contains(&(self.table, self.column)) && !t.contains('\0'),
        }
    }

    /// The outbox rows made for this case's subject: its invoice (contact and invoice cases),
    /// vehicle or scheduled message.
    fn kind(&self) -> &'static str {
        match self.table {
            "vehicles" => "maintenance",
            "scheduled_messages" => "scheduled",
            _ => "dunning",
        }
    }

    fn describe(&self) -> String {
        let value = match &self.value {
            V::Good => "(good row)".to_string(),
            V::Text(t) => reminderctl::store::shown(t),
            V::Both(s) | V::Sqlite(s) => (*s).to_string(),
        };
        format!(
            "#{} {}.{} = {value} (expected {:?})",
            self.id, self.table, self.column, self.expect
        )
    }
}

/// One column's cases: table, column, and each value with what must become of its row.
type Column = (&'static str, &'static str, Vec<(V, Expect)>);

/// Every case, numbered from 100: (table, column, value, expectation).
#[allow(clippy::too_many_lines)]
fn corpus() -> Vec<Case> {
    use Expect::{Reason, Refused, Sent, SentFor, SentTo, Unreadable};
    use V::{Both, Good, Sqlite};
    let t = |s: &str| V::Text(s.to_string());
    let groups: Vec<Column> = vec![
        // Good rows, one of each kind.
        ("contacts", "", vec![(Good, Sent)]),
        ("invoices", "", vec![(Good, Sent)]),
        ("vehicles", "", vec![(Good, Sent)]),
        ("scheduled_messages", "", vec![(Good, Sent)]),
        // contacts.phone, on WhatsApp.
        (
            "contacts",
            "phone",
            vec![
                (Sqlite("81234567890"), SentTo("6281234567890")),
                (Sqlite("6281234567890"), SentTo("6281234567890")),
                (Sqlite("81234567890.0"), SentTo("6281234567890")),
                (t("0812-3456-7890"), SentTo("6281234567890")),
                (t("+62 812 3456 7890"), SentTo("6281234567890")),
                (t("(0812) 3456 7890"), SentTo("6281234567890")),
                (t("081234567890\n"), SentTo("6281234567890")),
                (t("\r081234567890\r"), SentTo("6281234567890")),
                (t(""), Reason("no phone number")),
                (t("   "), Reason("no phone number")),
                (t("abc"), Reason("invalid phone number")),
                (t("021-5551234"), Reason("not an Indonesian mobile")),
                (t("0812345678901234567890"), Reason("too long")),
                (
                    V::Text("8".repeat(MB)),
                    Reason("88888888888888888888888888888888888888…': too long"),
                ),
                (t("0812\u{1b}[31m34567890"), Reason("invalid phone number")),
                (t("\u{202e}081234567890"), Reason("invalid phone number")),
                (t("081234567890 / 081298765432"), Reason("invalid phone number")),
                // Arabic-Indic digits.
                (t("٠٨١٢٣٤٥٦٧٨٩٠"), Reason("invalid phone number")),
                (t("0812 3456 7890 😀"), Reason("invalid phone number")),
                (Sqlite("'0812' || char(0) || '34567890'"), Reason("invalid phone number")),
                (Sqlite("X'ffd8ffe0'"), Reason("contacts {id} phone: x'ffd8ffe0' (4 bytes)")),
                (Sqlite("X'0812'"), Reason("invalid phone number")),
                (
                    Sqlite("CAST(X'3038313233ff' AS TEXT)"),
                    Reason("contacts {id} phone: x'3038313233ff'"),
                ),
                // A number in a text column is stored as its text (TEXT affinity).
                (Sqlite("0.5"), Reason("invalid phone number '0.5'")),
                (Sqlite("1e300"), Reason("invalid phone number '1.0e+300'")),
            ],
        ),
        // contacts.name, rendered into the dunning text.
        (
            "contacts",
            "name",
            vec![
                (t("Budi 😀🇮🇩"), Sent),
                (t("Budi\u{1b}]0;pwned\u{7}\u{1b}[2J"), Sent),
                (t("\u{202e}idub"), Sent),
                (t("Budi\r\nSantoso"), Sent),
                (t(""), Sent),
                (t("{{ 7 * 7 }}"), Sent),
                (Sqlite("12345"), Sent),
                (Sqlite("'Budi' || char(0) || 'Santoso'"), Sent),
                (V::Text("x".repeat(MB)), Reason("contacts {id} name: 'xxx")),
                (Sqlite("X'ff'"), Reason("contacts {id} name: x'ff' (1 bytes) is not text")),
                (Sqlite("CAST(X'427564c3' AS TEXT)"), Reason("contacts {id} name: x'427564c3'")),
            ],
        ),
        // contacts.email, on email.
        (
            "contacts",
            "email",
            vec![
                (t(" Budi@Example.com "), SentTo("Budi@Example.com")),
                (t("budi@exämple.com"), Sent),
                (t(""), Reason("no email address")),
                (t("not-an-email"), Reason("invalid email address")),
                (t("budi @example.com"), Reason("invalid email address")),
                (t("budi@example.com\r\nBcc: all@example.com"), Reason("invalid email address")),
                (
                    V::Text(format!("{}@example.com", "b".repeat(400))),
                    Reason("invalid email address"),
                ),
                (Sqlite("42"), Reason("invalid email address")),
                (Sqlite("X'00'"), Reason("contacts {id} email: x'00'")),
            ],
        ),
        // contacts.telegram_chat_id, on Telegram.
        (
            "contacts",
            "telegram_chat_id",
            vec![
                (Sqlite("123456789"), Sent),
                (Sqlite("-1001234567890"), SentTo("-1001234567890")),
                (t(" 123456789\n"), SentTo("123456789")),
                (t(""), Reason("no Telegram chat id")),
                (Sqlite("1.5"), Reason("invalid Telegram chat id '1.5'")),
                (t("@kanal_budi"), SentTo("@kanal_budi")),
                (t("42\u{1b}[2J"), Reason("invalid Telegram chat id")),
                (t("https://t.me/budi"), Reason("invalid Telegram chat id")),
                (Sqlite("X'ff'"), Reason("contacts {id} telegram_chat_id: x'ff'")),
            ],
        ),
        // contacts.channels, the ordered preference.
        // Naming no channel at all means the default, WhatsApp.
        (
            "contacts",
            "channels",
            vec![
                (t(""), Sent),
                (t(" \t\n"), Sent),
                (t("WHATSAPP"), Sent),
                (t("whatsapp\n"), Sent),
                (t(" WhatsApp , email"), Sent),
                (t("email,whatsapp"), Sent),
                (t("Telegram"), Sent),
                (t("\twhatsapp\r"), Sent),
                (t("sms"), Reason("contacts {id} channels: unknown channel 'sms'")),
                (t("e-mail"), Reason("unknown channel")),
                (t(",email"), Reason("contacts {id} channels: an empty channel name")),
                (t("whatsapp\u{1b}[2J"), Reason("contacts {id} channels: unknown channel '")),
                (V::Text("w".repeat(MB)), Reason("unknown channel")),
                (Sqlite("7"), Reason("unknown channel")),
                (Sqlite("X'ff'"), Reason("contacts {id} channels: unknown channel 'x'ff''")),
                (
                    Sqlite("CAST(X'7768617473617070ff' AS TEXT)"),
                    Reason("channel 'x'7768617473617070ff''"),
                ),
            ],
        ),
        // contacts.opted_out_at: any value means the contact opted out.
        (
            "contacts",
            "opted_out_at",
            vec![
                (Sqlite("'2025-11-01'"), Reason("opted out")),
                (Sqlite("''"), Reason("opted out")),
                (Sqlite("0"), Reason("opted out")),
                (Sqlite("X'ff'"), Reason("opted out")),
            ],
        ),
        // invoices.number
        (
            "invoices",
            "number",
            vec![
                (t(""), Sent),
                (t("INV-😀"), Sent),
                (t("INV\u{1b}[31m-1\n"), Sent),
                (Sqlite("2025001"), Sent),
                (V::Text("9".repeat(MB)), Reason("invoices {id} number: '999")),
                (Sqlite("X'ff'"), Reason("invoices {id} number: x'ff'")),
            ],
        ),
        // invoices.status: the table's CHECK holds the vocabulary.
        ("invoices", "status", vec![(t("UNPAID"), Refused), (t("unpaid "), Refused)]),
        // invoices.contact_id
        (
            "invoices",
            "contact_id",
            vec![
                (Both("99999"), Reason("contact 99999 not found")),
                (Both("NULL"), Reason("contact (none) not found")),
                (Both("-1"), Reason("not found")),
                (Sqlite("'{id}'"), Sent),
                (Sqlite("{id}.0"), Sent),
                (Sqlite("'{id}abc'"), Reason("contact {id}abc not found")),
                (Sqlite("{id}.5"), Reason("contact {id}.5 not found")),
                (Sqlite("X'ff'"), Reason("contact x'ff' not found")),
            ],
        ),
        // invoices.amount
        (
            "invoices",
            "amount",
            vec![
                (Both("0"), Sent),
                (Both("-9223372036854775808"), Sent),
                (Sqlite("150000.0"), Sent),
                (Sqlite("' 150000 '"), Sent),
                (Sqlite("'abc'"), Reason("invoices {id} amount: 'abc' is not a whole number")),
                (Sqlite("'Rp 150.000'"), Reason("whole number")),
                (Sqlite("''"), Reason("whole number")),
                (Sqlite("1500.5"), Reason("whole number")),
                (Sqlite("1e20"), Reason("whole number")),
                (Sqlite("X'ff'"), Reason("invoices {id} amount: 'x\\'ff\\' (1 bytes)'")),
            ],
        ),
        // invoices.due_date: offsets are valid and read as local dates in Jakarta.
        (
            "invoices",
            "due_date",
            vec![
                (Sqlite("'2025-11-18T01:00:00+07:00'"), SentFor("2025-11-18")),
                (Sqlite("'2025-11-18T01:00:00+0700'"), SentFor("2025-11-18")),
                (Sqlite("'2025-11-17T20:00:00Z'"), SentFor("2025-11-18")),
                (Sqlite("'2025-11-17T23:30:00-05:00'"), SentFor("2025-11-18")),
                (Sqlite("'2025-11-18 01:00:00 +07:00'"), SentFor("2025-11-18")),
                (Sqlite("'2025-11-18 01:00:00 +0700'"), SentFor("2025-11-18")),
                (Sqlite("'2025-11-17 20:00:00 Z'"), SentFor("2025-11-18")),
                (Sqlite("'2025-11-18T09:00:00'"), SentFor("2025-11-18")),
                (Sqlite("'2025-11-18 23:59:59.999'"), SentFor("2025-11-18")),
                (Sqlite("X'323032352d31312d3138'"), SentFor("2025-11-18")),
                (Sqlite("'18/11/2025'"), Unreadable),
                (Sqlite("'tomorrow'"), Unreadable),
                (Sqlite("''"), Unreadable),
                (Sqlite("'2025-02-30'"), Unreadable),
                (Sqlite("'2025-11-31'"), Unreadable),
                (Sqlite("'0000-00-00'"), Unreadable),
                (Sqlite("'2025-11-18T25:00:00'"), Unreadable),
                (Sqlite("20251118"), Unreadable),
                (Sqlite("1763424000"), Unreadable),
                (Sqlite("2460997.5"), Unreadable),
                (Sqlite("X'ff'"), Unreadable),
                (Sqlite("CAST(X'323032352d31312dff' AS TEXT)"), Unreadable),
                // date() stops at the NUL, so SQL generates the reminder; Rust refuses the
                // date when it is sent, and the message fails naming it.
                (
                    Sqlite("'2025-11-18' || char(0)"),
                    Reason("invoices {id} due_date: '2025-11-18\\0'"),
                ),
                (Sqlite("'2025-11-18' || char(27) || '[2J'"), Unreadable),
            ],
        ),
        // vehicles.plate_no
        (
            "vehicles",
            "plate_no",
            vec![
                (t("B 1234 😀"), Sent),
                (t("B\u{1b}[2J 1"), Sent),
                (t(""), Sent),
                (Sqlite("1234"), Sent),
                (V::Text("B".repeat(MB)), Reason("vehicles {id} plate_no: 'BBB")),
                (Sqlite("X'ff'"), Reason("vehicles {id} plate_no: x'ff'")),
            ],
        ),
        // vehicles.contact_id
        (
            "vehicles",
            "contact_id",
            vec![
                (Both("99999"), Reason("contact 99999 not found")),
                (Both("NULL"), Reason("not found")),
                (Sqlite("'{id}'"), Sent),
                (Sqlite("'abc'"), Reason("contact abc not found")),
            ],
        ),
        // vehicles.next_visit_date and last_visit_date (+ 4 months when next is empty).
        (
            "vehicles",
            "next_visit_date",
            vec![
                (Sqlite("'2025-11-17T01:00:00+07:00'"), SentFor("2025-11-17")),
                (Sqlite("'2025-11-16T18:00:00Z'"), SentFor("2025-11-17")),
                (Sqlite("'2025-11-17 01:00:00 +07:00'"), SentFor("2025-11-17")),
                (Sqlite("'tomorrow'"), Unreadable),
                (Sqlite("'2025-11-31'"), Unreadable),
                (Sqlite("20251118"), Unreadable),
                (Sqlite("X'ff'"), Unreadable),
            ],
        ),
        (
            "vehicles",
            "last_visit_date",
            vec![
                (Sqlite("'2025-07-17T01:00:00+07:00'"), SentFor("2025-11-17")),
                (Sqlite("'18/07/2025'"), Unreadable),
                (Sqlite("'2025-02-30'"), Unreadable),
                (Sqlite("X'ff'"), Unreadable),
            ],
        ),
        // scheduled_messages.contact_id
        (
            "scheduled_messages",
            "contact_id",
            vec![
                (Both("99999"), Reason("contact 99999 not found")),
                (Both("NULL"), Reason("not found")),
                (Sqlite("'{id}'"), Sent),
                (Sqlite("'abc'"), Reason("not found")),
                (Sqlite("X'ff'"), Reason("contact x'ff' not found")),
            ],
        ),
        // scheduled_messages.channel: one channel name.
        (
            "scheduled_messages",
            "channel",
            vec![
                (t("WHATSAPP"), Sent),
                (t("whatsapp\n"), Sent),
                (t(" Email\r\n"), Sent),
                (t(""), Sent),
                (t("sms"), Reason("scheduled_messages {id} channel: unknown channel 'sms'")),
                (t(",email"), Reason("scheduled_messages {id} channel: an empty channel name")),
                (t("whatsapp\u{1b}[2J"), Reason("unknown channel")),
                (V::Text("w".repeat(MB)), Reason("unknown channel")),
                (Sqlite("7"), Reason("unknown channel")),
                (
                    Sqlite("X'ff'"),
                    Reason("scheduled_messages {id} channel: unknown channel 'x'ff''"),
                ),
            ],
        ),
        // scheduled_messages.body
        (
            "scheduled_messages",
            "body",
            vec![
                (t("Halo 😀 \u{202e}olah"), Sent),
                (t("Halo\u{1b}[2J\r\nbaris dua"), Sent),
                (Sqlite("12345"), Sent),
                (Sqlite("'Halo' || char(0) || 'x'"), Sent),
                (t(""), Reason("the message is empty")),
                (t(" \n\t "), Reason("the message is empty")),
                (V::Text("x".repeat(MB)), Reason("scheduled_messages {id} body: 'xxx")),
                (
                    Sqlite("X'ff'"),
                    Reason("scheduled_messages {id} body: x'ff' (1 bytes) is not text"),
                ),
                (
                    Sqlite("CAST(X'48616c6fff' AS TEXT)"),
                    Reason("messages {id} body: x'48616c6fff'"),
                ),
            ],
        ),
        // scheduled_messages.media_url
        (
            "scheduled_messages",
            "media_url",
            vec![(Sqlite("X'ff'"), Reason("scheduled_messages {id} media_url: x'ff'"))],
        ),
        // scheduled_messages.scheduled_at (next_run_at empty) and next_run_at
        (
            "scheduled_messages",
            "scheduled_at",
            vec![
                (Sqlite("'2025-11-17T01:00:00Z'"), Sent),
                (Sqlite("'2025-11-17T08:00:00+07:00'"), Sent),
                (Sqlite("'2025-11-17 08:00:00 +0700'"), Sent),
                (Sqlite("'2025-11-17'"), Sent),
                (Sqlite("'tomorrow'"), Unreadable),
                (Sqlite("''"), Unreadable),
                (Sqlite("'now'"), Refused),
                (Sqlite("'17/11/2025 08:00'"), Unreadable),
                (Sqlite("1763341200"), Unreadable),
                (Sqlite("2460996.5"), Unreadable),
                (Sqlite("X'ff'"), Unreadable),
            ],
        ),
        (
            "scheduled_messages",
            "next_run_at",
            vec![
                (Sqlite("'2025-11-17T01:30:00Z'"), Sent),
                (Sqlite("'tomorrow'"), Unreadable),
                (Sqlite("X'ff'"), Unreadable),
            ],
        ),
        // The series needs its start as well as its next run: a bad start is reported too.
        (
            "scheduled_messages",
            "scheduled_at",
            vec![(Sqlite("'tomorrow', next_run_at = '2025-11-17 08:00:00'"), Unreadable)],
        ),
        // Columns no rule reads to decide or to write the text: whatever they hold, the
        // reminder goes out.
        (
            "invoices",
            "paid_at",
            vec![(Sqlite("'kemarin'"), Sent), (Sqlite("X'ff'"), Sent), (Sqlite("42"), Sent)],
        ),
        (
            "scheduled_messages",
            "created_by",
            vec![(t("budi\u{1b}[2J"), Sent), (Sqlite("X'ff'"), Sent), (Sqlite("7"), Sent)],
        ),
        ("scheduled_messages", "caption", vec![(t("Brosur 😀"), Sent), (Sqlite("12"), Sent)]),
    ];
    groups
        .into_iter()
        .flat_map(|(table, column, values)| {
            values.into_iter().map(move |(value, expect)| (table, column, value, expect))
        })
        .zip(100..)
        .map(|((table, column, value, expect), id)| Case { id, table, column, value, expect })
        .collect()
}

/// The case's rows as a good app writes them: its contact, and its invoice, vehicle or
/// scheduled message. SQL both dialects accept; ids are the case's.
fn good_rows(c: &Case, postgres: bool) -> String {
    let id = c.id;
    let channels = match c.column {
        "email" => "email",
        "telegram_chat_id" => "telegram",
        _ => "whatsapp",
    };
    let contact = format!(
        "INSERT INTO contacts (id, name, phone, email, telegram_chat_id, channels) \
         VALUES ({id}, 'Pelanggan {id}', '0812{}', 'p{id}@example.com', '{}', '{channels}');\n",
        10_000_000 + id,
        100_000 + id,
    );
    let subject = match c.table {
        "vehicles" => {
            let next = if c.column == "last_visit_date" { "NULL" } else { "'2025-11-18'" };
            format!(
                "INSERT INTO vehicles (id, contact_id, plate_no, last_visit_date, next_visit_date) \
                 VALUES ({id}, {id}, 'B {id} AB', '2025-07-18', {next});\n"
            )
        }
        "scheduled_messages" => {
            // 08:00 in Jakarta, an hour before the pass: naive local time in SQLite.
            let at = if postgres { "2025-11-17T08:00:00+07:00" } else { "2025-11-17 08:00:00" };
            format!(
                "INSERT INTO scheduled_messages (id, contact_id, channel, body, scheduled_at) \
                 VALUES ({id}, {id}, 'whatsapp', 'Halo {id}', '{at}');\n"
            )
        }
        _ => format!(
            "INSERT INTO invoices (id, number, contact_id, amount, due_date) \
             VALUES ({id}, 'INV-{id}', {id}, 150000, '2025-11-20');\n"
        ),
    };
    contact + &subject
}

/// Writes the case's value over its good row; a refused write is checked here.
async fn write_value(db: &TestDb, c: &Case) {
    let refused = matches!(c.expect, Expect::Refused);
    let set = format!("UPDATE {} SET {} = ", c.table, c.column);
    let sql = match &c.value {
        V::Good => return,
        V::Both(v) | V::Sqlite(v) => v.replace("{id}", &c.id.to_string()),
        V::Text(text) => {
            let done = match &db.pool {
                Pool::Sqlite(p) => sqlx::query(&format!("{set}?1 WHERE id = {}", c.id))
                    .bind(text)
                    .execute(p)
                    .await
                    .map(|_| ()),
                Pool::Postgres(p) => sqlx::query(&format!("{set}$1 WHERE id = {}", c.id))
                    .bind(text)
                    .execute(p)
                    .await
                    .map(|_| ()),
            };
            assert_eq!(done.is_err(), refused, "{}: {done:?}", c.describe());
            return;
        }
    };
    let sql = format!("{set}{sql} WHERE id = {}", c.id);
    let done = match &db.pool {
        Pool::Sqlite(p) => sqlx::raw_sql(&sql).execute(p).await.map(|_| ()),
        Pool::Postgres(p) => sqlx::raw_sql(&sql).execute(p).await.map(|_| ()),
    };
    assert_eq!(done.is_err(), refused, "{}: {done:?}", c.describe());
}

async fn load(db: &TestDb, cases: &[&Case]) {
    let rows: String = cases.iter().map(|c| good_rows(c, db.is_postgres())).collect();
    db.exec(&rows).await;
    for c in cases {
        write_value(db, c).await;
    }
}

/// Every channel on the log provider, and no rate limit to wait for.
const ENV: [(&str, &str); 6] = [
    LOG_CHANNELS[0],
    LOG_CHANNELS[1],
    LOG_CHANNELS[2],
    ("REMINDER_WHATSAPP_RATE", "unlimited"),
    ("REMINDER_TELEGRAM_RATE", "unlimited"),
    ("REMINDER_EMAIL_RATE", "unlimited"),
];

/// Runs the binary and insists it completed: exit 0, no panic.
async fn completed(db: &TestDb, args: &[&str]) -> Output {
    let out = db.run(args, &ENV).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("panicked"),
        "reminderctl {args:?} exited {:?}\nstdout: {}\nstderr: {stderr}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
    );
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Human output as the terminal gets it: valid UTF-8, and no character that could recolour
/// it, move the cursor, reorder text or fake a line, other than the report's own newlines.
fn human(out: &Output, what: &str) -> String {
    let text = String::from_utf8(out.stdout.clone())
        .unwrap_or_else(|e| panic!("{what}: stdout is not UTF-8: {e}"));
    for (n, line) in text.lines().enumerate() {
        let raw = line.chars().find(|&c| {
            let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}')
                || matches!(c, '\u{2066}'..='\u{2069}');
            c.is_control() || bidi
        });
        assert!(raw.is_none(), "{what}, line {}: raw {raw:?} in {line:?}", n + 1);
    }
    text
}

/// `id`, `kind`, `subject_id`, `status`, `event_date` of an outbox row.
type OutboxRow = (i64, String, Option<i64>, String, Option<String>);

/// One outbox row, as the database and the pass's details have it.
struct Message {
    status: String,
    error: String,
    recipient: String,
    event_date: Option<String>,
}

async fn messages(db: &TestDb, details: &[Value]) -> HashMap<(String, i64), Vec<Message>> {
    let sql = "SELECT id, kind, subject_id, status, CAST(event_date AS TEXT) FROM messages";
    let rows: Vec<OutboxRow> = match &db.pool {
        Pool::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await,
        Pool::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await,
    }
    .expect("read the outbox");
    // The last detail of a message is its outcome in this pass.
    let mut reported: HashMap<i64, [String; 3]> = HashMap::new();
    for d in details {
        let Some(id) = d["id"].as_i64() else { continue };
        let field = |name: &str| d[name].as_str().unwrap_or_default().to_string();
        reported.insert(id, [field("status"), field("error"), field("recipient")]);
    }
    let mut out: HashMap<(String, i64), Vec<Message>> = HashMap::new();
    for (id, kind, subject, status, event_date) in rows {
        let [said, error, recipient] = reported.remove(&id).unwrap_or_default();
        assert_eq!(
            said, status,
            "message {id}: the pass reported {said}, the outbox says {status}"
        );
        out.entry((kind, subject.unwrap_or_default())).or_default().push(Message {
            status,
            error,
            recipient,
            event_date,
        });
    }
    out
}

/// Whether `entries` (an `unreadable` array) names this case's table, row and column, with the
/// value and what is wrong with it.
fn names(entries: &[Value], c: &Case) -> bool {
    entries.iter().any(|e| {
        e["table"] == c.table
            && e["id"] == c.id
            && e["column"] == c.column
            && e["value"].as_str().is_some()
            && !e["problem"].as_str().unwrap_or_default().is_empty()
    })
}

/// What is wrong with a case's outcome, if anything.
fn verdict(
    c: &Case,
    msgs: &[Message],
    unreadable: &[Value],
    status_unreadable: &[Value],
) -> Option<String> {
    let sent = msgs.iter().filter(|m| m.status == "sent").count();
    let listed = names(unreadable, c);
    if listed != names(status_unreadable, c) {
        return Some(format!("run --json and status --json disagree on unreadable: {listed}"));
    }
    let found = || {
        msgs.iter()
            .map(|m| format!("{} ({}) for {:?}", m.status, m.error, m.event_date))
            .collect::<Vec<_>>()
            .join("; ")
    };
    match c.expect {
        Expect::Sent | Expect::SentFor(_) | Expect::SentTo(_) => {
            if sent != 1 || listed {
                return Some(format!("not sent exactly once: [{}], unreadable {listed}", found()));
            }
            let m = msgs.iter().find(|m| m.status == "sent")?;
            match c.expect {
                Expect::SentFor(date) if m.event_date.as_deref() != Some(date) => {
                    Some(format!("sent for {:?}, not {date}", m.event_date))
                }
                Expect::SentTo(to) if m.recipient != to => {
                    Some(format!("sent to {:?}, not {to}", m.recipient))
                }
                _ => None,
            }
        }
        Expect::Reason(word) => {
            let word = word.replace("{id}", &c.id.to_string());
            let word = word.as_str();
            let finished = ["failed", "skipped", "cancelled"];
            let reasoned = !msgs.is_empty()
                && msgs
                    .iter()
                    .all(|m| finished.contains(&m.status.as_str()) && !m.error.is_empty());
            let names_it =
                msgs.iter().any(|m| m.error.to_lowercase().contains(&word.to_lowercase()));
            (!reasoned || !names_it || listed)
                .then(|| format!("no reason with '{word}': [{}], unreadable {listed}", found()))
        }
        Expect::Unreadable => (!listed || !msgs.is_empty())
            .then(|| format!("not listed as unreadable, or made a message: [{}]", found())),
        // The row kept its good value: it is sent like any good row.
        Expect::Refused => (sent != 1 || listed)
            .then(|| format!("the refused write changed the row: [{}]", found())),
    }
}

/// Loads `cases`, runs one pass and `status`, and checks every case.
async fn check_corpus(db: &TestDb, cases: &[&Case]) {
    load(db, cases).await;
    let run = json(&completed(db, &["run", "--now", NOW, "--json"]).await);
    let status = json(&completed(db, &["status", "--now", NOW, "--json"]).await);
    let unreadable = run["unreadable"].as_array().cloned().unwrap_or_default();
    let status_unreadable = status["unreadable"].as_array().cloned().unwrap_or_default();
    let details = run["details"].as_array().cloned().unwrap_or_default();
    let by_subject = messages(db, &details).await;

    let mut wrong = Vec::new();
    for c in cases {
        let msgs = by_subject.get(&(c.kind().to_string(), c.id)).map_or(&[][..], Vec::as_slice);
        if let Some(why) = verdict(c, msgs, &unreadable, &status_unreadable) {
            wrong.push(format!("{}: {why}", c.describe()));
        }
    }
    // Nothing else is reported: every entry is one of the cases expected there.
    for e in &unreadable {
        let expected = cases
            .iter()
            .any(|c| matches!(c.expect, Expect::Unreadable) && names(std::slice::from_ref(e), c));
        if !expected {
            wrong.push(format!("unexpected unreadable entry {e}"));
        }
    }
    assert!(wrong.is_empty(), "{} of {} cases:\n{}", wrong.len(), cases.len(), wrong.join("\n"));

    // The same data in a second database, for the human summary of the same pass.
    let twin = if db.is_postgres() {
        TestDb::postgres().await.expect("a second PostgreSQL database")
    } else {
        TestDb::sqlite().await
    };
    load(&twin, cases).await;
    let text = human(&completed(&twin, &["run", "--now", NOW]).await, "run");
    let sent = by_subject.values().flatten().filter(|m| m.status == "sent").count();
    let total = text.lines().find(|l| l.starts_with("Total:")).unwrap_or_default();
    assert!(total.contains(&format!(" sent {sent},")), "the same pass sent {sent}:\n{text}");
    let status =
        human(&completed(&twin, &["status", "--now", NOW, "--failures", "1000"]).await, "status");

    if cases.iter().any(|c| matches!(c.expect, Expect::Unreadable)) {
        assert!(text.contains("input row(s) cannot be read"), "{text}");
        assert!(status.contains("Input rows no reminder can be made for"), "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_value_sqlite_stores_stops_other_reminders_or_goes_unexplained() {
    let all = corpus();
    assert!(all.len() >= 100, "the corpus has {} cases", all.len());
    let cases: Vec<&Case> = all.iter().collect();
    check_corpus(&TestDb::sqlite().await, &cases).await;
}

both!(the_text_values_postgresql_accepts_are_isolated_and_explained, postgres_subset_body);
async fn postgres_subset_body(db: &TestDb) {
    let all = corpus();
    let cases: Vec<&Case> = all.iter().filter(|c| c.on_postgres()).collect();
    check_corpus(db, &cases).await;
}
