//! How Holdall's names appear in the Dropbox API: revisions, file ids, account ids and
//! timestamps. Each is reversible, so the server keeps no table for them.
//!
//! - `rev` is the row's namespace and JID, 16 hex digits each: unique per version, and it
//!   orders versions of a path as their JIDs do.
//! - `id` is `id:` and base64url of the namespace (8 bytes, big-endian) and the path. It
//!   names a path, not a file across moves: Holdall's journal has no file identity beyond
//!   its path, so a moved file gets a new id (docs/DROPBOX_API.md).
//! - an account id is `dbid:` and the user id in 35 hex digits (Dropbox's ids are 40
//!   characters).
//! - times are UTC, `%Y-%m-%dT%H:%M:%SZ`, to the second.

use data_encoding::BASE64URL_NOPAD;
use holdall_proto::api::{Jid, NsId};

/// The `rev` of row `jid` of namespace `ns`.
pub fn rev(ns: NsId, jid: Jid) -> String {
    format!("{ns:016x}{jid:016x}")
}

/// The namespace and JID a `rev` names.
pub fn parse_rev(rev: &str) -> Option<(NsId, Jid)> {
    if rev.len() != 32 || !rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let ns = u64::from_str_radix(&rev[..16], 16).ok()?;
    let jid = u64::from_str_radix(&rev[16..], 16).ok()?;
    Some((ns, jid))
}

/// The `id` of `path` in namespace `ns`.
pub fn file_id(ns: NsId, path: &str) -> String {
    let mut raw = Vec::with_capacity(8 + path.len());
    raw.extend_from_slice(&ns.to_be_bytes());
    raw.extend_from_slice(path.as_bytes());
    format!("id:{}", BASE64URL_NOPAD.encode(&raw))
}

/// The namespace and path an `id` names.
pub fn parse_file_id(id: &str) -> Option<(NsId, String)> {
    let raw = BASE64URL_NOPAD
        .decode(id.strip_prefix("id:")?.as_bytes())
        .ok()?;
    if raw.len() < 8 {
        return None;
    }
    let (ns, path) = raw.split_at(8);
    let ns = u64::from_be_bytes(ns.try_into().ok()?);
    Some((ns, String::from_utf8(path.to_vec()).ok()?))
}

/// The Dropbox account id of user `id`.
pub fn account_id(id: u64) -> String {
    format!("dbid:{id:035x}")
}

/// A time in milliseconds since the epoch, as Dropbox writes times.
pub fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Milliseconds since the epoch of a Dropbox time (`2024-05-01T12:00:00Z`).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    Some((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (eras of 400 years, March first).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01: the inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back() {
        assert_eq!(parse_rev(&rev(7, 1 << 40)), Some((7, 1 << 40)));
        assert_eq!(parse_rev("abc"), None);
        let id = file_id(3, "Photos/été.jpg");
        assert_eq!(parse_file_id(&id), Some((3, "Photos/été.jpg".into())));
        assert_eq!(parse_file_id("id:!!"), None);
        assert_eq!(account_id(5).len(), 40);
    }

    #[test]
    fn times_are_utc_seconds_and_read_back() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(timestamp(1_700_000_000_999), "2023-11-14T22:13:20Z");
        for ms in [0, 951_782_400_000, 1_700_000_000_000, 4_102_444_800_000] {
            assert_eq!(parse_timestamp(&timestamp(ms)), Some(ms));
        }
        assert_eq!(parse_timestamp("2023-13-01T00:00:00Z"), None);
        assert_eq!(parse_timestamp("2023-11-14 22:13:20"), None);
    }
}
