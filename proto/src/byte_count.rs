//! Byte counts as people write them on command lines and in config files: `500K`, `10M`,
//! `1G`, `2T` or `12345` (K = 1024). Used for the client's caps and quotas and the server's
//! cache size.

/// Parses a byte count (a size, or a rate in bytes per second) such as `500K`, `10M`, `1G`,
/// `2T` or `12345` (K = 1024).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count like 500K, 10M or 1G"))?;
    let scale: u64 = match unit.to_ascii_uppercase().trim_end_matches("B") {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("{text:?}: the unit must be K, M, G or T")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("12345"), Ok(12345));
        assert_eq!(parse_bytes("500K"), Ok(500 * 1024));
        assert_eq!(parse_bytes("10M"), Ok(10 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("2MB"), Ok(2 << 20));
        assert_eq!(parse_bytes("3T"), Ok(3 << 40));
        assert!(parse_bytes("fast").is_err());
        assert!(parse_bytes("10P").is_err());
        assert!(parse_bytes("").is_err());
    }
}
