//! Credentials, and their removal from text that came back from the outside world.
//!
//! [`Secret`] wraps a credential so that `Debug` and `Display` never show it. [`Redactor`] takes
//! credentials out of provider text (an error page quoting the request, a proxy echoing the
//! `Authorization` header, an SMTP server quoting the AUTH exchange) before that text becomes a
//! reason, a log line or an outbox row. A leaf module: it knows nothing of channels or config.

use std::fmt;

/// A credential. Printing it, by `{}` or `{:?}`, shows `[redacted]`; only `expose` gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The raw value, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// What a redacted credential becomes.
pub const REDACTED: &str = "[redacted]";

/// Values at least this long (in characters) are removed wherever they occur. Shorter ones are
/// too likely to be ordinary text (`MAIL_PASSWORD=p` must not eat every "p"), so they are removed
/// only where they stand as a whole field; see [`Redactor`].
pub const MIN_FREE_CHARS: usize = 8;

/// Removes a channel's credentials from text, in every form they travel in.
///
/// Rules:
/// - Each credential is recognised as itself (trimmed), as its base64 (with and without `=`
///   padding: SMTP AUTH LOGIN sends the password so), form-urlencoded and JSON-escaped.
/// - [`Redactor::basic_auth`] adds the base64 of `user:password`, which an echoed HTTP Basic
///   `Authorization` header carries; [`Redactor::smtp_auth`] adds AUTH PLAIN's base64 of
///   `\0user\0password`.
/// - A form of [`MIN_FREE_CHARS`] or more is removed wherever it occurs, overlapping occurrences
///   included, so no fragment of any occurrence survives.
/// - A shorter form is removed only as a whole field: preceded by the start of the text,
///   whitespace, a quote or one of `= : ( [ { < , ; &`, and followed by the end, whitespace, a
///   quote, one of `& , ; ) ] } > @`, or a sentence mark (`. : ! ?`) that ends the text or a word.
///   So `password=p`, `"token":"p"`, `Authorization: p` and `smtp://u:p@host` lose it, and
///   "happy" keeps its letters.
/// - Every removed run becomes one `[redacted]`.
///
/// Redact before cutting text short: a cut through a credential would otherwise leave its first
/// part, which no longer matches.
#[derive(Clone, Default)]
pub struct Redactor {
    forms: Vec<Form>,
}

#[derive(Clone, PartialEq, Eq)]
struct Form {
    text: String,
    whole_field_only: bool,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} forms)", self.forms.len())
    }
}

impl Redactor {
    /// A redactor that removes nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a credential. An empty one adds nothing.
    #[must_use]
    pub fn secret(self, secret: &Secret) -> Self {
        self.value(secret.expose())
    }

    /// Adds a credential given as plain text (a part of a token that is a secret by itself).
    #[must_use]
    pub fn value(mut self, value: &str) -> Self {
        let value = value.trim();
        if value.is_empty() {
            return self;
        }
        self.push(value.to_owned());
        self.push_base64(value.as_bytes());
        self.push(url::form_urlencoded::byte_serialize(value.as_bytes()).collect());
        if let Ok(quoted) = serde_json::to_string(value) {
            self.push(quoted[1..quoted.len() - 1].to_owned());
        }
        self
    }

    /// Adds `user:password` as HTTP Basic auth carries it (base64), plus the password itself.
    #[must_use]
    pub fn basic_auth(mut self, user: &str, password: &Secret) -> Self {
        if password.expose().trim().is_empty() {
            return self;
        }
        for (user, password) in variants(user, password.expose()) {
            self.push_base64(format!("{user}:{password}").as_bytes());
        }
        self.secret(password)
    }

    /// Adds SMTP AUTH PLAIN's `\0user\0password` (base64), plus the password itself, whose
    /// base64 is what AUTH LOGIN sends.
    #[must_use]
    pub fn smtp_auth(mut self, user: &str, password: &Secret) -> Self {
        if password.expose().trim().is_empty() {
            return self;
        }
        for (user, password) in variants(user, password.expose()) {
            self.push_base64(format!("\0{user}\0{password}").as_bytes());
        }
        self.secret(password)
    }

    /// Whether there is nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// `text` with every occurrence of every form replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for form in &self.forms {
            let mut from = 0;
            while let Some(found) = text[from..].find(form.text.as_str()) {
                let start = from + found;
                let end = start + form.text.len();
                if !form.whole_field_only || is_whole_field(text, start, end) {
                    spans.push((start, end));
                }
                // One character on, so overlapping occurrences ("abcabc" in "abcabcabc") are
                // found too and their union leaves no fragment behind.
                from = start + text[start..].chars().next().map_or(1, char::len_utf8);
            }
        }
        if spans.is_empty() {
            return text.to_owned();
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut current: Option<(usize, usize)> = None;
        for (start, end) in spans {
            match &mut current {
                Some((_, current_end)) if start <= *current_end => {
                    *current_end = (*current_end).max(end);
                }
                _ => {
                    if let Some((s, e)) = current.take() {
                        out.push_str(&text[copied..s]);
                        out.push_str(REDACTED);
                        copied = e;
                    }
                    current = Some((start, end));
                }
            }
        }
        if let Some((s, e)) = current {
            out.push_str(&text[copied..s]);
            out.push_str(REDACTED);
            copied = e;
        }
        out.push_str(&text[copied..]);
        out
    }

    fn push(&mut self, text: String) {
        if text.is_empty() || self.forms.iter().any(|f| f.text == text) {
            return;
        }
        let whole_field_only = text.chars().count() < MIN_FREE_CHARS;
        self.forms.push(Form { text, whole_field_only });
    }

    fn push_base64(&mut self, bytes: &[u8]) {
        let padded = base64(bytes);
        let bare = padded.trim_end_matches('=').to_owned();
        self.push(padded);
        self.push(bare);
    }
}

/// The credential pair as configured and as trimmed: both may reach the wire.
fn variants<'a>(user: &'a str, password: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut pairs = vec![(user, password)];
    let trimmed = (user.trim(), password.trim());
    if trimmed != (user, password) {
        pairs.push(trimmed);
    }
    pairs
}

const LEFT_DELIMITERS: [char; 12] = ['"', '\'', '`', '=', ':', '(', '[', '{', '<', ',', ';', '&'];
const RIGHT_DELIMITERS: [char; 11] = ['"', '\'', '`', '&', ',', ';', ')', ']', '}', '>', '@'];

/// Whether `text[start..end]` stands alone as a field value or a word.
fn is_whole_field(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].chars().next_back();
    let left = before.is_none_or(|c| c.is_whitespace() || LEFT_DELIMITERS.contains(&c));
    let mut after = text[end..].chars();
    let right = match after.next() {
        None => true,
        Some(c) if c.is_whitespace() || RIGHT_DELIMITERS.contains(&c) => true,
        Some('.' | ':' | '!' | '?') => after.next().is_none_or(char::is_whitespace),
        Some(_) => false,
    };
    left && right
}

/// Standard base64 (RFC 4648 §4) with padding. Written out here, in a dozen lines, because only
/// the encoder is needed and only to recognise credentials.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn redactor(secret: &str) -> Redactor {
        Redactor::new().secret(&Secret::new(secret))
    }

    #[test]
    fn base64_matches_the_rfc_4648_test_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn a_long_secret_is_removed_wherever_it_occurs() {
        let r = redactor("s3cr3t-T0ken");
        assert_eq!(r.redact("key=s3cr3t-T0ken&x=1"), "key=[redacted]&x=1");
        assert_eq!(r.redact("xxs3cr3t-T0kenyy"), "xx[redacted]yy");
        assert_eq!(r.redact("s3cr3t-T0ken s3cr3t-T0ken"), "[redacted] [redacted]");
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn a_configured_value_is_trimmed_and_an_empty_one_removes_nothing() {
        assert_eq!(redactor("  s3cr3t-T0ken \n").redact("a s3cr3t-T0ken b"), "a [redacted] b");
        assert!(redactor("   ").is_empty());
        assert_eq!(redactor("").redact("text"), "text");
    }

    #[test]
    fn overlapping_occurrences_leave_no_fragment() {
        let r = redactor("abcabcab");
        assert_eq!(r.redact("--abcabcabcab--"), "--[redacted]--");
    }

    #[test]
    fn base64_forms_are_removed_with_and_without_padding() {
        let r = redactor("s3cr3t-T0ken!");
        let encoded = base64(b"s3cr3t-T0ken!");
        assert!(encoded.ends_with('='), "{encoded}");
        assert_eq!(r.redact(&format!("334 {encoded}")), "334 [redacted]");
        let bare = encoded.trim_end_matches('=');
        assert_eq!(r.redact(&format!("got {bare} back")), "got [redacted] back");
    }

    #[test]
    fn an_echoed_basic_authorization_header_is_removed() {
        let token = Secret::new("twilio-token-5f3a9c");
        let r = Redactor::new().basic_auth("AC0123", &token);
        let header = format!("Authorization: Basic {}", base64(b"AC0123:twilio-token-5f3a9c"));
        assert_eq!(r.redact(&header), "Authorization: Basic [redacted]");
        assert_eq!(r.redact("twilio-token-5f3a9c"), "[redacted]");
    }

    #[test]
    fn smtp_auth_plain_and_login_lines_are_removed() {
        let password = Secret::new("Sm7p-pa55-41c9");
        let r = Redactor::new().smtp_auth("budi@example.com", &password);
        let plain = base64(b"\0budi@example.com\0Sm7p-pa55-41c9");
        let login = base64(b"Sm7p-pa55-41c9");
        let echoed = format!("535 5.7.8 AUTH PLAIN {plain} / {login}");
        assert_eq!(r.redact(&echoed), "535 5.7.8 AUTH PLAIN [redacted] / [redacted]");
        // The username alone is not a secret.
        let user = base64(b"budi@example.com");
        assert_eq!(r.redact(&user), user);
    }

    #[test]
    fn a_short_password_is_removed_only_as_a_whole_field() {
        let r = redactor("p");
        for (text, expected) in [
            ("password=p", "password=[redacted]"),
            ("password=p&user=budi", "password=[redacted]&user=budi"),
            (r#"{"token":"p"}"#, r#"{"token":"[redacted]"}"#),
            ("Authorization: p", "Authorization: [redacted]"),
            ("smtp://budi:p@mail.example.com", "smtp://budi:[redacted]@mail.example.com"),
            ("the password p.", "the password [redacted]."),
            ("happy path: unexpected input", "happy path: unexpected input"),
            ("p2p", "p2p"),
            ("e-p-x", "e-p-x"),
        ] {
            assert_eq!(r.redact(text), expected, "{text}");
        }
    }

    #[test]
    fn a_short_passwords_base64_is_removed_only_as_a_whole_field() {
        let r = redactor("pw");
        // base64("pw") is "cHc=", or "cHc" unpadded.
        assert_eq!(r.redact("334 cHc="), "334 [redacted]");
        assert_eq!(r.redact("cHcx stays"), "cHcx stays");
    }

    #[test]
    fn json_escaped_and_form_encoded_forms_are_removed() {
        let r = redactor(r#"a"b\c d&e=f"#);
        assert_eq!(r.redact(r#"{"k":"a\"b\\c d&e=f"}"#), r#"{"k":"[redacted]"}"#);
        assert_eq!(r.redact("k=a%22b%5Cc+d%26e%3Df"), "k=[redacted]");
    }

    #[test]
    fn several_secrets_in_one_redactor_are_all_removed() {
        let r = Redactor::new().secret(&Secret::new("first-secret")).value("second-secret");
        assert_eq!(r.redact("first-secret and second-secret"), "[redacted] and [redacted]");
    }

    #[test]
    fn neither_the_secret_nor_the_redactor_prints_a_value() {
        let secret = Secret::new("s3cr3t-T0ken");
        assert_eq!(format!("{secret} {secret:?}"), "[redacted] [redacted]");
        let shown = format!("{:?}", Redactor::new().secret(&secret));
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    /// Text made of none of the characters the secrets below are made of.
    const OTHER_TEXT: &str = "[ .,!?<>#()\\[\\]{}~é漢\n\t]{0,80}";

    proptest! {
        #[test]
        fn a_secret_of_eight_or_more_characters_never_survives_whatever_surrounds_it(
            secret in "[A-Za-z0-9_:+/=-]{8,40}",
            before in any::<String>(),
            after in any::<String>(),
        ) {
            let text = format!("{before}{secret}{after}");
            prop_assert!(!redactor(&secret).redact(&text).contains(&secret));
        }

        #[test]
        fn around_a_secret_only_the_surrounding_text_survives(
            secret in "[A-Za-z0-9_:+/=-]{8,40}",
            before in OTHER_TEXT,
            // Adjacent occurrences become one marker; something between keeps them two.
            middle in "[ .,!?<>#()~é漢\n\t]{1,80}",
            after in OTHER_TEXT,
        ) {
            let text = format!("{before}{secret}{middle}{secret}{after}");
            let out = redactor(&secret).redact(&text);
            prop_assert_eq!(out, format!("{before}[redacted]{middle}[redacted]{after}"));
        }

        #[test]
        fn base64_of_basic_and_plain_auth_never_survives(
            user in "[A-Za-z0-9@.]{1,20}",
            password in "[A-Za-z0-9_:+/=-]{1,30}",
            before in OTHER_TEXT,
            after in OTHER_TEXT,
        ) {
            let secret = Secret::new(password.clone());
            let r = Redactor::new().basic_auth(&user, &secret).smtp_auth(&user, &secret);
            for plain in [format!("{user}:{password}"), format!("\0{user}\0{password}")] {
                let encoded = base64(plain.as_bytes());
                for form in [encoded.as_str(), encoded.trim_end_matches('=')] {
                    let out = r.redact(&format!("{before} {form} {after}"));
                    prop_assert!(!out.contains(form), "{}", out);
                }
            }
        }

        #[test]
        fn a_short_secret_inside_a_word_is_left_alone(
            secret in "[a-z]{1,7}",
            before in "[a-z0-9]{1,10}",
            after in "[a-z0-9]{1,10}",
        ) {
            let word = format!("{before}{secret}{after}");
            prop_assert_eq!(redactor(&secret).redact(&word), word.clone());
        }

        #[test]
        fn a_short_secret_as_a_field_value_is_removed(
            // Starting with a digit, it cannot hide inside the field name.
            secret in "[0-9][A-Za-z0-9]{0,6}",
            name in "(password|token|key|Authorization)",
            separator in "(=|: |\":\")",
        ) {
            let text = format!("{name}{separator}{secret}\"");
            let out = redactor(&secret).redact(&text);
            prop_assert_eq!(out, format!("{name}{separator}[redacted]\""));
        }
    }
}
