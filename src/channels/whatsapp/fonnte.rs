//! The Fonnte adapter (Indonesian WhatsApp-Web gateway): one form-encoded `POST /send` per
//! message and the classification of Fonnte's answer into the delivery loop's error classes
//! (`providers.md` §4).
//!
//! Fonnte reports most failures as HTTP 200 with `{"status": false, "reason": "…"}`, so the
//! `status` boolean (any key case), not the HTTP code, decides success, and the reason text
//! decides the class. A 200 without `status` did not come from Fonnte and is transient. The
//! device token travels only in the `Authorization` header and is scrubbed from every provider
//! text that becomes a reason, raw replies included.

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::channels::http::{self, provider_id, secret_header, transport_error, Reply};
use crate::channels::{
    clean, field, phone_digits, Channel, DeliveryError, OutboundMessage, Receipt,
};
use crate::secret::{Redactor, Secret};

/// Fonnte rewrites a leading `0` to this; our numbers are already international, so it is a
/// no-op kept explicit rather than relying on Fonnte's default.
const COUNTRY_CODE: &str = "62";

/// Credentials and endpoint for Fonnte's send API.
#[derive(Debug, Clone)]
pub struct FonnteConfig {
    /// The *device* token from the dashboard's device list (not the account token).
    pub token: Secret,
    /// `https://api.fonnte.com` in production; a loopback mock in tests.
    pub api_base: String,
}

/// Sends `WhatsApp` messages through a Fonnte device.
pub struct FonnteChannel {
    config: FonnteConfig,
    client: reqwest::Client,
    redactor: Redactor,
}

impl FonnteChannel {
    /// Builds the adapter; the client is shared so connection pools and timeouts are set once.
    pub fn new(config: FonnteConfig, client: reqwest::Client) -> Self {
        let redactor = Redactor::new().secret(&config.token);
        Self { config, client, redactor }
    }

    fn endpoint(&self) -> Result<Url, DeliveryError> {
        http::endpoint(&self.config.api_base, &["send"], "the Fonnte API base URL")
    }

    /// The raw token (Fonnte wants no `Bearer`).
    fn authorization(&self) -> Result<HeaderValue, DeliveryError> {
        secret_header(&self.config.token, "Fonnte device token")
    }
}

#[async_trait]
impl Channel for FonnteChannel {
    fn provider(&self) -> &'static str {
        "fonnte"
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        let target = phone_digits(&message.recipient).ok_or_else(|| {
            DeliveryError::permanent(
                "the WhatsApp recipient is not a phone number in international digits",
            )
        })?;
        let authorization = self.authorization()?;
        let url = self.endpoint()?;

        let mut form: Vec<(&str, &str)> = vec![
            ("target", target.as_str()),
            ("message", message.body.as_str()),
            ("countryCode", COUNTRY_CODE),
        ];
        if let Some(media) = &message.media_url {
            form.push(("url", media.as_str()));
        }

        let response = self
            .client
            .post(url)
            .header(AUTHORIZATION, authorization)
            .header(ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        answer(&Reply::read(response).await?, &self.redactor)
    }
}

/// What a reply means. Unlike most providers, a 200 from Fonnte means nothing until its body
/// says `status`.
fn answer(reply: &Reply, redactor: &Redactor) -> Result<Receipt, DeliveryError> {
    let parsed = FonnteReply::parse(reply.json().as_ref());
    if !reply.status.is_success() {
        return Err(classify(reply.status, &reply.headers, &reply.body, &parsed, redactor));
    }
    match parsed.status {
        Some(true) => Ok(Receipt {
            provider_message_id: parsed.id.as_deref().and_then(|id| provider_id(id, redactor)),
        }),
        Some(false) => Err(parsed.refusal(redactor)),
        // Fonnte always says `status`; a 200 without it came from something in front of Fonnte
        // (a captive portal, a maintenance page), so the message never got queued.
        None => Err(reply.unproven("Fonnte", "a status", redactor)),
    }
}

/// The parts of Fonnte's JSON reply that decide the outcome.
struct FonnteReply {
    status: Option<bool>,
    reason: Option<String>,
    id: Option<String>,
}

impl FonnteReply {
    fn parse(value: Option<&Value>) -> Self {
        let Some(object) = value.and_then(Value::as_object) else {
            return Self { status: None, reason: None, id: None };
        };
        // Documented as a boolean; a string form is accepted so a quirky proxy can't hide it.
        let status = field(object, "status").and_then(|s| match s {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        });
        let reason = field(object, "reason")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned);
        // One id per target; we send one target. A bare scalar is accepted too.
        let id = field(object, "id")
            .and_then(|id| match id {
                Value::Array(ids) => ids.first(),
                scalar => Some(scalar),
            })
            .and_then(|id| match id {
                Value::String(s) => Some(s.trim().to_owned()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|id| !id.is_empty());
        Self { status, reason, id }
    }

    /// `status: false`: the class comes from the reason text.
    fn refusal(&self, redactor: &Redactor) -> DeliveryError {
        match &self.reason {
            Some(reason) => classify_reason(reason, redactor),
            None => DeliveryError::permanent("Fonnte refused the message without giving a reason"),
        }
    }
}

/// Maps Fonnte's `reason` to a class by case-insensitive substring, since the exact strings are
/// undocumented and drift (`providers.md` §8).
fn classify_reason(reason: &str, redactor: &Redactor) -> DeliveryError {
    let lower = reason.to_lowercase();
    let said = clean(reason, redactor);
    let has = |needle: &str| lower.contains(needle);

    // Device state is checked first: "request invalid on disconnected device" also says invalid.
    if has("disconnected") {
        DeliveryError::channel_down(format!(
            "Fonnte device is disconnected: scan the QR code in the Fonnte dashboard ({said})"
        ))
    } else if has("token") {
        // "token invalid" and "invalid token" are the known texts, but any reason about the
        // token is a credentials problem: failing each message instead would burn the batch.
        DeliveryError::channel_down(format!(
            "Fonnte rejected the device token: use the device token from the Fonnte dashboard \
             ({said})"
        ))
    } else if has("quota") {
        DeliveryError::channel_down(format!(
            "the Fonnte package quota is exhausted: top it up in the Fonnte dashboard ({said})"
        ))
    } else if has("target invalid") || has("invalid target") {
        DeliveryError::permanent(format!("Fonnte says the recipient number is invalid ({said})"))
    } else if ["input invalid", "url invalid", "file format", "file size", "json format"]
        .iter()
        .any(|needle| has(needle))
    {
        DeliveryError::permanent(format!("Fonnte rejected the request ({said})"))
    } else if has("timeout") {
        DeliveryError::transient(format!("Fonnte timed out ({said})"))
    } else {
        DeliveryError::permanent(format!("Fonnte refused the message: {said}"))
    }
}

/// Maps a non-2xx reply to a [`DeliveryError`].
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    reply: &FonnteReply,
    redactor: &Redactor,
) -> DeliveryError {
    let said = match &reply.reason {
        Some(reason) => clean(reason, redactor),
        None => clean(body, redactor),
    };
    let detail = if said.is_empty() {
        format!("Fonnte answered HTTP {}", status.as_u16())
    } else {
        format!("Fonnte answered HTTP {}: {said}", status.as_u16())
    };
    match status.as_u16() {
        // A Fonnte refusal that happens to ride a 4xx is still classified by what it says, with
        // or without its `status: false`: a 400 saying "token invalid" is the token's fault and
        // would fail every message of the batch for good if read as the message's.
        400..=428 | 430..=499 if reply.status != Some(true) && reply.reason.is_some() => {
            reply.refusal(redactor)
        }
        // The device token is the only credential: one that is refused is refused for every
        // message, so the channel rests instead of failing each of them.
        401 | 403 => DeliveryError::channel_down(format!(
            "Fonnte rejected the device token (HTTP {}): use the device token from the Fonnte \
             dashboard; {detail}",
            status.as_u16()
        )),
        code => http::by_status(code, headers, detail),
    }
}

#[cfg(test)]
mod tests {

    use std::time::Duration;

    use serde_json::json;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::channels::test_support::{
        client, closed_port, endless_server, outcome, reply_with, timeout_client, whatsapp_message,
        Case, FormIs,
    };

    const TOKEN: &str = "fonnte-secret-7a6b5c4dX9";
    const BODY: &str = "Tagihan Rp 150.000 jatuh tempo 5 Mei & mohon dibayar";

    fn channel(api_base: &str) -> FonnteChannel {
        FonnteChannel::new(
            FonnteConfig { token: Secret::new(TOKEN), api_base: api_base.to_owned() },
            client(),
        )
    }

    fn message() -> OutboundMessage {
        whatsapp_message(BODY)
    }

    fn queued(id: &Value) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({
            "detail": "success! message in queue",
            "id": [id],
            "process": "pending",
            "requestid": 2_937_124,
            "status": true,
            "target": ["6281234567890"],
        }))
    }

    /// The error a `/send` answered with `template` produces.
    async fn reply(template: ResponseTemplate) -> DeliveryError {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/send"))
            .respond_with(template)
            .expect(1)
            .mount(&server)
            .await;
        let err = channel(&server.uri()).send(&message()).await.expect_err("the reply is an error");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(TOKEN), "the token leaked: {shown}");
        assert!(!shown.contains("/send"), "the URL leaked: {shown}");
        err
    }

    #[tokio::test]
    async fn the_request_is_a_form_post_to_send_with_the_raw_token_and_the_digits() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/send"))
            .and(header("authorization", TOKEN))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .and(FormIs::new(&[
                ("target", "6281234567890"),
                ("message", BODY),
                ("countryCode", "62"),
            ]))
            .respond_with(queued(&json!("80367170")))
            .expect(1)
            .mount(&server)
            .await;

        let receipt = channel(&server.uri()).send(&message()).await.expect("Fonnte queued it");

        assert_eq!(receipt.provider_message_id.as_deref(), Some("80367170"));
    }

    #[tokio::test]
    async fn a_media_url_is_sent_as_the_url_field() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/send"))
            .and(header("authorization", TOKEN))
            .and(FormIs::new(&[
                ("target", "6281234567890"),
                ("message", BODY),
                ("countryCode", "62"),
                ("url", "https://example.com/invoice.pdf?id=7&v=2"),
            ]))
            .respond_with(queued(&json!("80367171")))
            .expect(1)
            .mount(&server)
            .await;
        let mut msg = message();
        msg.media_url = Some("https://example.com/invoice.pdf?id=7&v=2".to_owned());

        let receipt = channel(&server.uri()).send(&msg).await.expect("Fonnte queued it");

        assert_eq!(receipt.provider_message_id.as_deref(), Some("80367171"));
    }

    #[tokio::test]
    async fn a_capitalized_status_and_a_numeric_id_are_read() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({ "Status": true, "Id": [80_367_172, 80_367_173] })),
            )
            .mount(&server)
            .await;

        let receipt = channel(&format!("{}/", server.uri()))
            .send(&message())
            .await
            .expect("Fonnte queued it");

        assert_eq!(receipt.provider_message_id.as_deref(), Some("80367172"));
    }

    #[tokio::test]
    async fn status_true_without_an_id_is_still_success() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "status": true })))
            .mount(&server)
            .await;

        let receipt = channel(&server.uri()).send(&message()).await.expect("Fonnte queued it");

        assert_eq!(receipt.provider_message_id, None);
    }

    #[test]
    fn the_status_flag_is_a_boolean_or_its_spelling_as_text() {
        let status = |v: Value| FonnteReply::parse(Some(&v)).status;
        assert_eq!(status(json!({"status": true})), Some(true));
        assert_eq!(status(json!({"status": " TRUE "})), Some(true));
        assert_eq!(status(json!({"Status": "false"})), Some(false));
        assert_eq!(status(json!({"status": "maybe"})), None);
        assert_eq!(status(json!({"status": 1})), None);
        assert_eq!(status(json!("ok")), None);
    }

    #[test]
    fn recipients_become_bare_digits_or_nothing() {
        assert_eq!(phone_digits("6281234567890").as_deref(), Some("6281234567890"));
        assert_eq!(phone_digits(" +6281234567890 ").as_deref(), Some("6281234567890"));
        assert_eq!(phone_digits("6281,6282"), None);
        assert_eq!(phone_digits("6281|Budi"), None);
        assert_eq!(phone_digits(""), None);
    }

    #[tokio::test]
    async fn a_recipient_that_is_not_digits_is_permanent_without_calling_fonnte() {
        let mut msg = message();
        msg.recipient = "6281234567890,6289999999999".to_owned();
        // An unroutable base proves no request is attempted.
        let err = channel(&format!("http://127.0.0.1:{}", closed_port()))
            .send(&msg)
            .await
            .expect_err("not one number");
        assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn an_empty_token_takes_the_channel_down_without_calling_fonnte() {
        let channel = FonnteChannel::new(
            FonnteConfig {
                token: Secret::new(" "),
                api_base: format!("http://127.0.0.1:{}", closed_port()),
            },
            client(),
        );
        let err = channel.send(&message()).await.expect_err("no token");
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
    }

    #[test]
    fn replies_are_classified_by_status_flag_reason_text_and_http_status() {
        let redactor = Redactor::new().secret(&Secret::new(TOKEN));
        let none: &[(&str, &str)] = &[];
        let r12: &[(&str, &str)] = &[("Retry-After", "12")];
        let refused =
            |reason: &str| json!({"reason": reason, "requestid": 1, "status": false}).to_string();
        let cases: Vec<Case> = vec![
            (
                200,
                refused("token invalid"),
                none,
                "channel_down",
                "Fonnte rejected the device token",
                None,
            ),
            (
                200,
                json!({"Status": false, "Reason": "Invalid Token"}).to_string(),
                none,
                "channel_down",
                "(Invalid Token)",
                None,
            ),
            (
                200,
                refused("request invalid on disconnected device"),
                none,
                "channel_down",
                "Fonnte device is disconnected: scan the QR code in the Fonnte dashboard",
                None,
            ),
            (200, refused("insufficient quota"), none, "channel_down", "quota is exhausted", None),
            (
                200,
                refused("target invalid"),
                none,
                "permanent",
                "recipient number is invalid (target invalid)",
                None,
            ),
            (
                200,
                refused("input invalid"),
                none,
                "permanent",
                "rejected the request (input invalid)",
                None,
            ),
            (200, refused("url invalid"), none, "permanent", "(url invalid)", None),
            (
                200,
                refused("file format not supported"),
                none,
                "permanent",
                "(file format not supported)",
                None,
            ),
            (
                200,
                refused("file size must under 4MB"),
                none,
                "permanent",
                "(file size must under 4MB)",
                None,
            ),
            (200, refused("JSON format invalid"), none, "permanent", "(JSON format invalid)", None),
            (200, refused("request timeout"), none, "transient", "Fonnte timed out", None),
            (
                200,
                refused("something new went wrong"),
                none,
                "permanent",
                "refused the message: something new",
                None,
            ),
            (
                200,
                json!({"status": false}).to_string(),
                none,
                "permanent",
                "without giving a reason",
                None,
            ),
            (
                200,
                json!({"status": "false", "reason": "target invalid"}).to_string(),
                none,
                "permanent",
                "target invalid",
                None,
            ),
            (
                200,
                refused(&format!("unknown device {TOKEN}")),
                none,
                "permanent",
                "unknown device [redacted]",
                None,
            ),
            (
                200,
                "<html>maintenance</html>".into(),
                none,
                "transient",
                "Fonnte answered HTTP 200 without a status: <html>maintenance</html>",
                None,
            ),
            (
                200,
                json!({"detail": "queued"}).to_string(),
                none,
                "transient",
                "without a status",
                None,
            ),
            (200, String::new(), none, "transient", "with an empty body", None),
            (
                500,
                "Internal Server Error".into(),
                none,
                "transient",
                "HTTP 500: Internal Server Error",
                None,
            ),
            (503, String::new(), none, "transient", "Fonnte answered HTTP 503", None),
            (429, String::new(), r12, "rate_limited", "HTTP 429", Some(12)),
            (
                429,
                refused("token invalid"),
                r12,
                "rate_limited",
                "HTTP 429: token invalid",
                Some(12),
            ),
            (
                404,
                "<html>Not Found</html>".into(),
                none,
                "permanent",
                "HTTP 404: <html>Not Found</html>",
                None,
            ),
            // A Fonnte refusal that rides a 4xx is still classified by its reason.
            (401, refused("token invalid"), none, "channel_down", "device token", None),
            // ... without its status flag too.
            (
                400,
                json!({"reason": "invalid token"}).to_string(),
                none,
                "channel_down",
                "Fonnte rejected the device token: use the device token",
                None,
            ),
            (
                400,
                json!({"reason": "target invalid"}).to_string(),
                none,
                "permanent",
                "recipient number is invalid",
                None,
            ),
            // A 401 or 403 without a reason is the token too, not the message.
            (
                401,
                format!("Unauthorized {TOKEN}"),
                none,
                "channel_down",
                "Fonnte rejected the device token (HTTP 401): use the device token from the \
                 Fonnte dashboard; Fonnte answered HTTP 401: Unauthorized [redacted]",
                None,
            ),
            (403, String::new(), none, "channel_down", "(HTTP 403)", None),
            // A reason beside `status: true` on a 4xx is not a refusal of Fonnte's own.
            (
                400,
                json!({"status": true, "reason": "token invalid"}).to_string(),
                none,
                "permanent",
                "Fonnte answered HTTP 400: token invalid",
                None,
            ),
        ];
        for (status, body, headers, class, contains, retry_after) in cases {
            let result = answer(&reply_with(status, &body, headers), &redactor);
            let (got, reason, wait) = outcome(&result);
            assert_eq!((got, wait), (class, retry_after), "{status} {body}: {reason}");
            assert!(reason.contains(contains), "{status} {body}: {reason}");
            assert!(!reason.contains(TOKEN), "{reason}");
        }
    }

    #[tokio::test]
    async fn a_200_that_is_a_page_an_empty_body_or_no_fonnte_json_is_transient() {
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
        let err = channel(&base).send(&message()).await.expect_err("no status");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let DeliveryError::Transient { reason, .. } = err else { panic!("{err:?}") };
        assert!(reason.starts_with("Fonnte answered HTTP 200 without a status"), "{reason}");
    }

    #[tokio::test]
    async fn a_reply_slower_than_the_client_timeout_is_transient() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(queued(&json!("1")).set_delay(Duration::from_secs(5)))
            .mount(&server)
            .await;
        let channel = FonnteChannel::new(
            FonnteConfig { token: Secret::new(TOKEN), api_base: server.uri() },
            timeout_client(),
        );
        let err = channel.send(&message()).await.expect_err("too slow");
        assert_eq!(err.to_string(), "transient: request timed out");
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_and_names_neither_url_nor_token() {
        let base = format!("http://127.0.0.1:{}", closed_port());
        let err = channel(&base).send(&message()).await.expect_err("nothing listens there");
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, DeliveryError::Transient { .. }), "{shown}");
        assert!(!shown.contains(TOKEN) && !shown.contains("127.0.0.1"), "{shown}");
    }

    #[tokio::test]
    async fn an_unparseable_api_base_takes_the_channel_down() {
        let err = channel("not a url").send(&message()).await.expect_err("no endpoint");
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
    }

    #[test]
    fn the_provider_name_is_fonnte() {
        assert_eq!(channel("http://127.0.0.1:1").provider(), "fonnte");
    }
}
