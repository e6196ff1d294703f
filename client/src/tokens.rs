//! `holdall token list`: the account's tokens as a table.

use holdall_proto::api::TokenEntry;

use crate::versions::local_time;

/// One line per token: id, when made, when last used, device.
pub fn table(tokens: &[TokenEntry]) -> String {
    let mut out = format!("{:16}  {:19}  {:19}  DEVICE\n", "ID", "MADE", "LAST USED");
    for t in tokens {
        let made = local_time(Some(t.created_ms).filter(|&ms| ms > 0));
        let device = if t.device.is_empty() {
            "(the account's first token)"
        } else {
            &t.device
        };
        out.push_str(&format!(
            "{:16}  {made:19}  {:19}  {device}\n",
            t.id,
            local_time(t.last_used_ms)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_per_token_and_never_a_secret() {
        let t = |id: &str, device: &str, used| TokenEntry {
            id: id.into(),
            device: device.into(),
            created_ms: 0,
            last_used_ms: used,
        };
        let table = table(&[t("00aa", "", None), t("11bb", "laptop", Some(1))]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("00aa") && lines[1].ends_with("(the account's first token)"));
        assert!(lines[2].starts_with("11bb") && lines[2].ends_with("laptop"));
        assert!(lines[1].contains(" -  "), "never used: {}", lines[1]);
    }
}
