//! Pure rules: stage dates, recurrence, phone numbers, money and date formatting, the send
//! window, rates and backoff, the outbox's vocabulary and how input dates are read. No I/O and
//! no clock here: every function takes "now" or "today".

pub mod backoff;
pub mod channel;
pub mod dates;
pub mod dunning;
pub mod format;
pub mod outbox;
pub mod phone;
pub mod rate;
pub mod recurrence;
pub mod window;
