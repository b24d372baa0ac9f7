//! The WAHA adapter (self-hosted WhatsApp HTTP API, devlikeapro/waha): one `sendText` or
//! `sendFile` POST per message, optionally preceded by a `check-exists` lookup, with WAHA's
//! answers classified into the delivery loop's error classes (`providers.md` §3).
//!
//! WAHA's success body is the engine's own message object (WEBJS, NOWEB and GOWS differ), so
//! success is any 2xx JSON object that is not one of WAHA's (`NestJS`) error shapes, and the id
//! is read best-effort from it. A 2xx that is no JSON object (a proxy's page, an empty body, a
//! wrong `WAHA_BASE_URL`) or that is an error object is transient: nothing proves the message
//! was taken. The API key travels only in the `X-Api-Key` header, never in a URL, and is
//! scrubbed from every provider text that becomes a reason.

use async_trait::async_trait;
use reqwest::header::{HeaderMap, ACCEPT};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde_json::{json, Map, Value};

use crate::channels::http::{
    self, provider_id, retry_after, secret_header, transport_error, Reply,
};
use crate::channels::{
    clean, phone_digits, snippet, Channel, DeliveryError, OutboundMessage, Receipt,
};
use crate::secret::{Redactor, Secret};

/// A session status is one short word; anything longer is not WAHA talking.
const MAX_STATUS_CHARS: usize = 40;

/// Where the WAHA server is and which of its sessions sends.
#[derive(Debug, Clone)]
pub struct WahaConfig {
    /// The server root, e.g. `http://localhost:3000`; a path prefix behind a proxy is kept.
    pub base_url: String,
    /// Sent as `X-Api-Key` when set (`WAHA_API_KEY` on the server side).
    pub api_key: Option<Secret>,
    /// The WAHA session (the paired phone); WAHA Core only has `default`.
    pub session: String,
    /// Ask `contacts/check-exists` before each send, because WAHA answers 201 even for a number
    /// that is not on WhatsApp.
    pub check_number: bool,
}

/// Sends `WhatsApp` messages through a WAHA server.
pub struct WahaChannel {
    config: WahaConfig,
    client: reqwest::Client,
    redactor: Redactor,
}

impl WahaChannel {
    /// Builds the adapter; the client is shared so connection pools and timeouts are set once.
    pub fn new(config: WahaConfig, client: reqwest::Client) -> Self {
        let redactor = match &config.api_key {
            Some(key) => Redactor::new().secret(key),
            None => Redactor::new(),
        };
        Self { config, client, redactor }
    }

    /// The session name to send with; an empty setting means WAHA's only Core session.
    fn session(&self) -> &str {
        match self.config.session.trim() {
            "" => "default",
            name => name,
        }
    }

    fn endpoint(&self, segments: &[&str]) -> Result<Url, DeliveryError> {
        http::endpoint(&self.config.base_url, segments, "the WAHA base URL")
    }

    /// Adds `X-Api-Key` when a key is configured, marked sensitive so no `Debug` shows it.
    fn authorized(&self, request: RequestBuilder) -> Result<RequestBuilder, DeliveryError> {
        let request = request.header(ACCEPT, "application/json");
        match &self.config.api_key {
            Some(key) if !key.expose().trim().is_empty() => {
                Ok(request.header("X-Api-Key", secret_header(key, "WAHA API key")?))
            }
            _ => Ok(request),
        }
    }

    async fn exchange(&self, request: RequestBuilder) -> Result<Reply, DeliveryError> {
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        Reply::read(response).await
    }

    fn classify(&self, reply: &Reply) -> DeliveryError {
        classify(reply.status, &reply.headers, &reply.body, &self.redactor, self.session())
    }

    /// Fails with `Permanent` when WAHA says the number is not on WhatsApp; a failing check is
    /// classified like a failing send, since it reaches the same server and session.
    async fn check_exists(&self, phone: &str, outbox_id: i64) -> Result<(), DeliveryError> {
        let mut url = self.endpoint(&["api", "contacts", "check-exists"])?;
        url.query_pairs_mut().append_pair("phone", phone).append_pair("session", self.session());
        let reply = self.exchange(self.authorized(self.client.get(url))?).await?;
        if !reply.status.is_success() {
            return Err(self.classify(&reply));
        }
        let exists = reply.json().and_then(|v| v.get("numberExists")?.as_bool());
        match exists {
            Some(true) => Ok(()),
            Some(false) => Err(DeliveryError::permanent(format!(
                "{phone} is not on WhatsApp (WAHA check-exists)"
            ))),
            None => {
                // The check only guards against WAHA's silent 201 for unknown numbers; an
                // unreadable answer must not stop a message the send itself may deliver (and
                // the send's own answer is checked).
                tracing::warn!(
                    outbox_id,
                    http_status = reply.status.as_u16(),
                    "WAHA check-exists gave no readable numberExists; sending anyway"
                );
                Ok(())
            }
        }
    }
}

#[async_trait]
impl Channel for WahaChannel {
    fn provider(&self) -> &'static str {
        "waha"
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        let phone = chat_digits(&message.recipient).ok_or_else(|| {
            DeliveryError::permanent(
                "the WhatsApp recipient is not a phone number in international digits",
            )
        })?;
        let chat_id = format!("{phone}@c.us");
        // Resolve the endpoint before the check so a bad base URL never costs a request.
        let (segments, payload) = match &message.media_url {
            None => (
                ["api", "sendText"],
                json!({ "session": self.session(), "chatId": chat_id, "text": message.body }),
            ),
            Some(media) => (
                ["api", "sendFile"],
                json!({
                    "session": self.session(),
                    "chatId": chat_id,
                    "file": { "url": media },
                    "caption": message.body,
                }),
            ),
        };
        let url = self.endpoint(&segments)?;

        if self.config.check_number {
            self.check_exists(&phone, message.id).await?;
        }

        let reply = self.exchange(self.authorized(self.client.post(url))?.json(&payload)).await?;
        if !reply.status.is_success() {
            return Err(self.classify(&reply));
        }
        let receipt = accepted(&reply, &self.redactor)?;
        if receipt.provider_message_id.is_none() {
            // Engines differ and some return no id at all; the message object still proves
            // WAHA took it.
            tracing::debug!(
                outbox_id = message.id,
                http_status = reply.status.as_u16(),
                "WAHA accepted the message but its reply carried no readable id"
            );
        }
        Ok(receipt)
    }
}

/// `628…` from `628…`, `+628…` or `628…@c.us`, so a stray group id or a formatted number never
/// becomes a chat id.
fn chat_digits(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    phone_digits(trimmed.strip_suffix("@c.us").unwrap_or(trimmed))
}

/// A 2xx to a send: a receipt when the body is a message object, transient otherwise.
fn accepted(reply: &Reply, redactor: &Redactor) -> Result<Receipt, DeliveryError> {
    match reply.json() {
        Some(Value::Object(object)) if !is_error_shape(&object) => Ok(Receipt {
            provider_message_id: message_id(&Value::Object(object))
                .and_then(|id| provider_id(&id, redactor)),
        }),
        _ => Err(reply.unproven("WAHA", "a message object", redactor)),
    }
}

/// WAHA's error bodies (`NestJS`): `{"statusCode": 4xx/5xx, "message", "error"}` for string
/// errors, `{"error": …}` for object errors, `{"exception": …}` for engine failures. No engine's
/// message object carries any of these.
fn is_error_shape(object: &Map<String, Value>) -> bool {
    let present = |name: &str| object.get(name).is_some_and(|v| !v.is_null());
    let error_status = object.get("statusCode").is_some_and(|code| {
        let code = code.as_u64().or_else(|| code.as_str().and_then(|s| s.trim().parse().ok()));
        code.is_some_and(|c| c >= 400)
    });
    present("error") || present("exception") || error_status
}

/// The message id from whichever engine answered: WEBJS `id._serialized`, a plain string `id`,
/// NOWEB (Baileys) `key.id`, or WEBJS's raw `_data.id._serialized`.
fn message_id(value: &Value) -> Option<String> {
    ["/id/_serialized", "/id", "/key/id", "/_data/id/_serialized"]
        .into_iter()
        .filter_map(|pointer| value.pointer(pointer)?.as_str())
        .map(str::trim)
        .find(|id| !id.is_empty())
        .map(str::to_owned)
}

/// WAHA's own words from an error body: the engine's `exception.message` (500), the `NestJS`
/// `message` (a string, or a list for validation errors), or the object error's `error`.
fn waha_message(value: &Value) -> Option<String> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let parts: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        _ => None,
    };
    ["/exception/message", "/message", "/error"]
        .into_iter()
        .filter_map(|pointer| value.pointer(pointer).and_then(text))
        .find(|s| !s.trim().is_empty())
}

/// `WAHA answered HTTP 500: server returned error 463`
fn describe(status: StatusCode, value: Option<&Value>, body: &str, redactor: &Redactor) -> String {
    let mut out = format!("WAHA answered HTTP {}", status.as_u16());
    // A non-JSON body is usually a proxy's page; a snippet still tells the operator whose.
    let said = match value {
        Some(v) => waha_message(v),
        None => Some(body.to_owned()),
    };
    if let Some(said) = said.map(|s| clean(&s, redactor)).filter(|s| !s.is_empty()) {
        out.push_str(": ");
        out.push_str(&said);
    }
    out
}

/// Maps a non-2xx reply (to a send or to the number check) to a [`DeliveryError`].
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    redactor: &Redactor,
    session: &str,
) -> DeliveryError {
    let value = serde_json::from_str::<Value>(body).ok();
    let detail = describe(status, value.as_ref(), body, redactor);

    match status.as_u16() {
        401 | 403 => DeliveryError::channel_down(format!(
            "WAHA rejected the API key: configure the key the server was started with \
             (WAHA_API_KEY); {detail}"
        )),
        404 => DeliveryError::channel_down(format!(
            "WAHA session '{session}' was not found or is not started; {detail}"
        )),
        422 => session_not_working(value.as_ref(), headers, session, &detail, redactor),
        // WAHA enforces no rate limit itself, but a proxy in front of it may (429). A 5xx is
        // the engine or WhatsApp failing (`server returned error 463`, `no LID found`); the
        // loop's attempt cap turns a persistent one into a failure.
        code => http::by_status(code, headers, detail),
    }
}

/// 422: the session exists but is not `WORKING` (WAHA already waited ~5 s for it). Only
/// `STARTING` heals by itself; every other state, or a 422 without one (WAHA Core refusing a
/// non-`default` session), needs the operator.
fn session_not_working(
    value: Option<&Value>,
    headers: &HeaderMap,
    session: &str,
    detail: &str,
    redactor: &Redactor,
) -> DeliveryError {
    let state = value
        .and_then(|v| v.get("status"))
        .and_then(Value::as_str)
        .map(|s| snippet(&clean(s, redactor), MAX_STATUS_CHARS))
        .filter(|s| !s.is_empty());
    match state {
        Some(state) if state.eq_ignore_ascii_case("STARTING") => DeliveryError::Transient {
            reason: format!("WAHA session '{session}' is STARTING; retry shortly; {detail}"),
            retry_after: retry_after(headers),
        },
        Some(state) if state.eq_ignore_ascii_case("SCAN_QR_CODE") => {
            DeliveryError::channel_down(format!(
                "WAHA session '{session}' is {state}: the operator must re-pair the phone by \
                 scanning the QR code; {detail}"
            ))
        }
        Some(state) => DeliveryError::channel_down(format!(
            "WAHA session '{session}' is {state}, not WORKING: the operator must restart the \
             session (and re-pair it if asked); {detail}"
        )),
        None => DeliveryError::channel_down(format!(
            "WAHA refused session '{session}' (WAHA Core only allows 'default'): the operator \
             must check the session name or restart it; {detail}"
        )),
    }
}

#[cfg(test)]
mod tests {

    use std::time::Duration;

    use serde_json::json;
    use wiremock::matchers::{body_json, header, method, path, query_param};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    use super::*;
    use crate::channels::test_support::{
        client, closed_port, endless_server, outcome, reply_with, timeout_client, whatsapp_message,
        Case,
    };

    const KEY: &str = "waha-api-key-5c4b3a29";
    const BODY: &str = "Tagihan Rp 150.000 jatuh tempo 5 Mei & mohon dibayar";
    const SEND_TEXT: &str = "/api/sendText";
    const SEND_FILE: &str = "/api/sendFile";
    const CHECK: &str = "/api/contacts/check-exists";

    /// Matches a request that does not carry the named header at all.
    struct HeaderAbsent(&'static str);

    impl wiremock::Match for HeaderAbsent {
        fn matches(&self, request: &Request) -> bool {
            !request.headers.contains_key(self.0)
        }
    }

    fn config(base_url: &str) -> WahaConfig {
        WahaConfig {
            base_url: base_url.to_owned(),
            api_key: Some(Secret::new(KEY)),
            session: "default".to_owned(),
            check_number: false,
        }
    }

    fn channel(base_url: &str) -> WahaChannel {
        WahaChannel::new(config(base_url), client())
    }

    fn checking_channel(base_url: &str) -> WahaChannel {
        WahaChannel::new(WahaConfig { check_number: true, ..config(base_url) }, client())
    }

    fn message() -> OutboundMessage {
        whatsapp_message(BODY)
    }

    fn assert_nothing_leaked(err: &DeliveryError) {
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(KEY), "the API key leaked: {shown}");
        assert!(!shown.contains("/api/"), "the URL leaked: {shown}");
    }

    /// The error a `sendText` answered with `template` produces.
    async fn reply(template: ResponseTemplate) -> DeliveryError {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(SEND_TEXT))
            .respond_with(template)
            .expect(1)
            .mount(&server)
            .await;
        let err = channel(&server.uri()).send(&message()).await.expect_err("the reply is an error");
        assert_nothing_leaked(&err);
        err
    }

    /// The error a `check-exists` answered with `template` produces; the send must not happen.
    async fn check_reply(template: ResponseTemplate) -> DeliveryError {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(CHECK))
            .respond_with(template)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST")).respond_with(sent()).expect(0).mount(&server).await;
        let err =
            checking_channel(&server.uri()).send(&message()).await.expect_err("the check failed");
        assert_nothing_leaked(&err);
        err
    }

    fn not_working(state: &str) -> ResponseTemplate {
        ResponseTemplate::new(422).set_body_json(json!({
            "error": "Session status is not as expected. Try again later or restart the session",
            "session": "default",
            "status": state,
            "expected": ["WORKING"],
        }))
    }

    fn sent() -> ResponseTemplate {
        ResponseTemplate::new(201).set_body_json(json!({ "id": "sent" }))
    }

    fn engine_error(message: &str) -> ResponseTemplate {
        ResponseTemplate::new(500).set_body_json(json!({
            "statusCode": 500,
            "timestamp": "2026-05-01T08:00:00.000Z",
            "exception": { "message": message, "name": "Error", "stack": "Error: at x.js:1" },
        }))
    }

    #[tokio::test]
    async fn text_is_a_json_post_to_send_text_with_the_api_key_and_a_c_us_chat_id() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(SEND_TEXT))
            .and(header("x-api-key", KEY))
            .and(header("content-type", "application/json"))
            .and(header("accept", "application/json"))
            .and(body_json(json!({
                "session": "default",
                "chatId": "6281234567890@c.us",
                "text": BODY,
            })))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({
                "id": { "fromMe": true, "_serialized": "true_6281234567890@c.us_3EB0C0FFEE" },
                "body": BODY,
            })))
            .expect(1)
            .mount(&server)
            .await;

        let receipt = channel(&server.uri()).send(&message()).await.expect("WAHA accepted it");

        assert_eq!(
            receipt.provider_message_id.as_deref(),
            Some("true_6281234567890@c.us_3EB0C0FFEE")
        );
    }

    #[tokio::test]
    async fn media_is_a_send_file_post_with_the_url_and_the_body_as_caption() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(SEND_FILE))
            .and(header("x-api-key", KEY))
            .and(body_json(json!({
                "session": "default",
                "chatId": "6281234567890@c.us",
                "file": { "url": "https://example.com/invoice.pdf?id=7&v=2" },
                "caption": BODY,
            })))
            .respond_with(
                ResponseTemplate::new(201)
                    .set_body_json(json!({ "key": { "id": "BAE5F00D", "fromMe": true } })),
            )
            .expect(1)
            .mount(&server)
            .await;
        let mut msg = message();
        msg.media_url = Some("https://example.com/invoice.pdf?id=7&v=2".to_owned());

        let receipt = channel(&server.uri()).send(&msg).await.expect("WAHA accepted it");

        assert_eq!(receipt.provider_message_id.as_deref(), Some("BAE5F00D"));
    }

    #[tokio::test]
    async fn without_an_api_key_no_x_api_key_header_is_sent() {
        // A blank key is no key: the settings drop one, and a caller building the config by hand
        // gets the same.
        for api_key in [None, Some(Secret::new(" \t "))] {
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .and(path(SEND_TEXT))
                .and(HeaderAbsent("x-api-key"))
                .respond_with(sent())
                .expect(1)
                .mount(&server)
                .await;
            let channel =
                WahaChannel::new(WahaConfig { api_key, ..config(&server.uri()) }, client());

            channel.send(&message()).await.expect("WAHA accepted it");
        }
    }

    #[tokio::test]
    async fn the_configured_session_and_a_path_prefix_on_the_base_url_are_used() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/waha/api/sendText"))
            .and(body_json(json!({
                "session": "billing",
                "chatId": "6281234567890@c.us",
                "text": BODY,
            })))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "id": "plain-id" })))
            .expect(1)
            .mount(&server)
            .await;
        let channel = WahaChannel::new(
            WahaConfig {
                session: "billing".to_owned(),
                ..config(&format!("{}/waha/", server.uri()))
            },
            client(),
        );

        let receipt = channel.send(&message()).await.expect("WAHA accepted it");

        assert_eq!(receipt.provider_message_id.as_deref(), Some("plain-id"));
    }

    #[test]
    fn a_2xx_is_success_only_when_it_is_a_message_object_and_no_error_shape() {
        let redactor = Redactor::new().secret(&Secret::new(KEY));
        for (status, body, outcome) in [
            (
                201,
                r#"{"id":{"fromMe":true,"_serialized":"true_628@c.us_3EB0"}}"#,
                Ok(Some("true_628@c.us_3EB0")),
            ),
            (201, r#"{"key":{"id":"BAE5F00D","fromMe":true},"status":1}"#, Ok(Some("BAE5F00D"))),
            (200, r#"{"id":"gows-1","timestamp":1700000000}"#, Ok(Some("gows-1"))),
            // An engine that answers with an object but no id we know still took the message.
            (201, r#"{"ack":1,"body":"Tagihan"}"#, Ok(None)),
            (201, r#"{"statusCode":201,"id":"x"}"#, Ok(Some("x"))),
            (
                201,
                "<html><body>Welcome to nginx!</body></html>",
                Err("without a message object: <html>"),
            ),
            (201, "", Err("with an empty body")),
            (201, "not json", Err("not json")),
            (201, "[1,2]", Err("[1,2]")),
            (201, "\"queued\"", Err("queued")),
            (200, r#"{"error":"Session status is not as expected"}"#, Err("Session status")),
            (200, r#"{"statusCode":500,"message":"no LID found"}"#, Err("no LID found")),
            (200, r#"{"statusCode":"404","message":"Not Found"}"#, Err("Not Found")),
            (200, r#"{"exception":{"message":"boom"}}"#, Err("boom")),
        ] {
            match (accepted(&reply_with(status, body, &[]), &redactor), outcome) {
                (Ok(receipt), Ok(id)) => {
                    assert_eq!(receipt.provider_message_id.as_deref(), id, "{body}");
                }
                (Err(DeliveryError::Transient { reason, .. }), Err(quoted)) => {
                    assert!(
                        reason.starts_with(&format!("WAHA answered HTTP {status}")),
                        "{reason}"
                    );
                    assert!(reason.contains(quoted), "{reason}");
                }
                (got, _) => panic!("{status} {body}: {got:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_2xx_that_is_a_page_an_empty_body_or_an_error_is_transient_and_quotes_the_reply() {
        for (body, quoted) in [
            ("<html><title>Login - Corporate Proxy</title></html>", "Corporate Proxy"),
            ("", "empty body"),
            (r#"{"statusCode":500,"message":"engine crashed"}"#, "engine crashed"),
        ] {
            let err = reply(ResponseTemplate::new(201).set_body_string(body)).await;
            let DeliveryError::Transient { reason, .. } = err else { panic!("{body}: {err:?}") };
            assert!(reason.contains(quoted), "{reason}");
        }
    }

    #[tokio::test]
    async fn an_endless_reply_is_cut_and_transient_within_seconds() {
        let (base, _) = endless_server().await;
        let started = std::time::Instant::now();
        let err = channel(&base).send(&message()).await.expect_err("no message object");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let DeliveryError::Transient { reason, .. } = err else { panic!("{err:?}") };
        assert!(reason.starts_with("WAHA answered HTTP 200 without"), "{reason}");
    }

    #[tokio::test]
    async fn a_reply_slower_than_the_client_timeout_is_transient() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(sent().set_delay(Duration::from_secs(5)))
            .mount(&server)
            .await;
        let err = WahaChannel::new(config(&server.uri()), timeout_client())
            .send(&message())
            .await
            .expect_err("too slow");
        assert_eq!(err.to_string(), "transient: request timed out");
    }

    #[test]
    fn the_id_is_read_from_every_known_engine_shape_and_never_invented() {
        let id = |v: Value| message_id(&v);
        assert_eq!(id(json!({"id": {"_serialized": "webjs"}})).as_deref(), Some("webjs"));
        assert_eq!(id(json!({"id": "gows"})).as_deref(), Some("gows"));
        assert_eq!(id(json!({"key": {"id": "noweb"}})).as_deref(), Some("noweb"));
        assert_eq!(id(json!({"_data": {"id": {"_serialized": "raw"}}})).as_deref(), Some("raw"));
        assert_eq!(
            id(json!({"id": {"_serialized": " "}, "key": {"id": "next"}})).as_deref(),
            Some("next")
        );
        assert_eq!(id(json!({"id": 17})), None);
        assert_eq!(id(json!([1, 2])), None);
        assert_eq!(id(json!({})), None);
    }

    #[test]
    fn recipients_become_bare_digits_or_nothing() {
        assert_eq!(chat_digits("6281234567890").as_deref(), Some("6281234567890"));
        assert_eq!(chat_digits(" +6281234567890 ").as_deref(), Some("6281234567890"));
        assert_eq!(chat_digits("6281234567890@c.us").as_deref(), Some("6281234567890"));
        assert_eq!(chat_digits("120363@g.us"), None);
        assert_eq!(chat_digits("0812-3456"), None);
        assert_eq!(chat_digits("+"), None);
        assert_eq!(chat_digits(""), None);
    }

    #[tokio::test]
    async fn a_recipient_that_is_not_digits_is_permanent_without_calling_waha() {
        let mut msg = message();
        msg.recipient = "  ".to_owned();
        // An unroutable base proves no request is attempted.
        let err = checking_channel(&format!("http://127.0.0.1:{}", closed_port()))
            .send(&msg)
            .await
            .expect_err("nothing to send to");
        assert!(matches!(err, DeliveryError::Permanent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn the_number_check_asks_check_exists_and_then_sends() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(CHECK))
            .and(query_param("phone", "6281234567890"))
            .and(query_param("session", "default"))
            .and(header("x-api-key", KEY))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "numberExists": true,
                "chatId": "6281234567890@c.us",
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(SEND_TEXT))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "id": "sent" })))
            .expect(1)
            .mount(&server)
            .await;

        let receipt = checking_channel(&server.uri()).send(&message()).await.expect("sent");

        assert_eq!(receipt.provider_message_id.as_deref(), Some("sent"));
    }

    #[tokio::test]
    async fn a_number_that_is_not_on_whatsapp_is_permanent_and_nothing_is_sent() {
        let err =
            check_reply(ResponseTemplate::new(200).set_body_json(json!({ "numberExists": false })))
                .await;
        let DeliveryError::Permanent { reason } = err else { panic!("{err:?}") };
        assert!(reason.contains("6281234567890 is not on WhatsApp"), "{reason}");
    }

    #[tokio::test]
    async fn an_unreadable_number_check_does_not_block_the_send() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(CHECK))
            .respond_with(ResponseTemplate::new(200).set_body_string("<html></html>"))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(SEND_TEXT))
            .respond_with(sent())
            .expect(1)
            .mount(&server)
            .await;

        checking_channel(&server.uri()).send(&message()).await.expect("sent anyway");
    }

    #[tokio::test]
    async fn without_the_number_check_check_exists_is_never_called() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200))
            .expect(0)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(SEND_TEXT))
            .respond_with(sent())
            .expect(1)
            .mount(&server)
            .await;

        channel(&server.uri()).send(&message()).await.expect("sent");
    }

    #[tokio::test]
    async fn a_number_check_answered_401_takes_the_channel_down() {
        let err = check_reply(ResponseTemplate::new(401).set_body_json(json!({
            "message": "Unauthorized", "statusCode": 401,
        })))
        .await;
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_number_check_answered_404_takes_the_channel_down() {
        let err = check_reply(ResponseTemplate::new(404).set_body_json(json!({
            "statusCode": 404, "message": "Session not found", "error": "Not Found",
        })))
        .await;
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_number_check_on_a_session_that_needs_the_qr_code_takes_the_channel_down() {
        let err = check_reply(not_working("SCAN_QR_CODE")).await;
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_number_check_answered_500_is_transient() {
        let err = check_reply(engine_error("no LID found")).await;
        assert!(matches!(err, DeliveryError::Transient { .. }), "{err:?}");
    }

    fn waiting(state: &str) -> String {
        json!({
            "error": "Session status is not as expected. Try again later or restart the session",
            "session": "default",
            "status": state,
            "expected": ["WORKING"],
        })
        .to_string()
    }

    #[test]
    fn error_replies_are_classified_by_status_session_state_and_wahas_message() {
        let redactor = Redactor::new().secret(&Secret::new(KEY));
        let none: &[(&str, &str)] = &[];
        let r9: &[(&str, &str)] = &[("Retry-After", "9")];
        let engine = |m: &str| {
            json!({
                "statusCode": 500,
                "timestamp": "2026-05-01T08:00:00.000Z",
                "exception": { "message": m, "name": "Error", "stack": "Error: at x.js:1" },
            })
            .to_string()
        };
        let cases: Vec<Case> = vec![
            (401, r#"{"message":"Unauthorized","statusCode":401}"#.into(), none, "channel_down",
             "WAHA rejected the API key", None),
            (403, String::new(), none, "channel_down", "(WAHA_API_KEY); WAHA answered HTTP 403",
             None),
            (404, r#"{"statusCode":404,"message":"Session not found","error":"Not Found"}"#.into(),
             none, "channel_down",
             "session 'default' was not found or is not started; WAHA answered HTTP 404: Session not found",
             None),
            (422, waiting("STARTING"), none, "transient", "is STARTING; retry shortly", None),
            (422, waiting("SCAN_QR_CODE"), none, "channel_down", "is SCAN_QR_CODE: the operator must re-pair", None),
            (422, waiting("FAILED"), none, "channel_down", "is FAILED, not WORKING: the operator must restart", None),
            (422, waiting("STOPPED"), none, "channel_down", "is STOPPED, not WORKING", None),
            (422, waiting("HIBERNATING"), none, "channel_down", "is HIBERNATING", None),
            (422, r#"{"statusCode":422,"message":"WAHA Core support only 'default' session."}"#.into(),
             none, "channel_down", "WAHA Core only allows 'default'", None),
            (500, engine("server returned error 463"), none, "transient",
             "WAHA answered HTTP 500: server returned error 463", None),
            (502, String::new(), none, "transient", "WAHA answered HTTP 502", None),
            (429, String::new(), r9, "rate_limited", "HTTP 429", Some(9)),
            (400, r#"{"statusCode":400,"message":["chatId must be a string","text should not be empty"]}"#.into(),
             none, "permanent", "chatId must be a string; text should not be empty", None),
            (500, engine(&format!("bad header X-Api-Key: {KEY}")), none, "transient",
             "bad header X-Api-Key: [redacted]", None),
            (502, format!("<html>proxy: x-api-key={KEY}</html>"), none, "transient",
             "<html>proxy: x-api-key=[redacted]</html>", None),
        ];
        for (status, body, headers, class, contains, retry_after) in cases {
            let r = reply_with(status, &body, headers);
            let result = Err(classify(r.status, &r.headers, &r.body, &redactor, "default"));
            let (got, reason, wait) = outcome(&result);
            assert_eq!((got, wait), (class, retry_after), "{status} {body}: {reason}");
            assert!(reason.contains(contains), "{status} {body}: {reason}");
            assert!(!reason.contains(KEY) && !reason.contains("x.js"), "{reason}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_and_names_neither_url_nor_key() {
        let base = format!("http://127.0.0.1:{}", closed_port());
        let err =
            checking_channel(&base).send(&message()).await.expect_err("nothing listens there");
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, DeliveryError::Transient { .. }), "{shown}");
        assert!(!shown.contains(KEY) && !shown.contains("127.0.0.1"), "{shown}");
    }

    #[tokio::test]
    async fn an_unparseable_base_url_takes_the_channel_down() {
        let err = channel("not a url").send(&message()).await.expect_err("no endpoint");
        assert!(matches!(err, DeliveryError::ChannelDown { .. }), "{err:?}");
    }

    #[test]
    fn the_provider_name_is_waha() {
        assert_eq!(channel("http://127.0.0.1:1").provider(), "waha");
    }
}
