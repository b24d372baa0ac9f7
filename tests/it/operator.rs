//! What an operator meets: `.env` read like the tools they know, one clear error for each
//! mistake before anything is generated or sent, warnings for names that are probably typos, and
//! output that reads well in cron mail (no colour, no raw control characters, no panics on a
//! closed stdout, JSON log lines with unique keys).

use std::process::{Output, Stdio};

use crate::both;
use crate::helpers::{contact, invoice, TestDb};

const NOW: &str = "2025-11-17T09:00:00+07:00";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One due T-3 WhatsApp reminder.
async fn one_due_reminder(db: &TestDb) {
    contact(db, "Budi", "081234567890", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
}

/// Runs `cmd` with the given stdout, capturing stderr. (`Command::output` would replace the
/// stdout with a pipe of its own.)
async fn with_stdout(mut cmd: tokio::process::Command, stdout: impl Into<Stdio>) -> Output {
    let child = cmd.stdout(stdout).stderr(Stdio::piped()).spawn().expect("spawn");
    child.wait_with_output().await.expect("wait")
}

both!(a_closed_or_full_stdout_is_not_a_panic, closed_stdout_body);
async fn closed_stdout_body(db: &TestDb) {
    one_due_reminder(db).await;
    let env = [("WHATSAPP_PROVIDER", "log")];
    // `reminderctl run | head -0`: the reader is gone before anything is written.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = with_stdout(db.command(&["run", "--now", NOW], &env), writer).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("cannot write the report"), "a closed pipe is normal");
    // The pass itself was done.
    assert_eq!(db.int("SELECT count(*) FROM messages WHERE status = 'sent'").await, 1);

    // `reminderctl status > /dev/full`: the disk is full.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let out = with_stdout(db.command(&["status"], &[]), full).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "cannot write the report to stdout: No space left on device (os error 28); the \
             command's work is done, and the exit code is not changed"
        ),
        "{}",
        stderr(&out)
    );
}

both!(control_characters_from_data_are_escaped_in_human_output, control_characters_body);
async fn control_characters_body(db: &TestDb) {
    // A number that is not a phone number fails, and the reason quotes it.
    contact(db, "Budi", "0812\u{1b}]0;pwned\u{7}\u{1b}[2J", "whatsapp").await;
    invoice(db, 1, "INV-1", "2025-11-20").await;
    let env = [("WHATSAPP_PROVIDER", "log")];
    let out = db.run(&["run", "--now", NOW], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = db.run(&["status"], &env).await;
    for text in [stdout(&out), stdout(&status)] {
        assert!(text.contains("failed"), "{text}");
        assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'), "{text:?}");
        assert!(text.contains("\\u{1b}]0;pwned\\u{7}"), "{text}");
    }
}
