//! Test-only fault injection (unit tests and `cargo fuzz`, never in the
//! shipped module): make one step of the next writes on this thread fail
//! with EIO, or abort the process there to simulate a crash.

use std::cell::Cell;

use nix::errno::Errno;

use super::Step;

/// What happens at the chosen step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The system call fails with EIO.
    Fail,
    /// The process aborts (a crash, power loss for the page cache aside).
    Abort,
}

thread_local! {
    static PLAN: Cell<Option<(Step, Fault)>> = const { Cell::new(None) };
}

/// Injects `fault` at `step` for every later write on this thread.
pub fn inject(step: Step, fault: Fault) {
    PLAN.with(|p| p.set(Some((step, fault))));
}

/// Removes any injected fault.
pub fn clear() {
    PLAN.with(|p| p.set(None));
}

/// Fails or aborts here if a fault is injected at `step`.
pub(super) fn check(step: Step) -> Result<(), Errno> {
    match PLAN.with(Cell::get) {
        Some((s, Fault::Fail)) if s == step => Err(Errno::EIO),
        Some((s, Fault::Abort)) if s == step => std::process::abort(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{Fault, clear, inject};
    use crate::store::testdir::scratch;
    use crate::store::{Access, Dir, Step, TrustedDir};
    use std::os::unix::process::ExitStatusExt;
    use std::path::Path;

    const OLD: &[u8] = b"version = 1\nfailures = 1\n";
    const SPARE: &str = ".u.state.spare";
    const NEW: &[u8] = b"version = 1\nfailures = 2\nrate_window_attempts = 7\n";

    /// An I/O error at any step of a replace leaves the old file (or, once
    /// renamed, the new one), reports the error, and leaves no temp file.
    #[test]
    fn io_error_at_every_step_keeps_a_whole_file_and_no_temp() {
        for step in Step::ALL {
            let path = scratch(&format!("fail-{step:?}"));
            let dir = TrustedDir::open(&path, Dir::Private).unwrap();
            dir.replace("u.state", OLD).unwrap();
            inject(step, Fault::Fail);
            let result = dir.replace("u.state", NEW);
            clear();
            assert!(result.is_err(), "{step:?}");
            let now = dir.read("u.state", Access::Private, 100).unwrap().unwrap();
            let want = if step == Step::FsyncDir { NEW } else { OLD };
            assert_eq!(now.as_slice(), want, "{step:?}");
            assert_eq!(
                dir.entries().unwrap(),
                vec!["u.state".to_string()],
                "{step:?}"
            );
            std::fs::remove_dir_all(path).unwrap();
        }
    }

    /// Not a test of its own: the child half of
    /// `crash_at_every_step_leaves_old_or_new_file` and
    /// `spare_fault_at_every_step_keeps_a_whole_file` (through `crash_at`),
    /// which run it with `--ignored --exact`; it aborts inside a write.
    #[test]
    #[ignore = "helper of crash_at_every_step_leaves_old_or_new_file and spare_fault_at_every_step_keeps_a_whole_file"]
    fn crash_child() {
        let (Ok(dir), Ok(step)) = (
            std::env::var("TF_CRASH_DIR"),
            std::env::var("TF_CRASH_STEP"),
        ) else {
            panic!("a helper process: crash_at_every_step_leaves_old_or_new_file runs it");
        };
        let step = Step::ALL
            .into_iter()
            .find(|s| format!("{s:?}") == step)
            .unwrap();
        let dir = TrustedDir::open(Path::new(&dir), Dir::Private).unwrap();
        let spare = std::env::var("TF_CRASH_SPARE").is_ok();
        inject(step, Fault::Abort);
        let _ = if spare {
            dir.write_copy(SPARE, Some("u.state"), NEW)
        } else {
            dir.replace("u.state", NEW)
        };
        panic!("did not crash at {step:?}");
    }

    /// Runs `crash_child` on `path`: a write (`replace`, or with `spare`
    /// `write_copy` over the spare) that aborts the process at `step`.
    fn crash_at(path: &Path, step: Step, spare: bool) {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--ignored",
                "--exact",
                "store::faults::tests::crash_child",
                "--test-threads=1",
            ])
            .env("TF_CRASH_DIR", path)
            .env("TF_CRASH_STEP", format!("{step:?}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if spare {
            child.env("TF_CRASH_SPARE", "1");
        }
        let status = child.status().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{step:?}: {status}");
    }

    /// A crash (abort) at any step leaves the old or the new file, never a
    /// torn one: before the rename the old, after it the new.
    #[test]
    fn crash_at_every_step_leaves_old_or_new_file() {
        for step in Step::ALL {
            let path = scratch(&format!("crash-{step:?}"));
            TrustedDir::open(&path, Dir::Private)
                .unwrap()
                .replace("u.state", OLD)
                .unwrap();
            crash_at(&path, step, false);
            let dir = TrustedDir::open(&path, Dir::Private).unwrap();
            let now = dir.read("u.state", Access::Private, 100).unwrap().unwrap();
            let want = if step == Step::FsyncDir { NEW } else { OLD };
            assert_eq!(now.as_slice(), want, "{step:?}");
            // A crash may leave a temp file (reported by `twofactor check`);
            // a later write skips its name.
            dir.replace("u.state", NEW).unwrap();
            std::fs::remove_dir_all(path).unwrap();
        }
    }

    /// `write_copy` over an existing spare, then swapped in: an I/O error
    /// or a crash (abort) at any of its steps leaves `u.state` whole — the
    /// old one until the names are swapped, the new one after — and the
    /// next write goes through. It syncs no directory: a fault injected
    /// there is never reached (`records::user` makes that safe).
    #[test]
    fn spare_fault_at_every_step_keeps_a_whole_file() {
        let steps = [Step::CreateTemp, Step::Write, Step::FsyncFile, Step::Rename];
        for (step, fault) in steps
            .into_iter()
            .flat_map(|s| [(s, Fault::Fail), (s, Fault::Abort)])
        {
            let path = scratch(&format!("spare-{fault:?}-{step:?}"));
            let dir = TrustedDir::open(&path, Dir::Private).unwrap();
            dir.write_copy(SPARE, Some("u.state"), b"first").unwrap();
            dir.write_copy(SPARE, Some("u.state"), OLD).unwrap();
            if fault == Fault::Abort {
                crash_at(&path, step, true);
            } else {
                inject(step, fault);
                let result = dir.write_copy(SPARE, Some("u.state"), NEW);
                clear();
                assert!(result.is_err(), "{step:?}");
            }
            let now = dir.read("u.state", Access::Private, 100).unwrap().unwrap();
            assert_eq!(now.as_slice(), OLD, "{fault:?} at {step:?}");
            assert_eq!(
                dir.entries().unwrap(),
                vec![SPARE.to_string(), "u.state".to_string()],
                "{fault:?} at {step:?}"
            );
            dir.write_copy(SPARE, Some("u.state"), b"after").unwrap();
            let now = dir.read("u.state", Access::Private, 100).unwrap().unwrap();
            assert_eq!(now.as_slice(), b"after", "{fault:?} at {step:?}");
            std::fs::remove_dir_all(path).unwrap();
        }
        let path = scratch("spare-no-dir-sync");
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        dir.write_copy(SPARE, Some("u.state"), OLD).unwrap();
        dir.write_copy(SPARE, Some("u.state"), OLD).unwrap();
        inject(Step::FsyncDir, Fault::Fail);
        let result = dir.write_copy(SPARE, Some("u.state"), NEW);
        clear();
        assert!(result.is_ok(), "{result:?}");
        let now = dir.read("u.state", Access::Private, 100).unwrap().unwrap();
        assert_eq!(now.as_slice(), NEW);
        std::fs::remove_dir_all(path).unwrap();
    }

    /// The first write of a copy makes a file: the directory is synced
    /// then, and a failure there is reported.
    #[test]
    fn a_new_copy_syncs_the_directory() {
        let path = scratch("spare-new-dir-sync");
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        inject(Step::FsyncDir, Fault::Fail);
        let result = dir.write_copy(SPARE, Some("u.state"), NEW);
        clear();
        assert!(
            matches!(
                result,
                Err(super::super::StoreError::Io { op: "fsync", .. })
            ),
            "{result:?}"
        );
        std::fs::remove_dir_all(path).unwrap();
    }
}
