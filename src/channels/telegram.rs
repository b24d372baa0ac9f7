//! The Telegram Bot API adapter: one `sendMessage` call per message, its answer classified into
//! the delivery loop's error classes (`providers.md` §2), and the one-shot retry Telegram asks
//! for when a group has been upgraded to a supergroup.
//!
//! The bot token travels in the URL path, so nothing here formats a URL or a `reqwest::Error`
//! (whose `Display` includes the URL), and every provider text is scrubbed of the token before it
//! becomes a reason.

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};

use super::{
    redact, retry_after, snippet, transport_error, Channel, DeliveryError, OutboundMessage,
    Receipt, MAX_REASON_CHARS,
};
use crate::config::Secret;

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
        Self { config, client }
    }

    /// The token-bearing `sendMessage` URL. Callers must never format or log it.
    fn endpoint(&self) -> Result<Url, DeliveryError> {
        let token = self.config.bot_token.expose().trim();
        if token.is_empty() {
            return Err(DeliveryError::channel_down("no Telegram bot token is configured"));
        }
        let bad_base =
            || DeliveryError::channel_down("the Telegram API base URL is not a valid URL");
        let mut url = Url::parse(self.config.api_base.trim()).map_err(|_| bad_base())?;
        // Segment pushing percent-encodes anything odd in the token instead of letting it turn
        // into a query or fragment, and tolerates a trailing slash on the base.
        url.path_segments_mut()
            .map_err(|()| bad_base())?
            .pop_if_empty()
            .push(&format!("bot{token}"))
            .push("sendMessage");
        Ok(url)
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

        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await;
        let reply = match &body {
            Ok(text) => TelegramReply::parse(text),
            Err(_) if status.is_success() => TelegramReply::default(),
            Err(e) => return Err(Self::transport_failure(e)),
        };
        classify(status, &headers, &reply, &self.config.bot_token)
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
    fn parse(body: &str) -> Self {
        let Ok(value) = serde_json::from_str::<Value>(body) else {
            return Self::default();
        };
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

/// Keys on HTTP status plus description substrings, as Telegram warns `error_code` may change.
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    reply: &TelegramReply,
    token: &Secret,
) -> Result<Outcome, DeliveryError> {
    if status.is_success() && reply.ok != Some(false) {
        let id = reply.message_id.map(|id| id.to_string());
        if id.is_none() {
            // Accepted but unreadable: failing here would make the loop send it twice.
            tracing::warn!(
                http_status = status.as_u16(),
                "Telegram accepted the message but its reply carried no message_id"
            );
        }
        return Ok(Outcome::Sent(Receipt { provider_message_id: id }));
    }

    // `ok: false` inside a 2xx is not documented; its error_code is then the best status we have.
    let code = if status.is_success() { reply.error_code.unwrap_or(500) } else { status.as_u16() };
    let description =
        reply.description.as_deref().map(|d| redact(&snippet(d, MAX_REASON_CHARS), Some(token)));
    let detail = match &description {
        Some(d) => format!("Telegram answered HTTP {code}: {d}"),
        None => format!("Telegram answered HTTP {code}"),
    };
    let lower = description.as_deref().unwrap_or_default().to_lowercase();
    let says = |needle: &str| lower.contains(needle);

    if (400..500).contains(&code) {
        if let Some(new_chat_id) = reply.migrate_to_chat_id {
            return Ok(Outcome::Migrated(new_chat_id));
        }
    }

    Err(match code {
        429 => DeliveryError::RateLimited {
            reason: detail,
            retry_after: reply
                .retry_after
                .map(std::time::Duration::from_secs)
                .or_else(|| retry_after(headers)),
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
        400..=499 => DeliveryError::permanent(detail),
        _ => DeliveryError::Transient { reason: detail, retry_after: retry_after(headers) },
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
    use crate::channels::test_support::{client, closed_port};

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

    #[tokio::test]
    async fn http_429_is_rate_limited_with_parameters_retry_after() {
        let err = reply(ResponseTemplate::new(429).set_body_json(json!({
            "ok": false,
            "error_code": 429,
            "description": "Too Many Requests: retry after 35",
            "parameters": {"retry_after": 35},
        })))
        .await;
        let DeliveryError::RateLimited { retry_after, .. } = err else { panic!("{err:?}") };
        assert_eq!(retry_after, Some(Duration::from_secs(35)));
    }

    #[tokio::test]
    async fn http_429_without_parameters_honours_the_retry_after_header() {
        let err = reply(
            failure(429, "Too Many Requests: retry after 12").insert_header("Retry-After", "12"),
        )
        .await;
        let DeliveryError::RateLimited { retry_after, .. } = err else { panic!("{err:?}") };
        assert_eq!(retry_after, Some(Duration::from_secs(12)));
    }

    #[tokio::test]
    async fn chat_not_found_is_permanent() {
        let err = reply(failure(400, "Bad Request: chat not found")).await;
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("chat not found"), "{reason}");
    }

    #[tokio::test]
    async fn a_user_who_blocked_the_bot_is_permanent() {
        let err = reply(failure(403, "Forbidden: bot was blocked by the user")).await;
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("blocked"), "{reason}");
    }

    #[tokio::test]
    async fn a_user_who_never_started_the_bot_is_permanent() {
        let err =
            reply(failure(403, "Forbidden: bot can't initiate conversation with a user")).await;
        assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_deactivated_user_is_permanent() {
        let err = reply(failure(403, "Forbidden: user is deactivated")).await;
        assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn unparseable_entities_are_permanent() {
        let err =
            reply(failure(400, "Bad Request: can't parse entities: Can't find end of the entity"))
                .await;
        assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn http_401_means_the_bot_token_was_rejected_and_the_channel_is_down() {
        let err = reply(failure(401, "Unauthorized")).await;
        let DeliveryError::ChannelDown { reason } = err else { panic!("{err:?}") };
        assert!(reason.starts_with("Telegram rejected the bot token"), "{reason}");
    }

    #[tokio::test]
    async fn http_404_means_the_bot_token_was_rejected_and_the_channel_is_down() {
        let err = reply(failure(404, "Not Found")).await;
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_proxy_echoing_the_path_does_not_leak_the_token_into_the_reason() {
        let err = reply(failure(404, &format!("Cannot POST {SEND_PATH}"))).await;
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn another_4xx_is_permanent_with_telegrams_description() {
        let err = reply(failure(400, "Bad Request: message text is empty")).await;
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("message text is empty"), "{reason}");
    }

    #[tokio::test]
    async fn a_5xx_is_transient() {
        let err = reply(failure(502, "Bad Gateway")).await;
        assert!(matches!(err, DeliveryError::Transient { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_5xx_with_an_html_body_is_transient() {
        let err = reply(ResponseTemplate::new(503).set_body_string("<html>down</html>")).await;
        assert!(matches!(err, DeliveryError::Transient { .. }), "{err:?}");
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
    async fn a_2xx_without_a_message_id_is_still_a_success() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
            .mount(&server)
            .await;

        let receipt = channel(&server.uri())
            .send(&message("123456789"))
            .await
            .expect("a 2xx with ok=true is a success");

        assert_eq!(receipt.provider_message_id, None);
    }

    #[tokio::test]
    async fn an_ok_false_inside_a_2xx_is_classified_by_its_error_code() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "ok": false,
                "error_code": 403,
                "description": "Forbidden: bot was blocked by the user",
            })))
            .mount(&server)
            .await;

        let err = channel(&server.uri())
            .send(&message("123456789"))
            .await
            .expect_err("ok=false is a failure");

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
