//! WhatsApp gateways. Each takes a normalized number (`628…` digits) and says what happened.

pub mod fonnte;
pub mod starsender;
pub mod twilio;
pub mod waha;
