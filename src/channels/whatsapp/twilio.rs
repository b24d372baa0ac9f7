//! The Twilio `WhatsApp` adapter: turns an [`OutboundMessage`] into one `Messages.json` POST and
//! classifies Twilio's answer into the delivery loop's error classes (`providers.md` §1).
//!
//! Reasons carry Twilio's `code` and `message` (they hold no secrets) but never the request URL
//! and never the auth token.

use async_trait::async_trait;
use reqwest::header::{HeaderMap, ACCEPT};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::channels::{
    redact, retry_after, snippet, transport_error, Channel, DeliveryError, OutboundMessage,
    Receipt, MAX_REASON_CHARS,
};
use crate::config::Secret;

/// Credentials and addresses for the Twilio 2010-04-01 Messages API.
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// Account SID (`AC…`), the Basic-auth user and part of the URL path.
    pub account_sid: String,
    /// Auth Token, the Basic-auth password.
    pub auth_token: Secret,
    /// The `WhatsApp` sender, `+14155238886` or `whatsapp:+14155238886`.
    pub from: String,
    /// `https://api.twilio.com` in production; a loopback mock in tests.
    pub api_base: String,
}

/// Sends `WhatsApp` messages through Twilio Programmable Messaging.
pub struct TwilioChannel {
    config: TwilioConfig,
    client: reqwest::Client,
    /// The Messages endpoint, built once: parsing it per message showed in delivery profiles.
    endpoint: Result<Url, DeliveryError>,
}

impl TwilioChannel {
    /// Builds the adapter; the client is shared so connection pools and timeouts are set once.
    pub fn new(config: TwilioConfig, client: reqwest::Client) -> Self {
        let endpoint = Self::endpoint(&config);
        Self { config, client, endpoint }
    }

    fn endpoint(config: &TwilioConfig) -> Result<Url, DeliveryError> {
        // Pushing segments (rather than formatting a string) percent-encodes the SID and copes
        // with a trailing slash or a path prefix in `api_base`.
        let bad_base = || DeliveryError::channel_down("the Twilio API base URL is not a valid URL");
        let mut url = Url::parse(config.api_base.trim()).map_err(|_| bad_base())?;
        url.path_segments_mut().map_err(|()| bad_base())?.pop_if_empty().extend([
            "2010-04-01",
            "Accounts",
            config.account_sid.trim(),
            "Messages.json",
        ]);
        Ok(url)
    }
}

#[async_trait]
impl Channel for TwilioChannel {
    fn provider(&self) -> &'static str {
        "twilio"
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        let to = whatsapp_address(&message.recipient)
            .ok_or_else(|| DeliveryError::permanent("the WhatsApp recipient is empty"))?;
        let from = whatsapp_address(&self.config.from).ok_or_else(|| {
            DeliveryError::channel_down("the Twilio WhatsApp sender (from) is empty")
        })?;
        let url = self.endpoint.clone()?;

        let mut form: Vec<(&str, &str)> =
            vec![("To", to.as_str()), ("From", from.as_str()), ("Body", message.body.as_str())];
        if let Some(media) = &message.media_url {
            form.push(("MediaUrl", media.as_str()));
        }

        let response = self
            .client
            .post(url)
            .basic_auth(&self.config.account_sid, Some(self.config.auth_token.expose()))
            .header(ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;

        let status = response.status();
        let headers = response.headers().clone();
        // The body may be unreadable even when the status is fine; the status decides success.
        let body = response.text().await;

        if status.is_success() {
            let sid = body.ok().as_deref().and_then(message_sid);
            if sid.is_none() {
                // Accepted but unreadable: failing here would make the loop send it twice.
                tracing::warn!(
                    outbox_id = message.id,
                    http_status = status.as_u16(),
                    "Twilio accepted the message but its reply carried no sid"
                );
            }
            return Ok(Receipt { provider_message_id: sid });
        }

        let body = body.map_err(|e| transport_error(&e))?;
        Err(classify(status, &headers, &body, &self.config.auth_token))
    }
}

/// `whatsapp:+<digits>` from `628…`, `+628…`, `whatsapp:628…` or `whatsapp:+628…`.
fn whatsapp_address(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let bare = trimmed.strip_prefix("whatsapp:").unwrap_or(trimmed).trim();
    let number = bare.strip_prefix('+').unwrap_or(bare).trim();
    if number.is_empty() {
        None
    } else {
        Some(format!("whatsapp:+{number}"))
    }
}

fn message_sid(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let sid = value.get("sid")?.as_str()?.trim();
    (!sid.is_empty()).then(|| sid.to_owned())
}

/// The `code`/`message` pair of Twilio's error object, when the reply is one.
struct TwilioError {
    code: Option<i64>,
    message: Option<String>,
}

impl TwilioError {
    fn parse(body: &str) -> Self {
        let value = serde_json::from_str::<Value>(body).ok();
        let field = |name: &str| value.as_ref().and_then(|v| v.get(name));
        // Documented as an integer; a string form is accepted so a quirky proxy can't hide it.
        let code = field("code")
            .and_then(|c| c.as_i64().or_else(|| c.as_str().and_then(|s| s.trim().parse().ok())));
        let message = field("message")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned);
        Self { code, message }
    }

    /// `Twilio error 21211 (HTTP 400): The 'To' number …`
    fn describe(&self, status: StatusCode, token: &Secret) -> String {
        let mut out = match self.code {
            Some(code) => format!("Twilio error {code} (HTTP {})", status.as_u16()),
            None => format!("Twilio answered HTTP {}", status.as_u16()),
        };
        if let Some(message) = &self.message {
            out.push_str(": ");
            out.push_str(&redact(&snippet(message, MAX_REASON_CHARS), Some(token)));
        }
        out
    }
}

/// Maps a non-2xx reply to a [`DeliveryError`]: Twilio's `code` first, the HTTP status second.
fn classify(status: StatusCode, headers: &HeaderMap, body: &str, token: &Secret) -> DeliveryError {
    let error = TwilioError::parse(body);
    let detail = error.describe(status, token);
    let rate_limited =
        |reason: String| DeliveryError::RateLimited { reason, retry_after: retry_after(headers) };

    match error.code {
        Some(20003) => {
            return DeliveryError::channel_down(format!(
                "Twilio rejected the credentials (20003); {detail}"
            ))
        }
        Some(20429) => {
            return rate_limited(format!("too many concurrent requests to Twilio; {detail}"))
        }
        Some(21211) => {
            return DeliveryError::permanent(format!("the recipient number is invalid; {detail}"))
        }
        Some(21408) => {
            return DeliveryError::channel_down(format!(
                "the destination region is not enabled in Twilio's geo permissions; {detail}"
            ))
        }
        Some(21608) => {
            return DeliveryError::channel_down(format!(
                "the Twilio trial account cannot send to unverified numbers; {detail}"
            ))
        }
        Some(21610) => {
            return DeliveryError::permanent(format!("the recipient opted out (STOP); {detail}"))
        }
        Some(21611) => return rate_limited(format!("the Twilio sender's queue is full; {detail}")),
        Some(63016) => {
            return DeliveryError::permanent(format!(
                "outside the 24-hour WhatsApp window: an approved template is required; {detail}"
            ))
        }
        Some(63018) => {
            return rate_limited(format!("the WhatsApp rate limit was exceeded; {detail}"))
        }
        _ => {}
    }

    match status.as_u16() {
        401 => DeliveryError::channel_down(format!(
            "Twilio rejected the credentials (HTTP 401); {detail}"
        )),
        429 => rate_limited(detail),
        400..=499 => DeliveryError::permanent(detail),
        _ => DeliveryError::Transient { reason: detail, retry_after: retry_after(headers) },
    }
}

#[cfg(test)]
mod tests {

    use std::time::Duration;

    use serde_json::json;
    use wiremock::matchers::{basic_auth, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::channels::test_support::{client, closed_port, whatsapp_message, FormIs};

    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const TOKEN: &str = "twilio-auth-token-9f8e7d6c";
    const MESSAGES_PATH: &str =
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

    fn channel(api_base: &str, from: &str) -> TwilioChannel {
        TwilioChannel::new(
            TwilioConfig {
                account_sid: SID.to_owned(),
                auth_token: Secret::new(TOKEN),
                from: from.to_owned(),
                api_base: api_base.to_owned(),
            },
            client(),
        )
    }

    fn message() -> OutboundMessage {
        whatsapp_message("Tagihan Rp 150.000 jatuh tempo 5 Mei & mohon dibayar")
    }

    async fn reply(template: ResponseTemplate) -> DeliveryError {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .respond_with(template)
            .expect(1)
            .mount(&server)
            .await;
        let result = channel(&server.uri(), "+14155238886").send(&message()).await;
        let err = result.expect_err("the reply is an error");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(TOKEN), "the auth token leaked: {shown}");
        assert!(!shown.contains("/2010-04-01/"), "the URL leaked: {shown}");
        err
    }

    fn twilio_error(status: u16, code: i64, message: &str) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_json(json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        }))
    }

    #[tokio::test]
    async fn the_request_is_a_basic_auth_form_post_to_the_account_messages_resource() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .and(basic_auth(SID, TOKEN))
            .and(header("accept", "application/json"))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .and(FormIs::new(&[
                ("To", "whatsapp:+6281234567890"),
                ("From", "whatsapp:+14155238886"),
                ("Body", "Tagihan Rp 150.000 jatuh tempo 5 Mei & mohon dibayar"),
            ]))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({
                "sid": "SM0123456789abcdef0123456789abcdef",
                "status": "queued",
                "error_code": null,
            })))
            .expect(1)
            .mount(&server)
            .await;

        let receipt = channel(&server.uri(), "+14155238886")
            .send(&message())
            .await
            .expect("Twilio accepted the message");

        assert_eq!(
            receipt.provider_message_id.as_deref(),
            Some("SM0123456789abcdef0123456789abcdef")
        );
    }

    #[tokio::test]
    async fn a_media_url_is_sent_as_media_url_and_a_prefixed_sender_is_kept_as_is() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .and(FormIs::new(&[
                ("To", "whatsapp:+6281234567890"),
                ("From", "whatsapp:+14155238886"),
                ("Body", "Tagihan Rp 150.000 jatuh tempo 5 Mei & mohon dibayar"),
                ("MediaUrl", "https://example.com/invoice.pdf?id=7&v=2"),
            ]))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": "SMmedia"})))
            .expect(1)
            .mount(&server)
            .await;
        let mut msg = message();
        msg.media_url = Some("https://example.com/invoice.pdf?id=7&v=2".to_owned());

        let receipt = channel(&server.uri(), "whatsapp:+14155238886")
            .send(&msg)
            .await
            .expect("Twilio accepted the message");

        assert_eq!(receipt.provider_message_id.as_deref(), Some("SMmedia"));
    }

    #[tokio::test]
    async fn a_trailing_slash_on_the_api_base_does_not_double_the_slash() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": "SMslash"})))
            .expect(1)
            .mount(&server)
            .await;

        let receipt = channel(&format!("{}/", server.uri()), "+14155238886")
            .send(&message())
            .await
            .expect("Twilio accepted the message");

        assert_eq!(receipt.provider_message_id.as_deref(), Some("SMslash"));
    }

    #[tokio::test]
    async fn any_2xx_is_success_even_when_the_reply_has_no_sid() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_string("not json"))
            .mount(&server)
            .await;

        let receipt = channel(&server.uri(), "+14155238886")
            .send(&message())
            .await
            .expect("a 2xx means Twilio took the message");

        assert_eq!(receipt.provider_message_id, None);
    }

    #[test]
    fn whatsapp_addresses_gain_the_prefix_and_plus_only_when_missing() {
        assert_eq!(whatsapp_address("6281234567890").as_deref(), Some("whatsapp:+6281234567890"));
        assert_eq!(whatsapp_address("+6281234567890").as_deref(), Some("whatsapp:+6281234567890"));
        assert_eq!(
            whatsapp_address("whatsapp:6281234567890").as_deref(),
            Some("whatsapp:+6281234567890")
        );
        assert_eq!(
            whatsapp_address(" whatsapp:+14155238886 ").as_deref(),
            Some("whatsapp:+14155238886")
        );
        assert_eq!(whatsapp_address("whatsapp:+"), None);
        assert_eq!(whatsapp_address(""), None);
    }

    #[tokio::test]
    async fn an_empty_recipient_is_permanent_without_calling_twilio() {
        let mut msg = message();
        msg.recipient = "  ".to_owned();
        // An unroutable base proves no request is attempted.
        let err = channel(&format!("http://127.0.0.1:{}", closed_port()), "+14155238886")
            .send(&msg)
            .await
            .expect_err("nothing to send to");
        assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn code_20003_means_the_credentials_are_wrong_and_the_channel_is_down() {
        let err = reply(twilio_error(401, 20003, "Authenticate")).await;
        let DeliveryError::ChannelDown { reason } = err else { panic!("{err:?}") };
        assert!(reason.starts_with("Twilio rejected the credentials (20003)"), "{reason}");
        assert!(reason.contains("Authenticate"), "{reason}");
    }

    #[tokio::test]
    async fn http_401_without_a_twilio_body_also_means_the_channel_is_down() {
        let err = reply(ResponseTemplate::new(401).set_body_string("Unauthorized")).await;
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn code_20429_is_rate_limited_and_honours_retry_after() {
        let err =
            reply(twilio_error(429, 20429, "Too Many Requests").insert_header("Retry-After", "7"))
                .await;
        let DeliveryError::RateLimited { reason, retry_after } = err else { panic!("{err:?}") };
        assert_eq!(retry_after, Some(Duration::from_secs(7)));
        assert!(reason.contains("20429"), "{reason}");
    }

    #[tokio::test]
    async fn http_429_without_a_code_is_rate_limited_and_honours_retry_after() {
        let err = reply(ResponseTemplate::new(429).insert_header("Retry-After", "30")).await;
        let DeliveryError::RateLimited { retry_after, .. } = err else { panic!("{err:?}") };
        assert_eq!(retry_after, Some(Duration::from_secs(30)));
    }

    #[tokio::test]
    async fn http_429_without_retry_after_leaves_the_wait_to_the_loop() {
        let err = reply(twilio_error(429, 20429, "Too Many Requests")).await;
        let DeliveryError::RateLimited { retry_after, .. } = err else { panic!("{err:?}") };
        assert_eq!(retry_after, None);
    }

    #[tokio::test]
    async fn code_21211_an_invalid_number_is_permanent_and_keeps_twilios_message() {
        let err = reply(twilio_error(
            400,
            21211,
            "The 'To' number whatsapp:+6281234567890 is not a valid phone number.",
        ))
        .await;
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("21211"), "{reason}");
        assert!(reason.contains("is not a valid phone number"), "{reason}");
    }

    #[tokio::test]
    async fn code_21408_a_disabled_region_takes_the_channel_down() {
        let err =
            reply(twilio_error(400, 21408, "Permission to send an SMS has not been enabled")).await;
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn code_21608_a_trial_account_takes_the_channel_down() {
        let err = reply(twilio_error(400, 21608, "The number is unverified")).await;
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn code_21610_an_opted_out_recipient_is_permanent() {
        let err =
            reply(twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")).await;
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("opted out"), "{reason}");
    }

    #[tokio::test]
    async fn code_21611_a_full_sender_queue_is_rate_limited() {
        let err = reply(twilio_error(
            400,
            21611,
            "This 'From' number has exceeded the maximum number of queued messages",
        ))
        .await;
        assert!(matches!(err, DeliveryError::RateLimited { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn code_63016_outside_the_whatsapp_window_is_permanent() {
        let err = reply(twilio_error(400, 63016, "Failed to send freeform message")).await;
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("template"), "{reason}");
    }

    #[tokio::test]
    async fn code_63018_the_whatsapp_rate_limit_is_rate_limited() {
        let err = reply(twilio_error(400, 63018, "Rate limit exceeded")).await;
        assert!(matches!(err, DeliveryError::RateLimited { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn the_code_wins_over_the_http_status() {
        // A table code arriving with a 5xx still follows the table, not the status.
        let err = reply(twilio_error(503, 21610, "unsubscribed")).await;
        assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn another_4xx_code_is_permanent_with_its_code_and_message() {
        let err = reply(twilio_error(
            400,
            21617,
            "The concatenated message body exceeds the 1600 character limit",
        ))
        .await;
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("21617"), "{reason}");
        assert!(reason.contains("1600 character limit"), "{reason}");
    }

    #[tokio::test]
    async fn a_4xx_without_a_twilio_body_is_permanent() {
        let err = reply(ResponseTemplate::new(404).set_body_string("<html>nope</html>")).await;
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("404"), "{reason}");
    }

    #[tokio::test]
    async fn a_5xx_is_transient() {
        let err = reply(twilio_error(500, 20500, "Internal Server Error")).await;
        assert!(matches!(err, DeliveryError::Transient { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_5xx_without_a_body_is_transient() {
        let err = reply(ResponseTemplate::new(502)).await;
        assert!(matches!(err, DeliveryError::Transient { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_and_names_neither_url_nor_token() {
        let base = format!("http://127.0.0.1:{}", closed_port());
        let err = channel(&base, "+14155238886")
            .send(&message())
            .await
            .expect_err("nothing listens there");
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, DeliveryError::Transient { .. }), "{shown}");
        assert!(
            !shown.contains(TOKEN) && !shown.contains(SID) && !shown.contains("127.0.0.1"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn an_unparseable_api_base_takes_the_channel_down() {
        let err =
            channel("not a url", "+14155238886").send(&message()).await.expect_err("no endpoint");
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
    }

    #[test]
    fn the_provider_name_is_twilio() {
        assert_eq!(channel("http://127.0.0.1:1", "+1").provider(), "twilio");
    }
}
