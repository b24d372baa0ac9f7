//! The outbox's vocabulary: what a message is, where it stands, and the decision a pass makes
//! about it. Delivery decides a [`Resolution`]; both stores write it and the report counts it,
//! so a new status or outcome is a change the compiler walks through every layer.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::channel::ChannelKind;

/// Where an outbox row stands (`messages.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Sending,
    Sent,
    Failed,
    Cancelled,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Skipped => "skipped",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Pending, Self::Sending, Self::Sent, Self::Failed, Self::Cancelled, Self::Skipped]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown message status '{s}'"))
    }
}

/// What family a message belongs to (`messages.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Dunning,
    Maintenance,
    Scheduled,
    Test,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dunning => "dunning",
            Self::Maintenance => "maintenance",
            Self::Scheduled => "scheduled",
            Self::Test => "test",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Dunning, Self::Maintenance, Self::Scheduled, Self::Test]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown message kind '{s}'"))
    }
}

/// The business occurrence a message stands for; the outbox is unique on it (with the channel),
/// so that a rerun, an overlapping pass or another host never generates it twice. The SQL of
/// each rule builds the same text: keep the formats in step.
pub struct DedupKey;

impl DedupKey {
    /// `dunning:<invoice>:<due date>:<stage>`
    pub fn dunning(invoice: i64, due: chrono::NaiveDate, stage: &str) -> String {
        format!("dunning:{invoice}:{due}:{stage}")
    }
    /// `scheduled:<message>:<occurrence, epoch seconds>`
    pub fn scheduled(scheduled: i64, run_at: DateTime<Utc>) -> String {
        format!("scheduled:{scheduled}:{}", run_at.timestamp())
    }
}

/// How the provider answered one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Accepted,
    Transient,
    RateLimited,
    ChannelDown,
    Permanent,
}

impl Answer {
    /// Whether this answer uses up one of the message's attempts. A rate limit or a channel
    /// that is down says nothing about the message itself, so it costs nothing.
    pub fn spends_attempt(self) -> bool {
        matches!(self, Self::Accepted | Self::Transient | Self::Permanent)
    }

    /// The label kept in `delivery_attempts.outcome`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Accepted => "sent",
            Self::Transient => "transient",
            Self::RateLimited => "rate_limited",
            Self::ChannelDown => "channel_down",
            Self::Permanent => "permanent",
        }
    }
}

/// Why a message goes back to `pending` for a later try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryCause {
    /// The request failed in a way worth retrying (5xx, timeout, an unproven 2xx).
    Transient,
    /// The provider asked to slow down.
    RateLimited,
    /// The whole channel is down (credentials, session, quota).
    ChannelDown,
    /// Its subject moved it to a later time (a scheduled message edited after it was queued).
    Rescheduled,
}

/// The decision about one claimed message. Every path through delivery ends in exactly one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "resolution", rename_all = "snake_case")]
pub enum Resolution {
    /// The provider accepted it.
    Sent { provider_message_id: Option<String> },
    /// Back to `pending`, due again at `at` (business clock).
    Retry { at: DateTime<Utc>, reason: String, cause: RetryCause },
    /// Never to be sent on this channel; `fallback` carries it to the contact's next channel.
    Failed { reason: String, fallback: Option<ChannelKind> },
    /// Not for this contact on this channel (opted out, no address).
    Skipped { reason: String, fallback: Option<ChannelKind> },
    /// No longer wanted (paid, stage over, subject gone).
    Cancelled { reason: String },
    /// Claimed but never started (stop, pause, lease too short, window closed): back to
    /// `pending` as it was, no attempt spent, no history row.
    Released { reason: String },
}

impl Resolution {
    /// The message's status after this resolution.
    pub fn status(&self) -> Status {
        match self {
            Self::Sent { .. } => Status::Sent,
            Self::Retry { .. } | Self::Released { .. } => Status::Pending,
            Self::Failed { .. } => Status::Failed,
            Self::Skipped { .. } => Status::Skipped,
            Self::Cancelled { .. } => Status::Cancelled,
        }
    }

    /// The reason kept in `last_error`, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Sent { .. } => None,
            Self::Retry { reason, .. }
            | Self::Failed { reason, .. }
            | Self::Skipped { reason, .. }
            | Self::Cancelled { reason }
            | Self::Released { reason } => Some(reason),
        }
    }

    /// The channel the reminder continues on, if any.
    pub fn fallback(&self) -> Option<ChannelKind> {
        match self {
            Self::Failed { fallback, .. } | Self::Skipped { fallback, .. } => *fallback,
            _ => None,
        }
    }

    /// The label kept in `delivery_attempts` when no request was made.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Sent { .. } => "sent",
            Self::Retry { cause: RetryCause::Transient, .. } => "transient",
            Self::Retry { cause: RetryCause::RateLimited, .. } => "rate_limited",
            Self::Retry { cause: RetryCause::ChannelDown, .. } => "channel_down",
            Self::Retry { cause: RetryCause::Rescheduled, .. } => "rescheduled",
            Self::Failed { .. } => "failed",
            Self::Skipped { .. } => "skipped",
            Self::Cancelled { .. } => "cancelled",
            Self::Released { .. } => "released",
        }
    }
}

/// The provider request behind an outcome: what went out, to whom, and how it was answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub provider: String,
    pub answer: Answer,
    pub recipient: String,
    pub subject: Option<String>,
    /// The rendered text, when the row did not carry it already (dunning, maintenance).
    pub body: Option<String>,
}

/// One message's result, as the recorder writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub id: i64,
    pub channel: ChannelKind,
    /// The row's `attempts` when it was claimed; a request that spends an attempt makes it one
    /// more.
    pub attempts: i32,
    pub request: Option<Request>,
    pub resolution: Resolution,
    /// Business clock.
    pub at: DateTime<Utc>,
}

impl Outcome {
    /// Whether this outcome uses up an attempt.
    pub fn spends_attempt(&self) -> bool {
        self.request.as_ref().is_some_and(|r| r.answer.spends_attempt())
    }

    /// The row's `attempts` after this outcome.
    pub fn attempts_after(&self) -> i32 {
        self.attempts + i32::from(self.spends_attempt())
    }

    /// The `delivery_attempts.outcome` label; `None` keeps no history row.
    pub fn label(&self) -> Option<&'static str> {
        match (&self.request, &self.resolution) {
            (_, Resolution::Released { .. }) => None,
            (Some(r), _) => Some(r.answer.label()),
            (None, res) => Some(res.label()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(request: Option<Answer>, resolution: Resolution) -> Outcome {
        Outcome {
            id: 1,
            channel: ChannelKind::WhatsApp,
            attempts: 2,
            request: request.map(|answer| Request {
                provider: "twilio".into(),
                answer,
                recipient: "6281".into(),
                subject: None,
                body: None,
            }),
            resolution,
            at: DateTime::UNIX_EPOCH,
        }
    }

    /// Each value is shown as its word, and the word reads back as the value.
    fn spelled<T>(pairs: &[(T, &str)])
    where
        T: fmt::Display + FromStr<Err = String> + PartialEq + fmt::Debug + Copy,
    {
        for &(value, word) in pairs {
            assert_eq!(value.to_string(), word);
            assert_eq!(word.parse::<T>(), Ok(value));
        }
    }

    #[test]
    fn the_words_stored_in_the_outbox_are_the_specs() {
        // The check constraints of `messages`, the SQL of every rule and the operators' own
        // queries compare with these exact words.
        spelled(&[
            (Status::Pending, "pending"),
            (Status::Sending, "sending"),
            (Status::Sent, "sent"),
            (Status::Failed, "failed"),
            (Status::Cancelled, "cancelled"),
            (Status::Skipped, "skipped"),
        ]);
        assert!("Sent".parse::<Status>().is_err());
        spelled(&[
            (Kind::Dunning, "dunning"),
            (Kind::Maintenance, "maintenance"),
            (Kind::Scheduled, "scheduled"),
            (Kind::Test, "test"),
        ]);
        let labels = [
            (Answer::Accepted, "sent"),
            (Answer::Transient, "transient"),
            (Answer::RateLimited, "rate_limited"),
            (Answer::ChannelDown, "channel_down"),
            (Answer::Permanent, "permanent"),
        ];
        for (answer, word) in labels {
            assert_eq!(answer.label(), word);
        }
        let due = chrono::NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
        assert_eq!(DedupKey::dunning(42, due, "T-3"), "dunning:42:2024-02-29:T-3");
        let run_at: DateTime<Utc> = "2025-11-18T02:00:00Z".parse().unwrap();
        assert_eq!(DedupKey::scheduled(7, run_at), "scheduled:7:1763431200");
    }

    #[test]
    fn a_resolution_keeps_its_reason_and_a_sent_one_has_none() {
        let sent = Resolution::Sent { provider_message_id: Some("SM1".into()) };
        assert_eq!(sent.reason(), None);
        let failed = Resolution::Failed { reason: "not on WhatsApp".into(), fallback: None };
        assert_eq!(failed.reason(), Some("not on WhatsApp"));
        let released = Resolution::Released { reason: "stopped by signal".into() };
        assert_eq!(released.reason(), Some("stopped by signal"));
    }

    #[test]
    fn only_answers_about_the_message_spend_an_attempt() {
        let retry =
            |cause| Resolution::Retry { at: DateTime::UNIX_EPOCH, reason: "x".into(), cause };
        assert_eq!(
            outcome(Some(Answer::Transient), retry(RetryCause::Transient)).attempts_after(),
            3
        );
        assert_eq!(
            outcome(Some(Answer::RateLimited), retry(RetryCause::RateLimited)).attempts_after(),
            2
        );
        assert_eq!(
            outcome(Some(Answer::ChannelDown), retry(RetryCause::ChannelDown)).attempts_after(),
            2
        );
        let cancelled = Resolution::Cancelled { reason: "paid".into() };
        assert_eq!(outcome(None, cancelled.clone()).attempts_after(), 2);
        assert_eq!(outcome(None, cancelled).label(), Some("cancelled"));
        let released = Resolution::Released { reason: "stop".into() };
        assert_eq!(outcome(None, released).label(), None);
    }

    #[test]
    fn outcomes_survive_a_round_trip_through_json() {
        let o = outcome(
            Some(Answer::Permanent),
            Resolution::Failed { reason: "bad".into(), fallback: Some(ChannelKind::Email) },
        );
        let text = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<Outcome>(&text).unwrap(), o);
    }
}
