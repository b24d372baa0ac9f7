//! reminderctl: one bounded, idempotent pass of reminder generation and delivery.
//!
//! A pass is a straight line: [`cli`] → [`config`] → [`store`] → [`generate`] → [`deliver`] →
//! [`report`]. [`domain`] holds the pure rules (stage dates, recurrence, phone numbers,
//! formatting), [`channels`] the provider adapters, [`secret`] credentials and their redaction,
//! [`clock`] the two clocks (business and real), [`dotenv`] reads `.env` files, [`logging`]
//! writes logs and the one error line to stderr. [`import`] brings rows in from another
//! system's CSV export; [`progress`] draws progress bars on a terminal.

pub mod channels;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod deliver;
pub mod domain;
pub mod dotenv;
pub mod generate;
pub mod heartbeat;
pub mod import;
pub mod logging;
pub mod progress;
pub mod report;
pub mod schedule;
pub mod secret;
pub mod seed;
pub mod store;
pub mod templates;
pub mod upcoming;
