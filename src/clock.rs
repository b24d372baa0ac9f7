//! The one source of "now". A pass reads it here and nowhere else: with `--now` the pass starts
//! at that instant, and time still moves forward from it at the real pace, so leases and rate
//! slots behave the same in a backfill as in production.

use std::time::Instant;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: DateTime<Utc>,
    started: Instant,
}

impl Clock {
    /// The system clock.
    #[allow(clippy::disallowed_methods)]
    pub fn system() -> Self {
        Self { base: Utc::now(), started: Instant::now() }
    }

    /// A clock whose pass starts at `at` (the `--now` flag).
    pub fn starting_at(at: DateTime<Utc>) -> Self {
        Self { base: at, started: Instant::now() }
    }

    /// The instant the pass started: exactly `--now` when given. Rules are evaluated at this
    /// instant, so that a later pass run with the same `--now` sees what this one generated as
    /// due.
    pub fn start(&self) -> DateTime<Utc> {
        self.base
    }

    /// The current instant of this pass.
    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.started.elapsed()).unwrap_or_default();
        self.base + elapsed
    }
}
