//! What to do with a message once its provider has answered: the retry contract of SPEC §5 as
//! one pure function. Adapters say what happened; this decides what happens next.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::channels::{DeliveryError, Receipt};
use crate::domain::backoff;
use crate::domain::channel::{next_channel, ChannelKind};
use crate::domain::outbox::{Answer, Kind, Resolution, RetryCause};

/// Longest wait a provider can impose on a message; a larger `Retry-After` is taken as this.
pub const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

/// How long a channel rests after a rate limit that named no wait.
pub const RATE_LIMIT_PAUSE: Duration = Duration::from_secs(60);

/// What the message was when it was claimed, as far as the policy cares.
#[derive(Debug, Clone, Copy)]
pub struct Attempting<'a> {
    pub kind: Kind,
    pub channel: ChannelKind,
    /// Requests already answered before this one.
    pub attempts: i32,
    /// The contact's ordered channel preference, for fallback.
    pub preference: Option<&'a str>,
}

/// The provider's answer to one request, and the message's resolution. `jitter` in `[0, 1)`
/// spreads retries so that a burst of failures does not come back as a burst.
pub fn resolve(
    m: Attempting<'_>,
    result: Result<Receipt, DeliveryError>,
    max_attempts: u32,
    now: DateTime<Utc>,
    jitter: f64,
) -> (Answer, Resolution) {
    match result {
        Ok(receipt) => (
            Answer::Accepted,
            Resolution::Sent { provider_message_id: receipt.provider_message_id },
        ),
        Err(DeliveryError::Permanent { reason }) => (Answer::Permanent, failed(m, reason)),
        Err(DeliveryError::Transient { reason, retry_after }) => {
            let attempt = m.attempts.saturating_add(1);
            if i64::from(attempt) >= i64::from(max_attempts) {
                let reason = format!("gave up after {attempt} attempts: {reason}");
                return (Answer::Transient, Resolution::Failed { reason, fallback: None });
            }
            let delay =
                retry_after.unwrap_or_else(|| backoff::retry_delay(attempt.max(1) as u32, jitter));
            (
                Answer::Transient,
                Resolution::Retry { at: after(now, delay), reason, cause: RetryCause::Transient },
            )
        }
        Err(DeliveryError::RateLimited { reason, retry_after }) => (
            Answer::RateLimited,
            Resolution::Retry {
                at: after(now, retry_after.unwrap_or(RATE_LIMIT_PAUSE)),
                reason,
                cause: RetryCause::RateLimited,
            },
        ),
        Err(DeliveryError::ChannelDown { reason }) => (
            Answer::ChannelDown,
            Resolution::Retry { at: now, reason, cause: RetryCause::ChannelDown },
        ),
    }
}

/// A permanent failure: continue on the contact's next channel when there is one.
pub fn failed(m: Attempting<'_>, reason: String) -> Resolution {
    let (reason, fallback) = with_fallback(m, reason);
    Resolution::Failed { reason, fallback }
}

/// Not for this channel (no address): continue on the next one when there is one.
pub fn skipped(m: Attempting<'_>, reason: String) -> Resolution {
    let (reason, fallback) = with_fallback(m, reason);
    Resolution::Skipped { reason, fallback }
}

fn with_fallback(m: Attempting<'_>, reason: String) -> (String, Option<ChannelKind>) {
    if m.kind == Kind::Test {
        return (reason, None);
    }
    match next_channel(m.preference, m.channel) {
        Some(next) => (format!("{reason}; falling back to {next}"), Some(next)),
        None => (reason, None),
    }
}

/// A message a person asked for at a terminal (the test commands) is never left for cron to
/// send later without asking anyone: whatever did not go out now ends here, with the reason.
pub fn settle_manual(resolution: Resolution) -> Resolution {
    match resolution {
        Resolution::Retry { reason, .. } => Resolution::Failed {
            reason: format!("not sent: {reason} (a test message is not retried)"),
            fallback: None,
        },
        Resolution::Released { reason } => {
            Resolution::Cancelled { reason: format!("not sent: {reason}") }
        }
        Resolution::Failed { reason, .. } => Resolution::Failed { reason, fallback: None },
        Resolution::Skipped { reason, .. } => Resolution::Skipped { reason, fallback: None },
        other => other,
    }
}

/// `now + delay`, never overflowing whatever a provider asked for.
pub fn after(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    let delay = chrono::Duration::from_std(delay.min(MAX_DELAY)).unwrap_or(chrono::Duration::MAX);
    now.checked_add_signed(delay).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn message(attempts: i32) -> Attempting<'static> {
        Attempting {
            kind: Kind::Dunning,
            channel: ChannelKind::WhatsApp,
            attempts,
            preference: Some("whatsapp,email"),
        }
    }

    fn t0() -> DateTime<Utc> {
        "2025-11-17T02:00:00Z".parse().unwrap()
    }

    fn any_error() -> impl Strategy<Value = DeliveryError> {
        let reason = "[a-z ]{0,12}";
        let wait = proptest::option::of((0u64..200_000).prop_map(Duration::from_secs));
        prop_oneof![
            (reason, wait.clone())
                .prop_map(|(r, w)| DeliveryError::Transient { reason: r, retry_after: w }),
            (reason, wait)
                .prop_map(|(r, w)| DeliveryError::RateLimited { reason: r, retry_after: w }),
            reason.prop_map(|r| DeliveryError::Permanent { reason: r }),
            reason.prop_map(|r| DeliveryError::ChannelDown { reason: r }),
        ]
    }

    #[test]
    fn a_transient_error_retries_with_backoff_until_the_last_attempt() {
        let err = || Err(DeliveryError::transient("503"));
        let (answer, r) = resolve(message(0), err(), 3, t0(), 0.0);
        assert_eq!(answer, Answer::Transient);
        let Resolution::Retry { at, cause, .. } = r else { panic!("{r:?}") };
        assert_eq!((at - t0()).num_seconds(), 60);
        assert_eq!(cause, RetryCause::Transient);
        let (_, r) = resolve(message(2), err(), 3, t0(), 0.0);
        assert_eq!(
            r,
            Resolution::Failed { reason: "gave up after 3 attempts: 503".into(), fallback: None }
        );
    }

    #[test]
    fn a_permanent_error_falls_back_to_the_next_channel() {
        let (_, r) = resolve(message(0), Err(DeliveryError::permanent("bad number")), 3, t0(), 0.0);
        assert_eq!(
            r,
            Resolution::Failed {
                reason: "bad number; falling back to email".into(),
                fallback: Some(ChannelKind::Email)
            }
        );
        let test = Attempting { kind: Kind::Test, ..message(0) };
        assert_eq!(skipped(test, "no phone".into()).fallback(), None);
    }

    #[test]
    fn a_provider_wait_is_honoured_and_capped_at_a_day() {
        let limited = |s| {
            Err(DeliveryError::RateLimited {
                reason: "429".into(),
                retry_after: Some(Duration::from_secs(s)),
            })
        };
        let (_, r) = resolve(message(0), limited(120), 3, t0(), 0.0);
        assert!(matches!(r, Resolution::Retry { at, .. } if (at - t0()).num_seconds() == 120));
        let (_, r) = resolve(message(0), limited(u64::MAX / 4), 3, t0(), 0.0);
        assert!(matches!(r, Resolution::Retry { at, .. } if (at - t0()).num_hours() == 24));
    }

    #[test]
    fn a_test_message_that_did_not_go_out_is_never_left_for_cron() {
        let retry =
            Resolution::Retry { at: t0(), reason: "503".into(), cause: RetryCause::Transient };
        assert_eq!(settle_manual(retry).status(), crate::domain::outbox::Status::Failed);
        let released = Resolution::Released { reason: "stopped".into() };
        assert_eq!(settle_manual(released).status(), crate::domain::outbox::Status::Cancelled);
        let fell = failed(message(0), "bad number".into());
        assert!(fell.fallback().is_some());
        assert_eq!(settle_manual(fell).fallback(), None);
        let sent = Resolution::Sent { provider_message_id: None };
        assert_eq!(settle_manual(sent.clone()), sent);
    }

    proptest! {
        #[test]
        fn attempts_never_exceed_the_maximum(
            attempts in 0i32..20,
            max in 1u32..10,
            error in any_error(),
            jitter in 0.0f64..1.0,
        ) {
            let m = message(attempts.min(max as i32 - 1));
            let (answer, r) = resolve(m, Err(error), max, t0(), jitter);
            let after = m.attempts + i32::from(answer.spends_attempt());
            // A message goes back for another try only while tries are left.
            if matches!(r, Resolution::Retry { cause: RetryCause::Transient, .. }) {
                prop_assert!(after < max as i32);
            }
            prop_assert!(after <= max as i32);
        }

        #[test]
        fn rate_limits_and_channel_down_never_spend_an_attempt(
            attempts in 0i32..20,
            reason in "[a-z]{0,8}",
            wait in proptest::option::of(0u64..100_000),
        ) {
            let m = message(attempts);
            for e in [
                DeliveryError::RateLimited {
                    reason: reason.clone(),
                    retry_after: wait.map(Duration::from_secs),
                },
                DeliveryError::ChannelDown { reason: reason.clone() },
            ] {
                let (answer, r) = resolve(m, Err(e), 3, t0(), 0.5);
                prop_assert!(!answer.spends_attempt());
                prop_assert!(matches!(r, Resolution::Retry { .. }), "{:?}", r);
            }
        }

        #[test]
        fn a_retry_is_never_due_before_now(
            attempts in 0i32..2,
            error in any_error(),
            jitter in 0.0f64..1.0,
        ) {
            let (_, r) = resolve(message(attempts), Err(error), 3, t0(), jitter);
            if let Resolution::Retry { at, .. } = r {
                prop_assert!(at >= t0());
            }
        }
    }
}
