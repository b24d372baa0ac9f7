//! Progress bars for long commands (a large `import`, later a large `send`), drawn on stderr
//! and only when stderr is a terminal: cron mail, log files, pipes and CI never get one, so
//! what they capture stays the logs and the report.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What a bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes of a file read so far.
    Bytes,
    /// Things done (rows, messages).
    Items,
}

/// A progress bar, or nothing when stderr is not a terminal.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
    /// Whether it draws (indicatif also draws nothing on a stderr that is not a terminal; this
    /// is the decision made here, whatever the test harness's stderr is).
    shown: bool,
}

impl Progress {
    /// A bar of `total` units labelled `label`, drawn only when stderr is a terminal.
    pub fn new(label: &str, total: u64, unit: Unit) -> Self {
        Self::on(std::io::stderr().is_terminal(), label, total, unit)
    }

    /// A bar drawn on stderr when `terminal` is true, and a hidden one otherwise.
    pub fn on(terminal: bool, label: &str, total: u64, unit: Unit) -> Self {
        if !terminal {
            return Self::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let counts = match unit {
            Unit::Bytes => "{bytes}/{total_bytes}",
            Unit::Items => "{human_pos}/{human_len}",
        };
        // A template that cannot parse is a programming error, caught by the unit test; a
        // bar without one still counts.
        if let Ok(style) =
            ProgressStyle::with_template(&format!("{{msg}} [{{bar:30}}] {counts} {{eta}}"))
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        Self { bar, shown: true }
    }

    /// A bar that draws nothing.
    pub fn hidden() -> Self {
        Self { bar: ProgressBar::hidden(), shown: false }
    }

    pub fn is_shown(&self) -> bool {
        self.shown
    }

    /// Starts the next stage of the same work (a second pass over the file) from zero.
    pub fn restart(&self, label: &str, total: u64) {
        self.bar.set_message(label.to_string());
        self.bar.set_length(total);
        self.bar.set_position(0);
    }

    pub fn set(&self, position: u64) {
        self.bar.set_position(position);
    }

    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// Removes the bar from the terminal, so the report that follows stands alone.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_terminal_the_bar_is_hidden() {
        let p = Progress::on(false, "checking", 100, Unit::Bytes);
        assert!(!p.is_shown());
        p.set(50);
        p.finish();
    }

    #[test]
    fn on_a_terminal_the_bar_counts_and_restarts() {
        for unit in [Unit::Bytes, Unit::Items] {
            let p = Progress::on(true, "checking", 100, unit);
            assert!(p.is_shown());
            p.set(60);
            assert_eq!(p.position(), 60);
            p.restart("writing", 200);
            assert_eq!(p.position(), 0);
            p.finish();
        }
    }
}
