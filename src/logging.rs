//! What goes to stderr besides the logs: the one `error: what: why` line of a command that
//! could not run, each cause said once, so that cron mail reads well.

/// The line printed for a command that could not run: `error: ` and the chain of causes, each
/// said once. Wrapping an error often repeats it (`#[error("{0}")]` with `#[from]`, or a driver
/// that puts its cause in its own message), so a cause that the text so far already contains
/// is left out. Control characters are escaped: the chain can carry data.
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    format!("error: {}", crate::report::escape_control(&line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Repeats(#[from] std::io::Error);

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "unable to open database file");
        let e = anyhow::Error::new(Repeats(io)).context("cannot open the sqlite database x.db");
        assert_eq!(
            error_line(&e),
            "error: cannot open the sqlite database x.db: unable to open database file"
        );
        let e = anyhow::anyhow!("bad \u{1b}[2J value\nnext").context("configuration");
        assert_eq!(error_line(&e), "error: configuration: bad \\u{1b}[2J value\\nnext");
    }
}
