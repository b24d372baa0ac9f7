//! The SMTP channel against a real SMTP server: `tests/smtp_sink.py` (aiosmtpd) on loopback.
//!
//! Without `python3` or `aiosmtpd` these tests say so loudly and pass, unless `CI=true`, where
//! a missing sink fails them. Install with `python3 -m pip install aiosmtpd`.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Once;
use std::time::Duration;

use reminderctl::channels::email::{Encryption, SmtpChannel, SmtpConfig};
use reminderctl::channels::{Channel, DeliveryError, OutboundMessage};
use reminderctl::config::Secret;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `tests/smtp_sink.py`, killed when dropped.
pub struct SmtpSink {
    pub port: u16,
    /// Where the sink writes each accepted message as `000001.eml`, `000002.eml`, …
    pub dir: tempfile::TempDir,
    child: Child,
}

static SKIP_NOTICE: Once = Once::new();

impl SmtpSink {
    /// Starts the sink on a free loopback port. `None` when `python3` or `aiosmtpd` is missing
    /// (outside CI); any other failure to start panics.
    pub async fn start() -> Option<SmtpSink> {
        Self::start_with(&[]).await
    }

    /// [`SmtpSink::start`] with the sink's options (`--auth USER:PASSWORD`, `--mechanisms`,
    /// `--auth-reply`, `--require-auth`, `--echo-auth`, `--echo-at N`; see `tests/smtp_sink.py`).
    pub async fn start_with(options: &[&str]) -> Option<SmtpSink> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().expect("create the sink's directory");
        let spawned = Command::new("python3")
            .arg(root.join("tests").join("smtp_sink.py"))
            .arg("0")
            .arg(dir.path())
            .args(options)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return unavailable("python3 is not installed");
            }
            Err(e) => panic!("could not start python3 tests/smtp_sink.py: {e}"),
        };

        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let first_line = tokio::time::timeout(Duration::from_secs(20), async {
            BufReader::new(stdout).lines().next_line().await
        })
        .await;
        let port = match first_line {
            Ok(Ok(Some(line))) => line.trim().parse::<u16>().ok(),
            _ => None,
        };
        let Some(port) = port else {
            let _ = child.start_kill();
            let mut errors = String::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), stderr.read_to_string(&mut errors))
                    .await;
            if errors.contains("No module named 'aiosmtpd'") {
                return unavailable("the Python package aiosmtpd is not installed");
            }
            panic!("tests/smtp_sink.py did not report its port; its stderr:\n{errors}");
        };

        // Keep draining the sink's stderr so it never blocks; a failing test shows it.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("smtp_sink: {line}");
                }
            }
        });

        Some(SmtpSink { port, dir, child })
    }

    /// Every message the sink accepted, raw, in arrival order.
    pub fn messages(&self) -> Vec<String> {
        self.files("eml")
            .iter()
            .map(|path| {
                String::from_utf8_lossy(&std::fs::read(path).expect("read a message")).into_owned()
            })
            .collect()
    }

    /// The client's address and port for each accepted message, in the order of
    /// [`SmtpSink::messages`]: the same value twice means the same connection.
    pub fn peers(&self) -> Vec<String> {
        self.files("peer")
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("read a peer"))
            .collect()
    }

    /// The sink's files with this extension, in the order it wrote them.
    fn files(&self, extension: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("read the sink's directory")
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == extension))
            .collect();
        files.sort();
        files
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Skips (loudly) outside CI; fails in CI, where the sink must be installed.
fn unavailable(what: &str) -> Option<SmtpSink> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what}: the SMTP integration tests need python3 with aiosmtpd in CI \
         (python3 -m pip install aiosmtpd)"
    );
    SKIP_NOTICE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SMTP integration tests SKIPPED: {what}. \
             Install with `python3 -m pip install aiosmtpd`. ***\n"
        );
    });
    None
}

const PASSWORD: &str = "Sm7p-pa55-d0-not-leak-41c9";

fn config(port: u16) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".to_owned(),
        port,
        username: None,
        password: None,
        encryption: Encryption::None,
        from_address: "tagihan@kosmelati.example".to_owned(),
        from_name: Some("Kos Melati".to_owned()),
        timeout: Duration::from_secs(10),
    }
}

fn channel(port: u16) -> SmtpChannel {
    SmtpChannel::new(config(port)).expect("a valid SMTP config")
}

fn message(recipient: &str) -> OutboundMessage {
    OutboundMessage {
        id: 7,
        recipient: recipient.to_owned(),
        subject: Some("🕒 Pengingat: tagihan kamar jatuh tempo 5 Mei".to_owned()),
        body: "Halo Budi,\nTagihan Rp 150.000 jatuh tempo besok. Terima kasih 🙏".to_owned(),
        media_url: None,
    }
}

fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    port
}

const USER: &str = "tagihan@kosmelati.example";

/// Standard base64 with padding, as AUTH PLAIN and AUTH LOGIN carry credentials.
pub fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63])
            } else {
                '='
            });
        }
    }
    out
}

/// The password, and its AUTH PLAIN and AUTH LOGIN forms, are in neither `Display` nor `Debug`.
fn assert_no_password(err: &DeliveryError) {
    let shown = format!("{err} {err:?}");
    let plain = encode_base64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    let login = encode_base64(PASSWORD.as_bytes());
    for form in [PASSWORD, plain.trim_end_matches('='), login.trim_end_matches('=')] {
        assert!(!shown.contains(form), "the password leaked as {form}: {shown}");
    }
    // Nor does its first part, as a cut through it would leave.
    assert!(!shown.contains(&PASSWORD[..10]), "part of the password leaked: {shown}");
}

fn authenticating(port: u16, password: &str) -> SmtpChannel {
    let mut cfg = config(port);
    cfg.username = Some(USER.to_owned());
    cfg.password = Some(Secret::new(password));
    SmtpChannel::new(cfg).expect("a valid SMTP config")
}

// --- a small reader for the raw messages: unfolded headers, RFC 2047 words, body encodings ---

/// The header block, unfolded, and the body of a raw message.
fn split(raw: &str) -> (Vec<(String, String)>, String) {
    let (head, body) = raw.split_once("\r\n\r\n").expect("a blank line ends the headers");
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().expect("a continuation follows a header");
            last.1.push_str(line);
        } else {
            let (name, value) = line.split_once(':').expect("a header line has a colon");
            headers.push((name.to_owned(), value.trim_start().to_owned()));
        }
    }
    (headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map_or_else(|| panic!("no {name} header in {headers:?}"), |(_, v)| v.as_str())
}

fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => u32::from(c - b'A'),
        b'a'..=b'z' => u32::from(c - b'a') + 26,
        b'0'..=b'9' => u32::from(c - b'0') + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n =
            chunk.iter().enumerate().fold(0u32, |acc, (i, c)| acc | (value(*c) << (18 - 6 * i)));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

fn quoted_printable(text: &str, underscore_is_space: bool) -> Vec<u8> {
    let bytes = text.replace("=\r\n", "").into_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII hex");
                out.push(u8::from_str_radix(hex, 16).expect("a QP escape"));
                i += 3;
            }
            b'_' if underscore_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`); whitespace between two
/// encoded words is dropped, as the RFC says.
fn decode_words(value: &str) -> String {
    let mut out = Vec::new();
    let mut rest = value;
    let mut after_word = false;
    while !rest.is_empty() {
        let Some(start) = rest.find("=?") else {
            out.extend_from_slice(rest.as_bytes());
            break;
        };
        let between = &rest[..start];
        if !(after_word && between.trim().is_empty()) {
            out.extend_from_slice(between.as_bytes());
        }
        let word = &rest[start + 2..];
        let mut parts = word.splitn(3, '?');
        let (Some(_charset), Some(encoding), Some(tail)) =
            (parts.next(), parts.next(), parts.next())
        else {
            panic!("a malformed encoded word in {value}");
        };
        let end = tail.find("?=").expect("an encoded word ends with ?=");
        let text = &tail[..end];
        if encoding.eq_ignore_ascii_case("b") {
            out.extend(base64(text));
        } else {
            out.extend(quoted_printable(text, true));
        }
        rest = &tail[end + 2..];
        after_word = true;
    }
    String::from_utf8(out).expect("the decoded header is UTF-8")
}

fn decoded_body(headers: &[(String, String)], body: &str) -> String {
    let encoding = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Transfer-Encoding"))
        .map_or("7bit", |(_, v)| v.as_str())
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "base64" => base64(body),
        "quoted-printable" => quoted_printable(body, false),
        _ => body.as_bytes().to_vec(),
    };
    String::from_utf8(bytes).expect("the decoded body is UTF-8")
}

// --- the tests ---

#[tokio::test]
async fn a_message_arrives_with_its_from_to_subject_and_utf8_body() {
    let Some(sink) = SmtpSink::start().await else { return };
    let mut msg = message("budi@example.com");
    msg.media_url = Some("https://example.com/invoice.pdf?id=7".to_owned());

    let receipt = channel(sink.port).send(&msg).await.expect("the sink accepts the message");

    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let raw = &messages[0];
    let subject = "🕒 Pengingat: tagihan kamar jatuh tempo 5 Mei";
    let encoded_or_plain = raw.contains(subject) || raw.contains("Subject: =?utf-8?");
    assert!(encoded_or_plain, "{raw}");

    let (headers, body) = split(raw);
    let from = header(&headers, "From");
    assert!(from.contains("Kos Melati") && from.ends_with("<tagihan@kosmelati.example>"), "{from}");
    assert_eq!(header(&headers, "To"), "budi@example.com");
    assert_eq!(decode_words(header(&headers, "Subject")), subject);
    assert_eq!(header(&headers, "Content-Type"), "text/plain; charset=utf-8");

    let id = receipt.provider_message_id.expect("the receipt carries the Message-ID");
    assert_eq!(header(&headers, "Message-ID"), id);
    assert!(id.starts_with("<reminderctl.7.") && id.ends_with("@kosmelati.example>"), "{id}");

    // The sink keeps the CRLF that ends the last line before DATA's closing dot.
    let text = decoded_body(&headers, &body);
    let text = text.strip_suffix("\r\n").unwrap_or(&text);
    assert!(text.contains("Rp 150.000"), "{text}");
    assert_eq!(
        text,
        "Halo Budi,\r\nTagihan Rp 150.000 jatuh tempo besok. Terima kasih 🙏\r\n\r\n\
         https://example.com/invoice.pdf?id=7"
    );
}

#[tokio::test]
async fn one_channel_sends_several_messages_even_after_a_refused_recipient() {
    let Some(sink) = SmtpSink::start().await else { return };
    let channel = channel(sink.port);

    channel.send(&message("satu@example.com")).await.expect("first message");
    channel.send(&message("reject-me@example.com")).await.expect_err("refused recipient");
    channel.send(&message("dua@example.com")).await.expect("second message");
    channel.send(&message("tiga@example.com")).await.expect("third message");

    let recipients: Vec<String> =
        sink.messages().iter().map(|raw| header(&split(raw).0, "To").to_owned()).collect();
    assert_eq!(recipients, ["satu@example.com", "dua@example.com", "tiga@example.com"]);
}

#[tokio::test]
async fn a_send_cut_off_by_its_timeout_leaves_its_connection_behind() {
    // The sink answers the first DATA two seconds late; the channel gives up after one. That
    // connection still owes the late reply: a message sent over it would take the 250 meant for
    // the first as the answer to its own NOOP or MAIL, and each reply after it would be one
    // behind. The next messages go over a new connection instead.
    let Some(sink) = SmtpSink::start_with(&["--stall-first", "2"]).await else { return };
    let config = SmtpConfig { timeout: Duration::from_secs(1), ..config(sink.port) };
    let channel = SmtpChannel::new(config).expect("a valid SMTP config");

    let err = channel.send(&message("satu@example.com")).await.expect_err("the first times out");
    let DeliveryError::Transient { reason, .. } = err else { panic!("{err:?}") };
    assert!(reason.contains("did not finish the exchange within 1 s"), "{reason}");
    // Past the stall: the late reply has reached the old connection by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    channel.send(&message("dua@example.com")).await.expect("second message");
    channel.send(&message("tiga@example.com")).await.expect("third message");

    let recipients: Vec<String> =
        sink.messages().iter().map(|raw| header(&split(raw).0, "To").to_owned()).collect();
    assert_eq!(recipients, ["satu@example.com", "dua@example.com", "tiga@example.com"]);
    let peers = sink.peers();
    assert_eq!(peers.len(), 3, "{peers:?}");
    assert_ne!(peers[1], peers[0], "the second message went over the stalled connection");
}

#[tokio::test]
async fn a_rejected_recipient_is_permanent_and_keeps_the_550_reply() {
    let Some(sink) = SmtpSink::start().await else { return };

    let err = channel(sink.port)
        .send(&message("reject-budi@example.com"))
        .await
        .expect_err("the sink refuses reject…@");

    let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
    assert!(reason.contains("550"), "{reason}");
    assert!(reason.contains("user unknown"), "{reason}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn a_deferred_recipient_is_transient_and_keeps_the_451_reply() {
    let Some(sink) = SmtpSink::start().await else { return };

    let err = channel(sink.port)
        .send(&message("defer-budi@example.com"))
        .await
        .expect_err("the sink defers defer…@");

    let DeliveryError::Transient { reason, .. } = err else { panic!("{err:?}") };
    assert!(reason.contains("451"), "{reason}");
    assert!(reason.contains("try again later"), "{reason}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let port = closed_port();

    let err = channel(port).send(&message("budi@example.com")).await.expect_err("nothing listens");

    let DeliveryError::Transient { reason, .. } = err else { panic!("{err:?}") };
    assert!(reason.contains(&format!("127.0.0.1:{port}")), "{reason}");
}

#[tokio::test]
async fn an_invalid_recipient_address_is_permanent_and_nothing_is_sent() {
    let Some(sink) = SmtpSink::start().await else { return };

    let err = channel(sink.port).send(&message("budi at example")).await.expect_err("invalid");

    let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
    assert!(reason.contains("invalid email address 'budi at example'"), "{reason}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn the_password_never_appears_in_any_error() {
    let mut cfg = config(closed_port());
    cfg.username = Some("tagihan@kosmelati.example".to_owned());
    cfg.password = Some(Secret::new(PASSWORD));
    assert!(!format!("{cfg:?}").contains(PASSWORD));
    let channel = SmtpChannel::new(cfg).expect("a valid SMTP config");

    let refused = channel.send(&message("budi@example.com")).await.expect_err("nothing listens");
    assert!(matches!(refused, DeliveryError::Transient { .. }), "{refused:?}");
    assert_no_password(&refused);

    let invalid = channel.send(&message("not-an-address")).await.expect_err("invalid");
    assert_no_password(&invalid);
}

#[tokio::test]
async fn credentials_against_a_server_without_auth_take_the_channel_down_without_the_password() {
    let Some(sink) = SmtpSink::start().await else { return };
    let mut cfg = config(sink.port);
    cfg.username = Some("tagihan".to_owned());
    cfg.password = Some(Secret::new(PASSWORD));

    let err = SmtpChannel::new(cfg)
        .expect("a valid SMTP config")
        .send(&message("budi@example.com"))
        .await
        .expect_err("the sink offers no AUTH on plaintext");

    assert_no_password(&err);
    let DeliveryError::ChannelDown { reason } = err else { panic!("{err:?}") };
    assert!(reason.contains("authentication mechanism"), "{reason}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn implicit_tls_against_a_plaintext_server_takes_the_channel_down() {
    let Some(sink) = SmtpSink::start().await else { return };
    let mut cfg = config(sink.port);
    cfg.encryption = Encryption::Implicit;

    let err = SmtpChannel::new(cfg)
        .expect("a valid SMTP config")
        .send(&message("budi@example.com"))
        .await
        .expect_err("the sink speaks no TLS");

    let DeliveryError::ChannelDown { reason } = err else { panic!("{err:?}") };
    assert!(
        reason.starts_with(&format!("TLS handshake with 127.0.0.1:{} failed", sink.port)),
        "{reason}"
    );
    assert!(reason.contains("MAIL_ENCRYPTION"), "{reason}");
}

#[tokio::test]
async fn starttls_against_a_server_without_starttls_takes_the_channel_down() {
    let Some(sink) = SmtpSink::start().await else { return };
    let mut cfg = config(sink.port);
    cfg.encryption = Encryption::StartTls;

    let err = SmtpChannel::new(cfg)
        .expect("a valid SMTP config")
        .send(&message("budi@example.com"))
        .await
        .expect_err("the sink offers no STARTTLS");

    let DeliveryError::ChannelDown { reason } = err else { panic!("{err:?}") };
    assert!(reason.contains("STARTTLS"), "{reason}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn good_credentials_deliver_over_auth_plain_and_over_auth_login() {
    let auth = format!("{USER}:{PASSWORD}");
    for mechanism in ["PLAIN", "LOGIN"] {
        let Some(sink) = SmtpSink::start_with(&["--auth", &auth, "--mechanisms", mechanism]).await
        else {
            return;
        };

        authenticating(sink.port, PASSWORD)
            .send(&message("budi@example.com"))
            .await
            .unwrap_or_else(|e| panic!("AUTH {mechanism}: {e}"));

        assert_eq!(sink.messages().len(), 1, "AUTH {mechanism}");
    }
}

#[tokio::test]
async fn a_wrong_password_is_535_and_takes_email_down_with_the_reason_but_not_the_password() {
    let auth = format!("{USER}:the-right-password");
    for mechanism in ["PLAIN", "LOGIN"] {
        let Some(sink) =
            SmtpSink::start_with(&["--auth", &auth, "--mechanisms", mechanism, "--echo-auth"])
                .await
        else {
            return;
        };

        let err = authenticating(sink.port, PASSWORD)
            .send(&message("budi@example.com"))
            .await
            .expect_err("the password is wrong");

        assert_no_password(&err);
        let DeliveryError::ChannelDown { reason } = err else { panic!("{mechanism}: {err:?}") };
        assert!(
            reason.starts_with(&format!(
                "the SMTP server 127.0.0.1:{} refused to authenticate as '{USER}': 535 5.7.8 \
                 Authentication credentials invalid",
                sink.port
            )),
            "{reason}"
        );
        // The sink quoted the AUTH exchange back; the client scrubbed it.
        assert!(reason.contains(&format!("AUTH {mechanism}")), "{reason}");
        assert!(reason.contains("password=[redacted]"), "{reason}");
        assert!(sink.messages().is_empty());
    }
}

#[tokio::test]
async fn a_password_quoted_across_the_reasons_cut_leaves_no_part_behind() {
    let auth = format!("{USER}:the-right-password");
    // The quoted AUTH PLAIN line starts a few characters before the reason's 300-character cut.
    let Some(sink) =
        SmtpSink::start_with(&["--auth", &auth, "--echo-auth", "--echo-at", "290"]).await
    else {
        return;
    };

    let err = authenticating(sink.port, PASSWORD)
        .send(&message("budi@example.com"))
        .await
        .expect_err("the password is wrong");

    assert_no_password(&err);
    let plain = encode_base64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    assert!(!format!("{err}").contains(&plain[..8]), "part of AUTH PLAIN leaked: {err}");
    assert!(format!("{err}").ends_with("xAUTH PLAIN [redacted]…"), "{err}");
}

#[tokio::test]
async fn auth_replies_530_534_535_538_take_email_down_with_the_servers_words() {
    let auth = format!("{USER}:{PASSWORD}");
    let cases: [(&[&str], bool, &str); 4] = [
        // No credentials configured, but the server wants them before MAIL.
        (&["--auth", &auth, "--require-auth"], false, "530 5.7.0 Authentication required"),
        (
            &["--auth-reply", "534 5.7.9 Authentication mechanism is too weak", "--echo-auth"],
            true,
            "534 5.7.9 Authentication mechanism is too weak",
        ),
        (
            &["--auth", &format!("{USER}:other")],
            true,
            "535 5.7.8 Authentication credentials invalid",
        ),
        (
            &[
                "--auth-reply",
                "538 5.7.11 Encryption required for requested authentication mechanism",
            ],
            true,
            "538 5.7.11 Encryption required",
        ),
    ];
    for (options, with_credentials, said) in cases {
        let Some(sink) = SmtpSink::start_with(options).await else { return };
        let channel =
            if with_credentials { authenticating(sink.port, PASSWORD) } else { channel(sink.port) };

        let err = channel.send(&message("budi@example.com")).await.expect_err(said);

        assert_no_password(&err);
        let DeliveryError::ChannelDown { reason } = err else { panic!("{said}: {err:?}") };
        assert!(reason.contains("refused to authenticate"), "{reason}");
        assert!(reason.contains(said), "{said}: {reason}");
        assert!(sink.messages().is_empty(), "{said}");
    }
}

#[tokio::test]
async fn replies_after_a_good_auth_that_quote_it_are_scrubbed_too() {
    let auth = format!("{USER}:{PASSWORD}");
    let Some(sink) = SmtpSink::start_with(&["--auth", &auth, "--echo-auth"]).await else { return };
    let channel = authenticating(sink.port, PASSWORD);

    let refused = channel.send(&message("reject-budi@example.com")).await.expect_err("550");
    let deferred = channel.send(&message("defer-budi@example.com")).await.expect_err("451");

    for (err, code) in [(&refused, "550 5.1.1"), (&deferred, "451 4.3.0")] {
        assert_no_password(err);
        assert!(err.to_string().contains(code), "{err}");
        assert!(err.to_string().contains("AUTH PLAIN [redacted]"), "{err}");
    }
    assert!(matches!(refused, DeliveryError::Permanent { .. }), "{refused:?}");
    assert!(matches!(deferred, DeliveryError::Transient { .. }), "{deferred:?}");
    channel.send(&message("budi@example.com")).await.expect("delivered");
    assert_eq!(sink.messages().len(), 1);
}
