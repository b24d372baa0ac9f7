//! What the adapters' tests share: a loopback-only HTTP client, a port where nothing listens,
//! a WhatsApp message, and a matcher for form bodies.

use std::net::TcpListener;

use wiremock::Request;

use super::OutboundMessage;

/// A client without the system proxy: every request in the tests must stay on loopback.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("test client builds")
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
