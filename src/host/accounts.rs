//! The system's user database (NSS): group membership for `[exempt] groups`
//! and `enroll_groups` (only called when those are set), and the first name
//! of a uid for names without an enrollment (aliases such as `toor`).

use std::ffi::CString;

use nix::unistd::{Group, User, getgrouplist};

/// The names of every group `user` belongs to (primary and supplementary);
/// empty if the user is unknown.
pub fn groups_of(user: &str) -> Vec<String> {
    let Ok(Some(account)) = User::from_name(user) else {
        return Vec::new();
    };
    let Ok(name) = CString::new(user) else {
        return Vec::new();
    };
    let gids = getgrouplist(&name, account.gid).unwrap_or_else(|_| vec![account.gid]);
    gids.into_iter()
        .filter_map(|gid| Group::from_gid(gid).ok().flatten().map(|g| g.name))
        .collect()
}

/// The first of `wanted` that `user` belongs to.
pub fn first_shared_group(user: &str, wanted: &[String]) -> Option<String> {
    if wanted.is_empty() {
        return None;
    }
    let have = groups_of(user);
    wanted.iter().find(|g| have.contains(g)).cloned()
}

/// The name the user database gives first for `user`'s uid, when that is
/// another name: `toor` (uid 0, listed after `root`) gives `root`. `None`
/// for an unknown user or one that is its uid's first name.
pub fn first_name_of_uid(user: &str) -> Option<String> {
    let account = User::from_name(user).ok().flatten()?;
    let owner = User::from_uid(account.uid).ok().flatten()?;
    (owner.name != user).then_some(owner.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// root is in group root; an unknown user is in no group.
    #[test]
    fn root_is_in_group_root() {
        assert!(groups_of("root").contains(&"root".to_string()));
        assert_eq!(
            first_shared_group("root", &["nogroup".into(), "root".into()]),
            Some("root".into())
        );
        assert!(groups_of("no-such-user-xyz").is_empty());
        assert_eq!(first_shared_group("root", &[]), None);
    }

    /// root is its uid's first name; an unknown user has none.
    #[test]
    fn first_name_of_uid_only_names_another_account() {
        assert_eq!(first_name_of_uid("root"), None);
        assert_eq!(first_name_of_uid("no-such-user-xyz"), None);
    }
}
