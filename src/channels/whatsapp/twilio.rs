//! The Twilio `WhatsApp` adapter: turns an [`OutboundMessage`] into one `Messages.json` POST and
//! classifies Twilio's answer into the delivery loop's error classes (`providers.md` §1).
//!
//! Success is a 2xx carrying the created Message resource, recognised by its non-empty `sid`;
//! any other 2xx (a proxy's page, a wrong `TWILIO_API_BASE`, an empty body) is transient, so a
//! misconfiguration fails reminders visibly instead of recording them as sent. Reasons carry
//! Twilio's `code` and `message` but never the request URL, and never the auth token, in clear or
//! inside an echoed Basic `Authorization` header.

use async_trait::async_trait;
use reqwest::header::{HeaderMap, ACCEPT};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use crate::channels::http::{self, provider_id, retry_after, transport_error, Reply};
use crate::channels::{clean, Channel, DeliveryError, OutboundMessage, Receipt};
use crate::secret::{Redactor, Secret};

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
    redactor: Redactor,
}

impl TwilioChannel {
    /// Builds the adapter; the client is shared so connection pools and timeouts are set once.
    pub fn new(config: TwilioConfig, client: reqwest::Client) -> Self {
        let endpoint = http::endpoint(
            &config.api_base,
            &["2010-04-01", "Accounts", config.account_sid.trim(), "Messages.json"],
            "the Twilio API base URL",
        );
        let redactor = Redactor::new().basic_auth(&config.account_sid, &config.auth_token);
        Self { config, client, endpoint, redactor }
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
        answer(&Reply::read(response).await?, &self.redactor)
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

/// The part of the created Message resource that proves Twilio took the message.
#[derive(Deserialize)]
struct MessageResource {
    sid: Option<String>,
}

/// What a reply means: a receipt for a 2xx with a `sid`, an error for everything else.
fn answer(reply: &Reply, redactor: &Redactor) -> Result<Receipt, DeliveryError> {
    if !reply.status.is_success() {
        return Err(classify(reply.status, &reply.headers, &reply.body, redactor));
    }
    let resource = reply.json().and_then(|v| MessageResource::deserialize(v).ok());
    match resource.and_then(|r| r.sid).and_then(|sid| provider_id(&sid, redactor)) {
        Some(sid) => Ok(Receipt { provider_message_id: Some(sid) }),
        None => Err(reply.unproven("Twilio", "a Message resource with a sid", redactor)),
    }
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
    fn describe(&self, status: StatusCode, redactor: &Redactor) -> String {
        let mut out = match self.code {
            Some(code) => format!("Twilio error {code} (HTTP {})", status.as_u16()),
            None => format!("Twilio answered HTTP {}", status.as_u16()),
        };
        if let Some(message) = &self.message {
            out.push_str(": ");
            out.push_str(&clean(message, redactor));
        }
        out
    }
}

/// Maps a non-2xx reply to a [`DeliveryError`]: Twilio's `code` first, the HTTP status second.
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    redactor: &Redactor,
) -> DeliveryError {
    let error = TwilioError::parse(body);
    let detail = error.describe(status, redactor);
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
        code => http::by_status(code, headers, detail),
    }
}

#[cfg(test)]
mod tests {

    use std::time::Duration;

    use serde_json::json;
    use wiremock::matchers::{basic_auth, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::channels::test_support::{
        basic, client, closed_port, endless_server, outcome, reply, reply_with, timeout_client,
        whatsapp_message, Case, FormIs,
    };

    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const TOKEN: &str = "twilio-auth-token-9f8e7d6c";
    const MESSAGES_PATH: &str =
        "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

    fn config(api_base: &str, from: &str) -> TwilioConfig {
        TwilioConfig {
            account_sid: SID.to_owned(),
            auth_token: Secret::new(TOKEN),
            from: from.to_owned(),
            api_base: api_base.to_owned(),
        }
    }

    fn channel(api_base: &str, from: &str) -> TwilioChannel {
        TwilioChannel::new(config(api_base, from), client())
    }

    fn message() -> OutboundMessage {
        whatsapp_message("Tagihan Rp 150.000 jatuh tempo 5 Mei & mohon dibayar")
    }

    async fn reply_from_server(template: ResponseTemplate) -> DeliveryError {
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
        ResponseTemplate::new(status).set_body_string(error_body(status, code, message))
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

    #[test]
    fn only_a_2xx_carrying_a_sid_is_success() {
        let redactor = Redactor::new().basic_auth(SID, &Secret::new(TOKEN));
        for (status, body, sid) in [
            (201, r#"{"sid":"SM1","status":"queued"}"#, Some("SM1")),
            (200, r#"{"sid":" SM2 "}"#, Some("SM2")),
            (201, r#"{"sid":""}"#, None),
            (201, r#"{"sid":17}"#, None),
            (201, r#"{"status":"queued"}"#, None),
            (200, "<html><body>Welcome to nginx!</body></html>", None),
            (200, "", None),
            (200, r#"{"code":20003,"message":"Authenticate","status":401}"#, None),
            (204, "", None),
        ] {
            match (answer(&reply(status, body), &redactor), sid) {
                (Ok(receipt), Some(sid)) => {
                    assert_eq!(receipt.provider_message_id.as_deref(), Some(sid), "{body}");
                }
                (Err(DeliveryError::Transient { reason, .. }), None) => {
                    assert!(
                        reason.starts_with(&format!("Twilio answered HTTP {status}")),
                        "{reason}"
                    );
                }
                (other, _) => panic!("{status} {body}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_2xx_that_is_a_page_an_empty_body_or_an_error_is_transient_and_quotes_the_reply() {
        for (body, quoted) in [
            ("<html><title>Login - Corporate Proxy</title></html>", "Corporate Proxy"),
            ("", "empty body"),
            (r#"{"code":20003,"message":"Authenticate"}"#, "Authenticate"),
        ] {
            let err = reply_from_server(ResponseTemplate::new(200).set_body_string(body)).await;
            let DeliveryError::Transient { reason, .. } = err else { panic!("{body}: {err:?}") };
            assert!(reason.contains(quoted), "{reason}");
        }
    }

    #[tokio::test]
    async fn an_endless_reply_is_cut_and_transient_within_seconds() {
        let (base, _) = endless_server().await;
        let started = std::time::Instant::now();
        let err = channel(&base, "+14155238886").send(&message()).await.expect_err("no sid");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let DeliveryError::Transient { reason, .. } = err else { panic!("{err:?}") };
        assert!(reason.starts_with("Twilio answered HTTP 200 without"), "{reason}");
        assert!(reason.chars().count() < 500, "{reason}");
    }

    #[tokio::test]
    async fn a_reply_slower_than_the_client_timeout_is_transient() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(201)
                    .set_body_json(json!({"sid": "SMlate"}))
                    .set_delay(Duration::from_secs(5)),
            )
            .mount(&server)
            .await;
        let channel = TwilioChannel::new(config(&server.uri(), "+14155238886"), timeout_client());
        let err = channel.send(&message()).await.expect_err("too slow");
        assert_eq!(err.to_string(), "transient: request timed out");
    }

    #[tokio::test]
    async fn an_echoed_basic_authorization_header_is_redacted_from_the_reason() {
        let header = format!("Basic {}", basic(&format!("{SID}:{TOKEN}")));
        let err =
            reply_from_server(twilio_error(400, 21999, &format!("bad header {header}"))).await;
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("bad header Basic [redacted]"), "{reason}");
        assert!(!reason.contains(&basic(&format!("{SID}:{TOKEN}"))[..12]), "{reason}");
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

    fn error_body(status: u16, code: i64, message: &str) -> String {
        json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        })
        .to_string()
    }

    #[test]
    fn error_replies_are_classified_by_twilios_code_first_and_the_http_status_second() {
        let redactor = Redactor::new().basic_auth(SID, &Secret::new(TOKEN));
        let none: &[(&str, &str)] = &[];
        let retry = |secs: &'static str| -> Vec<(&'static str, &'static str)> {
            vec![("Retry-After", secs)]
        };
        let (r7, r30, r5) = (retry("7"), retry("30"), retry("5"));
        let cases: Vec<Case> = vec![
            (401, error_body(401, 20003, "Authenticate"), none, "channel_down",
             "Twilio rejected the credentials (20003); Twilio error 20003 (HTTP 401): Authenticate", None),
            (401, "Unauthorized".into(), none, "channel_down", "credentials (HTTP 401)", None),
            (429, error_body(429, 20429, "Too Many Requests"), &r7, "rate_limited", "20429", Some(7)),
            (429, String::new(), &r30, "rate_limited", "HTTP 429", Some(30)),
            (429, error_body(429, 20429, "Too Many Requests"), none, "rate_limited", "20429", None),
            (400, error_body(400, 21211, "The 'To' number is not a valid phone number."), none,
             "permanent", "Twilio error 21211 (HTTP 400): The 'To' number is not a valid", None),
            (400, error_body(400, 21408, "Permission to send has not been enabled"), none,
             "channel_down", "geo permissions", None),
            (400, error_body(400, 21608, "The number is unverified"), none, "channel_down",
             "trial account", None),
            (400, error_body(400, 21610, "Attempt to send to unsubscribed recipient"), none,
             "permanent", "opted out (STOP)", None),
            (400, error_body(400, 21611, "This 'From' number has exceeded the queue"), none,
             "rate_limited", "queue is full", None),
            (400, error_body(400, 63016, "Failed to send freeform message"), none, "permanent",
             "approved template", None),
            (400, error_body(400, 63018, "Rate limit exceeded"), none, "rate_limited",
             "WhatsApp rate limit", None),
            // A table code arriving with a 5xx still follows the table, not the status.
            (503, error_body(503, 21610, "unsubscribed"), none, "permanent", "opted out", None),
            (400, error_body(400, 21617, "The body exceeds the 1600 character limit"), none,
             "permanent", "Twilio error 21617 (HTTP 400): The body exceeds", None),
            (400, r#"{"code":"21211","message":"as a string"}"#.into(), none, "permanent",
             "the recipient number is invalid", None),
            (404, "<html>nope</html>".into(), none, "permanent", "Twilio answered HTTP 404", None),
            (500, error_body(500, 20500, "Internal Server Error"), none, "transient", "20500", None),
            (502, String::new(), none, "transient", "Twilio answered HTTP 502", None),
            (503, String::new(), &r5, "transient", "HTTP 503", Some(5)),
        ];
        for (status, body, headers, class, contains, retry_after) in cases {
            let result = answer(&reply_with(status, &body, headers), &redactor);
            let (got, reason, wait) = outcome(&result);
            assert_eq!((got, wait), (class, retry_after), "{status} {body}: {reason}");
            assert!(reason.contains(contains), "{status} {body}: {reason}");
        }
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
