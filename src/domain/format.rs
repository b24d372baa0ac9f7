//! Indonesian presentation of money and dates for message templates.
//!
//! Hand-rolled rather than locale-driven so output is identical on every host: the messages
//! are customer-facing and must not change with the server's locale settings.

use chrono::{Datelike, NaiveDate};

const BULAN: [&str; 12] = [
    "Januari",
    "Februari",
    "Maret",
    "April",
    "Mei",
    "Juni",
    "Juli",
    "Agustus",
    "September",
    "Oktober",
    "November",
    "Desember",
];

/// Rupiah with Indonesian thousands dots: `150000` → `"Rp 150.000"`, `0` → `"Rp 0"`,
/// `-2500` → `"-Rp 2.500"`. Works for the whole `i64` range, `i64::MIN` included.
pub fn rupiah(amount: i64) -> String {
    // unsigned_abs, because -i64::MIN does not fit in an i64.
    let digits = amount.unsigned_abs().to_string();
    let sign = if amount < 0 { "-" } else { "" };
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 4);
    out.push_str(sign);
    out.push_str("Rp ");
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(ch);
    }
    out
}

/// Indonesian long date: 2025-11-18 → `"18 November 2025"`.
pub fn tanggal(date: NaiveDate) -> String {
    format!("{} {} {}", date.day(), BULAN[date.month0() as usize], date.year())
}

/// `dd-mm-yyyy`: 2025-12-18 → `"18-12-2025"`.
pub fn dd_mm_yyyy(date: NaiveDate) -> String {
    format!("{:02}-{:02}-{:04}", date.day(), date.month(), date.year())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn rupiah_groups_thousands_with_dots() {
        assert_eq!(rupiah(150_000), "Rp 150.000");
        assert_eq!(rupiah(1_500_000), "Rp 1.500.000");
        assert_eq!(rupiah(999), "Rp 999");
        assert_eq!(rupiah(1000), "Rp 1.000");
        assert_eq!(rupiah(12_345), "Rp 12.345");
    }

    #[test]
    fn rupiah_of_zero_has_no_sign() {
        assert_eq!(rupiah(0), "Rp 0");
    }

    #[test]
    fn negative_rupiah_puts_the_sign_before_rp() {
        assert_eq!(rupiah(-2500), "-Rp 2.500");
        assert_eq!(rupiah(-1), "-Rp 1");
    }

    #[test]
    fn rupiah_handles_the_extremes_of_i64() {
        assert_eq!(rupiah(i64::MIN), "-Rp 9.223.372.036.854.775.808");
        assert_eq!(rupiah(i64::MAX), "Rp 9.223.372.036.854.775.807");
    }

    #[test]
    fn tanggal_uses_indonesian_month_names() {
        assert_eq!(tanggal(date(2025, 11, 18)), "18 November 2025");
        assert_eq!(tanggal(date(2025, 1, 1)), "1 Januari 2025");
        assert_eq!(tanggal(date(2024, 2, 29)), "29 Februari 2024");
        let months: Vec<String> = (1..=12).map(|m| tanggal(date(2025, m, 5))).collect();
        assert_eq!(
            months,
            [
                "5 Januari 2025",
                "5 Februari 2025",
                "5 Maret 2025",
                "5 April 2025",
                "5 Mei 2025",
                "5 Juni 2025",
                "5 Juli 2025",
                "5 Agustus 2025",
                "5 September 2025",
                "5 Oktober 2025",
                "5 November 2025",
                "5 Desember 2025",
            ]
        );
    }

    #[test]
    fn dd_mm_yyyy_pads_day_and_month() {
        assert_eq!(dd_mm_yyyy(date(2025, 12, 18)), "18-12-2025");
        assert_eq!(dd_mm_yyyy(date(2026, 1, 5)), "05-01-2026");
    }

    proptest! {
        #[test]
        fn rupiah_round_trips_to_the_amount(amount in any::<i64>()) {
            let s = rupiah(amount);
            let negative = s.starts_with('-');
            let digits: String = s.chars().filter(char::is_ascii_digit).collect();
            prop_assert_eq!(negative, amount < 0);
            prop_assert_eq!(digits, amount.unsigned_abs().to_string());
            // Every dot-separated group after the first has exactly three digits.
            let body = s.trim_start_matches('-').trim_start_matches("Rp ");
            let groups: Vec<&str> = body.split('.').collect();
            prop_assert!((1..=3).contains(&groups[0].len()));
            prop_assert!(groups[1..].iter().all(|g| g.len() == 3));
        }
    }
}
