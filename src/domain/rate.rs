//! Send rate limits: how many messages a channel may send per unit of time.
//!
//! A rate is stored as the interval between two messages because that is what the sender
//! sleeps on; parsing accepts the "N per unit" spellings operators actually write.

use std::fmt;
use std::time::Duration;

const NANOS_PER_SECOND: u64 = 1_000_000_000;
const NANOS_PER_MINUTE: u64 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: u64 = 60 * NANOS_PER_MINUTE;

/// A channel's send rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// No pacing between messages.
    Unlimited,
    /// One message per interval.
    Every(Duration),
}

impl Rate {
    /// Parses `"1"` or `"0.5"` (messages per second), `"N/s"`, `"N/min"`, `"N/h"` (also
    /// `"N/sec"`, `"N/m"`, `"N/hour"`), and `"unlimited"` or `"0"` for no limit. Whitespace
    /// and letter case are tolerated; N must be positive and finite.
    pub fn parse(s: &str) -> Result<Self, String> {
        let input = s.trim();
        let bad = |why: &str| format!("invalid rate '{input}': {why}");
        let lower = input.to_ascii_lowercase();
        if lower == "unlimited" {
            return Ok(Self::Unlimited);
        }
        let (number, unit) = match lower.split_once('/') {
            Some((n, u)) => (n.trim(), Some(u.trim())),
            None => (lower.as_str(), None),
        };
        let unit_nanos = match unit {
            None | Some("s" | "sec") => NANOS_PER_SECOND,
            Some("m" | "min") => NANOS_PER_MINUTE,
            Some("h" | "hour") => NANOS_PER_HOUR,
            Some(other) => return Err(bad(&format!("unknown unit '{other}'; use /s, /min or /h"))),
        };
        // Only plain decimal numbers: f64's parser would also take "inf", "nan" and "1e3".
        let plain = !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && number.bytes().any(|b| b.is_ascii_digit());
        if !plain {
            return Err(bad(
                "expected a positive number of messages, e.g. 1, 0.5, 10/s, 30/min or unlimited",
            ));
        }
        let per_unit: f64 = number.parse().map_err(|_| bad("not a number"))?;
        if per_unit == 0.0 {
            return if unit.is_none() {
                Ok(Self::Unlimited)
            } else {
                Err(bad("the rate must be positive; use 0 or unlimited for no limit"))
            };
        }
        if !per_unit.is_finite() {
            return Err(bad("the rate must be finite"));
        }
        let nanos = (unit_nanos as f64 / per_unit).round();
        if nanos < 1.0 {
            return Err(bad("too fast to pace; use unlimited"));
        }
        if nanos >= u64::MAX as f64 {
            return Err(bad("too slow"));
        }
        Ok(Self::Every(Duration::from_nanos(nanos as u64)))
    }

    /// The pause between two messages, or `None` when unlimited.
    pub fn interval(&self) -> Option<Duration> {
        match self {
            Self::Unlimited => None,
            Self::Every(d) => Some(*d),
        }
    }
}

impl fmt::Display for Rate {
    /// Shows the rate the way it is configured, e.g. `"1/s"`, `"30/min"`, `"unlimited"`; the
    /// output parses back to the same rate.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = match self {
            Self::Every(d) if !d.is_zero() => d.as_nanos(),
            _ => return f.write_str("unlimited"),
        };
        for (unit_nanos, unit) in
            [(NANOS_PER_SECOND, "s"), (NANOS_PER_MINUTE, "min"), (NANOS_PER_HOUR, "h")]
        {
            let unit_nanos = u128::from(unit_nanos);
            if unit_nanos % nanos == 0 {
                return write!(f, "{}/{unit}", unit_nanos / nanos);
            }
        }
        // No whole count per unit: fall back to a decimal in the unit that keeps it readable.
        let (unit_nanos, unit) = if nanos < u128::from(NANOS_PER_SECOND) {
            (NANOS_PER_SECOND, "s")
        } else {
            (NANOS_PER_HOUR, "h")
        };
        write!(f, "{}/{unit}", unit_nanos as f64 / nanos as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn every(s: &str) -> Duration {
        Rate::parse(s).unwrap().interval().unwrap()
    }

    #[test]
    fn per_unit_spellings_become_intervals() {
        assert_eq!(every("1/min"), Duration::from_secs(60));
        assert_eq!(every("25"), Duration::from_millis(40));
        assert_eq!(every("10/s"), Duration::from_millis(100));
        assert_eq!(every("0.5"), Duration::from_secs(2));
        assert_eq!(every("3600/h"), Duration::from_secs(1));
        assert_eq!(every("2/sec"), Duration::from_millis(500));
        assert_eq!(every("30/m"), Duration::from_secs(2));
        assert_eq!(every("120/hour"), Duration::from_secs(30));
        assert_eq!(every(" 20 / MIN "), Duration::from_secs(3));
    }

    #[test]
    fn the_fastest_pace_is_one_nanosecond_and_faster_is_unlimited_by_name() {
        assert_eq!(every("1000000000/s"), Duration::from_nanos(1));
        // Half a nanosecond rounds to one; a third rounds to nothing, which cannot pace.
        assert_eq!(every("2000000000/s"), Duration::from_nanos(1));
        assert!(Rate::parse("3000000000/s").unwrap_err().contains("use unlimited"));
    }

    #[test]
    fn a_rate_is_shown_in_the_unit_that_reads_best() {
        // No pause at all is no limit, never a division by zero.
        assert_eq!(Rate::Every(Duration::ZERO).to_string(), "unlimited");
        // Not a whole count in any unit: per second below a second between messages, per
        // hour above.
        let fast = Rate::Every(Duration::from_nanos(7)).to_string();
        assert!(fast.ends_with("/s"), "{fast}");
        let slow = Rate::Every(Duration::from_millis(1300)).to_string();
        assert!(slow.starts_with("2769.23") && slow.ends_with("/h"), "{slow}");
    }

    #[test]
    fn unlimited_and_zero_mean_no_pacing() {
        assert_eq!(Rate::parse("unlimited"), Ok(Rate::Unlimited));
        assert_eq!(Rate::parse(" Unlimited "), Ok(Rate::Unlimited));
        assert_eq!(Rate::parse("0"), Ok(Rate::Unlimited));
        assert_eq!(Rate::parse("0.0"), Ok(Rate::Unlimited));
        assert_eq!(Rate::Unlimited.interval(), None);
    }

    #[test]
    fn invalid_rates_are_rejected_with_the_input_quoted() {
        for bad in [
            "-1", "abc", "1/day", "NaN", "inf", "1e3", "", "/s", "1/", "0/min", ".", "1.2.3",
            "1//s", "-0",
        ] {
            let err = Rate::parse(bad).unwrap_err();
            assert!(err.contains(&format!("'{bad}'")), "{bad}: {err}");
        }
        assert!(Rate::parse("1/day").unwrap_err().contains("'day'"));
    }

    #[test]
    fn absurd_magnitudes_are_rejected_instead_of_overflowing() {
        assert!(Rate::parse("99999999999999999999/s").is_err());
        assert!(Rate::parse("0.0000000000000000000001/h").is_err());
        let long = format!("1{}", "0".repeat(400));
        assert!(Rate::parse(&long).is_err());
    }

    #[test]
    fn display_is_readable() {
        assert_eq!(Rate::parse("1").unwrap().to_string(), "1/s");
        assert_eq!(Rate::parse("1/min").unwrap().to_string(), "1/min");
        assert_eq!(Rate::parse("25").unwrap().to_string(), "25/s");
        assert_eq!(Rate::parse("0.5").unwrap().to_string(), "30/min");
        assert_eq!(Rate::parse("1/h").unwrap().to_string(), "1/h");
        assert_eq!(Rate::parse("0.5/h").unwrap().to_string(), "0.5/h");
        assert_eq!(Rate::Unlimited.to_string(), "unlimited");
    }

    proptest! {
        #[test]
        fn display_parses_back_to_the_same_rate(nanos in 1u64..10_000_000_000_000) {
            let rate = Rate::Every(Duration::from_nanos(nanos));
            prop_assert_eq!(Rate::parse(&rate.to_string()), Ok(rate));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,12}") {
            let _ = Rate::parse(&s);
        }
    }
}
