//! Reading the dates and timestamps a business's app wrote into the input tables.
//!
//! SQLite stores whatever an app writes, so a date column may hold `2025-11-18`, a naive
//! timestamp (`2025-11-18 09:00:00`), a timestamp with an offset (`2025-11-18T01:00:00+07:00`,
//! `…+0700`, `…Z`), or something no rule can use (`18/11/2025`, `tomorrow`). A naive value is
//! local time in `REMINDER_TIMEZONE`; a value with an offset is an instant, and its date is the
//! local date of that instant there. Anything else is an error naming what was found, so that
//! the row can be reported instead of silently matching no rule.

use chrono::{DateTime, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A value that is not a date or timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{shown}' is not {expected}")]
pub struct DateError {
    shown: String,
    expected: &'static str,
}

const DATE: &str = "a date (YYYY-MM-DD, or an ISO-8601 timestamp)";
const TIMESTAMP: &str = "a timestamp (YYYY-MM-DD HH:MM[:SS] local, or ISO-8601 with an offset)";

/// Longest part of a bad value quoted in an error.
const SHOWN_CHARS: usize = 40;

fn error(raw: &str, expected: &'static str) -> DateError {
    let mut shown: String = raw.chars().take(SHOWN_CHARS).flat_map(char::escape_debug).collect();
    if raw.chars().count() > SHOWN_CHARS {
        shown.push('…');
    }
    DateError { shown, expected }
}

/// A parsed input value: a calendar date, a local wall-clock time, or an instant.
enum Parsed {
    Date(NaiveDate),
    Local(NaiveDateTime),
    Instant(DateTime<FixedOffset>),
}

fn parse(raw: &str) -> Option<Parsed> {
    let s = raw.trim();
    if s.len() == 10 {
        return NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().map(Parsed::Date);
    }
    if s.len() < 16 || !s.is_ascii() {
        return None;
    }
    // `T` or a space between date and time, as ISO-8601 and SQL write it.
    let (date, rest) = s.split_at(10);
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let normalized = format!("{date}T{rest}");
    if let Ok(t) = DateTime::parse_from_rfc3339(&normalized) {
        return Some(Parsed::Instant(t));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(&normalized, format) {
            return Some(Parsed::Instant(t));
        }
    }
    if let Some(utc) = normalized.strip_suffix(['Z', 'z']) {
        for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
            if let Ok(t) = NaiveDateTime::parse_from_str(utc, format) {
                return Some(Parsed::Instant(t.and_utc().fixed_offset()));
            }
        }
        return None;
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&normalized, format) {
            return Some(Parsed::Local(t));
        }
    }
    None
}

/// The local date a date column's value stands for.
pub fn local_date(raw: &str, tz: Tz) -> Result<NaiveDate, DateError> {
    match parse(raw) {
        Some(Parsed::Date(d)) => Ok(d),
        Some(Parsed::Local(t)) => Ok(t.date()),
        Some(Parsed::Instant(t)) => Ok(t.with_timezone(&tz).date_naive()),
        None => Err(error(raw, DATE)),
    }
}

/// Whether a date column's value needs [`local_date`] rather than SQLite's `date()`: it does
/// not parse as a plain date there, or it carries an offset, which `date()` would read as UTC.
pub fn needs_local_reading(raw: &str) -> bool {
    !matches!(parse(raw), Some(Parsed::Date(_) | Parsed::Local(_)))
}

/// The instant a timestamp column's value stands for. A naive value, or a bare date (its
/// midnight), is local time in `tz`; in a DST gap it moves forward to the first valid instant,
/// and an ambiguous one takes the earlier.
pub fn instant(raw: &str, tz: Tz) -> Result<DateTime<Utc>, DateError> {
    let local = match parse(raw) {
        Some(Parsed::Instant(t)) => return Ok(t.with_timezone(&Utc)),
        Some(Parsed::Local(t)) => t,
        Some(Parsed::Date(d)) => d.and_time(chrono::NaiveTime::MIN),
        None => return Err(error(raw, TIMESTAMP)),
    };
    Ok(resolve_local(local, tz))
}

/// A local wall-clock time as an instant: the earlier of two in a fold, and the first valid
/// instant after a gap.
pub fn resolve_local(local: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        LocalResult::None => {
            // Gaps are at most a few hours; walk forward a minute at a time.
            let mut probe = local;
            for _ in 0..(24 * 60) {
                probe += chrono::Duration::minutes(1);
                if let LocalResult::Single(t) | LocalResult::Ambiguous(t, _) =
                    tz.from_local_datetime(&probe)
                {
                    return t.with_timezone(&Utc);
                }
            }
            local.and_utc()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Asia::Jakarta;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn plain_and_naive_values_keep_their_written_date() {
        assert_eq!(local_date("2025-11-18", Jakarta), Ok(d("2025-11-18")));
        assert_eq!(local_date(" 2025-11-18 \n", Jakarta), Ok(d("2025-11-18")));
        assert_eq!(local_date("2025-11-18 23:30:00", Jakarta), Ok(d("2025-11-18")));
        assert_eq!(local_date("2025-11-18T00:10", Jakarta), Ok(d("2025-11-18")));
        assert!(!needs_local_reading("2025-11-18"));
        assert!(!needs_local_reading("2025-11-18 09:00:00"));
    }

    #[test]
    fn values_with_an_offset_are_read_as_local_dates_in_the_zone() {
        // 01:00 in Jakarta is 18:00 UTC the day before; the reminder's date is Jakarta's.
        assert_eq!(local_date("2025-11-18T01:00:00+07:00", Jakarta), Ok(d("2025-11-18")));
        assert_eq!(local_date("2025-11-18T01:00:00+0700", Jakarta), Ok(d("2025-11-18")));
        assert_eq!(local_date("2025-11-17T20:00:00Z", Jakarta), Ok(d("2025-11-18")));
        assert_eq!(local_date("2025-11-17 20:00:00.123Z", Jakarta), Ok(d("2025-11-18")));
        assert_eq!(local_date("2025-11-18T23:30:00-05:00", Jakarta), Ok(d("2025-11-19")));
        assert!(needs_local_reading("2025-11-18T01:00:00+07:00"));
        assert!(needs_local_reading("2025-11-18T01:00:00Z"));
    }

    #[test]
    fn values_that_are_not_dates_are_errors_naming_them() {
        for bad in
            ["18/11/2025", "tomorrow", "", "2025-02-30", "2025-13-01", "20251118", "1763424000"]
        {
            let e = local_date(bad, Jakarta).unwrap_err();
            assert!(e.to_string().contains("is not a date"), "{bad}: {e}");
            assert!(needs_local_reading(bad), "{bad}");
        }
        let e = local_date("\u{1b}[31mred", Jakarta).unwrap_err().to_string();
        assert!(!e.contains('\u{1b}'), "control characters are escaped: {e}");
        let long = "x".repeat(500);
        assert!(local_date(&long, Jakarta).unwrap_err().to_string().len() < 120);
    }

    #[test]
    fn naive_timestamps_are_local_time() {
        let t = instant("2025-11-18 09:00:00", Jakarta).unwrap();
        assert_eq!(t.to_rfc3339(), "2025-11-18T02:00:00+00:00");
        let t = instant("2025-11-18T09:00:00+07:00", Jakarta).unwrap();
        assert_eq!(t.to_rfc3339(), "2025-11-18T02:00:00+00:00");
        let t = instant("2025-11-18", Jakarta).unwrap();
        assert_eq!(t.to_rfc3339(), "2025-11-17T17:00:00+00:00");
        assert!(instant("next monday", Jakarta).is_err());
    }

    #[test]
    fn a_local_time_in_a_dst_gap_moves_forward() {
        let ny = chrono_tz::America::New_York;
        // 2025-03-09 02:30 does not exist in New York; 03:00 EDT is 07:00 UTC.
        let t = instant("2025-03-09 02:30", ny).unwrap();
        assert_eq!(t.to_rfc3339(), "2025-03-09T07:00:00+00:00");
    }
}
