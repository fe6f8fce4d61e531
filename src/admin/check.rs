//! `twofactor check`: the config, the delivery service and every file in
//! the state directory, each problem with the path it concerns and what
//! to do about it.

use std::path::{Path, PathBuf};

use super::pam_stacks::{self, System};
use super::{Admin, AdminError};
use crate::config::{self, Unenrolled};
use crate::delivery::{self, DeliveryError};
use crate::records::user::{FilesError, UserFiles};
use crate::records::username::Username;
use crate::records::{MAX_RECORD_BYTES, RecordError, SecretRecord, State};
use crate::store::{self, Access, StoreError};

/// One finding of `twofactor check`.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub problem: String,
}

impl Admin {
    /// With `[delivery] command` set: the command must pass the checks the
    /// delivery service makes before running it, and the delivery
    /// service's socket must be there and trusted, or no code by message
    /// can be sent (logins then say so and deny that way in).
    fn delivery_problems(&self) -> Vec<Problem> {
        let delivery = &self.config.delivery;
        let Some(command) = &delivery.command else {
            return Vec::new();
        };
        let mut problems: Vec<Problem> = command_problem(
            command,
            "[delivery] command: no code by message can be sent",
        )
        .into_iter()
        .collect();
        let socket = delivery.socket();
        match delivery::check_socket(socket) {
            Ok(()) => {}
            Err(DeliveryError::Unsafe(e)) => {
                let (path, problem) = split_path(&e);
                problems.push(Problem {
                    path,
                    problem: format!(
                        "{problem} ([delivery] socket: the module will not send codes there)"
                    ),
                });
            }
            Err(_) => problems.push(Problem {
                path: socket.to_path_buf(),
                problem: "no delivery service listens here: no code by message can be sent (systemctl enable --now pam-twofactor-deliver.socket)".into(),
            }),
        }
        problems
    }

    /// With `[notify] command` set: the command must pass the same checks
    /// as the delivery command (the delivery service and `twofactor` run
    /// it), and, if no `[delivery] command` already asks for it, the
    /// delivery service's socket must be there for the module's notices.
    fn notify_problems(&self) -> Vec<Problem> {
        let Some(command) = &self.config.notify.command else {
            return Vec::new();
        };
        let mut problems: Vec<Problem> =
            command_problem(command, "[notify] command: users are not told of changes")
                .into_iter()
                .collect();
        if self.config.delivery.command.is_none() {
            let socket = self.config.delivery.socket();
            if let Err(e) = delivery::check_socket(socket) {
                problems.push(Problem {
                    path: socket.to_path_buf(),
                    problem: format!("{e} ([delivery] socket: users are not told of events at login; systemctl enable --now pam-twofactor-deliver.socket)"),
                });
            }
        }
        problems
    }

    /// Under `unenrolled = "deny"`, every account with a login shell that
    /// is not enrolled (nor an alias of an enrolled uid, nor in an
    /// `[exempt] groups` group) is refused by every PAM service whose auth
    /// stack runs the module with this config: one problem per account,
    /// root first, at the file holding the module line.
    fn lockout_problems(&self, system: &System, enrolled: &[String]) -> Vec<Problem> {
        if self.config.unenrolled != Unenrolled::Deny {
            return Vec::new();
        }
        let services = system.services_using(&self.config_path);
        let Some((_, file)) = services.first() else {
            return Vec::new();
        };
        // Debian's common-* files are included by services, not services.
        let mut names: Vec<&str> = services
            .iter()
            .map(|(s, _)| s.as_str())
            .filter(|s| !s.starts_with("common-"))
            .collect();
        if names.is_empty() {
            names = services.iter().map(|(s, _)| s.as_str()).collect();
        }
        let names = names.join(", ");
        let passwd = system.read(&system.path(PASSWD)).unwrap_or_default();
        let group = system.read(&system.path(GROUP)).unwrap_or_default();
        let is_enrolled = |name: &str| enrolled.iter().any(|e| e == name);
        pam_stacks::login_accounts(&passwd)
            .into_iter()
            .filter(|a| !is_enrolled(&a.name))
            .filter(|a| !pam_stacks::first_name_of_uid(&passwd, a.uid).is_some_and(is_enrolled))
            .filter(|a| {
                let groups = pam_stacks::groups_of(&group, a);
                !self.config.exempt_groups.iter().any(|g| groups.contains(g))
            })
            .map(|a| Problem {
                path: file.clone(),
                problem: format!(
                    "{name} (shell {shell}) is not enrolled: with unenrolled = \"deny\" pam_twofactor.so refuses every login of {name} through {names} (fix: twofactor enroll {name}, or set unenrolled = \"skip\" in {config} while you roll out)",
                    name = a.name,
                    shell = a.shell,
                    config = self.config_path.display(),
                ),
            })
            .collect()
    }

    /// Validates the config and every file in the state directory, and
    /// reads the PAM stacks for accounts the module would lock out;
    /// returns every problem found (an empty list means all is well).
    /// `root` is `/`, or a test's directory standing in for it (the PAM
    /// stacks, passwd and group are read below it).
    pub fn check(config_path: Option<&Path>, root: &Path) -> Result<Vec<Problem>, AdminError> {
        let system = System::new(root);
        let admin = match Admin::open(config_path) {
            Ok(a) => a,
            Err(AdminError::Config(e)) => {
                let path = config_path
                    .map_or_else(|| PathBuf::from(config::DEFAULT_PATH), Path::to_path_buf);
                return Ok(vec![Problem {
                    path,
                    problem: format!("{e} (fix the file; see twofactor.toml(5))"),
                }]);
            }
            Err(e) => return Err(e),
        };
        let mut problems = admin.delivery_problems();
        problems.extend(admin.notify_problems());
        let dir = match admin.dir() {
            Ok(d) => d,
            Err(AdminError::Store(e)) => {
                let missing = matches!(
                    e,
                    StoreError::Io {
                        errno: nix::errno::Errno::ENOENT,
                        ..
                    }
                );
                let (path, mut problem) = split_path(&e);
                if missing {
                    problem.push_str(&format!(
                        " (create it with: install -d -o root -g root -m 0700 {})",
                        admin.config.state_dir.display()
                    ));
                }
                problems.push(Problem { path, problem });
                return Ok(problems);
            }
            Err(e) => return Err(e),
        };
        let mut enrolled = Vec::new();
        for name in dir.entries()? {
            let path = dir.path().join(&name);
            let mut report = |problem: String| {
                problems.push(Problem {
                    path: path.clone(),
                    problem,
                })
            };
            if crate::login::is_kdf_slot(&name) {
                continue;
            }
            // A state's other copy (`.<user>.state.spare`): read with the
            // state (below); it must be as safe as the state.
            if let Some(stem) = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".state.spare"))
                .filter(|stem| Username::parse(stem).is_ok())
            {
                if let Err(e) = dir.read(&name, Access::Private, MAX_RECORD_BYTES) {
                    report(format!("{e} (the other copy of {stem}'s state)"));
                }
                continue;
            }
            // A lock's wake-up FIFO (`.<user>.lock.wake`): a FIFO, root's, 0600.
            if let Some(stem) = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".lock.wake"))
                .filter(|stem| Username::parse(stem).is_ok())
            {
                if let Err(e) = dir.check_wake(&name) {
                    report(format!("{e} (the wake-up FIFO of {stem}'s lock)"));
                }
                continue;
            }
            let (stem, kind) = match name.rsplit_once('.') {
                Some((stem, kind @ ("secret" | "state" | "lock"))) => (stem, kind),
                _ => {
                    report(if name.contains(".tmp-") {
                        "stale temporary file from an interrupted write (safe to remove)".into()
                    } else {
                        "unexpected file in the state directory (move it elsewhere)".into()
                    });
                    continue;
                }
            };
            let Ok(user) = Username::parse(stem) else {
                report("file name is not a valid user name (move it elsewhere)".into());
                continue;
            };
            let bytes = match dir.read(&name, Access::Private, MAX_RECORD_BYTES) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => continue,
                Err(e) => {
                    report(split_path(&e).1);
                    continue;
                }
            };
            match kind {
                "secret" => {
                    enrolled.push(user.to_string());
                    if let Err(e) = SecretRecord::parse(&bytes) {
                        report(format!("{e} (re-enroll: twofactor enroll --force {user})"));
                    }
                    if matches!(nix::unistd::User::from_name(user.as_str()), Ok(None)) {
                        report(format!(
                            "user {user} does not exist in passwd (remove with: twofactor disable {user})"
                        ));
                    }
                }
                "state" => match UserFiles::new(&dir, &user).read_state() {
                    // Readable through the other copy: say so if this one
                    // does not match its checksum.
                    Ok(_) => {
                        if let Err(e @ RecordError::Torn) = State::parse_file(&bytes) {
                            report(format!(
                                "{e}; logins read the other copy (.{user}.state.spare), and the next login writes over this one"
                            ));
                        }
                    }
                    Err(FilesError::Record { error, .. }) => report(format!(
                        "{error} (logins of {user} fail until this is fixed; move it and .{user}.state.spare away to reset the state, which also forgets used backup codes: then run twofactor backup-codes {user})"
                    )),
                    // The other copy's own problems are reported at its name.
                    Err(FilesError::Store(e)) => {
                        let (at, problem) = split_path(&e);
                        if at == path {
                            report(problem);
                        }
                    }
                },
                _ => {}
            }
        }
        problems.extend(admin.lockout_problems(&system, &enrolled));
        if let Some(passwd) = system.read(&system.path(PASSWD)) {
            for (first, uid, enrolled_alias) in aliases_before_enrolled(&passwd, &enrolled) {
                problems.push(Problem {
                    path: system.path(PASSWD),
                    problem: format!(
                        "{first} (uid {uid}) is listed before {enrolled_alias}, who is enrolled: logins as {first} do not use {enrolled_alias}'s enrollment (move {enrolled_alias}'s line above {first}'s, or enroll {first})"
                    ),
                });
            }
        }
        Ok(problems)
    }
}

/// The local user database `check` reads for names sharing a uid (NSS
/// sources such as LDAP are not enumerated).
const PASSWD: &str = "/etc/passwd";
/// The local group database, for `[exempt] groups` members.
const GROUP: &str = "/etc/group";

/// `(first name, uid, enrolled later name)` for every uid whose first name
/// in `passwd` has no enrollment while a later name with the same uid has
/// one. The module redirects an unenrolled name to its uid's *first* name
/// (login/mod.rs, `enrolled_first_name`), so such a first name would get no
/// second factor of the account's under `unenrolled = "skip"`.
fn aliases_before_enrolled(passwd: &str, enrolled: &[String]) -> Vec<(String, u32, String)> {
    let mut first_of_uid: Vec<(u32, &str)> = Vec::new();
    let mut found = Vec::new();
    for line in passwd.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Ok(uid) = uid.parse::<u32>() else {
            continue;
        };
        match first_of_uid.iter().find(|(u, _)| *u == uid) {
            None => first_of_uid.push((uid, name)),
            Some(&(_, first)) => {
                let is_enrolled = |n: &str| enrolled.iter().any(|e| e == n);
                if is_enrolled(name)
                    && !is_enrolled(first)
                    && !found
                        .iter()
                        .any(|(f, u, _): &(String, u32, String)| f == first && *u == uid)
                {
                    found.push((first.to_string(), uid, name.to_string()));
                }
            }
        }
    }
    found
}

/// A store error as (path, problem without the path), for `check`'s
/// The problem with a configured command (`[delivery]`, `[notify]`), if
/// it fails the checks the service makes before running it; `effect`
/// says what is lost.
fn command_problem(command: &std::path::Path, effect: &str) -> Option<Problem> {
    let e = store::check_executable(command).err()?;
    let (path, problem) = split_path(&e);
    Some(Problem {
        path,
        problem: format!("{problem} ({effect})"),
    })
}

/// `PATH: problem` lines.
fn split_path(e: &StoreError) -> (PathBuf, String) {
    let text = e.to_string();
    let path = match e {
        StoreError::Io { path, .. }
        | StoreError::Insecure { path, .. }
        | StoreError::TooLarge { path, .. }
        | StoreError::LockTimeout { path }
        | StoreError::BadPath { path } => path.clone(),
    };
    let prefix = format!("{}: ", path.display());
    let problem = text
        .strip_prefix(&prefix)
        .map_or(text.clone(), str::to_string);
    (path, problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only an unenrolled first name before an enrolled alias is reported,
    /// once per uid.
    #[test]
    fn aliases_listed_before_an_enrolled_name_are_found() {
        let passwd = "root:x:0:0::/root:/bin/sh\n\
                      toor:x:0:0::/root:/bin/sh\n\
                      alias:x:1000:1000::/:/bin/sh\n\
                      alice:x:1000:1000::/:/bin/sh\n\
                      alice2:x:1000:1000::/:/bin/sh\n\
                      bob:x:1001:1001::/:/bin/sh\n\
                      # a comment line\n\
                      broken\n";
        let enrolled = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            aliases_before_enrolled(passwd, &enrolled(&["alice", "alice2", "bob"])),
            [("alias".to_string(), 1000, "alice".to_string())]
        );
        // root first and enrolled: toor is redirected, nothing to report.
        assert!(aliases_before_enrolled(passwd, &enrolled(&["root", "toor"])).is_empty());
        assert!(aliases_before_enrolled(passwd, &enrolled(&["alias", "bob"])).is_empty());
    }
}
