//! `import` through the binary on both backends: clean files, reruns, updates by ref, bad files
//! that write nothing, `--skip-bad`, references to contacts, explicit ids, and imported rows
//! reminded by `run`.

use std::fmt::Write as _;
use std::process::Output;

use serde_json::Value;

use crate::both;
use crate::helpers::{count, details, json_of, TestDb, LOG_CHANNELS, T3_NOW, TZ};

/// Writes `content` to `name` in the binary's working directory.
fn file(db: &TestDb, name: &str, content: &str) {
    std::fs::write(db.dir.path().join(name), content).expect("write csv");
}

async fn import(db: &TestDb, args: &[&str]) -> Output {
    let mut all = vec!["import"];
    all.extend_from_slice(args);
    db.run(&all, &[]).await
}

/// Runs `import … --json` and returns the document; panics unless it exits 0.
async fn imported(db: &TestDb, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = import(db, &all).await;
    assert!(
        out.status.success(),
        "import {args:?} exited {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(&out)
}

/// `inserted updated unchanged` of an import document.
fn counts(doc: &Value) -> (u64, u64, u64) {
    (count(doc, "inserted"), count(doc, "updated"), count(doc, "unchanged"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A timestamp column read on either backend.
async fn instant(db: &TestDb, sql: &str) -> chrono::DateTime<chrono::Utc> {
    let text = db.text(sql).await.unwrap_or_else(|| panic!("NULL from {sql}"));
    reminderctl::domain::dates::instant(&text, TZ).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

const CONTACTS: &str = "ref,name,phone,email,telegram_chat_id,channels,opted_out_at\n\
    C-1,Budi Santoso,0812-3456-7890,budi@example.com,,\"whatsapp,email\",\n\
    C-2,Siti Rahayu,+62 813 1111 2222,,123456789,telegram,\n\
    C-3,Andi,6281355556666,,,,2025-10-01T10:00:00+07:00\n";

const INVOICES: &str = "ref,number,contact_ref,amount,due_date,status,paid_at\n\
    I-1,INV-20251120-000001,C-1,150000,2025-11-20,unpaid,\n\
    I-2,INV-20251125-000002,C-2,275000,2025-11-25,,\n\
    I-3,INV-20251001-000003,C-1,90000,2025-10-01,paid,2025-10-02 10:00\n";

both!(a_clean_import_writes_every_row_and_a_rerun_changes_nothing, clean_body);
async fn clean_body(db: &TestDb) {
    file(db, "contacts.csv", CONTACTS);
    file(db, "invoices.csv", INVOICES);
    file(
        db,
        "vehicles.csv",
        "ref,contact_ref,plate_no,last_visit_date,next_visit_date\n\
         V-1,C-1,B 1234 CD,2025-07-18,\n\
         V-2,C-2,D 99 XY,,2025-11-19\n",
    );
    file(
        db,
        "scheduled.csv",
        "ref,contact_ref,channel,body,media_url,caption,scheduled_at,recurrence,created_by\n\
         S-1,C-1,whatsapp,\"Halo Budi, jangan lupa.\",,,2025-12-01 09:00,,admin\n\
         S-2,C-2,,,https://example.com/promo.jpg,Promo,2025-12-05T10:00:00+07:00,monthly,\n",
    );
    for (table, rows) in [("contacts", 3), ("invoices", 3), ("vehicles", 2), ("scheduled", 2)] {
        let doc = imported(db, &[table, &format!("{table}.csv"), "--now", T3_NOW]).await;
        assert_eq!(counts(&doc), (rows, 0, 0), "{table}: {doc}");
        assert_eq!((count(&doc, "rows"), count(&doc, "bad_rows")), (rows, 0));
        assert_eq!(doc["written"], true);
    }
    // The phone as written; dates as dates; the contact by its ref.
    assert_eq!(
        db.text("SELECT phone FROM contacts WHERE ref = 'C-2'").await.as_deref(),
        Some("+62 813 1111 2222")
    );
    assert_eq!(
        db.text("SELECT channels FROM contacts WHERE ref = 'C-1'").await.as_deref(),
        Some("whatsapp,email")
    );
    assert_eq!(
        db.text("SELECT channels FROM contacts WHERE ref = 'C-3'").await.as_deref(),
        Some("whatsapp"),
        "an empty cell is the column's default"
    );
    assert_eq!(
        instant(db, "SELECT CAST(opted_out_at AS TEXT) FROM contacts WHERE ref = 'C-3'").await,
        "2025-10-01T03:00:00Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap()
    );
    assert_eq!(
        db.int(
            "SELECT count(*) FROM invoices i JOIN contacts c ON c.id = i.contact_id \
             WHERE i.ref = 'I-1' AND c.ref = 'C-1' AND i.amount = 150000 \
             AND CAST(i.due_date AS TEXT) = '2025-11-20' AND i.status = 'unpaid'"
        )
        .await,
        1
    );
    assert_eq!(
        db.text("SELECT status FROM invoices WHERE ref = 'I-2'").await.as_deref(),
        Some("unpaid")
    );
    assert_eq!(
        db.text("SELECT body FROM scheduled_messages WHERE ref = 'S-1'").await.as_deref(),
        Some("Halo Budi, jangan lupa.")
    );

    let ids = db.text("SELECT CAST(sum(id) AS TEXT) FROM invoices").await;
    for (table, rows) in [("contacts", 3), ("invoices", 3), ("vehicles", 2), ("scheduled", 2)] {
        let doc = imported(db, &[table, &format!("{table}.csv"), "--now", T3_NOW]).await;
        assert_eq!(counts(&doc), (0, 0, rows), "a rerun of {table} changes nothing: {doc}");
    }
    assert_eq!(db.int("SELECT count(*) FROM contacts").await, 3);
    assert_eq!(db.text("SELECT CAST(sum(id) AS TEXT) FROM invoices").await, ids);

    let text = stdout(&import(db, &["invoices", "invoices.csv"]).await);
    assert_eq!(
        text.trim(),
        "imported invoices from invoices.csv: 0 inserted, 0 updated, 3 unchanged (3 rows)"
    );
}

both!(an_update_by_ref_changes_only_what_changed, update_body);
async fn update_body(db: &TestDb) {
    file(db, "contacts.csv", CONTACTS);
    imported(db, &["contacts", "contacts.csv"]).await;
    let id = db.int("SELECT id FROM contacts WHERE ref = 'C-2'").await;
    // A new phone for C-2, a new name for C-3, C-1 as it was, and a new C-4. The file has no
    // email column: the emails already there are left alone.
    file(
        db,
        "changes.csv",
        "ref,name,phone\n\
         C-1,Budi Santoso,0812-3456-7890\n\
         C-2,Siti Rahayu,0813 9999 0000\n\
         C-3,Andi Wijaya,6281355556666\n\
         C-4,Dewi,081299998888\n",
    );
    let doc = imported(db, &["contacts", "changes.csv"]).await;
    assert_eq!(counts(&doc), (1, 2, 1), "{doc}");
    assert_eq!(
        db.text("SELECT phone FROM contacts WHERE ref = 'C-2'").await.as_deref(),
        Some("0813 9999 0000")
    );
    assert_eq!(db.int("SELECT id FROM contacts WHERE ref = 'C-2'").await, id, "same row");
    assert_eq!(
        db.text("SELECT name FROM contacts WHERE ref = 'C-3'").await.as_deref(),
        Some("Andi Wijaya")
    );
    assert_eq!(
        db.text("SELECT email FROM contacts WHERE ref = 'C-1'").await.as_deref(),
        Some("budi@example.com"),
        "a column the file does not have is not touched"
    );
    assert_eq!(
        db.text("SELECT channels FROM contacts WHERE ref = 'C-2'").await.as_deref(),
        Some("telegram")
    );
    // Rows an app wrote itself (no ref) are never touched by an import.
    db.exec("INSERT INTO contacts (name, phone) VALUES ('Dari aplikasi', '081200001111')").await;
    let doc = imported(db, &["contacts", "changes.csv"]).await;
    assert_eq!(counts(&doc), (0, 0, 4), "{doc}");
    assert_eq!(db.int("SELECT count(*) FROM contacts").await, 5);
}

both!(a_bad_file_writes_nothing_and_names_each_line_and_column, bad_file_body);
async fn bad_file_body(db: &TestDb) {
    file(db, "contacts.csv", CONTACTS);
    imported(db, &["contacts", "contacts.csv"]).await;
    file(
        db,
        "invoices.csv",
        "ref,number,contact_ref,amount,due_date,status,paid_at\n\
         I-1,INV-1,C-1,150000,2025-11-20,unpaid,\n\
         I-2,INV-2,C-1,150.000,2025-11-20,,\n\
         I-3,INV-3,C-2,\"Rp 150.000\",2025-11-20,,\n\
         I-4,INV-4,C-1,150000,18/11/2025,,\n\
         I-5,INV-5,C-9,150000,2025-11-20,,\n\
         I-1,INV-6,C-1,150000,2025-11-20,,\n\
         I-7,INV-7,C-1,150000,2025-11-20,lunas,\n\
         I-8,INV-8,C-1,150000,2025-11-20,unpaid,2025-11-01\n\
         I-9,INV-9,C-1\n\
         I-10,INV-10,C-1,150000,2025-11-21,,\n",
    );
    let out = import(db, &["invoices", "invoices.csv"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(db.int("SELECT count(*) FROM invoices").await, 0, "nothing is written");
    let text = stdout(&out);
    let expected = [
        "invoices.csv: 8 of 10 rows are bad; nothing was written (fix them, or pass --skip-bad \
         to import the other 2):",
        "  line 3, column amount: '150.000' is not a whole number of rupiah: write digits only, \
         e.g. 150000 (no 'Rp', dots, commas or spaces)",
        "  line 4, column amount: 'Rp 150.000' is not a whole number of rupiah: write digits \
         only, e.g. 150000 (no 'Rp', dots, commas or spaces)",
        "  line 5, column due_date: '18/11/2025' is not a date (YYYY-MM-DD, or an ISO-8601 \
         timestamp)",
        "  line 6, column contact_ref: no contact has ref 'C-9' (import contacts first, with \
         that ref)",
        "  line 7, column ref: 'I-1' is already on line 2",
        "  line 8, column status: 'lunas' is not an invoice status (unpaid, paid or cancelled)",
        "  line 9, column status: is unpaid but paid_at is set: write paid (or cancelled), or \
         leave paid_at empty",
        "  line 10: has 3 fields, the header has 7",
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), expected, "{text}");
    assert_eq!(stderr(&out).trim(), "error: invoices.csv: 8 bad rows; nothing was written");

    let out = import(db, &["invoices", "invoices.csv", "--json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let doc = json_of(&out);
    assert_eq!((doc["written"].clone(), count(&doc, "bad_rows")), (Value::Bool(false), 8));
    assert_eq!(doc["problems"][2]["line"], 5);
    assert_eq!(doc["problems"][2]["column"], "due_date");
    assert_eq!(
        doc["problems"][2]["message"],
        "'18/11/2025' is not a date (YYYY-MM-DD, or an ISO-8601 timestamp)"
    );
    assert_eq!(doc["problems"][7]["column"], Value::Null);

    // A header the import cannot use stops it before any row, naming the columns.
    file(db, "typo.csv", "ref,contact_ref,amout,due_date\nI-1,C-1,1,2025-11-20\n");
    let out = import(db, &["invoices", "typo.csv"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: cannot import typo.csv: unknown column 'amout' (did you mean amount?); missing \
         column amount; invoices files have the columns ref, number, contact_ref, amount, \
         due_date, status, paid_at, id, of which ref, contact_ref, amount, due_date are required"
    );
    assert!(stdout(&out).is_empty());
    let out = import(db, &["invoices", "missing.csv"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("error: cannot import missing.csv: No such file"), "{out:?}");
}

both!(skip_bad_imports_the_good_rows_and_lists_the_bad_ones, skip_bad_body);
async fn skip_bad_body(db: &TestDb) {
    file(
        db,
        "contacts.csv",
        "ref,name,phone,email\n\
         C-1,Budi,081234567890,budi@example.com\n\
         C-2,Siti,021-5550123,\n\
         C-3,Andi,081355556666,andi@\n\
         C-4,Dewi,081299998888,\n",
    );
    let out = import(db, &["contacts", "contacts.csv", "--skip-bad"]).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "imported contacts from contacts.csv: 2 inserted, 0 updated, 0 unchanged (4 rows); \
         skipped 2 bad rows:"
    );
    assert!(lines[1].starts_with("  line 3, column phone: invalid phone number '021-5550123'"));
    assert_eq!(lines[2], "  line 4, column email: 'andi@' is not an email address");
    assert_eq!(db.int("SELECT count(*) FROM contacts").await, 2);
    assert_eq!(db.int("SELECT count(*) FROM contacts WHERE ref IN ('C-1', 'C-4')").await, 2);

    let doc = imported(db, &["contacts", "contacts.csv", "--skip-bad"]).await;
    assert_eq!(counts(&doc), (0, 0, 2));
    assert_eq!((count(&doc, "bad_rows"), doc["written"].clone()), (2, Value::Bool(true)));
}

both!(invoices_and_vehicles_belong_to_the_contact_named_by_its_ref, references_body);
async fn references_body(db: &TestDb) {
    // Contacts an app wrote first, so that imported ids do not match line numbers.
    for name in ["Satu", "Dua", "Tiga"] {
        db.exec(&format!("INSERT INTO contacts (name) VALUES ('{name}')")).await;
    }
    file(
        db,
        "vehicles.csv",
        "ref,contact_ref,plate_no,next_visit_date\nV-1,C-2,B 1 A,2025-11-19\n",
    );
    let out = import(db, &["vehicles", "vehicles.csv"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains(
        "line 2, column contact_ref: no contact has ref 'C-2' (import contacts first, with that \
         ref)"
    ));
    assert_eq!(db.int("SELECT count(*) FROM vehicles").await, 0);

    file(db, "contacts.csv", CONTACTS);
    imported(db, &["contacts", "contacts.csv"]).await;
    imported(db, &["vehicles", "vehicles.csv"]).await;
    let owner = "SELECT c.ref FROM vehicles v JOIN contacts c ON c.id = v.contact_id";
    assert_eq!(db.text(owner).await.as_deref(), Some("C-2"));

    // Moving the vehicle to another contact is an update of that row.
    file(
        db,
        "vehicles.csv",
        "ref,contact_ref,plate_no,next_visit_date\nV-1,C-3,B 1 A,2025-11-19\n",
    );
    let doc = imported(db, &["vehicles", "vehicles.csv"]).await;
    assert_eq!(counts(&doc), (0, 1, 0));
    assert_eq!(db.text(owner).await.as_deref(), Some("C-3"));
}

both!(explicit_ids_are_kept_and_an_app_insert_without_an_id_comes_after_them, ids_body);
async fn ids_body(db: &TestDb) {
    file(db, "contacts.csv", "ref,id,name,phone\nC-1,500,Budi,081234567890\nC-2,501,Siti,0813\n");
    // A bad row writes nothing, ids included: the sequence stays where it was.
    let out = import(db, &["contacts", "contacts.csv"]).await;
    assert_eq!(out.status.code(), Some(1));
    file(db, "contacts.csv", "ref,id,name,phone\nC-1,500,Budi,081234567890\nC-2,501,Siti,\n");
    let doc = imported(db, &["contacts", "contacts.csv"]).await;
    assert_eq!(counts(&doc), (2, 0, 0));
    assert_eq!(db.int("SELECT id FROM contacts WHERE ref = 'C-2'").await, 501);

    // The app's next contact, written without an id, gets one past the imported ids.
    db.exec("INSERT INTO contacts (name) VALUES ('Dari aplikasi')").await;
    let app_id = db.int("SELECT id FROM contacts WHERE ref IS NULL").await;
    assert!(app_id > 501, "the app's insert got id {app_id}");
    // An import cannot take that id, nor change the id of a row it imported before.
    file(
        db,
        "contacts.csv",
        &format!("ref,id,name\nC-1,7,Budi\nC-3,{app_id},Andi\nC-4,501,Dewi\nC-5,600,Eka\nC-6,600,Fajar\n"),
    );
    let out = import(db, &["contacts", "contacts.csv"]).await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains(
        "line 2, column id: 'C-1' was imported with id 500; a row keeps its id (write 500, or \
         leave the id column out)"
    ));
    assert!(text.contains(&format!(
        "line 3, column id: {app_id} is taken by a contact that was not imported (it has no ref)"
    )));
    assert!(text.contains("line 4, column id: 501 is taken by the contact with ref 'C-2'"));
    assert!(text.contains("line 6, column id: 600 is already on line 5"), "{text}");

    // Invoices too: an explicit id, then the app's invoice without one.
    file(
        db,
        "invoices.csv",
        "id,ref,contact_ref,amount,due_date\n9000,I-1,C-1,150000,2025-11-20\n",
    );
    imported(db, &["invoices", "invoices.csv"]).await;
    db.exec(&format!(
        "INSERT INTO invoices (contact_id, amount, due_date) VALUES ({app_id}, 1, '2025-11-20')"
    ))
    .await;
    assert!(db.int("SELECT id FROM invoices WHERE ref IS NULL").await > 9000);
}

both!(an_imported_invoice_is_reminded_by_run, reminded_body);
async fn reminded_body(db: &TestDb) {
    file(db, "contacts.csv", "ref,name,phone\nC-1,Budi Santoso,0812-3456-7890\n");
    file(
        db,
        "invoices.csv",
        "ref,number,contact_ref,amount,due_date\nI-1,INV-1,C-1,150000,2025-11-20\n",
    );
    imported(db, &["contacts", "contacts.csv"]).await;
    imported(db, &["invoices", "invoices.csv"]).await;
    let doc = db.pass(&["run", "--now", T3_NOW], &LOG_CHANNELS).await;
    let sent: Vec<(String, String, String)> = details(&doc)
        .iter()
        .filter(|d| d["status"] == "sent")
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
            (s("kind"), s("stage"), s("recipient"))
        })
        .collect();
    assert_eq!(sent, [("dunning".into(), "T-3".into(), "6281234567890".into())], "{doc}");
    // Paid in the other system, imported again: the next stage is not sent.
    file(
        db,
        "invoices.csv",
        "ref,number,contact_ref,amount,due_date,status,paid_at\n\
         I-1,INV-1,C-1,150000,2025-11-20,paid,2025-11-18 10:00\n",
    );
    let doc = imported(db, &["invoices", "invoices.csv"]).await;
    assert_eq!(counts(&doc), (0, 1, 0));
    let doc = db.pass(&["run", "--now", "2025-11-19T09:00:00+07:00"], &LOG_CHANNELS).await;
    assert_eq!(count(&doc, "generated"), 0, "{doc}");
}

both!(an_imported_series_is_not_flooded_and_a_rerun_keeps_its_progress, series_body);
async fn series_body(db: &TestDb) {
    file(db, "contacts.csv", "ref,name,phone\nC-1,Budi,081234567890\n");
    imported(db, &["contacts", "contacts.csv"]).await;
    // A daily series the other system started in January, a one-off already past, a message
    // over two lines (its line numbers still count), and a one-off to come.
    file(
        db,
        "scheduled.csv",
        "ref,contact_ref,body,scheduled_at,recurrence\n\
         S-1,C-1,Selamat pagi,2025-01-01 08:00,daily\n\
         S-2,C-1,\"Dua baris,\nbaris kedua\",2025-11-17 10:00,\n\
         S-3,C-1,Sudah lewat,2025-11-01 08:00,\n",
    );
    let out = import(db, &["scheduled", "scheduled.csv", "--now", T3_NOW]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(
            "line 5, column scheduled_at: 2025-11-01 08:00 is before now (2025-11-17 09:00, \
             Asia/Jakarta) and the message does not repeat, so it would go out at once"
        ),
        "{}",
        stdout(&out)
    );
    let doc = imported(db, &["scheduled", "scheduled.csv", "--now", T3_NOW, "--skip-bad"]).await;
    assert_eq!(counts(&doc), (2, 0, 0));
    let next = "SELECT CAST(next_run_at AS TEXT) FROM scheduled_messages WHERE ref = 'S-1'";
    assert_eq!(
        instant(db, next).await,
        "2025-11-18T01:00:00Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap()
    );

    // Nothing of the series' past goes out; the two-line message goes at its time.
    let doc = db.pass(&["run", "--now", T3_NOW], &LOG_CHANNELS).await;
    assert_eq!(count(&doc, "generated"), 0, "{doc}");
    let doc = db.pass(&["run", "--now", "2025-11-17T10:00:00+07:00"], &LOG_CHANNELS).await;
    assert_eq!(count(&doc, "sent"), 1, "{doc}");
    // A new text, imported when today's occurrence is due but no pass has taken it yet: an
    // update that keeps the series where it is, so today's message still goes out.
    file(
        db,
        "pagi.csv",
        "ref,contact_ref,body,scheduled_at,recurrence\nS-1,C-1,Pagi!,2025-01-01 08:00,daily\n",
    );
    let doc = imported(db, &["scheduled", "pagi.csv", "--now", "2025-11-18T08:00:30+07:00"]).await;
    assert_eq!(counts(&doc), (0, 1, 0), "{doc}");
    let today = "2025-11-18T01:00:00Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    assert_eq!(instant(db, next).await, today);
    let doc = db.pass(&["run", "--now", "2025-11-18T08:01:00+07:00"], &LOG_CHANNELS).await;
    assert_eq!(count(&doc, "sent"), 1, "{doc}");
    let moved = instant(db, next).await;
    assert_eq!(moved, "2025-11-19T01:00:00Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap());

    // The first file again a day later: the old text comes back, the series keeps its
    // progress, and the sent one-off (past now, but at the time it was imported with) is left
    // alone.
    let doc = imported(
        db,
        &["scheduled", "scheduled.csv", "--now", "2025-11-18T09:00:00+07:00", "--skip-bad"],
    )
    .await;
    assert_eq!(counts(&doc), (0, 1, 1), "{doc}");
    assert_eq!(instant(db, next).await, moved);
    // A new time for the series is an update, and moves its next run.
    file(
        db,
        "scheduled.csv",
        "ref,contact_ref,body,scheduled_at,recurrence\nS-1,C-1,Selamat pagi,2025-01-01 07:00,daily\n",
    );
    let doc =
        imported(db, &["scheduled", "scheduled.csv", "--now", "2025-11-18T09:00:00+07:00"]).await;
    assert_eq!(counts(&doc), (0, 1, 0));
    assert_eq!(
        instant(db, next).await,
        "2025-11-19T00:00:00Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap()
    );
}

/// A progress bar shows on a terminal and never in what cron or a pipe captures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_bar_is_drawn_on_a_terminal_only() {
    if !crate::helpers::have_tool("script", "the progress bar on a terminal") {
        return;
    }
    let db = TestDb::sqlite().await;
    let mut csv = String::from("ref,name,phone\n");
    for i in 0..2000 {
        let _ = writeln!(csv, "C-{i},Pelanggan {i},0812{:08}", 10_000_000 + i);
    }
    file(&db, "contacts.csv", &csv);
    let out = import(&db, &["contacts", "contacts.csv"]).await;
    assert!(out.status.success());
    assert!(!stderr(&out).contains("checking") && !stderr(&out).contains('\r'), "{out:?}");

    // `script` gives the binary a terminal; what it drew is in its output.
    let binary = env!("CARGO_BIN_EXE_reminderctl");
    let out = tokio::process::Command::new("script")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("NO_COLOR", "1")
        .env("TERM", "xterm")
        .current_dir(db.dir.path())
        .args(["-qec", &format!("{binary} import contacts contacts.csv"), "/dev/null"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("script");
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("checking ["), "{shown:?}");
    // The bar is cleared before the report: the report's line starts on a cleared line.
    // (The writing stage draws too, but 2000 unchanged rows can finish before its first frame.)
    assert!(shown.contains("\u{1b}[2Kimported contacts"), "{shown:?}");
    assert!(shown.contains("0 inserted, 0 updated, 2000 unchanged"), "{shown:?}");
}

both!(a_file_with_many_bad_rows_lists_the_first_hundred_by_line, many_bad_body);
async fn many_bad_body(db: &TestDb) {
    let mut csv = String::from("ref,phone\n");
    for i in 0..250 {
        let _ = writeln!(csv, "C-{i},bukan nomor");
    }
    file(db, "contacts.csv", &csv);
    let out = import(db, &["contacts", "contacts.csv"]).await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 100 + 1, "{text}");
    assert!(lines[1].starts_with("  line 2, column phone: invalid phone number 'bukan nomor'"));
    assert!(lines[100].starts_with("  line 101, column phone:"), "{}", lines[100]);
    assert_eq!(lines[101], "  … and 150 more problems not shown");
    let doc = json_of(&import(db, &["contacts", "contacts.csv", "--json"]).await);
    assert_eq!((count(&doc, "bad_rows"), count(&doc, "problems_not_shown")), (250, 150));
}

// The store writes a file in one transaction: a batch that fails takes the earlier ones back.
both!(a_failed_batch_rolls_the_whole_import_back, rollback_body);
async fn rollback_body(db: &TestDb) {
    use reminderctl::store::{ImportBatch, ImportColumn, ImportTable, ImportValues};
    let store = reminderctl::store::connect(&db.url, TZ).await.expect("store");
    let contacts = |refs: &[&str]| ImportBatch {
        refs: refs.iter().map(ToString::to_string).collect(),
        ids: None,
        contact_refs: None,
        columns: vec![ImportColumn {
            name: "name",
            values: ImportValues::Text(refs.iter().map(|r| Some(format!("Nama {r}"))).collect()),
            follows: &[],
        }],
    };
    let mut source =
        vec![Ok(contacts(&["C-1", "C-2"])), Err("the file changed".to_string())].into_iter();
    let e = store.import(ImportTable::Contacts, &mut source).await.unwrap_err();
    assert_eq!(e.to_string(), "the file changed");
    assert_eq!(db.int("SELECT count(*) FROM contacts").await, 0);

    let mut source = vec![Ok(contacts(&["C-1"]))].into_iter();
    store.import(ImportTable::Contacts, &mut source).await.expect("import");
    // An invoice whose contact is gone by the time it is written (another process deleted it
    // after the check) stops the import instead of being dropped.
    let invoices = |refs: &[&str], contact: &str| ImportBatch {
        refs: refs.iter().map(ToString::to_string).collect(),
        ids: None,
        contact_refs: Some(refs.iter().map(|_| contact.to_string()).collect()),
        columns: vec![
            ImportColumn {
                name: "amount",
                values: ImportValues::Int(vec![Some(1); refs.len()]),
                follows: &[],
            },
            ImportColumn {
                name: "due_date",
                values: ImportValues::Date(vec![Some("2025-11-20".parse().unwrap()); refs.len()]),
                follows: &[],
            },
        ],
    };
    let mut source =
        vec![Ok(invoices(&["I-1", "I-2"], "C-1")), Ok(invoices(&["I-3"], "C-gone"))].into_iter();
    let e = store.import(ImportTable::Invoices, &mut source).await.unwrap_err();
    assert!(e.to_string().contains("ref 'I-3' was not written: its contact was deleted"), "{e}");
    assert_eq!(db.int("SELECT count(*) FROM invoices").await, 0);
}
