//! Email over SMTP: turns an [`OutboundMessage`] into one plain-text UTF-8 message, hands it to a
//! pooled `lettre` transport and classifies the server's answer into the delivery loop's error
//! classes (`providers.md` §6).
//!
//! - The receipt carries the `Message-ID` this adapter generates
//!   (`<reminderctl.{outbox id}.{random}@{from domain}>`), the id the recipient's mail client and
//!   every relay log will show. The server's 250 reply is only logged at debug level.
//! - `SmtpConfig::timeout` bounds a whole send (connect, greeting, AUTH, MAIL, RCPT, DATA): the
//!   async `lettre` transport itself only bounds the TCP connect. A send that runs out of time is
//!   transient, and the connection pool is replaced so a half-finished exchange is never reused.
//! - The transport (and its pool, which spawns a Tokio task) is built on the first send, so
//!   [`SmtpChannel::new`] works outside a runtime.
//! - Reasons carry the SMTP code, the server's text, the host and port and the username, never
//!   the password: it only ever goes to [`Credentials`], whose `Debug` is redacted, and every
//!   server text is passed through a [`Redactor`] that knows the password and the AUTH PLAIN and
//!   AUTH LOGIN lines carrying it, because a server may quote the exchange back.
//! - Credentials never cross the network in clear: without TLS they are refused unless the
//!   server is on this machine.

use std::error::Error as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::channels::{clean, one_line, snippet, Channel, DeliveryError, OutboundMessage, Receipt};
use crate::secret::{Redactor, Secret};

/// The subject used when a message has none.
const NO_SUBJECT: &str = "(no subject)";

/// The smallest timeout used; a zero timeout would fail every send before it starts.
const MIN_TIMEOUT: Duration = Duration::from_secs(1);

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// TLS from the first byte (SMTPS, usually port 465).
    Implicit,
    /// Plain connect, then mandatory STARTTLS (usually port 587).
    StartTls,
    /// No TLS: a local relay or a test server. Credentials, if any, cross the wire in clear.
    None,
}

/// Where and as whom email is sent.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// The server's DNS name (checked against its certificate unless `encryption` is `None`).
    pub host: String,
    pub port: u16,
    /// Set together with `password` to log in; both unset to send without AUTH.
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub encryption: Encryption,
    /// The sender's address, `noreply@example.com` (a `Name <address>` form is accepted too).
    pub from_address: String,
    /// The display name of the sender; overrides a name given in `from_address`.
    pub from_name: Option<String>,
    /// Bounds one whole send; values under one second are raised to one second.
    pub timeout: Duration,
}

/// Sends email through one SMTP server, reusing connections between messages.
pub struct SmtpChannel {
    /// Host, port, TLS, credentials and connect timeout; built into a transport on first use.
    builder: AsyncSmtpTransportBuilder,
    /// The live transport, replaced after a send timed out half-way.
    transport: Mutex<Option<Arc<Transport>>>,
    from: Mailbox,
    /// Right-hand side of generated `Message-ID`s: the from address's domain.
    id_domain: String,
    /// `host:port`, for reasons.
    server: String,
    username: Option<String>,
    /// Removes the password, in every form the AUTH exchange carries it, from server text.
    redactor: Redactor,
    encryption: Encryption,
    timeout: Duration,
}

impl SmtpChannel {
    /// Checks the configuration and prepares the transport.
    ///
    /// Fails (with a readable reason) when the host is neither an IP address nor a DNS name, the
    /// port is 0, the from address does not parse, only one of username and password is set,
    /// credentials would go in clear text to a host that is not this machine, or the TLS setup
    /// of the transport cannot be built.
    pub fn new(config: SmtpConfig) -> Result<Self, String> {
        let host = server_host(&config.host)?;
        if config.port == 0 {
            return Err("the SMTP port must not be 0".to_owned());
        }

        let raw_from = config.from_address.trim();
        let mut from: Mailbox = raw_from.parse().map_err(|e| {
            format!("the from address '{}' is not a valid email address: {e}", shown(raw_from))
        })?;
        if let Some(name) = config.from_name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            from.name = Some(one_line(name));
        }
        let id_domain = from.email.domain().to_owned();

        let username = config.username.as_deref().map(str::trim).filter(|u| !u.is_empty());
        let password = config.password.filter(|p| !p.expose().is_empty());
        let credentials = match (username, &password) {
            (Some(user), Some(pass)) => {
                Some(Credentials::new(user.to_owned(), pass.expose().to_owned()))
            }
            (None, None) => None,
            (Some(_), None) => return Err("an SMTP username is set but no password".to_owned()),
            (None, Some(_)) => return Err("an SMTP password is set but no username".to_owned()),
        };
        if credentials.is_some()
            && config.encryption == Encryption::None
            && !is_loopback_host(&host)
        {
            return Err(format!(
                "without encryption the SMTP password would cross the network in clear text to \
                 '{}'; use TLS, or a relay on this machine",
                shown(&host)
            ));
        }
        let redactor = match (username, &password) {
            (Some(user), Some(pass)) => Redactor::new().smtp_auth(user, pass),
            _ => Redactor::new(),
        };

        let server = if host.contains(':') {
            format!("[{host}]:{}", config.port)
        } else {
            format!("{host}:{}", config.port)
        };
        let tls_host = |e: lettre::transport::smtp::Error| {
            format!("the SMTP host '{}' cannot be used with TLS: {e}", shown(&host))
        };
        let builder = match config.encryption {
            Encryption::Implicit => Transport::relay(&host).map_err(tls_host)?,
            Encryption::StartTls => Transport::starttls_relay(&host).map_err(tls_host)?,
            Encryption::None => Transport::builder_dangerous(host.as_str()),
        };
        let timeout = config.timeout.max(MIN_TIMEOUT);
        let builder = builder.port(config.port).timeout(Some(timeout));
        let builder = match credentials {
            Some(credentials) => builder.credentials(credentials),
            None => builder,
        };

        Ok(Self {
            builder,
            transport: Mutex::new(None),
            from,
            id_domain,
            server,
            username: username.map(str::to_owned),
            redactor,
            encryption: config.encryption,
            timeout,
        })
    }

    /// The live transport, built on first use inside the runtime (its pool spawns a task).
    fn transport(&self) -> Result<Arc<Transport>, DeliveryError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(DeliveryError::channel_down("the SMTP channel needs a Tokio runtime"));
        }
        let mut slot = self.transport.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(Arc::clone(slot.get_or_insert_with(|| Arc::new(self.builder.clone().build()))))
    }

    /// Drops a transport whose send was cut off mid-exchange: its connection may still owe a
    /// reply, and reusing it would pair the next command with the wrong answer. Sends already
    /// running on it finish; the next send builds a fresh pool.
    fn retire(&self, used: &Arc<Transport>) {
        {
            let mut slot = self.transport.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.as_ref().is_some_and(|live| Arc::ptr_eq(live, used)) {
                *slot = None;
            }
        }
        let old = Arc::clone(used);
        let budget = self.timeout;
        tokio::spawn(async move {
            // QUIT on a stalled server never answers; don't let the task wait forever.
            let _ = tokio::time::timeout(budget, old.shutdown()).await;
        });
    }

    /// The message as it goes on the wire, and its `Message-ID`.
    fn compose(&self, message: &OutboundMessage) -> Result<(Message, String), DeliveryError> {
        let raw_to = message.recipient.trim();
        let to: Mailbox = raw_to.parse().map_err(|_| {
            DeliveryError::permanent(format!("invalid email address '{}'", shown(raw_to)))
        })?;

        let subject = message
            .subject
            .as_deref()
            .map(one_line)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| NO_SUBJECT.to_owned());

        let mut body = message.body.clone();
        if let Some(url) = message.media_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            body.push_str("\n\n");
            body.push_str(url);
        }

        let id = format!(
            "<reminderctl.{}.{:016x}@{}>",
            message.id,
            rand::random::<u64>(),
            self.id_domain
        );

        let email = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(id.clone()))
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| DeliveryError::permanent(format!("the email could not be built: {e}")))?;
        Ok((email, id))
    }

    /// Maps a `lettre` SMTP error to a [`DeliveryError`] (`providers.md` §6).
    fn classify(
        &self,
        err: &lettre::transport::smtp::Error,
        ascii_recipient: bool,
    ) -> DeliveryError {
        let server = &self.server;
        // The server's text (for a 4xx/5xx) or the innermost cause: lettre's Display adds kind
        // prefixes ("Connection error: …", sometimes twice) that the reason restates in words.
        let mut innermost = err.source();
        while let Some(deeper) = innermost.and_then(std::error::Error::source) {
            innermost = Some(deeper);
        }
        let cause = innermost.map_or_else(|| err.to_string(), ToString::to_string);
        // Redacted before it is reshaped, so no cut or collapsed space can hide part of a secret.
        let cause = clean(&cause, &self.redactor);

        if let Some(code) = err.status() {
            let code = u16::from(code);
            let reply = if cause.is_empty() { code.to_string() } else { format!("{code} {cause}") };
            if err.is_permanent() {
                return match code {
                    530 | 534 | 535 | 538 => {
                        let who = self
                            .username
                            .as_deref()
                            .map_or_else(String::new, |user| format!(" as '{}'", shown(user)));
                        DeliveryError::channel_down(format!(
                            "the SMTP server {server} refused to authenticate{who}: {reply}"
                        ))
                    }
                    _ => DeliveryError::permanent(format!(
                        "the SMTP server {server} refused the message: {reply}"
                    )),
                };
            }
            return DeliveryError::transient(format!(
                "the SMTP server {server} deferred the message: {reply}"
            ));
        }
        if err.is_timeout() {
            return DeliveryError::transient(format!(
                "the SMTP server {server} timed out: {cause}"
            ));
        }
        if err.is_tls() || self.tls_handshake_failed(err) {
            return DeliveryError::channel_down(format!(
                "TLS handshake with {server} failed: check MAIL_ENCRYPTION and MAIL_PORT ({cause})"
            ));
        }
        if err.is_client() {
            if !ascii_recipient {
                // lettre refuses a non-ASCII address when the server lacks SMTPUTF8: that is
                // this recipient's problem, not the channel's.
                return DeliveryError::permanent(format!(
                    "the SMTP server {server} cannot take this internationalized address: {cause}"
                ));
            }
            return DeliveryError::channel_down(format!(
                "the SMTP client cannot talk to {server}: {cause}"
            ));
        }
        if err.is_response() {
            return DeliveryError::transient(format!(
                "the SMTP server {server} sent an unreadable reply: {cause}"
            ));
        }
        if err.is_transport_shutdown() {
            return DeliveryError::transient("the SMTP connection pool was being replaced");
        }
        DeliveryError::transient(format!("could not connect to the SMTP server {server}: {cause}"))
    }

    /// lettre reports a failed TLS handshake (implicit or STARTTLS) as a connection error; the
    /// TLS library's I/O error is `InvalidData` (a plaintext greeting, a bad certificate, an
    /// alert), which a TCP connect never produces.
    fn tls_handshake_failed(&self, err: &lettre::transport::smtp::Error) -> bool {
        if self.encryption == Encryption::None {
            return false;
        }
        let mut source = err.source();
        while let Some(cause) = source {
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                return io.kind() == std::io::ErrorKind::InvalidData;
            }
            source = cause.source();
        }
        false
    }
}

#[async_trait]
impl Channel for SmtpChannel {
    fn provider(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        let (email, id) = self.compose(message)?;
        let ascii_recipient =
            email.envelope().to().iter().all(|to| AsRef::<str>::as_ref(to).is_ascii());
        let transport = self.transport()?;

        match tokio::time::timeout(self.timeout, transport.send(email)).await {
            Ok(Ok(response)) => {
                tracing::debug!(
                    outbox_id = message.id,
                    smtp_code = %response.code(),
                    smtp_reply = clean(response.first_line().unwrap_or(""), &self.redactor),
                    message_id = %id,
                    "the SMTP server accepted the message"
                );
                Ok(Receipt { provider_message_id: Some(id) })
            }
            Ok(Err(err)) => Err(self.classify(&err, ascii_recipient)),
            Err(_elapsed) => {
                self.retire(&transport);
                Err(DeliveryError::transient(format!(
                    "the SMTP server {} did not finish the exchange within {} s",
                    self.server,
                    self.timeout.as_secs_f64()
                )))
            }
        }
    }
}

impl Drop for SmtpChannel {
    fn drop(&mut self) {
        // lettre's pool spawns a cleanup task when dropped, which panics outside a runtime (a
        // registry outliving its runtime). Leaking it then is harmless: the process is ending.
        if tokio::runtime::Handle::try_current().is_err() {
            let slot = self.transport.get_mut().unwrap_or_else(PoisonError::into_inner);
            if let Some(transport) = slot.take() {
                std::mem::forget(transport);
            }
        }
    }
}

/// The host to connect to and to check the certificate against: an IP address or a DNS name
/// (an internationalized name becomes its ASCII form). lettre checks neither until it connects.
fn server_host(raw: &str) -> Result<String, String> {
    let host = raw.trim();
    if host.is_empty() {
        return Err("the SMTP host is empty".to_owned());
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    match url::Host::parse(host) {
        Ok(url::Host::Domain(name)) if !name.is_empty() => Ok(name),
        Ok(url::Host::Ipv4(ip)) => Ok(ip.to_string()),
        Ok(url::Host::Ipv6(ip)) => Ok(ip.to_string()),
        Ok(url::Host::Domain(_)) | Err(_) => {
            Err(format!("the SMTP host '{}' is not a valid host name", shown(host)))
        }
    }
}

/// Whether `host` is this machine: `localhost`, 127.0.0.0/8 or `::1`, bracketed or not.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.trim_end_matches('.').eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// User input quoted in a reason: one line, bounded.
fn shown(text: &str) -> String {
    snippet(&text.escape_debug().to_string(), 200)
}

#[cfg(test)]
mod tests {

    use std::time::Instant;

    use super::*;
    use crate::channels::test_support::closed_port;

    const PASSWORD: &str = "smtp-pass-7c1e9b2a";

    fn config(port: u16) -> SmtpConfig {
        SmtpConfig {
            host: "127.0.0.1".to_owned(),
            port,
            username: None,
            password: None,
            encryption: Encryption::None,
            from_address: "tagihan@example.com".to_owned(),
            from_name: Some("Kos Melati".to_owned()),
            timeout: Duration::from_secs(5),
        }
    }

    fn message(recipient: &str) -> OutboundMessage {
        OutboundMessage {
            id: 42,
            recipient: recipient.to_owned(),
            subject: Some("🕒 Pengingat tagihan".to_owned()),
            body: "Tagihan Rp 150.000 jatuh tempo 5 Mei".to_owned(),
            media_url: None,
        }
    }

    fn formatted(channel: &SmtpChannel, message: &OutboundMessage) -> (String, String) {
        let (email, id) = channel.compose(message).expect("the message composes");
        (String::from_utf8(email.formatted()).expect("lettre writes ASCII"), id)
    }

    #[test]
    fn the_provider_name_is_smtp() {
        let channel = SmtpChannel::new(config(2525)).expect("valid config");
        assert_eq!(channel.provider(), "smtp");
    }

    #[test]
    fn an_unparseable_from_address_is_refused_with_a_readable_reason() {
        let mut cfg = config(2525);
        cfg.from_address = "not an address".to_owned();
        let err = SmtpChannel::new(cfg).err().expect("the from address is invalid");
        assert!(err.contains("from address 'not an address'"), "{err}");
    }

    #[test]
    fn a_host_that_is_no_host_name_is_refused_in_every_mode() {
        for encryption in [Encryption::Implicit, Encryption::StartTls, Encryption::None] {
            for host in ["smtp example com", "smtp.example.com:587", "smtp/example"] {
                let mut cfg = config(465);
                cfg.host = host.to_owned();
                cfg.encryption = encryption;
                let err = SmtpChannel::new(cfg).err().expect("the host is invalid");
                assert!(err.contains(&format!("'{host}' is not a valid host name")), "{err}");
            }
        }
    }

    #[test]
    fn names_and_addresses_are_accepted_as_hosts() {
        for (host, server) in [
            ("smtp.gmail.com", "smtp.gmail.com:465"),
            (" SMTP.Example.COM ", "smtp.example.com:465"),
            ("127.0.0.1", "127.0.0.1:465"),
            ("::1", "[::1]:465"),
            ("[::1]", "[::1]:465"),
            ("surat.contoh.café", "surat.contoh.xn--caf-dma:465"),
        ] {
            let mut cfg = config(465);
            cfg.host = host.to_owned();
            cfg.encryption = Encryption::Implicit;
            let channel = SmtpChannel::new(cfg).expect("a valid host");
            assert_eq!(channel.server, server);
        }
    }

    #[test]
    fn an_empty_host_a_zero_port_and_half_credentials_are_refused() {
        let mut cfg = config(2525);
        cfg.host = "  ".to_owned();
        assert!(SmtpChannel::new(cfg).is_err());
        assert!(SmtpChannel::new(config(0)).is_err());

        let mut cfg = config(2525);
        cfg.username = Some("budi".to_owned());
        let err = SmtpChannel::new(cfg).err().expect("no password");
        assert!(err.contains("no password"), "{err}");

        let mut cfg = config(2525);
        cfg.password = Some(Secret::new(PASSWORD));
        let err = SmtpChannel::new(cfg).err().expect("no username");
        assert!(!err.contains(PASSWORD), "{err}");
    }

    #[test]
    fn credentials_without_encryption_are_refused_unless_the_server_is_this_machine() {
        let with_credentials = |host: &str, encryption: Encryption| {
            let mut cfg = config(2525);
            cfg.host = host.to_owned();
            cfg.encryption = encryption;
            cfg.username = Some("budi".to_owned());
            cfg.password = Some(Secret::new(PASSWORD));
            SmtpChannel::new(cfg)
        };
        for host in ["smtp.example.com", "10.0.0.5", "::2"] {
            let err = with_credentials(host, Encryption::None).err().expect(host);
            assert!(err.contains("clear text"), "{err}");
            assert!(!err.contains(PASSWORD), "{err}");
            assert!(with_credentials(host, Encryption::StartTls).is_ok(), "{host}");
        }
        for host in ["127.0.0.1", "127.9.9.9", "::1", "localhost"] {
            assert!(with_credentials(host, Encryption::None).is_ok(), "{host}");
        }
        let mut anonymous = config(25);
        anonymous.host = "smtp.example.com".to_owned();
        assert!(SmtpChannel::new(anonymous).is_ok(), "no credentials, nothing to leak");
    }

    #[test]
    fn loopback_hosts_are_localhost_127_slash_8_and_ipv6_one() {
        for (host, loopback) in [
            ("localhost", true),
            ("LocalHost.", true),
            ("127.0.0.1", true),
            ("127.255.0.9", true),
            ("::1", true),
            ("[::1]", true),
            (" 127.0.0.1 ", true),
            ("128.0.0.1", false),
            ("0.0.0.0", false),
            ("::", false),
            ("localhost.example.com", false),
            ("mylocalhost", false),
            ("smtp.gmail.com", false),
        ] {
            assert_eq!(is_loopback_host(host), loopback, "{host}");
        }
    }

    #[test]
    fn the_config_debug_output_redacts_the_password() {
        let mut cfg = config(2525);
        cfg.username = Some("budi".to_owned());
        cfg.password = Some(Secret::new(PASSWORD));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains(PASSWORD), "{shown}");
        assert!(shown.contains("budi"), "{shown}");
    }

    #[test]
    fn the_message_carries_from_to_subject_plain_utf8_text_and_the_generated_id() {
        let channel = SmtpChannel::new(config(2525)).expect("valid config");
        let (raw, id) = formatted(&channel, &message("budi@example.com"));

        assert!(
            raw.contains("From: \"Kos Melati\" <tagihan@example.com>\r\n")
                || raw.contains("From: Kos Melati <tagihan@example.com>\r\n"),
            "{raw}"
        );
        assert!(raw.contains("To: budi@example.com\r\n"), "{raw}");
        assert!(raw.contains("Content-Type: text/plain; charset=utf-8\r\n"), "{raw}");
        assert!(raw.contains("Subject: =?utf-8?"), "the emoji subject is encoded: {raw}");
        assert!(raw.contains(&format!("Message-ID: {id}\r\n")), "{raw}");
        assert!(id.starts_with("<reminderctl.42.") && id.ends_with("@example.com>"), "{id}");
        assert!(raw.ends_with("Tagihan Rp 150.000 jatuh tempo 5 Mei"), "{raw}");
    }

    #[test]
    fn each_message_gets_its_own_id() {
        let channel = SmtpChannel::new(config(2525)).expect("valid config");
        let (_, first) = formatted(&channel, &message("budi@example.com"));
        let (_, second) = formatted(&channel, &message("budi@example.com"));
        assert_ne!(first, second);
    }

    #[test]
    fn a_missing_or_blank_subject_becomes_no_subject_and_a_media_url_is_appended() {
        let channel = SmtpChannel::new(config(2525)).expect("valid config");
        for subject in [None, Some("  ".to_owned())] {
            let mut msg = message("budi@example.com");
            msg.subject = subject;
            msg.media_url = Some("https://example.com/invoice.pdf?id=7".to_owned());
            let (raw, _) = formatted(&channel, &msg);
            assert!(raw.contains("Subject: (no subject)\r\n"), "{raw}");
            assert!(
                raw.ends_with("jatuh tempo 5 Mei\r\n\r\nhttps://example.com/invoice.pdf?id=7"),
                "{raw}"
            );
        }
    }

    #[test]
    fn a_bare_from_address_is_used_as_is() {
        let mut cfg = config(2525);
        cfg.from_name = None;
        let channel = SmtpChannel::new(cfg).expect("valid config");
        let (raw, _) = formatted(&channel, &message("budi@example.com"));
        assert!(raw.contains("From: tagihan@example.com\r\n"), "{raw}");
    }

    #[test]
    fn line_breaks_in_the_subject_cannot_inject_headers() {
        let channel = SmtpChannel::new(config(2525)).expect("valid config");
        let mut msg = message("budi@example.com");
        msg.subject = Some("Tagihan\r\nBcc: mallory@example.com".to_owned());
        let (raw, _) = formatted(&channel, &msg);
        assert!(!raw.contains("\r\nBcc:"), "{raw}");
        assert!(raw.contains("Subject: Tagihan Bcc: mallory@example.com\r\n"), "{raw}");
    }

    #[tokio::test]
    async fn an_invalid_or_header_injecting_recipient_is_permanent_before_any_connection() {
        let channel = SmtpChannel::new(config(closed_port())).expect("valid config");
        for recipient in ["budi", "", "budi@example.com\r\nBcc: mallory@example.com", "a@b, c@d"] {
            let err = channel.send(&message(recipient)).await.expect_err("invalid recipient");
            let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
            assert!(reason.starts_with("invalid email address '"), "{reason}");
            assert!(!reason.contains('\n'), "{reason}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_and_never_shows_the_password() {
        let port = closed_port();
        let mut cfg = config(port);
        cfg.username = Some("budi".to_owned());
        cfg.password = Some(Secret::new(PASSWORD));
        let channel = SmtpChannel::new(cfg).expect("valid config");

        let err = channel.send(&message("budi@example.com")).await.expect_err("nothing listens");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(PASSWORD), "{shown}");
        let DeliveryError::Transient { reason, .. } = err else { panic!("{shown}") };
        assert!(
            reason.starts_with(&format!("could not connect to the SMTP server 127.0.0.1:{port}")),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_transient_within_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let port = listener.local_addr().expect("local addr").port();
        // Accept and hold connections without ever sending the greeting.
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let mut cfg = config(port);
        cfg.timeout = Duration::from_secs(1);
        let channel = SmtpChannel::new(cfg).expect("valid config");

        let started = Instant::now();
        let err = channel.send(&message("budi@example.com")).await.expect_err("no greeting");
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
        let DeliveryError::Transient { reason, .. } = err else { panic!("{err:?}") };
        assert!(reason.contains("did not finish the exchange within 1 s"), "{reason}");

        // The next send starts over on a fresh pool and times out the same way.
        let err = channel.send(&message("budi@example.com")).await.expect_err("no greeting");
        assert!(matches!(err, DeliveryError::Transient { .. }), "{err:?}");
        holder.abort();
    }

    #[test]
    fn a_zero_timeout_is_raised_to_one_second() {
        let mut cfg = config(2525);
        cfg.timeout = Duration::ZERO;
        assert_eq!(SmtpChannel::new(cfg).expect("valid config").timeout, MIN_TIMEOUT);
    }

    #[test]
    fn dropping_the_channel_after_its_runtime_is_gone_does_not_panic() {
        let channel = SmtpChannel::new(config(closed_port())).expect("valid config");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime builds");
        let result = runtime.block_on(channel.send(&message("budi@example.com")));
        assert!(matches!(result, Err(DeliveryError::Transient { .. })), "{result:?}");
        drop(runtime);
        drop(channel);
    }

    #[test]
    fn sending_outside_a_runtime_context_is_refused_rather_than_panicking() {
        let channel = SmtpChannel::new(config(closed_port())).expect("valid config");
        let result = futures::executor::block_on(channel.send(&message("budi@example.com")));
        assert!(matches!(result, Err(DeliveryError::ChannelDown { .. })), "{result:?}");
    }
}
