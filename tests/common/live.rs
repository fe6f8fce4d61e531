//! A pamtester run driven live: the test reads what the module shows and
//! answers each prompt after it was seen, and may move the clock or act as
//! an admin while a prompt is open.

use std::fs;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{Extra, PamOutcome, Sandbox, libfaketime};

/// coreutils' preload library behind `stdbuf`.
pub fn libstdbuf() -> PathBuf {
    let path = PathBuf::from("/usr/libexec/coreutils/libstdbuf.so");
    assert!(
        path.is_file(),
        "{} is missing (package coreutils)",
        path.display()
    );
    path
}

/// A pamtester run driven live: answers are written after the prompt they
/// answer was seen. Runs under the harness's pam_wrapper lock, with the
/// harness's preloads plus libstdbuf (`_STDBUF_O=0`) so PAM_TEXT_INFO lines
/// reach us while pamtester waits at the prompt.
pub struct Live {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Shared,
    stderr: Shared,
    readers: Vec<thread::JoinHandle<()>>,
    /// The libfaketime time file of a [`Live::start_timed`] run.
    time_file: Option<PathBuf>,
}

/// Output collected by a reader thread.
type Shared = Arc<Mutex<Vec<u8>>>;

#[derive(Clone, Copy)]
pub enum Stream {
    Out,
    Err,
}

impl Live {
    /// `pamtester -v SERVICE USER authenticate` with the clock frozen at `at`.
    pub fn start(sb: &Sandbox, service: &str, user: &str, at: &str) -> Live {
        let extra = Extra {
            preload: vec![libstdbuf()],
            settings: vec!["_STDBUF_O=0".into()],
        };
        Self::spawn(sb, service, user, at, &extra, None)
    }

    /// Like [`Live::start`], but the clock (frozen at `at`) moves when the
    /// test calls [`Live::set_time`], also while a prompt is open: what an
    /// old `su` prompt left open for minutes looks like to the module.
    /// libfaketime reads `FAKETIME_TIMESTAMP_FILE` at every clock read
    /// (`FAKETIME_NO_CACHE=1`).
    pub fn start_timed(sb: &Sandbox, service: &str, user: &str, at: &str) -> Live {
        let time_file = sb.dir().join("faketime-now");
        fs::write(&time_file, format!("{at}\n")).unwrap();
        let extra = Extra {
            preload: vec![libstdbuf(), libfaketime()],
            settings: vec![
                "_STDBUF_O=0".into(),
                format!("FAKETIME_TIMESTAMP_FILE={}", time_file.display()),
                "FAKETIME_NO_CACHE=1".into(),
                "FAKETIME_DONT_FAKE_MONOTONIC=1".into(),
            ],
        };
        Self::spawn(sb, service, user, "", &extra, Some(time_file))
    }

    /// Moves the clock of a [`Live::start_timed`] run to `at`.
    pub fn set_time(&self, at: &str) {
        let file = self.time_file.as_ref().expect("started with start_timed");
        // Replaced whole, so no clock read sees a half-written time.
        let next = file.with_extension("next");
        fs::write(&next, format!("{at}\n")).unwrap();
        fs::rename(&next, file).unwrap();
    }

    fn spawn(
        sb: &Sandbox,
        service: &str,
        user: &str,
        at: &str,
        extra: &Extra,
        time_file: Option<PathBuf>,
    ) -> Live {
        let mut cmd = sb.pamtester_command(service, user, at, &[], "authenticate", extra);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let pipes: [(Box<dyn Read + Send>, &Shared); 2] = [
            (Box::new(child.stdout.take().unwrap()), &stdout),
            (Box::new(child.stderr.take().unwrap()), &stderr),
        ];
        for (mut pipe, buf) in pipes {
            let buf = Arc::clone(buf);
            readers.push(thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            }));
        }
        Live {
            child,
            stdin,
            stdout,
            stderr,
            readers,
            time_file,
        }
    }

    pub fn text(&self, stream: Stream) -> String {
        let buf = match stream {
            Stream::Out => &self.stdout,
            Stream::Err => &self.stderr,
        };
        String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
    }

    pub fn dump(&self) -> String {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}--- end ---",
            self.text(Stream::Out),
            self.text(Stream::Err)
        )
    }

    /// Waits until `stream` holds `needle` `count` times; returns the text.
    pub fn wait_for(&mut self, stream: Stream, needle: &str, count: usize) -> String {
        // Generous: the pam_wrapper lock may be held by other tests.
        let deadline = Instant::now() + Duration::from_secs(240);
        let mut exited_at = None;
        loop {
            let text = self.text(stream);
            if text.matches(needle).count() >= count {
                return text;
            }
            if exited_at.is_none() && self.child.try_wait().unwrap().is_some() {
                exited_at = Some(Instant::now());
            }
            if exited_at.is_some_and(|t| t.elapsed() > Duration::from_millis(500)) {
                panic!(
                    "pamtester ended before showing {needle:?} x{count}\n{}",
                    self.dump()
                );
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {needle:?} x{count}\n{}", self.dump());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for a whole stdout line starting with `prefix`; returns the rest.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        loop {
            let text = self.wait_for(Stream::Out, prefix, 1);
            let at = text.find(prefix).unwrap() + prefix.len();
            if let Some(end) = text[at..].find('\n') {
                return text[at..at + end].to_string();
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Writes one answer line.
    pub fn answer(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin, waits for pamtester and returns what it printed.
    pub fn finish(mut self) -> PamOutcome {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        let outcome = PamOutcome {
            status: status.code().unwrap_or(-1),
            stdout: self.text(Stream::Out),
            stderr: self.text(Stream::Err),
        };
        assert!(
            matches!(status.code(), Some(0 | 1)),
            "pamtester ended abnormally ({status})\n{outcome}"
        );
        assert!(
            !outcome.stderr.contains("ld.so: object"),
            "a preload library was not loaded\n{outcome}"
        );
        outcome
    }
}

impl Drop for Live {
    /// EOF ends pamtester (and frees the lock) if a test panicked mid-talk.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
