//! The Telegram Bot API adapter: one `sendMessage` call per message, its answer classified into
//! the delivery loop's error classes (`providers.md` §2), and the one-shot retry Telegram asks
//! for when a group has been upgraded to a supergroup.
//!
//! Success is a 2xx with `{"ok": true, "result": {"message_id": …}}`; any other 2xx (a proxy's
//! page, a wrong `TELEGRAM_API_BASE`, an empty body) is transient, so a misconfiguration fails
//! reminders visibly instead of recording them as sent.
//!
//! The bot token travels in the URL path, so nothing here formats a URL or a `reqwest::Error`
//! (whose `Display` includes the URL), and every provider text is scrubbed of the token (and of
//! its secret half after the colon) before it becomes a reason.

use async_trait::async_trait;
use reqwest::Url;
use serde_json::{json, Value};

use super::http::{self, provider_id, retry_after, transport_error, Reply};
use super::{clean, Channel, DeliveryError, OutboundMessage, Receipt};
use crate::secret::{Redactor, Secret};

/// Credentials and endpoint for the Telegram Bot API.
#[derive(Debug, Clone)]
pub struct TelegramConfig {
    /// `123456:ABC-DEF…`; it goes into the URL path, so the URL must never be printed.
    pub bot_token: Secret,
    /// `https://api.telegram.org` in production; a loopback mock in tests.
    pub api_base: String,
}

/// Sends plain-text messages through a Telegram bot.
pub struct TelegramChannel {
    config: TelegramConfig,
    client: reqwest::Client,
    redactor: Redactor,
}

/// What one `sendMessage` call produced, short of an error.
enum Outcome {
    Sent(Receipt),
    /// The group became a supergroup; Telegram names the chat id to use instead.
    Migrated(i64),
}

impl TelegramChannel {
    /// Builds the adapter; the client is shared so connection pools and timeouts are set once.
    pub fn new(config: TelegramConfig, client: reqwest::Client) -> Self {
        let token = config.bot_token.expose().trim();
        // `123456:ABC-DEF…`: the bot id before the colon is public, the rest is the secret, and
        // an echo may quote either the whole token or just that part.
        let secret_half = token.split_once(':').map_or("", |(_, rest)| rest);
        let redactor = Redactor::new().secret(&config.bot_token).value(secret_half);
        Self { config, client, redactor }
    }

    /// The token-bearing `sendMessage` URL. Callers must never format or log it.
    fn endpoint(&self) -> Result<Url, DeliveryError> {
        let token = self.config.bot_token.expose().trim();
        if token.is_empty() {
            return Err(DeliveryError::channel_down("no Telegram bot token is configured"));
        }
        // Segment pushing percent-encodes anything odd in the token instead of letting it turn
        // into a query or fragment.
        http::endpoint(
            &self.config.api_base,
            &[&format!("bot{token}"), "sendMessage"],
            "the Telegram API base URL",
        )
    }

    async fn send_once(
        &self,
        url: &Url,
        chat_id: &Value,
        text: &str,
    ) -> Result<Outcome, DeliveryError> {
        // No parse_mode: reminder texts are plain, so they can never fail entity parsing.
        let payload = json!({ "chat_id": chat_id, "text": text });
        let response = self
            .client
            .post(url.clone())
            .json(&payload)
            .send()
            .await
            .map_err(|e| Self::transport_failure(&e))?;

        answer(&Reply::read(response).await?, &self.redactor)
    }

    fn transport_failure(err: &reqwest::Error) -> DeliveryError {
        if err.is_builder() {
            // The request could not even be built: configuration, not the network.
            DeliveryError::channel_down(
                "the Telegram request could not be built (check the API base URL)",
            )
        } else {
            transport_error(err)
        }
    }
}

#[async_trait]
impl Channel for TelegramChannel {
    fn provider(&self) -> &'static str {
        "telegram"
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        let chat_id = chat_id_value(&message.recipient)
            .ok_or_else(|| DeliveryError::permanent("the Telegram chat id is empty"))?;
        let url = self.endpoint()?;

        let new_chat_id = match self.send_once(&url, &chat_id, &message.body).await? {
            Outcome::Sent(receipt) => return Ok(receipt),
            Outcome::Migrated(new_chat_id) => new_chat_id,
        };

        // Chat ids are not secrets; the operator needs both to fix the stored recipient. A
        // successful retry is only visible in the log, a failed one also in the error's reason.
        let old_chat_id = message.recipient.trim();
        match self.send_once(&url, &Value::from(new_chat_id), &message.body).await {
            Ok(Outcome::Sent(receipt)) => {
                tracing::warn!(
                    outbox_id = message.id,
                    old_chat_id,
                    new_chat_id,
                    "Telegram upgraded this group to a supergroup; \
                     update the stored chat id to the new id"
                );
                Ok(receipt)
            }
            // Retry once only: a second migration means something is off on Telegram's side.
            Ok(Outcome::Migrated(again)) => Err(DeliveryError::permanent(format!(
                "Telegram moved chat {old_chat_id} to {new_chat_id} and then again to {again}"
            ))),
            Err(err) => Err(with_context(
                err,
                &format!(
                    "Telegram moved chat {old_chat_id} to {new_chat_id}; \
                     update the stored chat id"
                ),
            )),
        }
    }
}

/// Numeric ids go out as JSON integers (they can exceed 32 bits); `@channelname` as a string.
fn chat_id_value(recipient: &str) -> Option<Value> {
    let trimmed = recipient.trim();
    if trimmed.is_empty() {
        None
    } else if let Ok(id) = trimmed.parse::<i64>() {
        Some(Value::from(id))
    } else {
        Some(Value::from(trimmed))
    }
}

fn with_context(err: DeliveryError, context: &str) -> DeliveryError {
    match err {
        DeliveryError::Transient { reason, retry_after } => {
            DeliveryError::Transient { reason: format!("{reason} ({context})"), retry_after }
        }
        DeliveryError::RateLimited { reason, retry_after } => {
            DeliveryError::RateLimited { reason: format!("{reason} ({context})"), retry_after }
        }
        DeliveryError::Permanent { reason } => {
            DeliveryError::permanent(format!("{reason} ({context})"))
        }
        DeliveryError::ChannelDown { reason } => {
            DeliveryError::channel_down(format!("{reason} ({context})"))
        }
    }
}

/// The fields of a Bot API reply we act on, read leniently: a missing or oddly typed field
/// never turns a reply into a parse failure.
#[derive(Default)]
struct TelegramReply {
    ok: Option<bool>,
    error_code: Option<u16>,
    message_id: Option<i64>,
    description: Option<String>,
    retry_after: Option<u64>,
    migrate_to_chat_id: Option<i64>,
}

impl TelegramReply {
    fn from_value(value: &Value) -> Self {
        let parameters = value.get("parameters");
        Self {
            ok: value.get("ok").and_then(Value::as_bool),
            error_code: value
                .get("error_code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok()),
            message_id: value
                .get("result")
                .and_then(|r| r.get("message_id"))
                .and_then(Value::as_i64),
            description: value
                .get("description")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_owned),
            retry_after: parameters.and_then(|p| p.get("retry_after")).and_then(Value::as_u64),
            migrate_to_chat_id: parameters
                .and_then(|p| p.get("migrate_to_chat_id"))
                .and_then(Value::as_i64),
        }
    }
}

/// What a reply means: a receipt, a migration to follow, or an error.
fn answer(reply: &Reply, redactor: &Redactor) -> Result<Outcome, DeliveryError> {
    let parsed = reply.json().map(|v| TelegramReply::from_value(&v)).unwrap_or_default();
    if reply.status.is_success() && parsed.ok != Some(false) {
        return match (parsed.ok, parsed.message_id) {
            (Some(true), Some(id)) => {
                let id = provider_id(&id.to_string(), redactor);
                Ok(Outcome::Sent(Receipt { provider_message_id: id }))
            }
            _ => Err(reply.unproven("Telegram", "\"ok\": true and a message_id", redactor)),
        };
    }
    classify(reply, &parsed, redactor)
}

/// Keys on HTTP status plus description substrings, as Telegram warns `error_code` may change.
fn classify(
    reply: &Reply,
    parsed: &TelegramReply,
    redactor: &Redactor,
) -> Result<Outcome, DeliveryError> {
    // `ok: false` inside a 2xx is not documented; its error_code is then the best status we have.
    let code = if reply.status.is_success() {
        parsed.error_code.unwrap_or(500)
    } else {
        reply.status.as_u16()
    };
    let description = parsed.description.as_deref().map(|d| clean(d, redactor));
    let detail = match &description {
        Some(d) => format!("Telegram answered HTTP {code}: {d}"),
        None => format!("Telegram answered HTTP {code}"),
    };
    let lower = description.as_deref().unwrap_or_default().to_lowercase();
    let says = |needle: &str| lower.contains(needle);

    if (400..500).contains(&code) {
        if let Some(new_chat_id) = parsed.migrate_to_chat_id {
            return Ok(Outcome::Migrated(new_chat_id));
        }
    }

    Err(match code {
        429 => DeliveryError::RateLimited {
            reason: detail,
            retry_after: parsed
                .retry_after
                .map(std::time::Duration::from_secs)
                .or_else(|| retry_after(&reply.headers)),
        },
        401 | 404 => {
            DeliveryError::channel_down(format!("Telegram rejected the bot token; {detail}"))
        }
        400 if says("chat not found") => DeliveryError::permanent(format!(
            "the chat does not exist or the bot has no access to it; {detail}"
        )),
        400 if says("can't parse entities") => {
            DeliveryError::permanent(format!("Telegram could not parse the message text; {detail}"))
        }
        403 if says("blocked by the user") => {
            DeliveryError::permanent(format!("the user blocked the bot; {detail}"))
        }
        403 if says("can't initiate conversation") => DeliveryError::permanent(format!(
            "the user has never started a conversation with the bot; {detail}"
        )),
        403 if says("user is deactivated") => {
            DeliveryError::permanent(format!("the Telegram account is deactivated; {detail}"))
        }
        code => http::by_status(code, &reply.headers, detail),
    })
}

#[cfg(test)]
mod tests {
    use std::io;

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use wiremock::matchers::{body_json, body_partial_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::channels::test_support::{
        client, closed_port, endless_server, outcome, reply_with, timeout_client, Case,
    };

    const TOKEN: &str = "7654321:AAE-distinctive_TOKEN-zq81x";
    const SEND_PATH: &str = "/bot7654321:AAE-distinctive_TOKEN-zq81x/sendMessage";

    fn channel(api_base: &str) -> TelegramChannel {
        TelegramChannel::new(
            TelegramConfig { bot_token: Secret::new(TOKEN), api_base: api_base.to_owned() },
            client(),
        )
    }

    fn message(recipient: &str) -> OutboundMessage {
        OutboundMessage {
            id: 7,
            recipient: recipient.to_owned(),
            subject: None,
            body: "Pengingat: servis AC *besok* jam 10 <b>pagi</b>".to_owned(),
            media_url: None,
        }
    }

    fn sent(message_id: i64) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "result": {"message_id": message_id, "chat": {"id": 123_456_789}, "date": 1_700_000_000},
        }))
    }

    fn failure(status: u16, description: &str) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_json(json!({
            "ok": false,
            "error_code": status,
            "description": description,
        }))
    }

    fn assert_no_token(err: &DeliveryError) {
        let shown = format!("{err} | {err:?}");
        assert!(!shown.contains(TOKEN), "the token leaked: {shown}");
        assert!(!shown.contains("AAE-distinctive"), "part of the token leaked: {shown}");
    }

    async fn reply(template: ResponseTemplate) -> DeliveryError {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(SEND_PATH))
            .respond_with(template)
            .expect(1)
            .mount(&server)
            .await;
        let err = channel(&server.uri())
            .send(&message("123456789"))
            .await
            .expect_err("the reply is an error");
        assert_no_token(&err);
        err
    }

    /// Collects everything any subscriber layer writes, so tests can read the logs back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
        }
    }

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[tokio::test]
    async fn the_request_is_a_json_post_with_a_numeric_chat_id_and_no_parse_mode() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(SEND_PATH))
            .and(header("content-type", "application/json"))
            .and(body_json(json!({
                "chat_id": 123_456_789,
                "text": "Pengingat: servis AC *besok* jam 10 <b>pagi</b>",
            })))
            .respond_with(sent(991))
            .expect(1)
            .mount(&server)
            .await;

        let receipt = channel(&server.uri())
            .send(&message("123456789"))
            .await
            .expect("Telegram accepted the message");

        assert_eq!(receipt.provider_message_id.as_deref(), Some("991"));
    }

    #[tokio::test]
    async fn a_negative_supergroup_id_beyond_32_bits_is_sent_as_an_integer() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(SEND_PATH))
            .and(body_partial_json(json!({"chat_id": -1_001_234_567_890_i64})))
            .respond_with(sent(5))
            .expect(1)
            .mount(&server)
            .await;

        let receipt = channel(&server.uri())
            .send(&message("-1001234567890"))
            .await
            .expect("Telegram accepted the message");

        assert_eq!(receipt.provider_message_id.as_deref(), Some("5"));
    }

    #[tokio::test]
    async fn a_channel_username_is_sent_as_a_string_chat_id() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(SEND_PATH))
            .and(body_partial_json(json!({"chat_id": "@reminder_channel"})))
            .respond_with(sent(6))
            .expect(1)
            .mount(&server)
            .await;

        let receipt = channel(&server.uri())
            .send(&message("@reminder_channel"))
            .await
            .expect("Telegram accepted the message");

        assert_eq!(receipt.provider_message_id.as_deref(), Some("6"));
    }

    #[tokio::test]
    async fn the_token_travels_only_in_the_path() {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(sent(1)).mount(&server).await;

        channel(&server.uri())
            .send(&message("123456789"))
            .await
            .expect("Telegram accepted the message");

        let requests = server.received_requests().await.expect("recording is on");
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.url.path(), SEND_PATH);
        assert_eq!(request.url.query(), None);
        assert!(!String::from_utf8_lossy(&request.body).contains("AAE-distinctive"));
        for (name, value) in &request.headers {
            assert!(
                !value.to_str().unwrap_or_default().contains("AAE-distinctive"),
                "the token is in header {name}"
            );
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_transient_and_the_token_is_in_neither_display_nor_debug() {
        let base = format!("http://127.0.0.1:{}", closed_port());

        let err =
            channel(&base).send(&message("123456789")).await.expect_err("nothing listens there");

        assert!(matches!(err, DeliveryError::Transient { .. }), "{err:?}");
        assert_no_token(&err);
        assert!(!format!("{err:?}").contains("127.0.0.1"), "the URL leaked: {err:?}");
    }

    fn failure_body(status: u16, description: &str) -> String {
        json!({"ok": false, "error_code": status, "description": description}).to_string()
    }

    #[test]
    fn error_replies_are_classified_by_status_and_description() {
        let redactor = Redactor::new().secret(&Secret::new(TOKEN));
        let none: &[(&str, &str)] = &[];
        let r12: &[(&str, &str)] = &[("Retry-After", "12")];
        let limited = json!({
            "ok": false, "error_code": 429,
            "description": "Too Many Requests: retry after 35",
            "parameters": {"retry_after": 35},
        })
        .to_string();
        let cases: Vec<Case> = vec![
            (429, limited.clone(), none, "rate_limited", "retry after 35", Some(35)),
            // parameters.retry_after wins over the header.
            (429, limited, r12, "rate_limited", "retry after 35", Some(35)),
            (
                429,
                failure_body(429, "Too Many Requests: retry after 12"),
                r12,
                "rate_limited",
                "Telegram answered HTTP 429",
                Some(12),
            ),
            (
                400,
                failure_body(400, "Bad Request: chat not found"),
                none,
                "permanent",
                "the chat does not exist",
                None,
            ),
            (
                403,
                failure_body(403, "Forbidden: bot was blocked by the user"),
                none,
                "permanent",
                "the user blocked the bot",
                None,
            ),
            (
                403,
                failure_body(403, "Forbidden: bot can't initiate conversation with a user"),
                none,
                "permanent",
                "never started a conversation",
                None,
            ),
            (
                403,
                failure_body(403, "Forbidden: user is deactivated"),
                none,
                "permanent",
                "account is deactivated",
                None,
            ),
            (
                400,
                failure_body(400, "Bad Request: can't parse entities: Can't find end"),
                none,
                "permanent",
                "could not parse the message text",
                None,
            ),
            (
                401,
                failure_body(401, "Unauthorized"),
                none,
                "channel_down",
                "Telegram rejected the bot token; Telegram answered HTTP 401: Unauthorized",
                None,
            ),
            (
                404,
                failure_body(404, "Not Found"),
                none,
                "channel_down",
                "rejected the bot token",
                None,
            ),
            // A proxy echoing the path must not put the token into the reason.
            (
                404,
                failure_body(404, &format!("Cannot POST {SEND_PATH}")),
                none,
                "channel_down",
                "Cannot POST /bot[redacted]/sendMessage",
                None,
            ),
            (
                400,
                failure_body(400, "Bad Request: message text is empty"),
                none,
                "permanent",
                "message text is empty",
                None,
            ),
            (
                502,
                failure_body(502, "Bad Gateway"),
                none,
                "transient",
                "HTTP 502: Bad Gateway",
                None,
            ),
            (
                503,
                "<html>down</html>".into(),
                none,
                "transient",
                "Telegram answered HTTP 503",
                None,
            ),
            // `ok: false` inside a 2xx is classified by its error_code.
            (
                200,
                failure_body(403, "Forbidden: bot was blocked by the user"),
                none,
                "permanent",
                "the user blocked the bot",
                None,
            ),
            (200, json!({"ok": false}).to_string(), none, "transient", "HTTP 500", None),
        ];
        for (status, body, headers, class, contains, retry_after) in cases {
            let result = match answer(&reply_with(status, &body, headers), &redactor) {
                Ok(Outcome::Sent(receipt)) => Ok(receipt),
                Ok(Outcome::Migrated(id)) => panic!("{status} {body}: migrated to {id}"),
                Err(err) => Err(err),
            };
            let (got, reason, wait) = outcome(&result);
            assert_eq!((got, wait), (class, retry_after), "{status} {body}: {reason}");
            assert!(reason.contains(contains), "{status} {body}: {reason}");
            assert!(!reason.contains("AAE-distinctive"), "{reason}");
        }
    }

    #[test]
    fn only_ok_true_with_a_message_id_is_success() {
        let redactor = Redactor::new().secret(&Secret::new(TOKEN));
        for (status, body, id) in [
            (200, r#"{"ok":true,"result":{"message_id":991,"chat":{"id":1}}}"#, Some("991")),
            (200, r#"{"ok":true}"#, None),
            (200, r#"{"ok":true,"result":true}"#, None),
            (200, r#"{"ok":true,"result":{"message_id":"991"}}"#, None),
            (200, r#"{"result":{"message_id":991}}"#, None),
            (200, "<html><body>Welcome to nginx!</body></html>", None),
            (200, "", None),
            (204, "", None),
        ] {
            match (answer(&reply_with(status, body, &[]), &redactor), id) {
                (Ok(Outcome::Sent(receipt)), Some(id)) => {
                    assert_eq!(receipt.provider_message_id.as_deref(), Some(id), "{body}");
                }
                (Err(DeliveryError::Transient { reason, .. }), None) => {
                    assert!(reason.starts_with("Telegram answered HTTP"), "{reason}");
                }
                (Ok(Outcome::Migrated(_)), _) => panic!("{body}: migrated"),
                (other, _) => panic!("{status} {body}: {:?}", other.map(|_| "ok")),
            }
        }
    }

    #[tokio::test]
    async fn a_2xx_that_is_a_page_an_empty_body_or_an_error_is_transient_and_quotes_the_reply() {
        for (body, quoted) in [
            ("<html><title>Captive portal</title></html>", "Captive portal"),
            ("", "empty body"),
            (r#"{"error":"no such route"}"#, "no such route"),
        ] {
            let err = reply(ResponseTemplate::new(200).set_body_string(body)).await;
            let DeliveryError::Transient { reason, .. } = err else { panic!("{body}: {err:?}") };
            assert!(reason.contains(quoted), "{reason}");
        }
    }

    #[tokio::test]
    async fn an_endless_reply_is_cut_and_transient_within_seconds() {
        let (base, _) = endless_server().await;
        let started = std::time::Instant::now();
        let err = channel(&base).send(&message("123456789")).await.expect_err("no message_id");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let DeliveryError::Transient { reason, .. } = err else { panic!("{err:?}") };
        assert!(reason.starts_with("Telegram answered HTTP 200 without"), "{reason}");
    }

    #[tokio::test]
    async fn a_reply_slower_than_the_client_timeout_is_transient() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(sent(1).set_delay(Duration::from_secs(5)))
            .mount(&server)
            .await;
        let channel = TelegramChannel::new(
            TelegramConfig { bot_token: Secret::new(TOKEN), api_base: server.uri() },
            timeout_client(),
        );
        let err = channel.send(&message("123456789")).await.expect_err("too slow");
        assert_eq!(err.to_string(), "transient: request timed out");
    }

    // The warning's callsite must be reached by this test alone: tracing caches a callsite's
    // interest, and a concurrent test without a subscriber can cache it as "never".
    #[tokio::test(flavor = "current_thread")]
    async fn a_migrated_group_is_retried_once_at_the_new_chat_id_and_the_warning_names_it() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(SEND_PATH))
            .and(body_partial_json(json!({"chat_id": -123_456})))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "ok": false,
                "error_code": 400,
                "description": "Bad Request: group chat was upgraded to a supergroup chat",
                "parameters": {"migrate_to_chat_id": -1_009_876_543_210_i64},
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(SEND_PATH))
            .and(body_partial_json(json!({"chat_id": -1_009_876_543_210_i64})))
            .respond_with(sent(77))
            .expect(1)
            .mount(&server)
            .await;
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);

        let receipt = channel(&server.uri())
            .send(&message("-123456"))
            .await
            .expect("the retry at the new id succeeds");
        drop(guard);

        assert_eq!(receipt.provider_message_id.as_deref(), Some("77"));
        let text = logs.text();
        assert!(text.contains("WARN"), "{text}");
        assert!(text.contains("-1009876543210"), "{text}");
        assert!(!text.contains("AAE-distinctive"), "the token leaked into the logs: {text}");
    }

    #[tokio::test]
    async fn a_migrated_group_whose_retry_fails_reports_the_retrys_error_with_the_new_id() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(body_partial_json(json!({"chat_id": -123_456})))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "ok": false,
                "error_code": 400,
                "description": "Bad Request: group chat was upgraded to a supergroup chat",
                "parameters": {"migrate_to_chat_id": -1_009_876_543_210_i64},
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(body_partial_json(json!({"chat_id": -1_009_876_543_210_i64})))
            .respond_with(failure(403, "Forbidden: bot was kicked from the supergroup chat"))
            .expect(1)
            .mount(&server)
            .await;

        let err =
            channel(&server.uri()).send(&message("-123456")).await.expect_err("the retry fails");

        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("-1009876543210"), "{reason}");
    }

    #[tokio::test]
    async fn a_second_migration_is_not_followed() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "ok": false,
                "error_code": 400,
                "description": "Bad Request: group chat was upgraded to a supergroup chat",
                "parameters": {"migrate_to_chat_id": -100_555},
            })))
            .expect(2)
            .mount(&server)
            .await;

        let err = channel(&server.uri())
            .send(&message("-123456"))
            .await
            .expect_err("no endless migration");

        assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn an_empty_chat_id_is_permanent_without_calling_telegram() {
        let base = format!("http://127.0.0.1:{}", closed_port());
        let err = channel(&base).send(&message(" ")).await.expect_err("nothing to send to");
        assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn an_empty_token_or_a_bad_base_takes_the_channel_down() {
        let no_token = TelegramChannel::new(
            TelegramConfig {
                bot_token: Secret::new(""),
                api_base: "http://127.0.0.1:1".to_owned(),
            },
            client(),
        );
        let err = no_token.send(&message("1")).await.expect_err("no token");
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");

        let err = channel("not a url").send(&message("1")).await.expect_err("no endpoint");
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
        assert_no_token(&err);
    }

    #[test]
    fn the_provider_name_is_telegram() {
        assert_eq!(channel("http://127.0.0.1:1").provider(), "telegram");
    }
}
