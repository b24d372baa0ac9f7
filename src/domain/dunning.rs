//! Dunning stages: which reminder (T-7 … T+12) is due for an invoice on a given day.
//!
//! Every stage owns a half-open window of days relative to the due date, and the windows never
//! overlap. That is what makes generation idempotent and self-healing: a cron run that was
//! missed is caught up by the next run (the stage is still current), and an invoice first seen
//! late only ever gets the latest stage, never a burst of every stage it skipped.

use chrono::{NaiveDate, TimeDelta};

/// How many days before the due date reminders go out, and how overdue follow-ups repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DunningPolicy {
    /// Days before the due date that start a pre-due stage (`[7, 3, 1]` → T-7, T-3, T-1).
    pub before: Vec<u32>,
    /// Days between overdue follow-ups; the first follow-up is this many days after the due date.
    pub followup_every: u32,
    /// How many overdue follow-ups are sent at most.
    pub followups: u32,
}

impl Default for DunningPolicy {
    fn default() -> Self {
        Self { before: vec![7, 3, 1], followup_every: 3, followups: 4 }
    }
}

const MAX_DAYS: u32 = 365;
const MAX_FOLLOWUPS: u32 = 52;

impl DunningPolicy {
    /// Builds a policy from config values.
    ///
    /// `before` is a comma list like `"7,3,1"` (any order, duplicates collapse, each 1..=365);
    /// `followup_every` must be 1..=365 and `followups` 0..=52.
    pub fn new(before: &str, followup_every: u32, followups: u32) -> Result<Self, String> {
        let mut days = Vec::new();
        for part in before.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!(
                    "invalid reminder days '{}': expected a comma list of days like 7,3,1",
                    before.trim()
                ));
            }
            let day: u32 = part.parse().map_err(|_| {
                format!(
                    "invalid reminder days '{}': '{part}' is not a whole number of days",
                    before.trim()
                )
            })?;
            if !(1..=MAX_DAYS).contains(&day) {
                return Err(format!(
                    "invalid reminder days '{}': {day} is outside 1..={MAX_DAYS}",
                    before.trim()
                ));
            }
            days.push(day);
        }
        // Largest first, so `before` reads in chronological order of the stages.
        days.sort_unstable_by(|a, b| b.cmp(a));
        days.dedup();

        if !(1..=MAX_DAYS).contains(&followup_every) {
            return Err(format!(
                "invalid follow-up interval {followup_every}: must be 1..={MAX_DAYS} days"
            ));
        }
        if followups > MAX_FOLLOWUPS {
            return Err(format!(
                "invalid follow-up count {followups}: must be 0..={MAX_FOLLOWUPS}"
            ));
        }
        Ok(Self { before: days, followup_every, followups })
    }

    /// All stages in chronological order: T-7, T-3, T-1, T+3, T+6, T+9, T+12 by default.
    pub fn stages(&self) -> Vec<Stage> {
        // The fields are public, so a hand-built policy may be unsorted, contain duplicates or
        // zeros; normalise here so the windows still never overlap.
        let mut before: Vec<i64> =
            self.before.iter().filter(|&&d| d > 0).map(|&d| -i64::from(d)).collect();
        before.sort_unstable();
        before.dedup();

        let mut stages = Vec::with_capacity(before.len() + self.followups as usize);
        for (i, &offset) in before.iter().enumerate() {
            // The last pre-due stage ends on the due date: "will be due" is never sent on or
            // after the due date itself.
            let end = before.get(i + 1).copied().unwrap_or(0);
            stages.push(Stage::new(offset, end));
        }
        if self.followup_every > 0 {
            let every = i64::from(self.followup_every);
            for k in 1..=i64::from(self.followups) {
                stages.push(Stage::new(k * every, (k + 1) * every));
            }
        }
        stages
    }

    /// Days after the due date on which the last stage ends: from then on no stage of that due
    /// date is ever current again.
    pub fn horizon(&self) -> i64 {
        self.stages().iter().map(|s| s.end).max().unwrap_or(0)
    }

    /// The one stage that is current on `today` for an invoice due on `due`, if any.
    pub fn current_stage(&self, due: NaiveDate, today: NaiveDate) -> Option<Stage> {
        let days = today.signed_duration_since(due).num_days();
        self.stages().into_iter().find(|s| s.offset <= days && days < s.end)
    }
}

/// One reminder stage: current from `offset` (inclusive) to `end` (exclusive), both in days
/// relative to the due date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Stable label stored with sent reminders, e.g. `"T-7"` or `"T+3"`.
    pub name: String,
    /// First day of the stage relative to the due date: `-7`, `+3`.
    pub offset: i64,
    /// Exclusive end of the stage relative to the due date.
    pub end: i64,
}

impl Stage {
    fn new(offset: i64, end: i64) -> Self {
        let name = if offset < 0 { format!("T{offset}") } else { format!("T+{offset}") };
        Self { name, offset, end }
    }

    /// Whether this is an overdue follow-up rather than a "will be due" reminder.
    pub fn is_overdue(&self) -> bool {
        self.offset > 0
    }

    /// The date this stage starts for an invoice due on `due`.
    pub fn date_for(&self, due: NaiveDate) -> NaiveDate {
        shift(due, self.offset)
    }

    /// Inclusive range `(earliest_due, latest_due)` of due dates for which this stage is current
    /// on `today`, i.e. `offset <= today - due < end`. Lets the store select candidates with a
    /// plain `BETWEEN` on the due date.
    pub fn due_range(&self, today: NaiveDate) -> (NaiveDate, NaiveDate) {
        let latest = shift(today, self.offset.saturating_neg());
        let earliest = shift(today, self.end.saturating_sub(1).saturating_neg());
        (earliest, latest)
    }
}

/// `date + days`, saturating at the ends of chrono's calendar instead of panicking.
fn shift(date: NaiveDate, days: i64) -> NaiveDate {
    TimeDelta::try_days(days)
        .and_then(|delta| date.checked_add_signed(delta))
        .unwrap_or(if days < 0 { NaiveDate::MIN } else { NaiveDate::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn name_on(policy: &DunningPolicy, due: NaiveDate, today: NaiveDate) -> Option<String> {
        policy.current_stage(due, today).map(|s| s.name)
    }

    #[test]
    fn default_policy_has_the_seven_spec_stages_in_order() {
        let stages = DunningPolicy::default().stages();
        let got: Vec<(&str, i64, i64)> =
            stages.iter().map(|s| (s.name.as_str(), s.offset, s.end)).collect();
        assert_eq!(
            got,
            vec![
                ("T-7", -7, -3),
                ("T-3", -3, -1),
                ("T-1", -1, 0),
                ("T+3", 3, 6),
                ("T+6", 6, 9),
                ("T+9", 9, 12),
                ("T+12", 12, 15),
            ]
        );
    }

    #[test]
    fn new_sorts_and_deduplicates_days_before() {
        let policy = DunningPolicy::new(" 1, 7,3 ,7", 3, 4).unwrap();
        assert_eq!(policy.before, vec![7, 3, 1]);
        assert_eq!(policy, DunningPolicy::default());
    }

    #[test]
    fn new_rejects_out_of_range_or_malformed_values() {
        assert!(DunningPolicy::new("0,3", 3, 4).unwrap_err().contains("0 is outside"));
        assert!(DunningPolicy::new("366", 3, 4).is_err());
        assert!(DunningPolicy::new("7,,1", 3, 4).is_err());
        assert!(DunningPolicy::new("", 3, 4).is_err());
        assert!(DunningPolicy::new("seven", 3, 4).unwrap_err().contains("seven"));
        assert!(DunningPolicy::new("-1", 3, 4).is_err());
        assert!(DunningPolicy::new("7", 0, 4).is_err());
        assert!(DunningPolicy::new("7", 366, 4).is_err());
        assert!(DunningPolicy::new("7", 3, 53).is_err());
        assert!(DunningPolicy::new("365", 365, 52).is_ok());
        assert!(DunningPolicy::new("7", 3, 0).is_ok());
    }

    #[test]
    fn each_pre_due_stage_is_current_on_its_own_date() {
        let p = DunningPolicy::default();
        let due = date(2025, 11, 18);
        assert_eq!(name_on(&p, due, date(2025, 11, 11)).as_deref(), Some("T-7"));
        assert_eq!(name_on(&p, due, date(2025, 11, 15)).as_deref(), Some("T-3"));
        assert_eq!(name_on(&p, due, date(2025, 11, 17)).as_deref(), Some("T-1"));
        assert_eq!(name_on(&p, due, date(2025, 11, 10)), None);
    }

    #[test]
    fn nothing_is_current_on_the_due_day_itself() {
        let p = DunningPolicy::default();
        let due = date(2025, 11, 18);
        assert_eq!(p.current_stage(due, due), None);
    }

    #[test]
    fn days_between_due_date_and_first_follow_up_have_no_stage() {
        let p = DunningPolicy::default();
        let due = date(2025, 11, 18);
        assert_eq!(name_on(&p, due, date(2025, 11, 19)), None);
        assert_eq!(name_on(&p, due, date(2025, 11, 20)), None);
        assert_eq!(name_on(&p, due, date(2025, 11, 21)).as_deref(), Some("T+3"));
    }

    #[test]
    fn a_missed_cron_day_is_caught_up_by_the_still_current_stage() {
        let p = DunningPolicy::default();
        let due = date(2025, 11, 18);
        assert_eq!(name_on(&p, due, date(2025, 11, 12)).as_deref(), Some("T-7"));
        assert_eq!(name_on(&p, due, date(2025, 11, 22)).as_deref(), Some("T+3"));
    }

    #[test]
    fn invoice_first_seen_at_t_minus_2_gets_only_t_minus_3() {
        let p = DunningPolicy::default();
        let due = date(2025, 11, 18);
        assert_eq!(name_on(&p, due, date(2025, 11, 16)).as_deref(), Some("T-3"));
    }

    #[test]
    fn late_invoice_gets_only_the_latest_stage() {
        let p = DunningPolicy::default();
        let due = date(2025, 11, 18);
        assert_eq!(name_on(&p, due, date(2025, 11, 28)).as_deref(), Some("T+9"));
    }

    #[test]
    fn last_follow_up_lasts_one_interval_then_nothing_is_current() {
        let p = DunningPolicy::default();
        let due = date(2025, 11, 18);
        assert_eq!(name_on(&p, due, date(2025, 11, 30)).as_deref(), Some("T+12"));
        assert_eq!(name_on(&p, due, date(2025, 12, 2)).as_deref(), Some("T+12"));
        assert_eq!(name_on(&p, due, date(2025, 12, 3)), None);
        assert_eq!(name_on(&p, due, date(2026, 6, 1)), None);
    }

    #[test]
    fn t_minus_1_for_a_due_date_on_march_first_falls_on_february_28() {
        let p = DunningPolicy::default();
        let due = date(2025, 3, 1);
        let t1 = &p.stages()[2];
        assert_eq!(t1.date_for(due), date(2025, 2, 28));
        assert_eq!(name_on(&p, due, date(2025, 2, 28)).as_deref(), Some("T-1"));
        assert_eq!(name_on(&p, due, date(2025, 2, 22)).as_deref(), Some("T-7"));
    }

    #[test]
    fn leap_day_is_counted_as_a_real_day() {
        let p = DunningPolicy::default();
        let stages = p.stages();
        // Due 2024-03-01: T-1 is the leap day.
        assert_eq!(stages[2].date_for(date(2024, 3, 1)), date(2024, 2, 29));
        // Due on the leap day itself: T+3 lands on 3 March.
        assert_eq!(stages[3].date_for(date(2024, 2, 29)), date(2024, 3, 3));
        assert_eq!(name_on(&p, date(2024, 2, 29), date(2024, 2, 28)).as_deref(), Some("T-1"));
    }

    #[test]
    fn stages_cross_the_year_end() {
        let p = DunningPolicy::default();
        let due = date(2026, 1, 2);
        assert_eq!(p.stages()[0].date_for(due), date(2025, 12, 26));
        assert_eq!(name_on(&p, due, date(2025, 12, 31)).as_deref(), Some("T-3"));
        assert_eq!(name_on(&p, date(2025, 12, 30), date(2026, 1, 2)).as_deref(), Some("T+3"));
    }

    #[test]
    fn due_range_brackets_the_due_dates_a_stage_is_current_for() {
        let stages = DunningPolicy::default().stages();
        let today = date(2025, 11, 18);
        // T-7 is current for due dates 4..=7 days ahead.
        assert_eq!(stages[0].due_range(today), (date(2025, 11, 22), date(2025, 11, 25)));
        // T-1 is current only for invoices due tomorrow.
        assert_eq!(stages[2].due_range(today), (date(2025, 11, 19), date(2025, 11, 19)));
        // T+12 is current for due dates 12..=14 days ago.
        assert_eq!(stages[6].due_range(today), (date(2025, 11, 4), date(2025, 11, 6)));
    }

    #[test]
    fn only_follow_ups_are_overdue() {
        let overdue: Vec<bool> =
            DunningPolicy::default().stages().iter().map(Stage::is_overdue).collect();
        assert_eq!(overdue, vec![false, false, false, true, true, true, true]);
    }

    #[test]
    fn policy_without_follow_ups_stops_at_the_due_date() {
        let p = DunningPolicy::new("5", 3, 0).unwrap();
        let due = date(2025, 5, 10);
        assert_eq!(p.stages().len(), 1);
        assert_eq!(name_on(&p, due, date(2025, 5, 9)).as_deref(), Some("T-5"));
        assert_eq!(name_on(&p, due, date(2025, 5, 13)), None);
    }

    #[test]
    fn extreme_dates_saturate_instead_of_panicking() {
        let stage = &DunningPolicy::default().stages()[6];
        assert_eq!(stage.date_for(NaiveDate::MAX), NaiveDate::MAX);
        let (earliest, _) = stage.due_range(NaiveDate::MIN);
        assert_eq!(earliest, NaiveDate::MIN);
        let huge = Stage { name: "T+huge".into(), offset: i64::MAX, end: i64::MIN };
        assert_eq!(huge.date_for(date(2025, 1, 1)), NaiveDate::MAX);
        let _ = huge.due_range(date(2025, 1, 1));
    }

    fn any_date() -> impl Strategy<Value = NaiveDate> {
        // 1990-01-01 ..= ~2100, wide enough to include many leap years and month ends.
        (0i64..40_000).prop_map(|d| date(1990, 1, 1) + TimeDelta::days(d))
    }

    fn any_policy() -> impl Strategy<Value = DunningPolicy> {
        (proptest::collection::vec(1u32..=60, 0..6), 1u32..=30, 0u32..=8).prop_map(
            |(before, followup_every, followups)| DunningPolicy {
                before,
                followup_every,
                followups,
            },
        )
    }

    proptest! {
        #[test]
        fn at_most_one_stage_is_current_and_due_range_agrees(
            policy in prop_oneof![Just(DunningPolicy::default()), any_policy()],
            due in any_date(),
            delta in -100i64..100,
        ) {
            let today = due + TimeDelta::days(delta);
            let stages = policy.stages();
            let containing: Vec<&Stage> = stages
                .iter()
                .filter(|s| {
                    let (earliest, latest) = s.due_range(today);
                    earliest <= due && due <= latest
                })
                .collect();
            prop_assert!(containing.len() <= 1);
            let current = policy.current_stage(due, today);
            prop_assert_eq!(current.as_ref(), containing.first().copied());
        }

        #[test]
        fn pre_due_stages_never_reach_the_due_date(
            policy in any_policy(),
            due in any_date(),
            delta in 0i64..100,
        ) {
            let today = due + TimeDelta::days(delta);
            if let Some(stage) = policy.current_stage(due, today) {
                prop_assert!(stage.is_overdue());
            }
        }

        #[test]
        fn a_stage_is_current_on_its_own_start_date(
            policy in any_policy(),
            due in any_date(),
        ) {
            for stage in policy.stages() {
                prop_assert_eq!(policy.current_stage(due, stage.date_for(due)), Some(stage));
            }
        }
    }
}
