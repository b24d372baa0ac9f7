//! `.env` files, read the way python-dotenv, docker compose and Laravel read them, except that a
//! line that cannot be read is an error naming its line instead of being skipped.
//!
//! - `KEY=value` and `export KEY=value`; spaces around `=` are allowed. Keys are letters, digits,
//!   `_`, `.` and `-`, not starting with a digit.
//! - Blank lines and lines starting with `#` are ignored.
//! - Unquoted values run to the end of the line: inner spaces are kept
//!   (`REMINDER_SENDER_NAME=Tim Wikarta Provider`), surrounding spaces are not, and ` #` (a `#`
//!   after a space or tab) starts a comment. A `#` inside a word (`http://x/#a`) is kept.
//! - `'single quotes'` are literal. `"double quotes"` understand `\n`, `\r`, `\t`, `\"`, `\\`,
//!   `\'` and `\$`; any other backslash is kept as written, so `"C:\data"` stays intact. Both
//!   kinds of quote may span lines; after the closing quote only a comment may follow.
//! - Values are taken as written: `${OTHER}` is not expanded (a warning says so).
//! - A key set twice takes the later value, as the other tools do (a warning says so).

use std::fmt;
use std::path::{Path, PathBuf};

/// One `KEY=value` of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    /// The line the entry starts on, from 1.
    pub line: usize,
    pub quote: Quote,
}

/// How the value was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quote {
    None,
    Single,
    Double,
}

/// A line that cannot be read, with the variable it was setting when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub line: usize,
    pub key: Option<String>,
    pub problem: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line)?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.problem)
    }
}

/// A `.env` file that exists but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DotenvError {
    #[error("cannot read {}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} {error}", path.display())]
    Parse { path: PathBuf, error: ParseError },
}

/// Reads and parses the file at `path`; a file that does not exist is `Ok(None)`.
pub fn load(path: &Path) -> Result<Option<Vec<Entry>>, DotenvError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DotenvError::Read { path: path.to_path_buf(), source }),
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + String::from_utf8_lossy(valid).matches('\n').count();
        DotenvError::Parse {
            path: path.to_path_buf(),
            error: ParseError {
                line,
                key: None,
                problem: "is not valid UTF-8 (save the file as UTF-8)".into(),
            },
        }
    })?;
    parse(&text).map(Some).map_err(|error| DotenvError::Parse { path: path.to_path_buf(), error })
}

/// Parses the text of a `.env` file. The first line that cannot be read is the error: nothing
/// after it is taken, so nothing is silently dropped.
pub fn parse(text: &str) -> Result<Vec<Entry>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let mut entries = Vec::new();
    let mut next = 0;
    while next < lines.len() {
        let number = next + 1;
        let line = lines[next].trim_start();
        next += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = strip_export(line);
        let Some((key, raw)) = line.split_once('=') else {
            let word = line.trim_end();
            return Err(if is_key(word) {
                ParseError {
                    line: number,
                    key: Some(word.to_string()),
                    problem: format!("has no '=' (write {word}=value)"),
                }
            } else {
                // The line is not echoed: it may be a secret pasted on the wrong line.
                ParseError { line: number, key: None, problem: "expected KEY=value".into() }
            });
        };
        let key = key.trim_end();
        if !is_key(key) {
            return Err(ParseError {
                line: number,
                key: None,
                problem: format!(
                    "'{}' is not a variable name (letters, digits and _, not starting with a \
                     digit)",
                    shorten(key)
                ),
            });
        }
        let err = |problem: &str| ParseError {
            line: number,
            key: Some(key.to_string()),
            problem: problem.to_string(),
        };
        let value = raw.trim_start();
        let (value, quote) = match value.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let quote = if q == '"' { Quote::Double } else { Quote::Single };
                let Some((value, after)) = quoted(&value[1..], &lines, &mut next, q) else {
                    return Err(err(if q == '"' {
                        "the double quote (\") that opens the value is never closed"
                    } else {
                        "the single quote (') that opens the value is never closed"
                    }));
                };
                let after = after.trim_start();
                if !after.is_empty() && !after.starts_with('#') {
                    return Err(err("unexpected text after the closing quote"));
                }
                (value, quote)
            }
            _ => (unquoted(raw).to_string(), Quote::None),
        };
        entries.push(Entry { key: key.to_string(), value, line: number, quote });
    }
    Ok(entries)
}

/// `export KEY=value` is `KEY=value`; a variable named `export` stays itself.
fn strip_export(line: &str) -> &str {
    match line.strip_prefix("export") {
        Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
        _ => line,
    }
}

fn is_key(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// An unquoted value: up to a `#` that follows whitespace, without surrounding whitespace.
fn unquoted(raw: &str) -> &str {
    let mut end = raw.len();
    // The `=` comes before `raw`: `A=#x` is the value `#x`, `A= #x` is empty.
    let mut previous_is_space = false;
    for (i, c) in raw.char_indices() {
        if c == '#' && previous_is_space {
            end = i;
            break;
        }
        previous_is_space = c == ' ' || c == '\t';
    }
    raw[..end].trim()
}

/// A quoted value starting just after its opening quote, continuing over the following lines
/// until the closing quote. Returns the value and what follows the closing quote on its line.
fn quoted<'a>(
    first: &'a str,
    lines: &[&'a str],
    next: &mut usize,
    quote: char,
) -> Option<(String, &'a str)> {
    let mut value = String::new();
    let mut segment = first;
    loop {
        let mut chars = segment.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == quote {
                return Some((value, &segment[i + 1..]));
            }
            if c == '\\' && quote == '"' {
                match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 'r')) => value.push('\r'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, e @ ('"' | '\\' | '\'' | '$'))) => value.push(e),
                    Some((_, other)) => {
                        value.push('\\');
                        value.push(other);
                    }
                    // A backslash at the end of a line is kept; the newline follows.
                    None => value.push('\\'),
                }
                continue;
            }
            value.push(c);
        }
        segment = lines.get(*next)?;
        *next += 1;
        value.push('\n');
    }
}

/// At most 40 characters of something the user wrote, with control characters escaped.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    crate::report::escape_control(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text).unwrap().into_iter().map(|e| (e.key, e.value)).collect()
    }

    fn one(text: &str) -> String {
        let all = pairs(text);
        assert_eq!(all.len(), 1, "{all:?}");
        all[0].1.clone()
    }

    fn error(text: &str) -> ParseError {
        parse(text).unwrap_err()
    }

    #[test]
    fn key_value_pairs_with_blank_lines_and_comments() {
        let text = "# settings\n\nA=1\n   # indented comment\nB=two\n\n";
        assert_eq!(pairs(text), [("A".into(), "1".into()), ("B".into(), "two".into())]);
    }

    #[test]
    fn export_prefix_is_accepted() {
        assert_eq!(one("export REMINDER_TIMEZONE=Asia/Makassar"), "Asia/Makassar");
        assert_eq!(one("export\tA=1"), "1");
        // A variable that happens to be called `export`, or to start with it.
        assert_eq!(pairs("export=1"), [("export".into(), "1".into())]);
        assert_eq!(pairs("exported=1"), [("exported".into(), "1".into())]);
    }

    #[test]
    fn unquoted_values_keep_their_inner_spaces() {
        assert_eq!(one("REMINDER_SENDER_NAME=Tim Wikarta Provider"), "Tim Wikarta Provider");
        assert_eq!(one("A =  spaced out value  "), "spaced out value");
        assert_eq!(one("A="), "");
    }

    #[test]
    fn a_value_with_spaces_does_not_hide_the_lines_after_it() {
        let text = "REMINDER_SENDER_NAME=Tim Wikarta Provider\nDATABASE_URL=sqlite:x.db\n";
        assert_eq!(
            pairs(text),
            [
                ("REMINDER_SENDER_NAME".into(), "Tim Wikarta Provider".into()),
                ("DATABASE_URL".into(), "sqlite:x.db".into())
            ]
        );
    }

    #[test]
    fn an_inline_comment_needs_a_space_before_the_hash() {
        assert_eq!(one("A=value # the comment"), "value");
        assert_eq!(one("A=value\t# tab before"), "value");
        assert_eq!(one("A=http://example.com/#anchor"), "http://example.com/#anchor");
        assert_eq!(one("A=#not-a-comment"), "#not-a-comment");
        assert_eq!(one("A= # only a comment"), "");
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(one(r"A='a \n b # not a comment'"), r"a \n b # not a comment");
        assert_eq!(one("A='x' # comment"), "x");
        assert_eq!(one("A=''"), "");
        assert_eq!(one("A='say \"hi\"'"), "say \"hi\"");
    }

    #[test]
    fn double_quotes_understand_escapes() {
        assert_eq!(one(r#"A="line1\nline2""#), "line1\nline2");
        assert_eq!(one(r#"A="say \"hi\"""#), "say \"hi\"");
        assert_eq!(one(r#"A="back\\slash""#), "back\\slash");
        assert_eq!(one(r#"A="tab\there""#), "tab\there");
        assert_eq!(one(r#"A="price \$5""#), "price $5");
        assert_eq!(one(r#"A="C:\data\files""#), "C:\\data\\files");
        assert_eq!(one(r#"A="Wikarta Provider" # the from name"#), "Wikarta Provider");
        assert_eq!(one(r#"A="a # b""#), "a # b");
    }

    #[test]
    fn quoted_values_may_span_lines() {
        let text = "A=\"first\nsecond\"\nB='one\r\ntwo'\r\nC=3\n";
        let all = parse(text).unwrap();
        assert_eq!(all[0].value, "first\nsecond");
        assert_eq!(all[1].value, "one\ntwo");
        assert_eq!((all[1].line, all[2].line), (3, 5));
        assert_eq!(all[2].value, "3");
    }

    #[test]
    fn crlf_line_endings_and_a_byte_order_mark_are_accepted() {
        let all = pairs("\u{feff}A=1\r\nB=two words\r\n");
        assert_eq!(all, [("A".into(), "1".into()), ("B".into(), "two words".into())]);
    }

    #[test]
    fn spaces_around_the_equals_sign_are_accepted() {
        assert_eq!(pairs("  A = 1"), [("A".into(), "1".into())]);
        assert_eq!(one("A = \"q\""), "q");
    }

    #[test]
    fn an_unterminated_quote_names_its_line_and_variable() {
        let e = error("A=1\nREMINDER_SENDER_NAME=\"Tim Wikarta\nB=2\n");
        assert_eq!((e.line, e.key.as_deref()), (2, Some("REMINDER_SENDER_NAME")));
        assert!(e.problem.contains("never closed"), "{e}");
        assert_eq!(
            e.to_string(),
            "line 2: REMINDER_SENDER_NAME: the double quote (\") that opens the value is never \
             closed"
        );
        let e = error("A='open");
        assert_eq!((e.line, e.key.as_deref()), (1, Some("A")));
    }

    #[test]
    fn text_after_a_closing_quote_is_an_error() {
        let e = error("A=\"x\" y");
        assert_eq!((e.line, e.key.as_deref()), (1, Some("A")));
        assert_eq!(e.problem, "unexpected text after the closing quote");
    }

    #[test]
    fn garbage_is_an_error_that_does_not_echo_the_line() {
        let e = error("A=1\nsk-live-abcdef secret token\nB=2");
        assert_eq!((e.line, e.key.as_deref()), (2, None));
        assert_eq!(e.to_string(), "line 2: expected KEY=value");
    }

    #[test]
    fn a_key_without_a_value_is_an_error_naming_it() {
        let e = error("REMINDER_TIMEZONE\n");
        assert_eq!(e.key.as_deref(), Some("REMINDER_TIMEZONE"));
        assert!(e.problem.contains("REMINDER_TIMEZONE=value"), "{e}");
    }

    #[test]
    fn a_bad_key_is_an_error() {
        for text in ["MY KEY=1", "1ABC=1", "=value", "A$B=1"] {
            let e = error(text);
            assert_eq!(e.line, 1, "{text}");
            assert!(e.problem.contains("is not a variable name"), "{text}: {e}");
        }
        assert_eq!(pairs("my.key-name=1"), [("my.key-name".into(), "1".into())]);
    }

    #[test]
    fn quote_kinds_are_recorded() {
        let all = parse("A=1\nB='2'\nC=\"3\"").unwrap();
        let kinds: Vec<Quote> = all.iter().map(|e| e.quote).collect();
        assert_eq!(kinds, [Quote::None, Quote::Single, Quote::Double]);
    }

    #[test]
    fn a_missing_file_is_not_an_error_and_a_bad_one_names_its_path_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        assert!(load(&path).unwrap().is_none());
        std::fs::write(&path, b"A=1\nB=\xff\n").unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{} line 2: is not valid UTF-8 (save the file as UTF-8)", path.display())
        );
        std::fs::write(&path, "A=1\nB='x\n").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{} line 2: B: ", path.display())), "{e}");
    }
}
