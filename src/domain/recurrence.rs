//! Repeating scheduled reminders: the recurrence kinds and the next occurrence of a series.
//!
//! Occurrences are always derived from the series anchor (the original `scheduled_at`), never
//! from the previous occurrence, so a monthly series anchored on the 31st clamps to short months
//! and still returns to the 31st afterwards, and DST shifts never accumulate.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Months, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;

/// How a scheduled reminder repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recurrence {
    /// Sent once.
    None,
    /// Every day at the anchor's local time.
    Daily,
    /// Every 7 days at the anchor's local time.
    Weekly,
    /// Every month on the anchor's local day of month (clamped to short months).
    Monthly,
}

impl Recurrence {
    /// The canonical lowercase name, as stored and as accepted by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }
}

impl FromStr for Recurrence {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("none") {
            Ok(Self::None)
        } else if t.eq_ignore_ascii_case("daily") {
            Ok(Self::Daily)
        } else if t.eq_ignore_ascii_case("weekly") {
            Ok(Self::Weekly)
        } else if t.eq_ignore_ascii_case("monthly") {
            Ok(Self::Monthly)
        } else {
            Err(format!("invalid recurrence '{t}': expected none, daily, weekly or monthly"))
        }
    }
}

impl fmt::Display for Recurrence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// First occurrence strictly after `after`, for a series anchored at `anchor` (the original
/// `scheduled_at`).
///
/// Occurrences are computed in local time in `tz`: the anchor's local time of day is kept;
/// daily = +k days, weekly = +7k days, monthly = +k months keeping the anchor's local day of
/// month, clamped to the month's last day (Jan 31 → Feb 28/29 → Mar 31 → Apr 30). Missed
/// occurrences are skipped, never returned. Returns `None` for [`Recurrence::None`], and also
/// when the next occurrence would fall outside chrono's representable range.
///
/// A local time that does not exist (DST gap) moves forward to the first valid instant; an
/// ambiguous one takes the earlier.
pub fn next_occurrence(
    anchor: DateTime<Utc>,
    recurrence: Recurrence,
    after: DateTime<Utc>,
    tz: Tz,
) -> Option<DateTime<Utc>> {
    if recurrence == Recurrence::None {
        return None;
    }
    if anchor > after {
        return Some(anchor);
    }
    let anchor_local = to_local(anchor, tz)?;
    let after_local = to_local(after, tz)?;
    let anchor_date = anchor_local.date();
    let time = anchor_local.time();

    // Estimate the index of the occurrence on `after`'s local date arithmetically, then step a
    // few occurrences from just below it. Starting two steps early keeps the estimate safe
    // around DST folds, where local order and UTC order can disagree by an hour.
    let estimate = match recurrence {
        Recurrence::None => return None,
        Recurrence::Daily => after_local.date().signed_duration_since(anchor_date).num_days(),
        Recurrence::Weekly => after_local.date().signed_duration_since(anchor_date).num_days() / 7,
        Recurrence::Monthly => {
            let years = i64::from(after_local.year()) - i64::from(anchor_date.year());
            let months = i64::from(after_local.month()) - i64::from(anchor_date.month());
            years * 12 + months
        }
    };
    let start = estimate.saturating_sub(2).max(0);
    for k in start..start.saturating_add(6) {
        let candidate = if k == 0 {
            anchor
        } else {
            let date = occurrence_date(anchor_date, recurrence, k)?;
            resolve_local(date.and_time(time), tz)?
        };
        if candidate > after {
            return Some(candidate);
        }
    }
    None
}

/// The last occurrence at or before `at` of a series anchored at `anchor`, or `None` before the
/// anchor (and for [`Recurrence::None`], whose only occurrence is the anchor itself, `Some`
/// once it has come). After an outage this is the occurrence worth sending: older ones were
/// overtaken by it.
pub fn latest_occurrence(
    anchor: DateTime<Utc>,
    recurrence: Recurrence,
    at: DateTime<Utc>,
    tz: Tz,
) -> Option<DateTime<Utc>> {
    if anchor > at {
        return None;
    }
    if recurrence == Recurrence::None {
        return Some(anchor);
    }
    // The occurrence just before the first one after `at`: step from the anchor's side.
    let next = next_occurrence(anchor, recurrence, at, tz)?;
    let anchor_local = to_local(anchor, tz)?;
    let (anchor_date, time) = (anchor_local.date(), anchor_local.time());
    let next_local = to_local(next, tz)?;
    let estimate = match recurrence {
        Recurrence::None => return Some(anchor),
        Recurrence::Daily => next_local.date().signed_duration_since(anchor_date).num_days(),
        Recurrence::Weekly => next_local.date().signed_duration_since(anchor_date).num_days() / 7,
        Recurrence::Monthly => {
            let years = i64::from(next_local.year()) - i64::from(anchor_date.year());
            let months = i64::from(next_local.month()) - i64::from(anchor_date.month());
            years * 12 + months
        }
    };
    let mut latest = anchor;
    for k in estimate.saturating_sub(3).max(1)..=estimate.saturating_add(1) {
        let date = occurrence_date(anchor_date, recurrence, k)?;
        let candidate = resolve_local(date.and_time(time), tz)?;
        if candidate <= at && candidate > latest {
            latest = candidate;
        }
    }
    Some(latest)
}

/// Local date of occurrence `k` (k ≥ 1), computed from the anchor so clamping never sticks.
fn occurrence_date(anchor: NaiveDate, recurrence: Recurrence, k: i64) -> Option<NaiveDate> {
    match recurrence {
        Recurrence::None => None,
        Recurrence::Daily => anchor.checked_add_signed(TimeDelta::try_days(k)?),
        Recurrence::Weekly => anchor.checked_add_signed(TimeDelta::try_days(k.checked_mul(7)?)?),
        // chrono clamps the day of month to the target month's last day.
        Recurrence::Monthly => anchor.checked_add_months(Months::new(u32::try_from(k).ok()?)),
    }
}

/// The local wall-clock time of `instant` in `tz`, or `None` at the edge of chrono's range.
fn to_local(instant: DateTime<Utc>, tz: Tz) -> Option<NaiveDateTime> {
    let utc = instant.naive_utc();
    utc.checked_add_offset(tz.offset_from_utc_datetime(&utc).fix())
}

/// Maps a local wall-clock time to an instant: ambiguous → earlier, nonexistent → the first
/// valid instant after the gap (the transition itself).
fn resolve_local(local: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    const WINDOW: i64 = 26 * 3600;

    if let Some(t) = tz.from_local_datetime(&local).earliest() {
        return Some(t.with_timezone(&Utc));
    }
    // Binary search for the first instant whose local time is >= `local`. UTC offsets
    // (historical local mean time included) lie within ±16 h, so the answer is inside
    // [local - 26 h, local + 26 h] read as UTC, and a gap means local time only moves forward
    // across it. Whole seconds suffice: tz transitions are on whole seconds.
    let target = local.and_utc().timestamp();
    let mut lo = target.checked_sub(WINDOW)?;
    let mut hi = target.checked_add(WINDOW)?;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if to_local(DateTime::from_timestamp(mid, 0)?, tz)? >= local {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const JAKARTA: Tz = chrono_tz::Asia::Jakarta;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn jkt(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        JAKARTA.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap().with_timezone(&Utc)
    }

    fn next(anchor: DateTime<Utc>, r: Recurrence, after: DateTime<Utc>) -> DateTime<Utc> {
        next_occurrence(anchor, r, after, JAKARTA).unwrap()
    }

    #[test]
    fn parses_names_case_insensitively_and_round_trips() {
        for (s, r) in [
            ("", Recurrence::None),
            ("none", Recurrence::None),
            ("Daily", Recurrence::Daily),
            (" WEEKLY ", Recurrence::Weekly),
            ("monthly", Recurrence::Monthly),
        ] {
            assert_eq!(s.parse::<Recurrence>(), Ok(r));
            assert_eq!(r.as_str().parse::<Recurrence>(), Ok(r));
        }
        let err = "yearly".parse::<Recurrence>().unwrap_err();
        assert!(err.contains("yearly"), "{err}");
    }

    #[test]
    fn the_latest_occurrence_is_the_one_an_outage_left_due() {
        let anchor = jkt(2025, 1, 31, 8, 0);
        // Three days of outage: the one worth sending is this morning's.
        let at = jkt(2025, 2, 3, 9, 0);
        assert_eq!(
            latest_occurrence(anchor, Recurrence::Daily, at, JAKARTA),
            Some(jkt(2025, 2, 3, 8, 0))
        );
        assert_eq!(
            latest_occurrence(anchor, Recurrence::Daily, jkt(2025, 2, 3, 7, 59), JAKARTA),
            Some(jkt(2025, 2, 2, 8, 0))
        );
        assert_eq!(
            latest_occurrence(anchor, Recurrence::Monthly, jkt(2025, 3, 30, 0, 0), JAKARTA),
            Some(jkt(2025, 2, 28, 8, 0))
        );
        assert_eq!(latest_occurrence(anchor, Recurrence::Weekly, anchor, JAKARTA), Some(anchor));
        assert_eq!(
            latest_occurrence(anchor, Recurrence::Daily, jkt(2025, 1, 1, 0, 0), JAKARTA),
            None
        );
        assert_eq!(latest_occurrence(anchor, Recurrence::None, at, JAKARTA), Some(anchor));
    }

    proptest! {
        #[test]
        fn the_latest_occurrence_is_at_or_before_and_the_next_comes_after(
            anchor_s in 0i64..2_000_000_000,
            gap in 0i64..400_000_000,
            r in prop_oneof![Just(Recurrence::Daily), Just(Recurrence::Weekly), Just(Recurrence::Monthly)],
        ) {
            let anchor = DateTime::from_timestamp(anchor_s, 0).unwrap();
            let at = DateTime::from_timestamp(anchor_s + gap, 0).unwrap();
            let latest = latest_occurrence(anchor, r, at, JAKARTA).unwrap();
            prop_assert!(latest <= at);
            prop_assert!(latest >= anchor);
            // Nothing of the series lies between the latest and `at`.
            let after = next_occurrence(anchor, r, latest, JAKARTA).unwrap();
            prop_assert!(after > at, "{latest} then {after}, at {at}");
        }
    }

    #[test]
    fn non_recurring_series_has_no_next_occurrence() {
        let a = jkt(2025, 1, 1, 9, 0);
        assert_eq!(next_occurrence(a, Recurrence::None, a - TimeDelta::days(1), JAKARTA), None);
    }

    #[test]
    fn future_anchor_is_its_own_next_occurrence() {
        let a = jkt(2030, 5, 5, 9, 0);
        assert_eq!(next(a, Recurrence::Weekly, jkt(2025, 1, 1, 0, 0)), a);
    }

    #[test]
    fn after_equal_to_an_occurrence_returns_the_following_one() {
        let a = jkt(2025, 1, 1, 9, 0);
        assert_eq!(next(a, Recurrence::Daily, a), jkt(2025, 1, 2, 9, 0));
        assert_eq!(next(a, Recurrence::Daily, jkt(2025, 3, 10, 9, 0)), jkt(2025, 3, 11, 9, 0));
    }

    #[test]
    fn monthly_series_on_the_31st_clamps_and_returns_to_the_31st() {
        let a = jkt(2024, 1, 31, 9, 0);
        let feb = next(a, Recurrence::Monthly, a);
        assert_eq!(feb, jkt(2024, 2, 29, 9, 0));
        let mar = next(a, Recurrence::Monthly, feb);
        assert_eq!(mar, jkt(2024, 3, 31, 9, 0));
        assert_eq!(next(a, Recurrence::Monthly, mar), jkt(2024, 4, 30, 9, 0));
        // Non-leap year, computed straight from the 2024 anchor.
        assert_eq!(next(a, Recurrence::Monthly, jkt(2025, 2, 1, 0, 0)), jkt(2025, 2, 28, 9, 0));
        assert_eq!(next(a, Recurrence::Monthly, jkt(2025, 2, 28, 9, 0)), jkt(2025, 3, 31, 9, 0));
    }

    #[test]
    fn monthly_skips_missed_months_and_is_late_same_day_aware() {
        let a = jkt(2020, 6, 15, 9, 0);
        assert_eq!(next(a, Recurrence::Monthly, jkt(2025, 11, 15, 8, 59)), jkt(2025, 11, 15, 9, 0));
        assert_eq!(next(a, Recurrence::Monthly, jkt(2025, 11, 15, 9, 1)), jkt(2025, 12, 15, 9, 0));
        assert_eq!(next(a, Recurrence::Monthly, jkt(2025, 12, 20, 0, 0)), jkt(2026, 1, 15, 9, 0));
    }

    #[test]
    fn weekly_keeps_the_weekday_and_skips_missed_weeks() {
        // 2025-01-06 is a Monday.
        let a = jkt(2025, 1, 6, 10, 0);
        assert_eq!(next(a, Recurrence::Weekly, a), jkt(2025, 1, 13, 10, 0));
        assert_eq!(next(a, Recurrence::Weekly, jkt(2025, 2, 5, 12, 0)), jkt(2025, 2, 10, 10, 0));
        assert_eq!(next(a, Recurrence::Weekly, jkt(2025, 2, 10, 9, 59)), jkt(2025, 2, 10, 10, 0));
    }

    #[test]
    fn daily_at_nine_in_jakarta_is_two_in_the_morning_utc() {
        let a = jkt(2025, 1, 1, 9, 0);
        assert_eq!(a, utc(2025, 1, 1, 2, 0));
        assert_eq!(next(a, Recurrence::Daily, utc(2025, 6, 1, 1, 0)), utc(2025, 6, 1, 2, 0));
        assert_eq!(next(a, Recurrence::Daily, utc(2025, 6, 1, 2, 0)), utc(2025, 6, 2, 2, 0));
    }

    #[test]
    fn daily_at_six_thirty_in_jakarta_falls_on_the_previous_utc_day() {
        let a = jkt(2025, 1, 1, 6, 30);
        assert_eq!(a, utc(2024, 12, 31, 23, 30));
        // 23:45 UTC on 1 June is already 06:45 on 2 June in Jakarta.
        assert_eq!(next(a, Recurrence::Daily, utc(2025, 6, 1, 23, 45)), utc(2025, 6, 2, 23, 30));
        assert_eq!(next(a, Recurrence::Daily, utc(2025, 6, 1, 23, 0)), utc(2025, 6, 1, 23, 30));
    }

    #[test]
    fn anchors_years_in_the_past_are_computed_directly() {
        let a = jkt(1990, 3, 31, 9, 0);
        assert_eq!(next(a, Recurrence::Monthly, jkt(2025, 4, 2, 0, 0)), jkt(2025, 4, 30, 9, 0));
        assert_eq!(next(a, Recurrence::Daily, jkt(2025, 4, 2, 10, 0)), jkt(2025, 4, 3, 9, 0));
    }

    #[test]
    fn local_time_in_a_dst_gap_moves_to_the_end_of_the_gap() {
        let ny = chrono_tz::America::New_York;
        let a = ny.with_ymd_and_hms(2025, 3, 1, 2, 30, 0).unwrap().with_timezone(&Utc);
        // 2025-03-09 02:30 does not exist in New York; 03:00 EDT is 07:00 UTC.
        let got = next_occurrence(a, Recurrence::Daily, utc(2025, 3, 9, 0, 0), ny).unwrap();
        assert_eq!(got, utc(2025, 3, 9, 7, 0));
        let following = next_occurrence(a, Recurrence::Daily, got, ny).unwrap();
        assert_eq!(following, utc(2025, 3, 10, 6, 30));
    }

    #[test]
    fn ambiguous_local_time_takes_the_earlier_instant() {
        let ny = chrono_tz::America::New_York;
        let a = ny.with_ymd_and_hms(2025, 10, 1, 1, 30, 0).unwrap().with_timezone(&Utc);
        // 2025-11-02 01:30 happens twice; the EDT one is 05:30 UTC.
        let got = next_occurrence(a, Recurrence::Daily, utc(2025, 11, 2, 0, 0), ny).unwrap();
        assert_eq!(got, utc(2025, 11, 2, 5, 30));
        let following = next_occurrence(a, Recurrence::Daily, got, ny).unwrap();
        assert_eq!(following, utc(2025, 11, 3, 6, 30));
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        let max = DateTime::<Utc>::MAX_UTC;
        let min = DateTime::<Utc>::MIN_UTC;
        for r in [Recurrence::Daily, Recurrence::Weekly, Recurrence::Monthly] {
            for tz in [JAKARTA, chrono_tz::Pacific::Kiritimati, chrono_tz::Etc::GMTPlus12] {
                let _ = next_occurrence(min, r, max, tz);
                let _ = next_occurrence(max, r, max, tz);
                let _ = next_occurrence(min, r, min, tz);
            }
        }
    }

    fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
        // 2000-01-01 ..= ~2060, second resolution.
        (946_684_800i64..2_840_000_000).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap())
    }

    fn any_recurrence() -> impl Strategy<Value = Recurrence> {
        prop_oneof![Just(Recurrence::Daily), Just(Recurrence::Weekly), Just(Recurrence::Monthly),]
    }

    /// Occurrence `k` computed the slow, obvious way, for cross-checking.
    fn reference(anchor: DateTime<Utc>, r: Recurrence, k: i64) -> DateTime<Utc> {
        let local = anchor.with_timezone(&JAKARTA);
        let date = local.date_naive();
        let date = match r {
            Recurrence::Daily => date + TimeDelta::days(k),
            Recurrence::Weekly => date + TimeDelta::days(7 * k),
            Recurrence::Monthly => {
                let total = i64::from(date.year()) * 12 + i64::from(date.month0()) + k;
                let (y, m0) = (total.div_euclid(12) as i32, total.rem_euclid(12) as u32);
                let mut day = date.day();
                loop {
                    if let Some(d) = NaiveDate::from_ymd_opt(y, m0 + 1, day) {
                        break d;
                    }
                    day -= 1;
                }
            }
            Recurrence::None => unreachable!(),
        };
        JAKARTA.from_local_datetime(&date.and_time(local.time())).unwrap().with_timezone(&Utc)
    }

    proptest! {
        #[test]
        fn next_occurrence_is_the_first_occurrence_after(
            anchor in any_instant(),
            after in any_instant(),
            r in any_recurrence(),
        ) {
            let got = next(anchor, r, after);
            prop_assert!(got > after);
            let local = got.with_timezone(&JAKARTA);
            let anchor_local = anchor.with_timezone(&JAKARTA);
            prop_assert_eq!(local.time(), anchor_local.time());

            // Find which occurrence it is and check the previous one is not after `after`.
            let k = match r {
                Recurrence::Daily => (local.date_naive() - anchor_local.date_naive()).num_days(),
                Recurrence::Weekly => {
                    let days = (local.date_naive() - anchor_local.date_naive()).num_days();
                    prop_assert_eq!(days % 7, 0);
                    days / 7
                }
                _ => {
                    (i64::from(local.year()) - i64::from(anchor_local.year())) * 12
                        + i64::from(local.month()) - i64::from(anchor_local.month())
                }
            };
            prop_assert!(k >= 0);
            prop_assert_eq!(got, reference(anchor, r, k));
            if k > 0 {
                prop_assert!(reference(anchor, r, k - 1) <= after);
            } else {
                prop_assert_eq!(got, anchor);
            }
        }
    }
}
