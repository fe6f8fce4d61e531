//! For `twofactor check`: where the module is active in the PAM stacks
//! (`/etc/pam.d/*`, following `@include` and `include`/`substack`), and
//! which accounts with a login shell would be locked out there. Enabling
//! the module under `unenrolled = "deny"` before anyone is enrolled denies
//! every login through `common-auth`, root's included (issue 17).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::config;

/// PAM files and `/etc/passwd` are small; a larger one is read in part.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// `@include` chains deeper than this are not followed (a loop).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Shells that end a session at once: such accounts cannot log in.
const NO_LOGIN_SHELLS: [&str; 7] = [
    "/usr/sbin/nologin",
    "/sbin/nologin",
    "/bin/false",
    "/usr/bin/false",
    "/bin/true",
    "/usr/bin/true",
    "/bin/sync",
];

/// The files `check` reads, under a root directory (`/`, or a test's).
pub struct System {
    root: PathBuf,
}

impl System {
    pub fn new(root: &Path) -> System {
        System {
            root: root.to_path_buf(),
        }
    }

    /// `path` (absolute, as on the system) under the root directory.
    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// The text of a system file, or `None` if it cannot be read. Opened
    /// without blocking and checked on the open fd to be a regular file, so
    /// a FIFO or device planted at a path never hangs root's `check`
    /// (symlinks are followed: the system's own files may be links).
    pub fn read(&self, path: &Path) -> Option<String> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut text = String::new();
        file.take(MAX_FILE_BYTES).read_to_string(&mut text).ok()?;
        Some(text)
    }

    /// The services in `/etc/pam.d` whose auth stack runs the module with
    /// the config at `config_path`, each with the file holding the module
    /// line (`common-auth` for `sshd`). Sorted by service name.
    pub fn services_using(&self, config_path: &Path) -> Vec<(String, PathBuf)> {
        let pam_d = self.path("/etc/pam.d");
        let Ok(entries) = std::fs::read_dir(&pam_d) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.') && !n.contains(".dpkg-") && !n.ends_with('~'))
            .collect();
        names.sort();
        names
            .into_iter()
            .filter_map(|name| {
                let found = self.module_line_in(&pam_d, &pam_d.join(&name), config_path, 0)?;
                Some((name, found))
            })
            .collect()
    }

    /// The file with an active module line reached from `file`, if any.
    fn module_line_in(
        &self,
        pam_d: &Path,
        file: &Path,
        config_path: &Path,
        depth: usize,
    ) -> Option<PathBuf> {
        if depth > MAX_INCLUDE_DEPTH {
            return None;
        }
        let text = self.read(file)?;
        for line in logical_lines(&text) {
            let included = match parse_line(&line) {
                Line::Include(name) => name,
                Line::Auth {
                    control,
                    module,
                    args,
                } => {
                    if matches!(control.as_str(), "include" | "substack") {
                        module
                    } else {
                        if is_our_module(&module) && uses_config(&args, config_path) {
                            return Some(file.to_path_buf());
                        }
                        continue;
                    }
                }
                Line::Other => continue,
            };
            let path = if included.starts_with('/') {
                self.path(&included)
            } else {
                pam_d.join(&included)
            };
            if let Some(found) = self.module_line_in(pam_d, &path, config_path, depth + 1) {
                return Some(found);
            }
        }
        None
    }
}

/// One line of a PAM file as far as `check` cares.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// `@include NAME`.
    Include(String),
    /// An `auth` (or `-auth`) line: control, module path, arguments.
    Auth {
        control: String,
        module: String,
        args: Vec<String>,
    },
    Other,
}

/// Lines without comments, with `\` continuations joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        let raw = raw.split('#').next().unwrap_or("");
        if let Some(head) = raw.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(raw);
        lines.push(std::mem::take(&mut current));
    }
    lines.push(current);
    lines
}

fn parse_line(line: &str) -> Line {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("@include") {
        return match rest.split_whitespace().next() {
            Some(name) if rest.starts_with(char::is_whitespace) => Line::Include(name.into()),
            _ => Line::Other,
        };
    }
    let Some(rest) = line
        .strip_prefix("-auth")
        .or_else(|| line.strip_prefix("auth"))
        .filter(|r| r.starts_with(char::is_whitespace))
    else {
        return Line::Other;
    };
    let rest = rest.trim_start();
    // A control is a word or a `[...]` list, which may hold spaces.
    let (control, rest) = if rest.starts_with('[') {
        match rest.find(']') {
            Some(end) => (&rest[..=end], &rest[end + 1..]),
            None => return Line::Other,
        }
    } else {
        rest.split_once(char::is_whitespace).unwrap_or((rest, ""))
    };
    let mut words = rest.split_whitespace();
    let Some(module) = words.next() else {
        return Line::Other;
    };
    Line::Auth {
        control: control.to_string(),
        module: module.to_string(),
        args: words.map(str::to_string).collect(),
    }
}

fn is_our_module(module: &str) -> bool {
    module.rsplit('/').next() == Some("pam_twofactor.so")
}

/// The module line reads `config_path`: its `config=` argument, or the
/// default config without one. Lines for another config are not this
/// config's business.
fn uses_config(args: &[String], config_path: &Path) -> bool {
    let named = args
        .iter()
        .find_map(|a| a.strip_prefix("config="))
        .unwrap_or(config::DEFAULT_PATH);
    Path::new(named) == config_path
}

/// One account of `passwd` that can log in.
#[derive(Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub shell: String,
}

/// The accounts of `passwd` with a login shell, root first, then in file
/// order; an empty shell is `/bin/sh` (login(1)).
pub fn login_accounts(passwd: &str) -> Vec<Account> {
    let mut accounts: Vec<Account> = passwd
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let [name, _, uid, gid, _, _, shell] = f[..] else {
                return None;
            };
            let shell = if shell.is_empty() { "/bin/sh" } else { shell };
            if name.is_empty() || NO_LOGIN_SHELLS.contains(&shell) {
                return None;
            }
            Some(Account {
                name: name.to_string(),
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
                shell: shell.to_string(),
            })
        })
        .collect();
    accounts.sort_by_key(|a| a.name != "root");
    accounts
}

/// The names of the `group` file's groups that `account` belongs to (its
/// primary group and every group listing it).
pub fn groups_of(group: &str, account: &Account) -> BTreeSet<String> {
    group
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let [name, _, gid, members] = f[..] else {
                return None;
            };
            let primary = gid.parse::<u32>().ok() == Some(account.gid);
            let listed = members.split(',').any(|m| m.trim() == account.name);
            (primary || listed).then(|| name.to_string())
        })
        .collect()
}

/// The first name in `passwd` with `uid` (the module redirects an
/// unenrolled alias to its uid's first name).
pub fn first_name_of_uid(passwd: &str, uid: u32) -> Option<&str> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let (name, _, u) = (f.next()?, f.next()?, f.next()?);
        (u.parse::<u32>().ok() == Some(uid)).then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Comments, `-auth`, bracketed controls, includes and other types are
    /// told apart.
    #[test]
    fn pam_lines_are_parsed_like_libpam_reads_them() {
        let auth = |control: &str, module: &str, args: &[&str]| Line::Auth {
            control: control.into(),
            module: module.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        assert_eq!(
            parse_line("@include common-auth"),
            Line::Include("common-auth".into())
        );
        assert_eq!(parse_line("@includex y"), Line::Other);
        assert_eq!(
            parse_line("auth requisite pam_twofactor.so"),
            auth("requisite", "pam_twofactor.so", &[])
        );
        assert_eq!(
            parse_line(
                "-auth [success=1 default=ignore] /lib/security/pam_twofactor.so config=/x debug"
            ),
            auth(
                "[success=1 default=ignore]",
                "/lib/security/pam_twofactor.so",
                &["config=/x", "debug"]
            )
        );
        assert_eq!(parse_line("account required pam_twofactor.so"), Line::Other);
        assert_eq!(parse_line("authx required pam_twofactor.so"), Line::Other);
        let lines =
            logical_lines("# auth required pam_twofactor.so\nauth \\\n required x.so # c\n");
        assert_eq!(parse_line(&lines[0]), Line::Other);
        assert_eq!(parse_line(&lines[1]), auth("required", "x.so", &[]));
        assert!(is_our_module(
            "/lib/x86_64-linux-gnu/security/pam_twofactor.so"
        ));
        assert!(!is_our_module("pam_twofactor.so.bak"));
        assert!(uses_config(&[], Path::new(config::DEFAULT_PATH)));
        assert!(!uses_config(
            &["config=/other.toml".into()],
            Path::new(config::DEFAULT_PATH)
        ));
    }

    /// Accounts without a login shell are left out; root comes first.
    #[test]
    fn login_accounts_are_root_first_without_nologin_shells() {
        let passwd = "daemon:x:1:1::/:/usr/sbin/nologin\n\
                      alice:x:1000:1000::/home/alice:/bin/bash\n\
                      root:x:0:0::/root:/bin/bash\n\
                      sync:x:4:65534::/bin:/bin/sync\n\
                      bob:x:1001:1001::/:\n\
                      broken line\n";
        let names: Vec<_> = login_accounts(passwd).into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["root", "alice", "bob"]);
        let alice = &login_accounts(passwd)[1];
        let group = "alice:x:1000:\nadmins:x:50:bob,alice\nother:x:51:bob\n";
        assert_eq!(
            groups_of(group, alice).into_iter().collect::<Vec<_>>(),
            ["admins", "alice"]
        );
        assert_eq!(first_name_of_uid(passwd, 0), Some("root"));
    }

    /// A FIFO where a system file should be is not read (no hang).
    #[test]
    fn a_fifo_is_not_read() {
        let dir = crate::store::testdir::scratch("pam-stacks-fifo");
        let fifo = dir.join("passwd");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let system = System { root: dir.clone() };
        assert_eq!(system.read(&fifo), None);
    }
}
