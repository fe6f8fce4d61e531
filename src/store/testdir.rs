//! Scratch directories for unit tests, under a parent the checks accept
//! (/run as root, ~/.cache otherwise: never /tmp, which is refused).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// A fresh 0700 directory named after the test.
pub fn scratch(name: &str) -> PathBuf {
    let base = if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/pam-twofactor-unit")
    } else {
        PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/pam-twofactor-unit")
    };
    std::fs::create_dir_all(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = base.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}
