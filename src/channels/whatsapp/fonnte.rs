//! The Fonnte adapter (Indonesian WhatsApp-Web gateway): one form-encoded `POST /send` per
//! message and the classification of Fonnte's answer into the delivery loop's error classes
//! (`providers.md` §4).
//!
//! Fonnte reports most failures as HTTP 200 with `{"status": false, "reason": "…"}`, so the
//! `status` boolean, not the HTTP code, decides success, and the reason text decides the class.
//! The device token travels only in the `Authorization` header and is scrubbed from every
//! provider text that becomes a reason.

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::channels::{
    clean, field, phone_digits, retry_after, secret_header, transport_error, Channel,
    DeliveryError, OutboundMessage, Receipt,
};
use crate::config::Secret;

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
}

impl FonnteChannel {
    /// Builds the adapter; the client is shared so connection pools and timeouts are set once.
    pub fn new(config: FonnteConfig, client: reqwest::Client) -> Self {
        Self { config, client }
    }

    fn endpoint(&self) -> Result<Url, DeliveryError> {
        // Pushing a segment (rather than formatting a string) copes with a trailing slash or a
        // path prefix in `api_base`.
        let bad_base = || DeliveryError::channel_down("the Fonnte API base URL is not a valid URL");
        let mut url = Url::parse(self.config.api_base.trim()).map_err(|_| bad_base())?;
        url.path_segments_mut().map_err(|()| bad_base())?.pop_if_empty().push("send");
        Ok(url)
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

        let status = response.status();
        let headers = response.headers().clone();
        // Unlike most providers, a 200 from Fonnte means nothing until its body says `status`,
        // so an unreadable body is a failed exchange whatever the code.
        let body = response.text().await.map_err(|e| transport_error(&e))?;
        let token = &self.config.token;

        if status.is_success() {
            let reply = FonnteReply::parse(&body);
            return match reply.status {
                Some(true) => Ok(Receipt { provider_message_id: reply.id }),
                Some(false) => Err(reply.refusal(token)),
                // Fonnte always says `status`; a 200 without it came from something in front of
                // Fonnte (a captive portal, a maintenance page), so the message never got queued.
                None => Err(DeliveryError::transient(format!(
                    "Fonnte answered HTTP {} without a status: {}",
                    status.as_u16(),
                    clean(&body, Some(token))
                ))),
            };
        }
        Err(classify(status, &headers, &body, token))
    }
}

/// The parts of Fonnte's JSON reply that decide the outcome.
struct FonnteReply {
    status: Option<bool>,
    reason: Option<String>,
    id: Option<String>,
}

impl FonnteReply {
    fn parse(body: &str) -> Self {
        let value = serde_json::from_str::<Value>(body).ok();
        let Some(object) = value.as_ref().and_then(Value::as_object) else {
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
    fn refusal(&self, token: &Secret) -> DeliveryError {
        match &self.reason {
            Some(reason) => classify_reason(reason, token),
            None => DeliveryError::permanent("Fonnte refused the message without giving a reason"),
        }
    }
}

/// Maps Fonnte's `reason` to a class by case-insensitive substring, since the exact strings are
/// undocumented and drift (`providers.md` §8).
fn classify_reason(reason: &str, token: &Secret) -> DeliveryError {
    let lower = reason.to_lowercase();
    let said = clean(reason, Some(token));
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
fn classify(status: StatusCode, headers: &HeaderMap, body: &str, token: &Secret) -> DeliveryError {
    let reply = FonnteReply::parse(body);
    let detail = match &reply.reason {
        Some(reason) => {
            format!("Fonnte answered HTTP {}: {}", status.as_u16(), clean(reason, Some(token)))
        }
        None if body.trim().is_empty() => format!("Fonnte answered HTTP {}", status.as_u16()),
        None => format!("Fonnte answered HTTP {}: {}", status.as_u16(), clean(body, Some(token))),
    };
    match status.as_u16() {
        429 => DeliveryError::RateLimited { reason: detail, retry_after: retry_after(headers) },
        // A Fonnte refusal that happens to ride a 4xx is still classified by what it says.
        400..=499 if reply.status == Some(false) && reply.reason.is_some() => reply.refusal(token),
        400..=499 => DeliveryError::permanent(detail),
        _ => DeliveryError::Transient { reason: detail, retry_after: retry_after(headers) },
    }
}

#[cfg(test)]
mod tests {

    use std::time::Duration;

    use serde_json::json;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::channels::test_support::{client, closed_port, whatsapp_message, FormIs};

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

    fn refused(reason: &str) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({
            "reason": reason,
            "requestid": 2_937_125,
            "status": false,
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

    #[tokio::test]
    async fn token_invalid_takes_the_channel_down() {
        let err = reply(refused("token invalid")).await;
        let DeliveryError::ChannelDown { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("token"), "{reason}");
    }

    #[tokio::test]
    async fn invalid_token_in_any_case_and_key_capitalization_takes_the_channel_down() {
        let err = reply(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "Status": false, "Reason": "Invalid Token" })),
        )
        .await;
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_disconnected_device_takes_the_channel_down_and_asks_for_a_qr_scan() {
        let err = reply(refused("request invalid on disconnected device")).await;
        let DeliveryError::ChannelDown { reason } = err else { panic!("{err:?}") };
        assert!(
            reason.starts_with(
                "Fonnte device is disconnected: scan the QR code in the Fonnte dashboard"
            ),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn insufficient_quota_takes_the_channel_down() {
        let err = reply(refused("insufficient quota")).await;
        let DeliveryError::ChannelDown { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("quota"), "{reason}");
    }

    #[tokio::test]
    async fn target_invalid_is_permanent() {
        let err = reply(refused("target invalid")).await;
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("target invalid"), "{reason}");
    }

    #[tokio::test]
    async fn request_bugs_input_url_file_and_json_are_permanent() {
        for said in [
            "input invalid",
            "url invalid",
            "file format not supported",
            "file size must under 4MB",
            "JSON format invalid",
        ] {
            let err = reply(refused(said)).await;
            let DeliveryError::Permanent { reason } = err else { panic!("{said}: {err:?}") };
            assert!(reason.contains(said), "{reason}");
        }
    }

    #[tokio::test]
    async fn request_timeout_is_transient() {
        let err = reply(refused("request timeout")).await;
        assert!(matches!(err, DeliveryError::Transient { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn an_unknown_reason_is_permanent_and_keeps_the_reason() {
        let err = reply(refused("something new went wrong")).await;
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("something new went wrong"), "{reason}");
    }

    #[tokio::test]
    async fn status_false_without_a_reason_is_permanent() {
        let err = reply(ResponseTemplate::new(200).set_body_json(json!({ "status": false }))).await;
        assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_200_that_is_not_fonnte_json_is_transient() {
        let err =
            reply(ResponseTemplate::new(200).set_body_string("<html>maintenance</html>")).await;
        let DeliveryError::Transient { reason, .. } = err else { panic!("{err:?}") };
        assert!(reason.contains("without a status"), "{reason}");
    }

    #[tokio::test]
    async fn a_5xx_is_transient() {
        let err = reply(ResponseTemplate::new(500).set_body_string("Internal Server Error")).await;
        assert!(matches!(err, DeliveryError::Transient { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_5xx_without_a_body_is_transient() {
        let err = reply(ResponseTemplate::new(503)).await;
        assert!(matches!(err, DeliveryError::Transient { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn http_429_is_rate_limited_and_honours_retry_after() {
        let err = reply(ResponseTemplate::new(429).insert_header("Retry-After", "12")).await;
        let DeliveryError::RateLimited { retry_after, .. } = err else { panic!("{err:?}") };
        assert_eq!(retry_after, Some(Duration::from_secs(12)));
    }

    #[tokio::test]
    async fn another_non_200_is_permanent_with_a_snippet_of_the_body() {
        let err = reply(ResponseTemplate::new(404).set_body_string("<html>Not Found</html>")).await;
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("HTTP 404") && reason.contains("Not Found"), "{reason}");
    }

    #[tokio::test]
    async fn a_fonnte_refusal_on_a_4xx_is_still_classified_by_its_reason() {
        let err = reply(
            ResponseTemplate::new(401)
                .set_body_json(json!({ "status": false, "reason": "token invalid" })),
        )
        .await;
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_token_echoed_in_the_reason_is_scrubbed() {
        let err = reply(refused(&format!("unknown device {TOKEN}"))).await;
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("[redacted]"), "{reason}");
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
