//! The send window: the local hours during which messages may be delivered.
//!
//! Reminders generated outside the window wait for it to open instead of waking customers at
//! night. Minute resolution is all the config format can express, so that is all we store.

use std::fmt;

use chrono::{Days, NaiveDateTime, NaiveTime, Timelike};

const DAY: u16 = 24 * 60;

/// Daily local-time window `[start, end)` in minutes since local midnight; it may wrap midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow {
    start: u16,
    end: u16,
}

impl SendWindow {
    /// Parses `"HH:MM-HH:MM"`, e.g. `"08:00-20:00"`. The end may be `"24:00"`; start == end is
    /// an error unless the window is `"00:00-24:00"`; a window that wraps midnight
    /// (`"21:00-06:00"`) is allowed.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = |why: &str| format!("invalid send window '{s}': {why}");
        let (start, end) =
            s.split_once('-').ok_or_else(|| bad("expected HH:MM-HH:MM, e.g. 08:00-20:00"))?;
        let start = parse_hhmm(start.trim()).map_err(|why| bad(&why))?;
        let end = parse_hhmm(end.trim()).map_err(|why| bad(&why))?;
        if start == DAY {
            return Err(bad("the window cannot start at 24:00"));
        }
        // 00:00-24:00 is the only way to say "always"; any other equal pair is ambiguous
        // between "never" and "always".
        if start == end {
            return Err(bad("start and end are the same; use 00:00-24:00 to send at any time"));
        }
        Ok(Self { start, end })
    }

    /// The window that is always open, `00:00-24:00`.
    pub fn always() -> Self {
        Self { start: 0, end: DAY }
    }

    /// Whether messages may be sent at local time `local` (start inclusive, end exclusive).
    pub fn contains(&self, local: NaiveTime) -> bool {
        let m = minute_of_day(local);
        if self.start < self.end {
            self.start <= m && m < self.end
        } else {
            m >= self.start || m < self.end
        }
    }

    /// The next local instant (>= `local_now`) at which the window is open.
    ///
    /// Returns `local_now` itself at the very end of chrono's calendar, where there is no
    /// "tomorrow" to wait for.
    pub fn next_open(&self, local_now: NaiveDateTime) -> NaiveDateTime {
        if self.contains(local_now.time()) {
            return local_now;
        }
        let opens =
            NaiveTime::from_hms_opt(u32::from(self.start / 60), u32::from(self.start % 60), 0)
                .unwrap_or(NaiveTime::MIN);
        let today = local_now.date();
        // Closed means we are before today's opening or past today's closing.
        if local_now.time() < opens {
            today.and_time(opens)
        } else {
            today
                .checked_add_days(Days::new(1))
                .map_or(local_now, |tomorrow| tomorrow.and_time(opens))
        }
    }
}

impl fmt::Display for SendWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

fn minute_of_day(t: NaiveTime) -> u16 {
    (t.hour() * 60 + t.minute()) as u16
}

/// `H:MM` or `HH:MM`, 00:00..=24:00.
fn parse_hhmm(s: &str) -> Result<u16, String> {
    let malformed = || format!("'{s}' is not a time of day in HH:MM form");
    let (h, m) = s.split_once(':').ok_or_else(malformed)?;
    let digits = |p: &str, max_len: usize| {
        !p.is_empty() && p.len() <= max_len && p.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(h, 2) || !digits(m, 2) || m.len() != 2 {
        return Err(malformed());
    }
    let h: u16 = h.parse().map_err(|_| malformed())?;
    let m: u16 = m.parse().map_err(|_| malformed())?;
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(format!("'{s}' is not a valid time (00:00 to 24:00)"));
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use proptest::prelude::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn at(d: u32, h: u32, m: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2025, 11, d).unwrap().and_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn default_window_opens_at_eight_and_closes_at_twenty() {
        let w = SendWindow::parse("08:00-20:00").unwrap();
        assert!(!w.contains(t(7, 59)));
        assert!(w.contains(t(8, 0)));
        assert!(w.contains(t(19, 59)));
        assert!(w.contains(NaiveTime::from_hms_opt(19, 59, 59).unwrap()));
        assert!(!w.contains(t(20, 0)));
        assert!(!w.contains(t(0, 0)));
    }

    #[test]
    fn wrapping_window_is_open_across_midnight() {
        let w = SendWindow::parse("21:00-06:00").unwrap();
        assert!(w.contains(t(21, 0)));
        assert!(w.contains(t(23, 59)));
        assert!(w.contains(t(0, 0)));
        assert!(w.contains(t(5, 59)));
        assert!(!w.contains(t(6, 0)));
        assert!(!w.contains(t(20, 59)));
        assert_eq!(w.to_string(), "21:00-06:00");
    }

    #[test]
    fn end_of_24_00_includes_the_last_minute() {
        let w = SendWindow::parse("18:30-24:00").unwrap();
        assert!(w.contains(t(23, 59)));
        assert!(!w.contains(t(0, 0)));
        assert!(!w.contains(t(18, 29)));
        assert_eq!(w.to_string(), "18:30-24:00");
    }

    #[test]
    fn always_is_open_at_every_minute_and_parses_from_its_display() {
        let w = SendWindow::always();
        assert_eq!(w.to_string(), "00:00-24:00");
        assert_eq!(SendWindow::parse("00:00-24:00"), Ok(w));
        assert!(w.contains(t(0, 0)));
        assert!(w.contains(t(23, 59)));
    }

    #[test]
    fn single_digit_hours_and_spaces_are_tolerated() {
        assert_eq!(SendWindow::parse(" 8:00 - 20:00 ").unwrap().to_string(), "08:00-20:00");
    }

    #[test]
    fn malformed_windows_are_rejected_with_the_input_quoted() {
        for bad in [
            "8-20",
            "25:00-26:00",
            "08:00",
            "",
            "08:00-08:00",
            "00:00-00:00",
            "24:00-08:00",
            "08:60-20:00",
            "08:00-24:01",
            "08:0-20:00",
            "+8:00-20:00",
            "08:00-20:00-21:00",
            "０8:00-20:00",
        ] {
            let err = SendWindow::parse(bad).unwrap_err();
            assert!(err.contains(&format!("'{}'", bad.trim())), "{bad}: {err}");
        }
        assert!(SendWindow::parse("08:00-08:00").unwrap_err().contains("00:00-24:00"));
    }

    #[test]
    fn next_open_is_now_while_the_window_is_open() {
        let w = SendWindow::parse("08:00-20:00").unwrap();
        assert_eq!(w.next_open(at(18, 12, 34)), at(18, 12, 34));
    }

    #[test]
    fn next_open_before_opening_is_today_and_after_closing_is_tomorrow() {
        let w = SendWindow::parse("08:00-20:00").unwrap();
        assert_eq!(w.next_open(at(18, 7, 59)), at(18, 8, 0));
        assert_eq!(w.next_open(at(18, 20, 0)), at(19, 8, 0));
        assert_eq!(w.next_open(at(30, 23, 0)), at(30, 23, 0) + chrono::TimeDelta::hours(9));
    }

    #[test]
    fn next_open_for_a_wrapping_window_is_the_same_evening() {
        let w = SendWindow::parse("21:00-06:00").unwrap();
        assert_eq!(w.next_open(at(18, 6, 0)), at(18, 21, 0));
        assert_eq!(w.next_open(at(18, 3, 0)), at(18, 3, 0));
    }

    #[test]
    fn next_open_at_the_end_of_the_calendar_does_not_panic() {
        let w = SendWindow::parse("08:00-20:00").unwrap();
        let last = NaiveDateTime::MAX;
        assert_eq!(w.next_open(last), last);
    }

    proptest! {
        #[test]
        fn next_open_is_open_not_earlier_and_within_a_day(
            start in 0u16..DAY,
            end in 1u16..=DAY,
            minutes in 0u32..(3 * 1440),
            second in 0u32..60,
        ) {
            prop_assume!(start != end);
            let w = SendWindow::parse(&format!(
                "{:02}:{:02}-{:02}:{:02}", start / 60, start % 60, end / 60, end % 60
            )).unwrap();
            prop_assert_eq!(SendWindow::parse(&w.to_string()), Ok(w));
            let now = at(1, 0, 0) + chrono::TimeDelta::minutes(i64::from(minutes))
                + chrono::TimeDelta::seconds(i64::from(second));
            let open = w.next_open(now);
            prop_assert!(open >= now);
            prop_assert!(open - now <= chrono::TimeDelta::days(1));
            prop_assert!(w.contains(open.time()));
            // Nothing earlier (at minute resolution) was already open.
            let mut probe = now;
            while probe + chrono::TimeDelta::minutes(1) <= open {
                prop_assert!(!w.contains(probe.time()));
                probe += chrono::TimeDelta::minutes(1);
            }
        }
    }
}
