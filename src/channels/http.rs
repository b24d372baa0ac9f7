//! What the HTTP adapters share: the endpoint under a configured base URL, a credential as a
//! header, a reply read up to a bound, and the classification tail every provider ends with.
//!
//! Nothing here formats a URL or a `reqwest::Error` (whose `Display` includes the URL): Telegram
//! puts its token in the path.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::{clean, snippet, DeliveryError};
use crate::secret::{Redactor, Secret};

/// The most of a reply body that is read. Past it the connection is dropped: a success is a few
/// hundred bytes, an error page a few KiB, and a proxy or a wrong base URL that streams forever
/// must not grow memory.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Longest provider message id kept; real ones are under 100 characters.
const MAX_ID_CHARS: usize = 200;

/// `base` with `segments` appended. Pushing segments (rather than formatting a string)
/// percent-encodes them and copes with a trailing slash or a path prefix in `base`. `what` names
/// the setting in the error, e.g. "the Twilio API base URL".
pub fn endpoint(base: &str, segments: &[&str], what: &str) -> Result<Url, DeliveryError> {
    let bad_base = || DeliveryError::channel_down(format!("{what} is not a valid URL"));
    let mut url = Url::parse(base.trim()).map_err(|_| bad_base())?;
    url.path_segments_mut().map_err(|()| bad_base())?.pop_if_empty().extend(segments);
    Ok(url)
}

/// A credential as a header value marked sensitive (so no `Debug` shows it). `what` names it in
/// the error: an empty or unsendable credential takes the whole channel down.
pub fn secret_header(
    secret: &Secret,
    what: &str,
) -> Result<reqwest::header::HeaderValue, DeliveryError> {
    let raw = secret.expose().trim();
    if raw.is_empty() {
        return Err(DeliveryError::channel_down(format!("no {what} is configured")));
    }
    let mut value = reqwest::header::HeaderValue::from_str(raw).map_err(|_| {
        DeliveryError::channel_down(format!(
            "the {what} contains characters that cannot go in an HTTP header"
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Classifies a reqwest error (no usable response) without ever printing its URL.
pub fn transport_error(err: &reqwest::Error) -> DeliveryError {
    let what = if err.is_timeout() {
        "request timed out"
    } else if err.is_connect() {
        "could not connect to the provider"
    } else if err.is_body() || err.is_decode() {
        "the provider's reply could not be read"
    } else {
        "the request to the provider failed"
    };
    DeliveryError::transient(what)
}

/// Parses a `Retry-After` header given in seconds.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A provider's reply: status, headers and at most [`MAX_REPLY_BYTES`] of its body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as text (invalid UTF-8 replaced), cut at [`MAX_REPLY_BYTES`].
    pub body: String,
    /// Whether the body went on past [`MAX_REPLY_BYTES`] (the rest was never read).
    pub truncated: bool,
}

impl Reply {
    /// Reads `response` chunk by chunk and stops at [`MAX_REPLY_BYTES`], dropping the
    /// connection. A body that fails to arrive (reset, timeout) is a transient failure.
    pub async fn read(mut response: reqwest::Response) -> Result<Self, DeliveryError> {
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut bytes: Vec<u8> = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&e))? {
            let room = MAX_REPLY_BYTES - bytes.len();
            if chunk.len() > room {
                bytes.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = String::from_utf8_lossy(&bytes).into_owned();
        Ok(Self { status, headers, body, truncated })
    }

    /// The body as JSON, when it is JSON (a truncated body never is).
    pub fn json(&self) -> Option<Value> {
        if self.truncated {
            return None;
        }
        serde_json::from_str(&self.body).ok()
    }

    /// The reply's first bytes as a reason: one line, credentials removed, then cut.
    pub fn said(&self, redactor: &Redactor) -> String {
        clean(&self.body, redactor)
    }

    /// A 2xx that is not the provider's success (a proxy's HTML page, a wrong base URL, an
    /// empty body, an error object): nothing proves the message was taken, so it is worth
    /// another attempt, and after the last one the loop fails it rather than losing it silently.
    pub fn unproven(&self, provider: &str, expected: &str, redactor: &Redactor) -> DeliveryError {
        let said = self.said(redactor);
        let reason = if said.is_empty() {
            format!(
                "{provider} answered HTTP {} with an empty body instead of {expected}",
                self.status.as_u16()
            )
        } else {
            format!("{provider} answered HTTP {} without {expected}: {said}", self.status.as_u16())
        };
        DeliveryError::Transient { reason, retry_after: retry_after(&self.headers) }
    }
}

/// The class of a reply no provider-specific rule claimed: 429 asks us to slow down, another
/// 4xx will fail the same way again, a redirect is the base URL's mistake and takes the channel
/// down (see [`redirected`]), anything else (5xx, an odd 1xx) may heal by itself.
pub fn by_status(status: u16, headers: &HeaderMap, detail: String) -> DeliveryError {
    match status {
        429 => DeliveryError::RateLimited { reason: detail, retry_after: retry_after(headers) },
        400..=499 => DeliveryError::permanent(detail),
        300..=399 => redirected(status, headers, &detail),
        _ => DeliveryError::Transient { reason: detail, retry_after: retry_after(headers) },
    }
}

/// A redirect, which the provider client never follows ([`client`]): the same redirect meets
/// every message, so the channel rests until the base URL points where the redirect does.
fn redirected(status: u16, headers: &HeaderMap, detail: &str) -> DeliveryError {
    let target = redirect_target(headers);
    DeliveryError::channel_down(format!(
        "the provider answered HTTP {status}, a redirect{target}; redirects are not followed \
         (one would drop or resend the message, or carry the credentials elsewhere): set the \
         provider's base URL to the address it points to; {detail}"
    ))
}

/// Where a redirect points, as a reason may name it: " to <origin>", " to another path on the
/// same server", or nothing when the reply names no usable target. Only the origin: a path or a
/// query can carry a token (Telegram's path and a heartbeat URL's do).
pub fn redirect_target(headers: &HeaderMap) -> String {
    let location = headers.get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok());
    match location.map(|l| Url::parse(l.trim())) {
        Some(Ok(url)) if url.has_host() => format!(" to {}", url.origin().ascii_serialization()),
        Some(Err(url::ParseError::RelativeUrlWithoutBase)) => {
            " to another path on the same server".to_string()
        }
        _ => String::new(),
    }
}

/// The HTTP client every provider adapter shares. It follows no redirect: a 301, 302 or 303
/// turns the POST into a GET without its body, a 307 or 308 to another host drops the
/// credentials, and either way the message is lost or the failure misnamed. The reply comes back
/// as it is and [`by_status`] names it.
pub fn client(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("reminderctl/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
}

/// A provider's message id as the outbox keeps it: trimmed, bounded and redacted (the id comes
/// from the same reply an echoing proxy could fill with the request).
pub fn provider_id(raw: &str, redactor: &Redactor) -> Option<String> {
    let id = raw.trim();
    (!id.is_empty()).then(|| snippet(&redactor.redact(id), MAX_ID_CHARS))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::channels::test_support::{client, endless_server};

    async fn reply_to(template: ResponseTemplate) -> Reply {
        let server = MockServer::start().await;
        Mock::given(method("GET")).respond_with(template).mount(&server).await;
        let response = client().get(server.uri()).send().await.expect("the mock answers");
        Reply::read(response).await.expect("the body is readable")
    }

    #[tokio::test]
    async fn a_small_body_is_read_whole() {
        let reply = reply_to(ResponseTemplate::new(201).set_body_string("{\"sid\":\"SM1\"}")).await;
        assert_eq!(reply.status.as_u16(), 201);
        assert_eq!(reply.body, "{\"sid\":\"SM1\"}");
        assert!(!reply.truncated);
        assert_eq!(reply.json(), Some(serde_json::json!({"sid": "SM1"})));
    }

    #[tokio::test]
    async fn a_body_of_exactly_the_limit_is_whole_and_one_byte_more_is_cut() {
        let reply =
            reply_to(ResponseTemplate::new(200).set_body_string("a".repeat(MAX_REPLY_BYTES))).await;
        assert_eq!((reply.body.len(), reply.truncated), (MAX_REPLY_BYTES, false));

        let reply =
            reply_to(ResponseTemplate::new(200).set_body_string("a".repeat(MAX_REPLY_BYTES + 1)))
                .await;
        assert_eq!((reply.body.len(), reply.truncated), (MAX_REPLY_BYTES, true));
    }

    #[tokio::test]
    async fn a_reply_of_a_few_dozen_kib_is_read_whole() {
        // Twilio echoes the message's text (up to 1,600 characters) in its Message resource,
        // and a proxy's error page runs to a few KiB: neither may be cut.
        let big = format!("{{\"sid\":\"SM1\",\"body\":\"{}\"}}", "x".repeat(32 * 1024));
        let reply = reply_to(ResponseTemplate::new(201).set_body_string(big.clone())).await;
        assert_eq!((reply.body.len(), reply.truncated), (big.len(), false));
        assert_eq!(
            reply.json().and_then(|v| v["sid"].as_str().map(str::to_owned)),
            Some("SM1".into())
        );
    }

    #[tokio::test]
    async fn a_reply_cut_off_mid_body_is_transient_and_says_it_could_not_be_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 8192];
                let _ = socket.read(&mut request).await;
                let head = b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{\"sid\":";
                let _ = socket.write_all(head).await;
                // Dropped here: the connection closes 92 bytes short.
            }
        });
        let response = client().get(&base).send().await.expect("the head arrives");
        let err = Reply::read(response).await.expect_err("the body is short");
        assert_eq!(err.to_string(), "transient: the provider's reply could not be read");
    }

    #[tokio::test]
    async fn a_cut_json_body_is_not_json() {
        let big = format!("{{\"sid\":\"SM1\",\"pad\":\"{}\"}}", "x".repeat(MAX_REPLY_BYTES));
        let reply = reply_to(ResponseTemplate::new(201).set_body_string(big)).await;
        assert!(reply.truncated);
        assert_eq!(reply.json(), None);
    }

    #[tokio::test]
    async fn an_endless_body_is_read_up_to_the_limit_and_the_connection_dropped() {
        let (base, hung_up) = endless_server().await;
        let started = Instant::now();
        let response = client().get(&base).send().await.expect("the server answers");
        let reply = Reply::read(response).await.expect("the first 64 KiB arrive");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!((reply.body.len(), reply.truncated), (MAX_REPLY_BYTES, true));
        // Not reading further is not enough: the connection must be closed, or the server's
        // writes would only stall on a full socket buffer.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !hung_up.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the connection was kept open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn the_status_tail_is_rate_limited_permanent_or_transient() {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().expect("a header value"));
        for (status, expected) in [
            (429, "rate limited"),
            (400, "permanent"),
            (404, "permanent"),
            (499, "permanent"),
            (500, "transient"),
            (503, "transient"),
            (102, "transient"),
            (300, "channel down"),
            (302, "channel down"),
            (399, "channel down"),
        ] {
            let err = by_status(status, &headers, format!("HTTP {status}"));
            assert!(err.to_string().starts_with(expected), "{status}: {err}");
            match err {
                DeliveryError::RateLimited { retry_after, .. }
                | DeliveryError::Transient { retry_after, .. } => {
                    assert_eq!(retry_after, Some(Duration::from_secs(7)), "{status}");
                }
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_and_takes_the_channel_down_naming_only_its_origin() {
        let server = MockServer::start().await;
        let moved = format!("{}/moved/bot123:secret/sendMessage?token=abc", server.uri());
        Mock::given(method("POST"))
            .and(wiremock::matchers::path("/moved/bot123:secret/sendMessage"))
            .respond_with(ResponseTemplate::new(201).set_body_string("{\"sid\":\"SM1\"}"))
            .mount(&server)
            .await;
        for (n, (status, location)) in [
            (301, moved.as_str()),
            (302, moved.as_str()),
            (307, moved.as_str()),
            (308, moved.as_str()),
            (308, "/moved/bot123:secret/sendMessage"),
            (303, "https://user:pw@provider.example:8443/x?token=abc"),
            (302, "about:blank"),
        ]
        .into_iter()
        .enumerate()
        {
            let template = ResponseTemplate::new(status).insert_header("location", location);
            let path = format!("/send/{n}");
            Mock::given(method("POST"))
                .and(wiremock::matchers::path(path.as_str()))
                .respond_with(template)
                .mount(&server)
                .await;
            let url = format!("{}{path}", server.uri());
            let response = client().post(url).body("To=1&Body=hi").send().await.expect("answers");
            let reply = Reply::read(response).await.expect("the body is readable");
            assert_eq!(reply.status.as_u16(), status, "{location}: the redirect was followed");
            let DeliveryError::ChannelDown { reason } =
                by_status(status, &reply.headers, format!("HTTP {status}"))
            else {
                panic!("{status}: not channel down")
            };
            assert!(
                reason.starts_with(&format!("the provider answered HTTP {status}")),
                "{reason}"
            );
            assert!(!reason.contains("secret") && !reason.contains("abc"), "{reason}");
            assert!(!reason.contains("pw") && !reason.contains("moved"), "{reason}");
            let expected = if location == "about:blank" {
                format!("HTTP {status}, a redirect; redirects are not followed")
            } else if location.starts_with('/') {
                "to another path on the same server".to_string()
            } else if status == 303 {
                "to https://provider.example:8443".to_string()
            } else {
                format!("to {}", server.uri())
            };
            assert!(reason.contains(&expected), "{reason}");
        }
        let followed = server.received_requests().await.unwrap_or_default();
        assert!(followed.iter().all(|r| r.url.path().starts_with("/send/")), "{followed:?}");
    }

    #[test]
    fn an_unproven_2xx_is_transient_with_the_replys_first_bytes_redacted() {
        let redactor = Redactor::new().secret(&Secret::new("key-0123456789"));
        let reply = Reply {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: format!("<html>\n<p>proxy says key-0123456789 {}</p>", "x".repeat(400)),
            truncated: false,
        };
        let DeliveryError::Transient { reason, .. } = reply.unproven("Twilio", "a sid", &redactor)
        else {
            panic!("not transient")
        };
        assert!(
            reason.starts_with(
                "Twilio answered HTTP 200 without a sid: <html> <p>proxy says [redacted] xxx"
            ),
            "{reason}"
        );
        assert!(reason.ends_with('…'), "{reason}");

        let empty = Reply { body: String::new(), ..reply };
        let err = empty.unproven("Twilio", "a sid", &redactor);
        assert_eq!(
            err.to_string(),
            "transient: Twilio answered HTTP 200 with an empty body instead of a sid"
        );
    }

    #[test]
    fn provider_ids_are_trimmed_bounded_and_redacted() {
        let redactor = Redactor::new().secret(&Secret::new("key-0123456789"));
        assert_eq!(provider_id(" SM1 ", &redactor).as_deref(), Some("SM1"));
        assert_eq!(provider_id("  ", &redactor), None);
        assert_eq!(provider_id("id-key-0123456789", &redactor).as_deref(), Some("id-[redacted]"));
        let long = provider_id(&"a".repeat(500), &redactor).expect("an id");
        assert_eq!(long.chars().count(), MAX_ID_CHARS + 1, "cut, with an ellipsis");
    }

    #[test]
    fn endpoints_append_segments_under_the_base_and_a_bad_base_takes_the_channel_down() {
        let url =
            endpoint("http://127.0.0.1:3000/waha/", &["api", "sendText"], "the WAHA base URL")
                .expect("a valid base");
        assert_eq!(url.as_str(), "http://127.0.0.1:3000/waha/api/sendText");
        let url = endpoint("http://127.0.0.1:3000", &["a b", "c?d"], "x").expect("a valid base");
        assert_eq!(url.path(), "/a%20b/c%3Fd");
        let err = endpoint("not a url", &["x"], "the WAHA base URL").expect_err("invalid");
        assert_eq!(err.to_string(), "channel down: the WAHA base URL is not a valid URL");
    }
}
