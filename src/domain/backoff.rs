//! Retry backoff for failed deliveries: exponential, capped, with caller-supplied jitter.
//!
//! The jitter is a parameter rather than drawn here so the rule stays a pure function and
//! tests are deterministic; jitter only ever lengthens the delay so retries never bunch up
//! earlier than the schedule.

use std::time::Duration;

const BASE_MS: u64 = 60_000;
const CAP_MS: u64 = 3_600_000;
/// Beyond this many doublings the 1 h cap applies anyway (60 s × 2^6 > 1 h).
const MAX_DOUBLINGS: u32 = 6;
const JITTER_SHARE: f64 = 0.2;

/// Delay before retry number `attempt` (1 = after the first failed attempt):
/// 60 s × 2^(attempt−1), capped at 1 h, plus `jitter` (0.0..=1.0, the caller draws it) × 20 %
/// upward. Attempt 0 counts as 1; jitter outside 0..=1 is clamped and NaN counts as 0.
/// Never panics or overflows for any attempt.
pub fn retry_delay(attempt: u32, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(MAX_DOUBLINGS);
    let base_ms = (BASE_MS << doublings).min(CAP_MS);
    let jitter = if jitter.is_nan() { 0.0 } else { jitter.clamp(0.0, 1.0) };
    let extra_ms = (base_ms as f64 * JITTER_SHARE * jitter).round() as u64;
    Duration::from_millis(base_ms + extra_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_retry_waits_one_minute_and_doubles_after() {
        assert_eq!(retry_delay(1, 0.0), Duration::from_secs(60));
        assert_eq!(retry_delay(2, 0.0), Duration::from_secs(120));
        assert_eq!(retry_delay(3, 0.0), Duration::from_secs(240));
        assert_eq!(retry_delay(6, 0.0), Duration::from_secs(1920));
    }

    #[test]
    fn seventh_and_later_retries_are_capped_at_one_hour() {
        assert_eq!(retry_delay(7, 0.0), Duration::from_secs(3600));
        assert_eq!(retry_delay(8, 0.0), Duration::from_secs(3600));
        assert_eq!(retry_delay(64, 0.0), Duration::from_secs(3600));
        assert_eq!(retry_delay(u32::MAX, 0.0), Duration::from_secs(3600));
    }

    #[test]
    fn full_jitter_adds_twenty_percent() {
        assert_eq!(retry_delay(1, 1.0), Duration::from_secs(72));
        assert_eq!(retry_delay(u32::MAX, 1.0), Duration::from_secs(4320));
        assert_eq!(retry_delay(2, 0.5), Duration::from_secs(132));
    }

    #[test]
    fn attempt_zero_is_treated_like_the_first_retry() {
        assert_eq!(retry_delay(0, 0.0), retry_delay(1, 0.0));
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        assert_eq!(retry_delay(1, -3.0), Duration::from_secs(60));
        assert_eq!(retry_delay(1, 7.0), Duration::from_secs(72));
        assert_eq!(retry_delay(1, f64::NAN), Duration::from_secs(60));
        assert_eq!(retry_delay(1, f64::INFINITY), Duration::from_secs(72));
    }

    proptest! {
        #[test]
        fn delay_stays_between_one_minute_and_the_jittered_cap(
            attempt in any::<u32>(),
            jitter in any::<f64>(),
        ) {
            let d = retry_delay(attempt, jitter);
            prop_assert!(d >= Duration::from_secs(60));
            prop_assert!(d <= Duration::from_secs(4320));
        }

        #[test]
        fn delay_never_shrinks_as_attempts_grow(attempt in 0u32..u32::MAX, jitter in 0.0f64..=1.0) {
            prop_assert!(retry_delay(attempt + 1, jitter) >= retry_delay(attempt, jitter));
        }
    }
}
