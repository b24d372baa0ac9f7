//! The Starsender adapter (Indonesian WhatsApp gateway, "V3" API): one JSON `POST /api/send` per
//! message and the classification of Starsender's answer into the delivery loop's error classes
//! (`providers.md` §5).
//!
//! Confidence is low. Verified only in the sense that several independent third-party clients
//! agree: the endpoint, the raw `Authorization: <device key>` header, the request body
//! (`messageType`/`to`/`body`/`file`) and a reply carrying a boolean `success` plus `message` and
//! `data`. Inferred, with no official documentation: where the message id lives, every error
//! text, which HTTP codes Starsender uses, and any rate limit. The code therefore reads the reply
//! defensively (any key case, the legacy `status` flag, string or numeric ids) and never trusts a
//! 2xx alone: success is `success: true`, an explicit `success: false` is a refusal read by its
//! text, and a 2xx with no flag at all (a proxy's page, an empty body) is transient. The device
//! key travels only in the header and is scrubbed from every reason.

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};

use crate::channels::http::{
    self, provider_id, retry_after, secret_header, transport_error, Reply,
};
use crate::channels::{
    clean, field, phone_digits, Channel, DeliveryError, OutboundMessage, Receipt,
};
use crate::secret::{Redactor, Secret};

/// Credentials and endpoint for Starsender's V3 API.
#[derive(Debug, Clone)]
pub struct StarsenderConfig {
    /// The device API key from Starsender's Device menu.
    pub api_key: Secret,
    /// `https://api.starsender.online` in production; a loopback mock in tests.
    pub api_base: String,
}

/// Sends `WhatsApp` messages through a Starsender device.
pub struct StarsenderChannel {
    config: StarsenderConfig,
    client: reqwest::Client,
    redactor: Redactor,
}

impl StarsenderChannel {
    /// Builds the adapter; the client is shared so connection pools and timeouts are set once.
    pub fn new(config: StarsenderConfig, client: reqwest::Client) -> Self {
        let redactor = Redactor::new().secret(&config.api_key);
        Self { config, client, redactor }
    }

    fn endpoint(&self) -> Result<Url, DeliveryError> {
        http::endpoint(&self.config.api_base, &["api", "send"], "the Starsender API base URL")
    }

    /// The raw key (no `Bearer`).
    fn authorization(&self) -> Result<HeaderValue, DeliveryError> {
        secret_header(&self.config.api_key, "Starsender device API key")
    }
}

#[async_trait]
impl Channel for StarsenderChannel {
    fn provider(&self) -> &'static str {
        "starsender"
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        let to = phone_digits(&message.recipient).ok_or_else(|| {
            DeliveryError::permanent(
                "the WhatsApp recipient is not a phone number in international digits",
            )
        })?;
        let authorization = self.authorization()?;
        let url = self.endpoint()?;

        let payload = match &message.media_url {
            None => json!({ "messageType": "text", "to": to, "body": message.body }),
            Some(media) => json!({
                "messageType": "media",
                "to": to,
                "body": message.body,
                "file": media,
            }),
        };

        let response = self
            .client
            .post(url)
            .header(AUTHORIZATION, authorization)
            .header(ACCEPT, "application/json")
            .json(&payload)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        answer(&Reply::read(response).await?, &self.redactor)
    }
}

/// What a reply means. Integrators check `success` even on a 2xx.
fn answer(reply: &Reply, redactor: &Redactor) -> Result<Receipt, DeliveryError> {
    let parsed = StarsenderReply::parse(reply.json().as_ref());
    if reply.status.is_success() {
        match parsed.success {
            Some(true) => {
                let id = parsed.id.as_deref().and_then(|id| provider_id(id, redactor));
                return Ok(Receipt { provider_message_id: id });
            }
            None => return Err(reply.unproven("Starsender", "a success flag", redactor)),
            Some(false) => {}
        }
    }
    Err(classify(reply.status, &reply.headers, &reply.body, &parsed, redactor))
}

/// The parts of Starsender's JSON reply that decide the outcome.
struct StarsenderReply {
    /// `success`, or the legacy (v2) `status` flag when `success` is absent.
    success: Option<bool>,
    message: Option<String>,
    id: Option<String>,
}

impl StarsenderReply {
    fn parse(value: Option<&Value>) -> Self {
        let Some(object) = value.and_then(Value::as_object) else {
            return Self { success: None, message: None, id: None };
        };
        let flag = |v: &Value| match v {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        };
        let success = field(object, "success")
            .and_then(flag)
            .or_else(|| field(object, "status").and_then(flag));
        let message = field(object, "message")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned);
        Self { success, message, id: field(object, "data").and_then(message_id) }
    }
}

/// `data.id`, `data.message_id` or `data.messageId`, string or number; a list of results is read
/// from its first entry.
fn message_id(data: &Value) -> Option<String> {
    let data = match data {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let object = data.as_object()?;
    ["id", "message_id", "messageId"].into_iter().find_map(|name| match field(object, name)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// Maps every reply that is not a 2xx with a success flag to a [`DeliveryError`]: the HTTP
/// status where it is unambiguous, Starsender's `message` otherwise.
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    reply: &StarsenderReply,
    redactor: &Redactor,
) -> DeliveryError {
    // Starsender's `message` when it gave one, else a snippet of whatever answered.
    let said = reply.message.as_deref().unwrap_or(body);
    let detail = match clean(said, redactor) {
        said if said.is_empty() => format!("Starsender answered HTTP {}", status.as_u16()),
        said => format!("Starsender answered HTTP {}: {said}", status.as_u16()),
    };

    match status.as_u16() {
        401 | 403 => DeliveryError::channel_down(format!(
            "Starsender rejected the device API key: use the key from the Device menu; {detail}"
        )),
        // 2xx with `success: false`, and every 4xx but 429: a refusal, read by its text.
        200..=299 | 400..=428 | 430..=499 => {
            classify_message(reply.message.as_deref(), headers, detail)
        }
        code => http::by_status(code, headers, detail),
    }
}

/// Starsender's error texts are unknown, so the class comes from case-insensitive keywords and
/// defaults to `Permanent`, the class that can neither loop forever nor stop the channel.
fn classify_message(message: Option<&str>, headers: &HeaderMap, detail: String) -> DeliveryError {
    let lower = message.unwrap_or_default().to_lowercase();
    let has = |needle: &str| lower.contains(needle);

    if has("quota") {
        DeliveryError::channel_down(format!(
            "the Starsender quota is exhausted: top it up in the Starsender dashboard; {detail}"
        ))
    } else if has("device") || has("disconnect") || has("not connected") {
        DeliveryError::channel_down(format!(
            "the Starsender device is not connected: reconnect it (scan the QR code) in the \
             Starsender dashboard; {detail}"
        ))
    } else if has("limit") && !["character", "length", "size", "too long"].iter().any(|w| has(w)) {
        // A rate "limit" heals by waiting; a limit on the message itself (length, file size)
        // never would, and RateLimited spends no attempt, so those stay Permanent.
        DeliveryError::RateLimited { reason: detail, retry_after: retry_after(headers) }
    } else {
        DeliveryError::permanent(format!("Starsender refused the message; {detail}"))
    }
}

#[cfg(test)]
mod tests {

    use std::time::Duration;

    use serde_json::json;
    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::channels::test_support::{
        client, closed_port, endless_server, outcome, reply_with, timeout_client, whatsapp_message,
        Case,
    };

    const KEY: &str = "starsender-key-1f2e3d4c";
    const BODY: &str = "Tagihan Rp 150.000 jatuh tempo 5 Mei & mohon dibayar";

    fn channel(api_base: &str) -> StarsenderChannel {
        StarsenderChannel::new(
            StarsenderConfig { api_key: Secret::new(KEY), api_base: api_base.to_owned() },
            client(),
        )
    }

    fn message() -> OutboundMessage {
        whatsapp_message(BODY)
    }

    /// The error an `/api/send` answered with `template` produces.
    async fn reply(template: ResponseTemplate) -> DeliveryError {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/send"))
            .respond_with(template)
            .expect(1)
            .mount(&server)
            .await;
        let err = channel(&server.uri()).send(&message()).await.expect_err("the reply is an error");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(KEY), "the API key leaked: {shown}");
        assert!(!shown.contains("/api/send"), "the URL leaked: {shown}");
        err
    }

    #[tokio::test]
    async fn text_is_a_json_post_to_api_send_with_the_raw_key_and_the_digits() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/send"))
            .and(header("authorization", KEY))
            .and(header("content-type", "application/json"))
            .and(body_json(json!({ "messageType": "text", "to": "6281234567890", "body": BODY })))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "success": true,
                "message": "Message sent successfully",
                "data": { "id": "ss-0001", "status": "pending" },
            })))
            .expect(1)
            .mount(&server)
            .await;

        let receipt = channel(&server.uri()).send(&message()).await.expect("Starsender took it");

        assert_eq!(receipt.provider_message_id.as_deref(), Some("ss-0001"));
    }

    #[tokio::test]
    async fn media_is_a_media_message_with_the_body_as_caption_and_the_url_as_file() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/send"))
            .and(header("authorization", KEY))
            .and(body_json(json!({
                "messageType": "media",
                "to": "6281234567890",
                "body": BODY,
                "file": "https://example.com/invoice.pdf?id=7&v=2",
            })))
            .respond_with(
                ResponseTemplate::new(201)
                    .set_body_json(json!({ "success": true, "data": { "message_id": 991 } })),
            )
            .expect(1)
            .mount(&server)
            .await;
        let mut msg = message();
        msg.media_url = Some("https://example.com/invoice.pdf?id=7&v=2".to_owned());

        let receipt =
            channel(&format!("{}/", server.uri())).send(&msg).await.expect("Starsender took it");

        assert_eq!(receipt.provider_message_id.as_deref(), Some("991"));
    }

    #[tokio::test]
    async fn success_without_an_id_is_still_success() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "success": true })))
            .mount(&server)
            .await;

        let receipt = channel(&server.uri()).send(&message()).await.expect("Starsender took it");

        assert_eq!(receipt.provider_message_id, None);
    }

    #[test]
    fn the_id_is_read_from_every_guessed_shape_and_never_invented() {
        let id = |v: Value| StarsenderReply::parse(Some(&v)).id;
        assert_eq!(id(json!({"data": {"id": "a"}})).as_deref(), Some("a"));
        assert_eq!(id(json!({"data": {"message_id": "b"}})).as_deref(), Some("b"));
        assert_eq!(id(json!({"data": {"messageId": 3}})).as_deref(), Some("3"));
        assert_eq!(
            id(json!({"data": [{"id": "first"}, {"id": "second"}]})).as_deref(),
            Some("first")
        );
        assert_eq!(id(json!({"data": {"id": " ", "messageId": "next"}})).as_deref(), Some("next"));
        assert_eq!(id(json!({"data": "queued"})), None);
        assert_eq!(id(json!({"data": []})), None);
        assert_eq!(id(json!({"id": "top-level"})), None);
    }

    #[test]
    fn the_legacy_status_flag_counts_only_when_success_is_absent() {
        let success = |v: Value| StarsenderReply::parse(Some(&v)).success;
        assert_eq!(success(json!({"success": true})), Some(true));
        assert_eq!(success(json!({"Success": "false"})), Some(false));
        assert_eq!(success(json!({"success": " TRUE "})), Some(true));
        assert_eq!(success(json!({"success": "yes"})), None);
        assert_eq!(success(json!({"status": true})), Some(true));
        assert_eq!(success(json!({"success": false, "status": true})), Some(false));
        assert_eq!(success(json!({"status": "pending"})), None);
        assert_eq!(success(json!("ok")), None);
    }

    #[tokio::test]
    async fn a_recipient_that_is_not_digits_is_permanent_without_calling_starsender() {
        let mut msg = message();
        msg.recipient = "0812-3456-7890".to_owned();
        // An unroutable base proves no request is attempted.
        let err = channel(&format!("http://127.0.0.1:{}", closed_port()))
            .send(&msg)
            .await
            .expect_err("not digits");
        assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn an_empty_key_takes_the_channel_down_without_calling_starsender() {
        let channel = StarsenderChannel::new(
            StarsenderConfig {
                api_key: Secret::new(""),
                api_base: format!("http://127.0.0.1:{}", closed_port()),
            },
            client(),
        );
        let err = channel.send(&message()).await.expect_err("no key");
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
    }

    #[test]
    fn replies_are_classified_by_status_and_starsenders_message() {
        let redactor = Redactor::new().secret(&Secret::new(KEY));
        let none: &[(&str, &str)] = &[];
        let r15: &[(&str, &str)] = &[("Retry-After", "15")];
        let r4: &[(&str, &str)] = &[("Retry-After", "4")];
        let failed = |m: &str| json!({"success": false, "message": m, "data": null}).to_string();
        let cases: Vec<Case> = vec![
            (401, failed("Unauthorized"), none, "channel_down",
             "rejected the device API key: use the key from the Device menu; Starsender answered HTTP 401: Unauthorized", None),
            (403, String::new(), none, "channel_down", "Starsender answered HTTP 403", None),
            (429, failed("Too Many Requests"), r15, "rate_limited", "HTTP 429: Too Many Requests", Some(15)),
            (502, "Bad Gateway".into(), none, "transient", "HTTP 502: Bad Gateway", None),
            (200, failed("Nomor tujuan tidak valid"), none, "permanent",
             "Starsender refused the message; Starsender answered HTTP 200: Nomor tujuan tidak valid", None),
            (400, failed("The to field is required"), none, "permanent", "HTTP 400: The to field is required", None),
            (200, failed("Device disconnected, please scan QR"), none, "channel_down",
             "device is not connected", None),
            (400, failed("WhatsApp is not connected"), none, "channel_down", "not connected", None),
            (200, failed("Device is offline"), none, "channel_down", "device is not connected", None),
            (400, failed("Your message quota has run out"), none, "channel_down", "quota is exhausted", None),
            (200, failed("Rate limit exceeded"), r4, "rate_limited", "Rate limit exceeded", Some(4)),
            (400, failed("Body exceeds the character limit"), none, "permanent", "character limit", None),
            (400, failed(&format!("unknown key {KEY}")), none, "permanent", "unknown key [redacted]", None),
            (200, json!({"Success": "false", "Message": "Nomor salah"}).to_string(), none,
             "permanent", "Nomor salah", None),
            (200, json!({"status": false, "message": "legacy refusal"}).to_string(), none,
             "permanent", "legacy refusal", None),
            // A 2xx with no success flag at all did not come from Starsender.
            (200, "<html>hello</html>".into(), none, "transient",
             "Starsender answered HTTP 200 without a success flag: <html>hello</html>", None),
            (200, json!({"message": "queued?"}).to_string(), none, "transient", "without a success flag", None),
            (201, String::new(), none, "transient", "with an empty body", None),
        ];
        for (status, body, headers, class, contains, retry_after) in cases {
            let result = answer(&reply_with(status, &body, headers), &redactor);
            let (got, reason, wait) = outcome(&result);
            assert_eq!((got, wait), (class, retry_after), "{status} {body}: {reason}");
            assert!(reason.contains(contains), "{status} {body}: {reason}");
            assert!(!reason.contains(KEY), "{reason}");
        }
    }

    #[tokio::test]
    async fn a_2xx_that_is_a_page_an_empty_body_or_an_error_is_transient_and_quotes_the_reply() {
        for (body, quoted) in [
            ("<html><title>Login - Corporate Proxy</title></html>", "Corporate Proxy"),
            ("", "empty body"),
            (r#"{"error":"route not found"}"#, "route not found"),
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
        let err = channel(&base).send(&message()).await.expect_err("no success flag");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let DeliveryError::Transient { reason, .. } = err else { panic!("{err:?}") };
        assert!(reason.starts_with("Starsender answered HTTP 200 without"), "{reason}");
    }

    #[tokio::test]
    async fn a_reply_slower_than_the_client_timeout_is_transient() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"success": true}))
                    .set_delay(Duration::from_secs(5)),
            )
            .mount(&server)
            .await;
        let channel = StarsenderChannel::new(
            StarsenderConfig { api_key: Secret::new(KEY), api_base: server.uri() },
            timeout_client(),
        );
        let err = channel.send(&message()).await.expect_err("too slow");
        assert_eq!(err.to_string(), "transient: request timed out");
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_and_names_neither_url_nor_key() {
        let base = format!("http://127.0.0.1:{}", closed_port());
        let err = channel(&base).send(&message()).await.expect_err("nothing listens there");
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, DeliveryError::Transient { .. }), "{shown}");
        assert!(!shown.contains(KEY) && !shown.contains("127.0.0.1"), "{shown}");
    }

    #[tokio::test]
    async fn an_unparseable_api_base_takes_the_channel_down() {
        let err = channel("not a url").send(&message()).await.expect_err("no endpoint");
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
    }

    #[test]
    fn the_provider_name_is_starsender() {
        assert_eq!(channel("http://127.0.0.1:1").provider(), "starsender");
    }
}
