//! `holdall admin list-users`: the users as a table.

use holdall_proto::api::AdminUser;

/// One line per user: name, root namespace, bytes used, quota, and flags.
pub fn table(users: &[AdminUser]) -> String {
    let mut out = format!(
        "{:24}  {:>8}  {:>16}  {:>16}  STATE\n",
        "USER", "ROOT NS", "USED BYTES", "QUOTA BYTES"
    );
    for u in users {
        let quota = u
            .usage
            .quota_bytes
            .map_or_else(|| "-".to_owned(), |q| q.to_string());
        let state = match (u.disabled, u.admin) {
            (true, _) => "disabled",
            (false, true) => "admin",
            (false, false) => "active",
        };
        out.push_str(&format!(
            "{:24}  {:>8}  {:>16}  {:>16}  {state}\n",
            u.name, u.root_ns, u.usage.bytes, quota
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdall_proto::api::Usage;

    #[test]
    fn a_line_per_user_with_their_state() {
        let user = |name: &str, disabled, quota| AdminUser {
            name: name.into(),
            root_ns: 7,
            admin: name == "admin",
            disabled,
            usage: Usage {
                bytes: 42,
                quota_bytes: quota,
            },
        };
        let t = table(&[user("admin", false, None), user("bo", true, Some(100))]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("USER"));
        assert!(lines[1].starts_with("admin") && lines[1].ends_with("admin"));
        assert!(lines[2].contains("100") && lines[2].ends_with("disabled"));
    }
}
