//! What the adapters' tests share: a loopback-only HTTP client, a port where nothing listens,
//! a WhatsApp message, a matcher for form bodies, and a server whose reply never ends.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;
use wiremock::Request;

use super::http::Reply;
use super::{DeliveryError, OutboundMessage, Receipt};

/// The adapters' client as a pass builds it, without the system proxy: every request in the
/// tests must stay on loopback.
pub fn client() -> reqwest::Client {
    super::http::client(Duration::from_secs(30)).no_proxy().build().expect("test client builds")
}

/// [`client`] with requests that time out after 300 ms.
pub fn timeout_client() -> reqwest::Client {
    super::http::client(Duration::from_millis(300)).no_proxy().build().expect("test client builds")
}

/// A reply as [`Reply::read`] produces it, for the adapters' pure `answer` functions.
pub fn reply(status: u16, body: &str) -> Reply {
    reply_with(status, body, &[])
}

/// [`reply`] with headers.
pub fn reply_with(status: u16, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            HeaderValue::from_str(value).expect("a header value"),
        );
    }
    Reply {
        status: StatusCode::from_u16(status).expect("a status code"),
        headers: map,
        body: body.to_owned(),
        truncated: false,
    }
}

/// One row of an adapter's classification table: the reply's status, body and headers, then the
/// expected class (as [`outcome`] names it), a part of the reason, and `retry_after` in seconds.
pub type Case<'a> = (u16, String, &'a [(&'a str, &'a str)], &'a str, &'a str, Option<u64>);

/// An outcome as `(class, reason or provider id, retry_after in seconds)`, for tables. The
/// classes are `sent`, `transient`, `rate_limited`, `permanent` and `channel_down`.
pub fn outcome(result: &Result<Receipt, DeliveryError>) -> (&'static str, String, Option<u64>) {
    let secs = |d: &Option<Duration>| d.map(|d| d.as_secs());
    match result {
        Ok(receipt) => ("sent", receipt.provider_message_id.clone().unwrap_or_default(), None),
        Err(DeliveryError::Transient { reason, retry_after }) => {
            ("transient", reason.clone(), secs(retry_after))
        }
        Err(DeliveryError::RateLimited { reason, retry_after }) => {
            ("rate_limited", reason.clone(), secs(retry_after))
        }
        Err(DeliveryError::Permanent { reason }) => ("permanent", reason.clone(), None),
        Err(DeliveryError::ChannelDown { reason }) => ("channel_down", reason.clone(), None),
    }
}

/// Standard base64 with padding, as an echoed `Authorization: Basic …` or AUTH line carries it.
pub fn basic(text: &str) -> String {
    crate::secret::base64(text.as_bytes())
}

/// A loopback port with nothing listening on it, for connection-refused tests.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local addr").port()
}

/// A WhatsApp message to a normalized Indonesian number.
pub fn whatsapp_message(body: &str) -> OutboundMessage {
    OutboundMessage {
        id: 42,
        recipient: "6281234567890".to_owned(),
        subject: Some("ignored by WhatsApp".to_owned()),
        body: body.to_owned(),
        media_url: None,
    }
}

/// Matches a form-urlencoded body with exactly these fields, in any order.
pub struct FormIs(Vec<(String, String)>);

impl FormIs {
    pub fn new(pairs: &[(&str, &str)]) -> Self {
        let mut pairs: Vec<_> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        pairs.sort();
        Self(pairs)
    }
}

impl wiremock::Match for FormIs {
    fn matches(&self, request: &Request) -> bool {
        let mut got: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        got.sort();
        got == self.0
    }
}

/// A loopback HTTP server that answers every request with a 200 header and then body bytes
/// forever, as a misbehaving proxy might. The flag turns true once a client hangs up on it.
pub async fn endless_server() -> (String, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let hung_up = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&hung_up);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let flag = Arc::clone(&flag);
            tokio::spawn(async move {
                let mut request = [0u8; 8192];
                let _ = socket.read(&mut request).await;
                let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>";
                let mut failed = socket.write_all(head).await.is_err();
                let chunk = [b'x'; 8192];
                while !failed {
                    failed = socket.write_all(&chunk).await.is_err();
                }
                flag.store(true, Ordering::SeqCst);
            });
        }
    });
    (base, hung_up)
}
