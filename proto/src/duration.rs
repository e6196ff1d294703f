//! Durations as people write them on command lines and in config files: a whole number and
//! a unit, `90s`, `15m`, `12h`, `30d`. Used by the server's retention and the client's ages.

/// Longest duration taken: 100 years.
pub const DURATION_S_MAX: u64 = 100 * 365 * 86_400;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No unit, or not one of `s`, `m`, `h`, `d`.
    #[error("{0:?}: a duration ends in s, m, h or d (as in 30d)")]
    Unit(String),
    /// The number is not a whole number.
    #[error("{0:?}: a duration is a whole number and a unit")]
    Number(String),
    /// Over [`DURATION_S_MAX`].
    #[error("{0:?}: at most 100 years")]
    TooLong(String),
}

/// `text` in seconds.
pub fn parse_duration_s(text: &str) -> Result<u64, DurationError> {
    let text = text.trim();
    let seconds_per = match text.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        _ => return Err(DurationError::Unit(text.into())),
    };
    let number = &text[..text.len() - 1];
    if !number.bytes().all(|b| b.is_ascii_digit()) || number.is_empty() {
        return Err(DurationError::Number(text.into()));
    }
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds_per))
        .filter(|&s| s <= DURATION_S_MAX)
        .ok_or_else(|| DurationError::TooLong(text.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_s("90s"), Ok(90));
        assert_eq!(parse_duration_s("15m"), Ok(900));
        assert_eq!(parse_duration_s(" 12h "), Ok(43_200));
        assert_eq!(parse_duration_s("30d"), Ok(2_592_000));
        for bad in [
            "",
            "30",
            "d",
            "1.5h",
            "-1d",
            "+1d",
            "3w",
            "99999999999999d",
            "2h30",
        ] {
            assert!(parse_duration_s(bad).is_err(), "{bad:?}");
        }
    }
}
