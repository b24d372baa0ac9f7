//! Phone numbers: normalising what people type into the international digits the messaging
//! APIs expect.
//!
//! Indonesian numbers are written in many ways (`0812…`, `+62 812…`, `(0812) …`, `62 0812…`);
//! all of them become `62812…`. Only mobile numbers are accepted for Indonesia because a chat app
//! cannot reach a landline. Foreign numbers are accepted when written in international form.

/// Why a phone number was rejected. Every message quotes the (trimmed) input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Nothing but whitespace was given.
    #[error("no phone number")]
    Empty,
    /// Only separators (spaces, dashes, dots, parentheses, '+') were given.
    #[error("invalid phone number '{input}': it contains no digits")]
    NoDigits {
        /// The trimmed input (its first 40 characters).
        input: String,
    },
    /// A character that is neither a digit nor an accepted separator.
    #[error("invalid phone number '{input}': unexpected character '{ch}'")]
    InvalidCharacter {
        /// The trimmed input (its first 40 characters).
        input: String,
        /// The first offending character.
        ch: char,
    },
    /// A '+' somewhere other than at the very start.
    #[error("invalid phone number '{input}': '+' is only allowed at the start")]
    MisplacedPlus {
        /// The trimmed input (its first 40 characters).
        input: String,
    },
    /// Fewer digits than the shortest Indonesian mobile number.
    #[error("invalid phone number '{input}': too short for an Indonesian mobile number")]
    TooShort {
        /// The trimmed input (its first 40 characters).
        input: String,
    },
    /// More digits than the longest Indonesian mobile number.
    #[error("invalid phone number '{input}': too long for an Indonesian mobile number")]
    TooLong {
        /// The trimmed input (its first 40 characters).
        input: String,
    },
    /// An Indonesian number that is not a mobile number (a landline, or an unused prefix).
    #[error(
        "invalid phone number '{input}': not an Indonesian mobile number (mobile numbers start \
         with 081-083 or 085-089); WhatsApp needs a mobile number"
    )]
    NotMobile {
        /// The trimmed input (its first 40 characters).
        input: String,
    },
    /// An international number whose country code starts with 0.
    #[error("invalid phone number '{input}': a country code cannot start with 0")]
    BadCountryCode {
        /// The trimmed input (its first 40 characters).
        input: String,
    },
    /// An international number outside the E.164 length limits.
    #[error(
        "invalid phone number '{input}': an international number needs 8 to 15 digits, \
         got {digits}"
    )]
    BadLength {
        /// The trimmed input (its first 40 characters).
        input: String,
        /// How many digits the number has after its prefix was normalised.
        digits: usize,
    },
}

const INDONESIA: &str = "62";
/// E.164 limits, plus a sane lower bound for real subscriber numbers.
const INTERNATIONAL_DIGITS: std::ops::RangeInclusive<usize> = 8..=15;
/// `8[1-35-9]\d{7,10}`: 9 to 12 digits after the country code.
const MOBILE_DIGITS: std::ops::RangeInclusive<usize> = 9..=12;

/// Normalizes to international digits without '+': `"081234567890"` → `"6281234567890"`.
///
/// Indonesian numbers must be mobile numbers. Other countries are accepted when written
/// internationally (`+65…`, `0065…`) with 8 to 15 digits. A bare digit string that does not
/// start with `0`, `62` or `8` is also read as already international, so that every output of
/// this function normalizes to itself.
pub fn normalize(raw: &str) -> Result<String, PhoneError> {
    let input = raw.trim();
    if input.is_empty() {
        return Err(PhoneError::Empty);
    }
    let owned = || quoted(input);

    let mut plus = false;
    let mut digits = String::with_capacity(input.len());
    for ch in whole_number(input).chars() {
        match ch {
            '0'..='9' => digits.push(ch),
            '+' if digits.is_empty() && !plus => plus = true,
            '+' => return Err(PhoneError::MisplacedPlus { input: owned() }),
            c if c.is_whitespace() || matches!(c, '-' | '.' | '(' | ')') => {}
            c => return Err(PhoneError::InvalidCharacter { input: owned(), ch: c }),
        }
    }
    if digits.is_empty() {
        return Err(PhoneError::NoDigits { input: owned() });
    }

    // "00" is the international call prefix, so "0062…" means "+62…".
    let (international, digits) = if plus {
        (true, digits.as_str())
    } else if let Some(rest) = digits.strip_prefix("00") {
        (true, rest)
    } else {
        (false, digits.as_str())
    };

    let national = if let Some(rest) = digits.strip_prefix(INDONESIA) {
        // "62 0812…": people often keep the trunk 0 after the country code.
        rest.strip_prefix('0').unwrap_or(rest)
    } else if international {
        if digits.starts_with('0') {
            return Err(PhoneError::BadCountryCode { input: owned() });
        }
        return foreign(digits, input);
    } else if let Some(rest) = digits.strip_prefix('0') {
        rest
    } else if digits.starts_with('8') {
        digits
    } else {
        return foreign(digits, input);
    };

    validate_mobile(national, input)?;
    Ok(format!("{INDONESIA}{national}"))
}

/// A whole number written as a decimal (`81234567890.0`) without its fraction: a phone that an
/// app or a spreadsheet stored as a number, which SQLite keeps in a text column as that text.
/// Read with '.' as a separator, it would gain a digit and reach someone else.
fn whole_number(input: &str) -> &str {
    match input.split_once('.') {
        Some((whole, fraction))
            if whole.strip_prefix('+').unwrap_or(whole).bytes().all(|b| b.is_ascii_digit())
                && !whole.is_empty()
                && !fraction.is_empty()
                && fraction.bytes().all(|b| b == b'0') =>
        {
            whole
        }
        _ => input,
    }
}

/// Longest part of the input an error quotes: the reason goes to logs, the outbox and `status`,
/// and a megabyte of digits in a phone column must not go with it.
const QUOTED_CHARS: usize = 40;

fn quoted(input: &str) -> String {
    let mut out: String = input.chars().take(QUOTED_CHARS).collect();
    if input.chars().count() > QUOTED_CHARS {
        out.push('…');
    }
    out
}

fn foreign(digits: &str, input: &str) -> Result<String, PhoneError> {
    if INTERNATIONAL_DIGITS.contains(&digits.len()) {
        Ok(digits.to_owned())
    } else {
        Err(PhoneError::BadLength { input: quoted(input), digits: digits.len() })
    }
}

fn validate_mobile(national: &str, input: &str) -> Result<(), PhoneError> {
    let bytes = national.as_bytes();
    // Check the prefix before the length: "021…" is better explained as a landline than as
    // a number of the wrong length.
    match bytes {
        [] => return Err(PhoneError::TooShort { input: quoted(input) }),
        [b'8'] | [b'8', b'1'..=b'3' | b'5'..=b'9', ..] => {}
        _ => return Err(PhoneError::NotMobile { input: quoted(input) }),
    }
    if national.len() < *MOBILE_DIGITS.start() {
        return Err(PhoneError::TooShort { input: quoted(input) });
    }
    if national.len() > *MOBILE_DIGITS.end() {
        return Err(PhoneError::TooLong { input: quoted(input) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn common_indonesian_spellings_all_normalize_to_62_digits() {
        for raw in [
            "081234567890",
            "81234567890",
            "6281234567890",
            "+6281234567890",
            "+62 812 3456 7890",
            "(0812) 3456 7890",
            "0812-3456-7890",
            "0812.3456.7890",
            "62081234567890",
            "+62 (0)812 3456 7890",
            "006281234567890",
            "  0812 3456 7890\t",
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok("6281234567890"), "{raw}");
        }
    }

    #[test]
    fn short_and_long_mobile_numbers_within_range_are_accepted() {
        assert_eq!(normalize("08551234567").as_deref(), Ok("628551234567"));
        assert_eq!(normalize("0812345678").as_deref(), Ok("62812345678"));
        assert_eq!(normalize("0812345678901").as_deref(), Ok("62812345678901"));
    }

    #[test]
    fn foreign_numbers_written_with_plus_or_00_are_kept() {
        assert_eq!(normalize("+65 9123 4567").as_deref(), Ok("6591234567"));
        assert_eq!(normalize("+1 (415) 555-0100").as_deref(), Ok("14155550100"));
        assert_eq!(normalize("0065 9123 4567").as_deref(), Ok("6591234567"));
    }

    #[test]
    fn landlines_are_rejected_because_whatsapp_needs_a_mobile() {
        let err = normalize("0211234567").unwrap_err();
        assert_eq!(err, PhoneError::NotMobile { input: "0211234567".into() });
        assert!(err.to_string().contains("'0211234567'"));
        assert!(err.to_string().contains("WhatsApp needs a mobile"));
        assert!(matches!(normalize("+62 21 1234567"), Err(PhoneError::NotMobile { .. })));
    }

    #[test]
    fn unused_mobile_prefixes_are_rejected() {
        assert!(matches!(normalize("08412345678"), Err(PhoneError::NotMobile { .. })));
        assert!(matches!(normalize("08012345678"), Err(PhoneError::NotMobile { .. })));
    }

    #[test]
    fn too_short_number_is_rejected_with_the_input_in_the_message() {
        let err = normalize(" 0812345 ").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid phone number '0812345': too short for an Indonesian mobile number"
        );
        assert!(matches!(normalize("0812"), Err(PhoneError::TooShort { .. })));
        assert!(matches!(normalize("62"), Err(PhoneError::TooShort { .. })));
        assert!(matches!(normalize("0"), Err(PhoneError::TooShort { .. })));
    }

    #[test]
    fn a_number_stored_as_a_decimal_keeps_its_digits() {
        assert_eq!(normalize("81234567890.0").as_deref(), Ok("6281234567890"));
        assert_eq!(normalize("6281234567890.00").as_deref(), Ok("6281234567890"));
        assert_eq!(normalize("+6281234567890.0").as_deref(), Ok("6281234567890"));
        // Dots between groups are still separators.
        assert_eq!(normalize("0812.3456.7890").as_deref(), Ok("6281234567890"));
    }

    #[test]
    fn a_huge_input_is_quoted_short() {
        let huge = "8".repeat(1 << 20);
        let e = normalize(&huge).unwrap_err().to_string();
        assert!(e.len() < 120, "{} bytes", e.len());
        assert!(e.contains(&format!("'{}…'", "8".repeat(QUOTED_CHARS))), "{e}");
        let e = normalize(&format!("0812{}x", "1".repeat(100))).unwrap_err().to_string();
        assert!(e.len() < 120 && e.ends_with("unexpected character 'x'"), "{e}");
    }

    #[test]
    fn too_long_number_is_rejected() {
        assert_eq!(
            normalize("0812345678901234"),
            Err(PhoneError::TooLong { input: "0812345678901234".into() })
        );
    }

    #[test]
    fn letters_and_stray_symbols_are_rejected() {
        assert_eq!(
            normalize("abc"),
            Err(PhoneError::InvalidCharacter { input: "abc".into(), ch: 'a' })
        );
        let err = normalize("0812-34x5-678").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid phone number '0812-34x5-678': unexpected character 'x'"
        );
        assert!(matches!(
            normalize("0812/3456/7890"),
            Err(PhoneError::InvalidCharacter { ch: '/', .. })
        ));
        assert!(matches!(
            normalize("0812 3456 ７890"),
            Err(PhoneError::InvalidCharacter { ch: '７', .. })
        ));
        assert!(matches!(normalize("0812+34567890"), Err(PhoneError::MisplacedPlus { .. })));
        assert!(matches!(normalize("++6281234567890"), Err(PhoneError::MisplacedPlus { .. })));
    }

    #[test]
    fn empty_or_digitless_input_is_rejected() {
        assert_eq!(normalize(""), Err(PhoneError::Empty));
        assert_eq!(normalize("   ").unwrap_err().to_string(), "no phone number");
        assert!(matches!(normalize("( - )"), Err(PhoneError::NoDigits { .. })));
        assert!(matches!(normalize("+"), Err(PhoneError::NoDigits { .. })));
    }

    #[test]
    fn malformed_international_numbers_are_rejected() {
        assert!(matches!(normalize("+0812345678"), Err(PhoneError::BadCountryCode { .. })));
        assert_eq!(
            normalize("+65 123"),
            Err(PhoneError::BadLength { input: "+65 123".into(), digits: 5 })
        );
        assert!(matches!(
            normalize("+1234567890123456"),
            Err(PhoneError::BadLength { digits: 16, .. })
        ));
    }

    #[test]
    fn plus_eight_foreign_numbers_that_read_as_indonesian_mobiles_are_not_idempotent() {
        // Documented limitation: output carries no '+', and a bare "8…" is an Indonesian
        // national number, so e.g. a Japanese mobile changes meaning when normalized twice.
        let japan = normalize("+81 90 1234 5678").unwrap();
        assert_eq!(japan, "819012345678");
        assert_eq!(normalize(&japan).as_deref(), Ok("62819012345678"));
    }

    fn phoneish() -> impl Strategy<Value = String> {
        prop_oneof!["[0-9 +().-]{0,20}", "(\\+|00)?(62|620|0|8)?[0-9 -]{0,14}", any::<String>(),]
    }

    /// A foreign number starting with 8 loses its '+' and then reads as an Indonesian
    /// national number: see the test above.
    fn is_plus_eight_foreign(output: &str) -> bool {
        output.starts_with('8')
    }

    proptest! {
        #[test]
        fn normalize_never_panics_and_is_idempotent(raw in phoneish()) {
            if let Ok(once) = normalize(&raw) {
                prop_assert!(once.bytes().all(|b| b.is_ascii_digit()));
                prop_assert!(INTERNATIONAL_DIGITS.contains(&once.len()));
                if !is_plus_eight_foreign(&once) {
                    prop_assert_eq!(normalize(&once), Ok(once.clone()));
                }
            }
        }

        #[test]
        fn every_indonesian_result_is_a_mobile_number(raw in phoneish()) {
            if let Ok(out) = normalize(&raw) {
                if let Some(national) = out.strip_prefix("62") {
                    prop_assert!(national.starts_with('8'));
                    prop_assert!(MOBILE_DIGITS.contains(&national.len()));
                    prop_assert!(!matches!(national.as_bytes().get(1), Some(b'0' | b'4')));
                }
            }
        }

        #[test]
        fn any_valid_mobile_is_recovered_from_its_local_spelling(
            second in prop_oneof![1u8..=3, 5u8..=9],
            rest in "[0-9]{7,10}",
        ) {
            let national = format!("8{second}{rest}");
            let expected = format!("62{national}");
            prop_assert_eq!(normalize(&format!("0{national}")), Ok(expected.clone()));
            prop_assert_eq!(normalize(&format!("+62 {national}")), Ok(expected.clone()));
            prop_assert_eq!(normalize(&national), Ok(expected));
        }
    }
}
