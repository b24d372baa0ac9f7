//! The two clocks of a pass (SPEC §10).
//!
//! The *business* clock ([`Clock`]) says what is due: stage dates, "today", the send window,
//! recurrence and retry times. With `--now` it starts at that instant and runs forward at the
//! real pace, so a test can step over a backoff and a backfill behaves like production.
//!
//! The *real* clock times what must agree between passes and hosts: leases, rate-limit slots
//! and pass budgets. On PostgreSQL it is the database server's clock, read inside the
//! statements, so hosts whose clocks disagree still share leases and slots; on SQLite, whose
//! file lives on one host, it is that host's clock ([`real_now`]). Budgets and waits inside a
//! pass run on the monotonic clock ([`std::time::Instant`]). A `--now` pass therefore never
//! moves a lease or a rate slot of a later real pass.

use std::time::Instant;

use chrono::{DateTime, Utc};

/// The business clock.
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

    /// The current instant of this pass on the business clock.
    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.started.elapsed()).unwrap_or_default();
        self.base + elapsed
    }
}

/// This host's wall clock: the real clock of an SQLite store. Nothing else may read it.
#[allow(clippy::disallowed_methods)]
pub fn real_now() -> DateTime<Utc> {
    Utc::now()
}
