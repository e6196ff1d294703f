//! Telling the user, once, that the server refuses files for their quota.
//!
//! A commit past quota is refused with `quota_exceeded`; the round goes on with every other
//! change, and the refused files are tried again in later rounds (they pass once space is
//! freed or the quota raised). Logging each refused path every round would bury the one
//! thing the user needs to know, so the notice is given when refusals start and again only
//! after a round without them.

use holdall_proto::api::Usage;
use tracing::warn;

/// The code a commit past quota is refused with.
pub const QUOTA_EXCEEDED: &str = "quota_exceeded";

/// Whether a path's error (as the round reports it, `code: message`) is a quota refusal.
pub fn is_quota_refusal(error: &str) -> bool {
    error
        .strip_prefix(QUOTA_EXCEEDED)
        .is_some_and(|rest| rest.starts_with(':'))
}

/// Remembers whether the user has been told.
#[derive(Debug, Default)]
pub struct QuotaNotice {
    told: bool,
}

impl QuotaNotice {
    /// After a round: tells the user if its `errors` hold quota refusals they have not been
    /// told of; the message, when one is due.
    pub fn observe(&mut self, errors: &[(String, String)], usage: Usage) -> Option<String> {
        let refused = errors.iter().filter(|(_, e)| is_quota_refusal(e)).count();
        if refused == 0 {
            self.told = false;
            return None;
        }
        if self.told {
            return None;
        }
        self.told = true;
        let quota = usage.quota_bytes.map_or("no quota now".to_owned(), |q| {
            format!("a quota of {q} bytes")
        });
        let message = format!(
            "the server refused {refused} file(s): your account is at its quota ({} bytes used, \
             {quota}); everything else keeps syncing, and these go up once space is freed or \
             the quota raised",
            usage.bytes
        );
        warn!(refused, used_bytes = usage.bytes, quota_bytes = ?usage.quota_bytes, "over quota");
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(path: &str) -> (String, String) {
        (path.into(), format!("{QUOTA_EXCEEDED}: over"))
    }

    #[test]
    fn tells_once_until_a_round_without_refusals() {
        let usage = Usage {
            bytes: 10,
            quota_bytes: Some(10),
        };
        let mut notice = QuotaNotice::default();
        let told = notice
            .observe(&[refusal("a"), refusal("b")], usage)
            .unwrap();
        assert!(told.contains("refused 2 file(s)"), "{told}");
        assert!(
            told.contains("10 bytes used, a quota of 10 bytes"),
            "{told}"
        );
        assert_eq!(notice.observe(&[refusal("a")], usage), None);
        let other = ("c".to_owned(), "bad_path: no".to_owned());
        assert_eq!(notice.observe(&[other], usage), None);
        assert!(notice.observe(&[refusal("a")], usage).is_some());
    }

    #[test]
    fn only_the_quota_code_counts() {
        assert!(is_quota_refusal("quota_exceeded: alice uses 5"));
        assert!(!is_quota_refusal("quota_exceeded_elsewhere: no"));
        assert!(!is_quota_refusal("conflict: quota_exceeded"));
    }
}
