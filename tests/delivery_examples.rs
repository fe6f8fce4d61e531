//! The example delivery commands in `conf/delivery/` (installed by the
//! Debian package) keep the code and the API token out of every process's
//! argv and environment: `/proc/PID/cmdline` and `environ` of root's
//! processes are readable by every local user, who would read the code meant
//! for the phone and log in with it (SECURITY.md, "Secrets never in argv or
//! the environment").
//!
//! Each example runs as the delivery service runs it (argv `USER TARGET`, the
//! code on stdin, only `PATH` in the environment, in `/`), with a stand-in
//! `curl` first on `PATH`, in a private mount namespace where test
//! directories are bound over `/etc/security` (the token files the examples
//! read) and `/var/lib` (where `to-file.sh` writes), so nothing on the
//! machine changes. While it runs, the test reads `cmdline` and `environ` of
//! every process in the example's process group (the example and everything
//! it starts; scanning the whole machine would find random digit runs in
//! other people's builds). The stand-in records its argv and stdin, lets the
//! real curl parse that stdin as its config (`--libcurl` writes out what curl
//! understood; the connection goes to 127.0.0.1 port 0 and fails at once)
//! and stays alive half a second so the scan sees it.
//!
//! Root only (mount namespaces, other processes' `environ`): as root a test
//! that cannot run fails with its reason; as anyone else it prints a loud
//! `SKIPPED` line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{Needs, Sandbox, find_program, root_or_skip};

const USER: &str = "alice";
/// A valid target (see `records::valid_target`) with every character the
/// curl config syntax or a form body could trip over: a quote, a
/// backslash, `&` and `=`, a space, non-ASCII.
const HOSTILE_TARGET: &str = "+1 \"555\\ 0100 ü&x=y";
/// The examples' own paths, as shipped.
const SMS_TOKEN: &str = "twofactor-sms.token";
const TELEGRAM_TOKEN: &str = "twofactor-telegram.token";
const TO_FILE_LOG: &str = "twofactor-delivered.log";

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conf/delivery")
        .join(name)
}

/// Whether this test can run ([`root_or_skip`]): root with a private
/// mount namespace and the real curl. Not root: a loud `SKIPPED` line and
/// false. Root but something missing: a failure, with the reason.
fn can_run(test: &str) -> bool {
    root_or_skip(
        test,
        "a private mount namespace over /etc/security, other processes' \
         /proc/PID/environ",
        &[Needs::MountNamespace, Needs::Program("curl", "curl")],
    )
}

/// An installed program, or a failure naming its package.
fn program(name: &str) -> PathBuf {
    find_program(name)
        .unwrap_or_else(|| panic!("`{name}` is missing (package {name}; make test installs it)"))
}

/// `n` random characters from `alphabet`.
fn random(alphabet: &[u8], n: usize) -> String {
    let mut bytes = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .unwrap();
    bytes
        .iter()
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect()
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// An 8-digit code, as `[totp] digits = 8` sends.
fn random_code() -> String {
    random(b"0123456789", 8)
}

/// One test's files: the stand-in curl in `bin/`, the directories bound
/// over `/etc/security` and `/var/lib`, and what the stand-in recorded.
struct Bench {
    sb: Sandbox,
}

impl Bench {
    fn new(name: &str) -> Bench {
        let sb = Sandbox::new(name);
        let curl = program("curl");
        for (dir, mode) in [("bin", 0o755), ("etc-security", 0o755), ("var-lib", 0o755)] {
            let dir = sb.dir().join(dir);
            fs::create_dir(&dir).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
        }
        let d = sb.dir().display();
        let stand_in = sb.dir().join("bin/curl");
        fs::write(
            &stand_in,
            format!(
                "#!/bin/sh\n\
                 printf '%s\\n' \"$@\" > '{d}/curl.argv'\n\
                 cat > '{d}/curl.stdin'\n\
                 '{}' --disable --silent --max-time 5 --libcurl '{d}/curl.c' \
                 --connect-to ::127.0.0.1:0 --config '{d}/curl.stdin' || true\n\
                 sleep 0.5\n",
                curl.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&stand_in, fs::Permissions::from_mode(0o755)).unwrap();
        Bench { sb }
    }

    /// The stand-in curl's command line as the scan sees it.
    fn stand_in(&self) -> String {
        format!("/bin/sh {}/bin/curl ", self.sb.dir().display())
    }

    /// Writes a token file (0600) for the namespace's `/etc/security`.
    fn token(&self, name: &str, token: &str) {
        let path = self.sb.dir().join("etc-security").join(name);
        fs::write(&path, format!("{token}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn file(&self, name: &str) -> String {
        fs::read_to_string(self.sb.dir().join(name))
            .unwrap_or_else(|e| panic!("{name} (not written by the stand-in curl?): {e}"))
    }

    /// What the real curl understood from the config the example gave the
    /// stand-in: the C string literals of `--libcurl` after `CURLOPT_URL`,
    /// the `Authorization` header and `CURLOPT_POSTFIELDS`.
    fn parsed(&self, what: &str) -> Option<String> {
        let c = self.file("curl.c");
        c.lines().find_map(|line| {
            let rest = line.split_once(what)?.1;
            let start = rest.find('"')?;
            let end = rest.rfind("\");")?;
            rest.get(start + 1..end).map(str::to_string)
        })
    }

    /// Runs `script USER target` as the delivery service would, with `code`
    /// on stdin once the script is seen waiting for it, and watches every
    /// process it starts for `secrets` until it exits.
    fn run(&self, script: &Path, target: &str, code: &str, secrets: &[&str]) -> Run {
        let d = self.sb.dir();
        let stderr = fs::File::create(d.join("stderr")).unwrap();
        let child = Command::new(program("unshare"))
            .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
            .arg(
                "mount --bind \"$1\" /etc/security && mount --bind \"$2\" /var/lib \
                 && shift 2 && exec \"$@\"",
            )
            .arg("sh")
            .arg(d.join("etc-security"))
            .arg(d.join("var-lib"))
            .arg(script)
            .args([USER, target])
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", d.join("bin").display()),
            )
            .current_dir("/")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let group = child.id();
        let mut child = Group(child);
        // The script itself (the kernel runs `#!/bin/sh` scripts as
        // `/bin/sh SCRIPT ARGS`), not `sh -c` naming it before the exec.
        let script_text = format!("/bin/sh {} ", script.display());
        let mut run = Run::default();
        let mut stdin = child.0.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            scan(group, secrets, &mut run);
            if stdin.is_some() && run.seen.iter().any(|c| c.starts_with(&script_text)) {
                let mut pipe = stdin.take().unwrap();
                pipe.write_all(format!("{code}\n").as_bytes()).unwrap();
            }
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                panic!("{} did not finish within 30 s: {run:?}", script.display());
            }
            thread::sleep(Duration::from_millis(2));
        };
        run.status = Some(status);
        run.stderr = fs::read_to_string(d.join("stderr")).unwrap();
        // Readable by the panic messages without the secrets themselves.
        for seen in &mut run.seen {
            for (i, secret) in secrets.iter().enumerate() {
                *seen = seen.replace(secret, &format!("<SECRET {i}>"));
            }
        }
        run
    }
}

/// What one run showed: every distinct command line seen in the process
/// group (arguments joined by spaces), every place a secret was found, the
/// exit status and stderr.
#[derive(Debug, Default)]
struct Run {
    seen: Vec<String>,
    leaks: Vec<String>,
    status: Option<ExitStatus>,
    stderr: String,
}

impl Run {
    /// The assertions every example shares: nothing leaked, the scan saw
    /// the process that matters (a command line starting with `watched`),
    /// and the example exited 0.
    fn check(&self, watched: &str) {
        assert!(
            self.leaks.is_empty(),
            "a secret in a process's argv or environment, readable by every local user:\n  {}\n{self:#?}",
            self.leaks.join("\n  ")
        );
        assert!(
            self.seen.iter().any(|c| c.starts_with(watched)),
            "the scan never saw {watched:?}, so it proves nothing: {self:#?}"
        );
        assert!(
            self.status.is_some_and(|s| s.success()),
            "the example failed: {self:#?}"
        );
    }
}

/// One pass over `/proc`: for each process in process group `group`, its
/// command line (remembered) and environment, searched for each secret.
fn scan(group: u32, secrets: &[&str], run: &mut Run) {
    let Ok(entries) = fs::read_dir("/proc") else {
        panic!("cannot read /proc");
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let dir = entry.path();
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parens.
        let Ok(stat) = fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let pgrp = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|p| p.parse::<u32>().ok());
        if pgrp != Some(group) {
            continue;
        }
        for file in ["cmdline", "environ"] {
            let Ok(bytes) = fs::read(dir.join(file)) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
            let leak = format!("/proc/{pid}/{file}: {text}");
            if secrets.iter().any(|s| contains(&bytes, s.as_bytes())) && !run.leaks.contains(&leak)
            {
                run.leaks.push(leak);
            }
            if file == "cmdline" && !text.is_empty() && !run.seen.contains(&text) {
                run.seen.push(text);
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What curl's `--data-urlencode name=content` makes of `content`
/// (curl 7.88): unreserved characters stay, a space is `+`, every other
/// byte `%XX`.
fn urlencode(content: &str) -> String {
    content
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A value as `--libcurl` writes it in a C string literal, for the
/// characters the tokens here use (`?` and non-ASCII are escaped otherwise).
fn c_string(value: &str) -> String {
    assert!(
        value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'?'),
        "{value:?}"
    );
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// The stand-in curl got no secret in its argv, and both secrets on stdin.
fn curl_got_secrets_on_stdin(bench: &Bench, code: &str, token_in_config: &str) {
    let argv = bench.file("curl.argv");
    assert!(
        !argv.contains(code) && !argv.contains(token_in_config),
        "curl's argv: {argv}"
    );
    let stdin = bench.file("curl.stdin");
    assert!(stdin.contains(code), "the code is not on curl's stdin");
    assert!(
        stdin.contains(token_in_config),
        "the token is not on curl's stdin (as {token_in_config:?})"
    );
}

/// `sms-gateway.sh`: the code (in the POST body) and the bearer token (in
/// a header) reach curl only through the config on its stdin, never any
/// argv or environment; the real curl parses that config to the intended
/// URL, header and form body, whatever quotes and backslashes the token
/// and the target hold.
#[test]
fn sms_gateway_example_keeps_the_code_and_token_out_of_proc() {
    if !can_run("sms_gateway_example_keeps_the_code_and_token_out_of_proc") {
        return;
    }
    let bench = Bench::new("example-sms");
    let mark = random(ALNUM, 20);
    let token = format!("{mark}\"q\\b-{}", random(ALNUM, 10));
    bench.token(SMS_TOKEN, &token);
    let code = random_code();
    assert!(pam_twofactor::records::valid_target(HOSTILE_TARGET));
    let run = bench.run(
        &example("sms-gateway.sh"),
        HOSTILE_TARGET,
        &code,
        &[&code, &mark],
    );
    run.check(&bench.stand_in());
    // In the config file's syntax: \ and " escaped.
    let quoted = token.replace('\\', "\\\\").replace('"', "\\\"");
    curl_got_secrets_on_stdin(&bench, &code, &quoted);
    assert_eq!(
        bench.parsed("CURLOPT_URL, ").as_deref(),
        Some("https://sms.example.net/api/send")
    );
    assert_eq!(
        bench.parsed("curl_slist_append(slist1, "),
        Some(c_string(&format!("Authorization: Bearer {token}")))
    );
    assert_eq!(
        bench.parsed("CURLOPT_POSTFIELDS, "),
        Some(format!(
            "to={}&text={}",
            urlencode(HOSTILE_TARGET),
            urlencode(&format!("Your login code for {}: {code}", hostname()))
        ))
    );
}

/// `telegram.sh`: the code (in the POST body) and the bot token (inside
/// the URL) reach curl only through the config on its stdin; the real curl
/// parses it to the bot URL and the intended form body.
#[test]
fn telegram_example_keeps_the_code_and_token_out_of_proc() {
    if !can_run("telegram_example_keeps_the_code_and_token_out_of_proc") {
        return;
    }
    let bench = Bench::new("example-telegram");
    // A bot token looks like `123456789:AAE…` (digits, colon, [A-Za-z0-9_-]).
    let token = format!(
        "{}:{}-{}_{}",
        random(b"0123456789", 10),
        random(ALNUM, 12),
        random(ALNUM, 12),
        random(ALNUM, 10)
    );
    bench.token(TELEGRAM_TOKEN, &token);
    let code = random_code();
    let run = bench.run(
        &example("telegram.sh"),
        HOSTILE_TARGET,
        &code,
        &[&code, &token],
    );
    run.check(&bench.stand_in());
    curl_got_secrets_on_stdin(&bench, &code, &token);
    assert_eq!(
        bench.parsed("CURLOPT_URL, "),
        Some(c_string(&format!(
            "https://api.telegram.org/bot{token}/sendMessage"
        )))
    );
    assert_eq!(
        bench.parsed("CURLOPT_POSTFIELDS, "),
        Some(format!(
            "chat_id={}&text={}",
            urlencode(HOSTILE_TARGET),
            urlencode(&format!("Login code for {USER} on {}: {code}", hostname()))
        ))
    );
}

/// `to-file.sh`: the code goes only into its 0600 file (here under the
/// namespace's `/var/lib`), never into any argv or environment.
#[test]
fn to_file_example_keeps_the_code_out_of_proc() {
    if !can_run("to_file_example_keeps_the_code_out_of_proc") {
        return;
    }
    let bench = Bench::new("example-to-file");
    let code = random_code();
    let target = "+15555550100";
    let script = example("to-file.sh");
    let run = bench.run(&script, target, &code, &[&code]);
    run.check(&format!("/bin/sh {} ", script.display()));
    let log = bench.sb.dir().join("var-lib").join(TO_FILE_LOG);
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        format!("{USER} {target} {code}\n")
    );
    assert_eq!(
        fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// Every file in `conf/delivery/` is one of the examples tested above, so a
/// new example cannot ship without this check.
#[test]
fn every_delivery_example_is_tested_here() {
    let mut names: Vec<String> = fs::read_dir(example(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["sms-gateway.sh", "telegram.sh", "to-file.sh"]);
}

/// The `[notify]` example `conf/notify/sendmail.sh` (installed by the
/// Debian package beside the delivery examples).
fn notify_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/notify/sendmail.sh")
}

/// Runs the notify example as `[notify] command` runs (argv `USER EVENT`,
/// the message on stdin, only `PATH`, in `/`) in a private mount namespace
/// with `etc-security/` over `/etc/security` and a stand-in `sendmail`
/// overlaid on `/usr/sbin`, watching every process it starts for `secret`.
fn run_notify_example(sb: &Sandbox, event: &str, message: &str, secret: &str) -> Run {
    let d = sb.dir();
    let stderr = fs::File::create(d.join("stderr")).unwrap();
    let child = Command::new(program("unshare"))
        .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
        .arg(
            "mount --bind \"$1\" /etc/security \
             && mount -t overlay overlay -o \"lowerdir=$2:/usr/sbin\" /usr/sbin \
             && shift 2 && exec \"$@\"",
        )
        .arg("sh")
        .arg(d.join("etc-security"))
        .arg(d.join("sbin"))
        .arg(notify_example())
        .args([USER, event])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir("/")
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let group = child.id();
    let mut child = Group(child);
    child
        .0
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let mut run = Run::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        scan(group, &[secret], &mut run);
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            panic!("the notify example did not finish within 30 s: {run:?}");
        }
        thread::sleep(Duration::from_millis(2));
    };
    run.status = Some(status);
    run.stderr = fs::read_to_string(d.join("stderr")).unwrap();
    run
}

/// `conf/notify/sendmail.sh`: the mail goes to `/usr/sbin/sendmail -oi -t`
/// with `To:` (from the root-only address map, else the user's local
/// mailbox or /etc/mailname's domain), `Subject:` and the sentence on its
/// stdin; the address is in no argv or environment; a map file others may
/// write is refused and nothing is sent.
#[test]
fn sendmail_notify_example_keeps_the_address_off_argv() {
    if !root_or_skip(
        "sendmail_notify_example_keeps_the_address_off_argv",
        "a private mount namespace over /etc/security and /usr/sbin",
        &[Needs::MountNamespace],
    ) {
        return;
    }
    let sb = Sandbox::new("example-notify-mail");
    let d = sb.dir().to_path_buf();
    for dir in ["sbin", "etc-security"] {
        fs::create_dir(d.join(dir)).unwrap();
        fs::set_permissions(d.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let stand_in = d.join("sbin/sendmail");
    fs::write(
        &stand_in,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{0}/sendmail.argv'\n\
             cat > '{0}/sendmail.stdin'\nsleep 0.5\n",
            d.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&stand_in, fs::Permissions::from_mode(0o755)).unwrap();
    let address = format!("{USER}.w+2fa@example.org");
    let map = d.join("etc-security/twofactor-notify.addresses");
    fs::write(&map, format!("bob bob@example.net\n{USER} {address}\n")).unwrap();
    fs::set_permissions(&map, fs::Permissions::from_mode(0o600)).unwrap();
    let sentence = format!(
        "After too many wrong codes, {USER} on box is locked until 2030-06-15 12:30:00 UTC. \
         If this was not you, tell your administrator at once."
    );
    let message = format!(
        "user: {USER}\nevent: locked\ntime: 2030-06-15T12:00:00Z\nhost: box\n\
         until: 2030-06-15T12:30:00Z\n\n{sentence}\n"
    );

    let run = run_notify_example(&sb, "locked", &message, &address);
    run.check("/bin/sh /usr/sbin/sendmail -oi -t");
    assert_eq!(
        fs::read_to_string(d.join("sendmail.argv")).unwrap(),
        "-oi\n-t\n"
    );
    let mail = fs::read_to_string(d.join("sendmail.stdin")).unwrap();
    let (head, body) = mail.split_once("\n\n").unwrap();
    let head: Vec<&str> = head.lines().collect();
    assert!(head.contains(&format!("To: {address}").as_str()), "{mail}");
    assert!(
        head.contains(&format!("Subject: Security notice for {USER} on box: locked").as_str()),
        "{mail}"
    );
    assert!(body.starts_with(&format!("{sentence}\n")), "{mail}");
    assert!(body.contains("until: 2030-06-15T12:30:00Z"), "{mail}");

    // No map: the local mailbox, or the domain of the host's /etc/mailname.
    fs::remove_file(&map).unwrap();
    let run = run_notify_example(&sb, "locked", &message, &format!("{USER}@"));
    run.check("/bin/sh /usr/sbin/sendmail -oi -t");
    let domain = fs::read_to_string("/etc/mailname")
        .ok()
        .and_then(|m| m.lines().next().map(str::to_string))
        .filter(|m| !m.is_empty());
    let to = match domain {
        Some(domain) => format!("To: {USER}@{domain}\n"),
        None => format!("To: {USER}\n"),
    };
    let mail = fs::read_to_string(d.join("sendmail.stdin")).unwrap();
    assert!(mail.starts_with(&to), "{mail}");

    // A map others could write is refused; nothing is sent.
    fs::remove_file(d.join("sendmail.stdin")).unwrap();
    fs::write(&map, format!("{USER} someone@example.net\n")).unwrap();
    fs::set_permissions(&map, fs::Permissions::from_mode(0o666)).unwrap();
    let run = run_notify_example(&sb, "locked", &message, "someone@example.net");
    assert!(!run.status.unwrap().success(), "{run:?}");
    assert!(
        run.stderr.contains("not group- or world-writable"),
        "{run:?}"
    );
    assert!(!d.join("sendmail.stdin").exists());
}

/// `conf/notify/` holds only the example tested above.
#[test]
fn every_notify_example_is_tested_here() {
    let names: Vec<String> = fs::read_dir(notify_example().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["sendmail.sh"]);
}

/// An example's process group (the child leads it), killed whole and
/// reaped on drop: a test that times out or panics leaves no stand-in curl
/// or sendmail running.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.0.wait();
    }
}
