//! `twofactor`: enroll users and look after them (see twofactor(8)).
//! A thin shell over `pam_twofactor::admin`: parse arguments, call, print.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use pam_twofactor::admin::{self, Admin, AdminError, EnrollOptions, Existing, audit, notify};
use pam_twofactor::delivery::{self, DeliveryError, Event};
use pam_twofactor::host::{clock, timefmt};
use pam_twofactor::records::username::escape;
use serde_json::{Value, json};
use zeroize::Zeroize;

#[derive(Parser)]
#[command(
    name = "twofactor",
    version,
    about = "Manage pam_twofactor enrollments",
    long_about = "Manage pam_twofactor enrollments: enroll users, list them, look after \
their devices, backup codes and lock, import from google-authenticator or pam_oath, and \
check the configuration. Runs as root (the files are root's). See twofactor(8).",
    after_help = "Exit status: 0 success, 1 check found problems (and see twofactor(8)), \
2 usage, 3 not root, 4 bad or unknown user, 5 already enrolled or not enrolled, \
6 configuration, file or I/O problem, 7 bad secret or option value.\n\n\
Example:\n  sudo twofactor enroll alice"
)]
struct Cli {
    /// Configuration file (default /etc/security/twofactor.toml, root
    /// only); it must exist. May come before or after the subcommand.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a secret and backup codes for USER and show them once.
    #[command(after_help = "Examples:\n  twofactor enroll alice\n  \
twofactor enroll alice --if-missing --json\n  \
twofactor enroll alice --add --label tablet")]
    Enroll {
        /// The user to enroll (a name in the passwd database).
        user: String,
        /// Read a base32 secret from FILE instead of making a random
        /// 160-bit one: a file only root can read (mode 0600), or - for
        /// standard input.
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
        /// Refused: a secret in the arguments is readable by every local
        /// user (/proc/PID/cmdline). Hidden, and kept so that the refusal
        /// can name --secret-file (and never echo the value).
        #[arg(long, hide = true, num_args = 0..=1, allow_hyphen_values = true)]
        secret: Option<Vec<String>>,
        /// SHA1, SHA256 or SHA512 (default from the config).
        #[arg(long, value_name = "A")]
        algorithm: Option<String>,
        /// Digits per code: 6, 7 or 8 (default from the config).
        #[arg(long, value_name = "N")]
        digits: Option<u8>,
        /// Seconds per code, 10 to 300 (default from the config).
        #[arg(long, value_name = "S")]
        period: Option<u32>,
        /// Replace an existing enrollment (new secret, new backup codes).
        #[arg(long, conflicts_with_all = ["add", "if_missing"])]
        force: bool,
        /// Add another device to an existing enrollment (needs --label).
        #[arg(long, requires = "label", conflicts_with = "if_missing")]
        add: bool,
        /// The device's label (default "default").
        #[arg(long, value_name = "NAME")]
        label: Option<String>,
        /// Where codes by message are sent: +E.164 phone number, e-mail
        /// address or chat id (see set-delivery).
        #[arg(long, value_name = "TARGET")]
        deliver_to: Option<String>,
        /// Exit 0 and change nothing when USER is already enrolled
        /// (for provisioning scripts; "changed": false).
        #[arg(long)]
        if_missing: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List every enrolled user: devices, backup codes left, failures,
    /// lock and last successful login.
    #[command(after_help = "Example:\n  twofactor list --json")]
    List {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List USER's devices.
    #[command(after_help = "Example:\n  twofactor devices alice")]
    Devices {
        /// An enrolled user.
        user: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove one of USER's devices (not the last one: use disable).
    #[command(after_help = "Example:\n  twofactor remove-device alice tablet")]
    RemoveDevice {
        /// An enrolled user.
        user: String,
        /// The label of the device to remove (see: twofactor devices USER).
        label: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set where USER's codes by message go; without TARGET, stop sending.
    #[command(
        after_help = "Examples:\n  twofactor set-delivery alice +15555550100\n  \
twofactor set-delivery alice alice@example.org\n  twofactor set-delivery alice"
    )]
    SetDelivery {
        /// An enrolled user.
        user: String,
        /// A phone number (+ and 8 to 15 digits, E.164), an e-mail address
        /// (one @, a dot in the domain) or a chat id (digits, optionally
        /// with a leading -); omit it to stop codes by message.
        #[arg(allow_hyphen_values = true)]
        target: Option<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Import from google-authenticator or pam_oath.
    #[command(after_help = "Examples:\n  \
twofactor import alice --google-authenticator /home/alice/.google_authenticator\n  \
twofactor import --oath-usersfile /etc/users.oath")]
    Import {
        /// The user (with --google-authenticator).
        user: Option<String>,
        /// A ~/.google_authenticator file (TOTP only).
        #[arg(
            long,
            value_name = "FILE",
            requires = "user",
            conflicts_with = "oath_usersfile"
        )]
        google_authenticator: Option<PathBuf>,
        /// A pam_oath users file: every TOTP line is imported.
        #[arg(long, value_name = "FILE", conflicts_with = "user")]
        oath_usersfile: Option<PathBuf>,
        /// Replace existing enrollments.
        #[arg(long)]
        force: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show enrollment, devices, delivery target, backup codes left,
    /// failures and lock.
    #[command(after_help = "Example:\n  twofactor status alice")]
    Status {
        /// The user (need not be enrolled).
        user: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Clear USER's failure count and lock.
    #[command(after_help = "Example:\n  twofactor unlock alice")]
    Unlock {
        /// An enrolled user.
        user: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Replace USER's backup codes; the old ones stop working.
    #[command(after_help = "Example:\n  twofactor backup-codes alice")]
    BackupCodes {
        /// An enrolled user.
        user: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove USER's enrollment.
    #[command(after_help = "Examples:\n  twofactor disable alice\n  \
twofactor disable alice --if-enrolled --json")]
    Disable {
        /// An enrolled user (may already be gone from passwd).
        user: String,
        /// Exit 0 and change nothing when USER is not enrolled
        /// (for provisioning scripts; "changed": false).
        #[arg(long)]
        if_enrolled: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The delivery service: read one request for a code by message from
    /// stdin, run [delivery] command, answer on stdout (started by
    /// pam-twofactor-deliver.socket for each connection).
    #[command(after_help = "Example (really sends the code):\n  \
printf 'alice\\n+15555550100\\n123456\\n' | twofactor deliver")]
    Deliver,
    /// Validate the config and every file in the state directory.
    #[command(after_help = "Example:\n  twofactor check")]
    Check {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// For tests only: read the PAM stacks, passwd and group below DIR
        /// instead of / (the config and state directory are unchanged).
        #[arg(long, hide = true, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// Print a shell completion script (bash, zsh or fish) on stdout; the
    /// Debian package installs them.
    #[command(hide = true, after_help = "Example:\n  twofactor completions bash")]
    Completions {
        /// bash, zsh or fish.
        #[arg(value_parser = ["bash", "zsh", "fish"])]
        shell: String,
    },
}

impl Command {
    /// Whether the command was asked for JSON (its errors then too).
    fn json(&self) -> bool {
        match self {
            Command::Enroll { json, .. }
            | Command::List { json }
            | Command::Devices { json, .. }
            | Command::RemoveDevice { json, .. }
            | Command::SetDelivery { json, .. }
            | Command::Import { json, .. }
            | Command::Status { json, .. }
            | Command::Unlock { json, .. }
            | Command::BackupCodes { json, .. }
            | Command::Disable { json, .. }
            | Command::Check { json, .. } => *json,
            Command::Deliver | Command::Completions { .. } => false,
        }
    }
}

/// The version of the JSON objects `twofactor` prints: raised when a field
/// changes meaning or goes away (new fields do not raise it).
const JSON_SCHEMA: u32 = 1;

/// Prints `value`, a JSON object, with `schema` added, on one line.
fn print_json(mut value: Value) {
    if let Some(object) = value.as_object_mut() {
        object.insert("schema".into(), json!(JSON_SCHEMA));
    }
    println!("{value}");
}

/// An error as the one JSON object of a `--json` run.
fn print_json_error(message: &str, exit: i32) {
    print_json(json!({"error": message, "exit": exit}));
}

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let json = cli.command.json();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.exit_code();
            eprintln!("twofactor: {e}");
            if json {
                print_json_error(&e.to_string(), code);
            }
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

/// clap's help, version and usage errors; a usage error of a command line
/// asking for `--json` is also one JSON object on stdout.
fn usage_error(e: &clap::Error) -> ExitCode {
    let code = e.exit_code();
    let asks_json = std::env::args_os().skip(1).any(|a| a == "--json");
    if e.use_stderr() && asks_json {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("usage error");
        print_json_error(first.trim_start_matches("error: "), code);
    }
    // Prints help and version on stdout, errors on stderr.
    let _ = e.print();
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}

/// Rust ignores SIGPIPE, so `twofactor enroll | head` would panic on a
/// closed stdout; like other Unix tools, end quietly instead. (Only the
/// CLI does this: the PAM module never touches signal dispositions.)
/// There is no safe way: nix's `signal`/`sigaction` are unsafe whatever
/// the handler, and std's own (`-Zon-broken-pipe=kill`) is nightly-only.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL
    // is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn print_codes(codes: &[pam_twofactor::otp::backup::BackupCode]) {
    for code in codes {
        println!("  {}", code.grouped().as_str());
    }
}

fn devices_json(devices: &[admin::DeviceInfo]) -> serde_json::Value {
    devices
        .iter()
        .map(|d| {
            json!({
                "label": d.label,
                "created": timefmt::rfc3339(d.created),
                "algorithm": d.params.algorithm.name(),
                "digits": d.params.digits,
                "period": d.params.period,
                "drift_seconds": d.drift_seconds,
            })
        })
        .collect()
}

/// `enroll --secret VALUE`: refused before anything else runs, without
/// repeating the value.
const SECRET_IN_ARGV: &str = "--secret is refused: a secret in the arguments can be read by every local user (/proc/PID/cmdline) while twofactor runs; put it in a file only root can read (chmod 0600) and use --secret-file FILE, or pipe it in with --secret-file -";

fn run_import(
    admin: &Admin,
    user: Option<String>,
    google_authenticator: Option<PathBuf>,
    oath_usersfile: Option<PathBuf>,
    force: bool,
    json: bool,
    now: u64,
) -> Result<u8, AdminError> {
    let existing = if force {
        Existing::Replace
    } else {
        Existing::Keep
    };
    // The google-authenticator file still holds the seed after the import,
    // where its user can read it: the admin is told to delete it.
    let mut delete_file = None;
    let (imported, skipped) = match (user, google_authenticator, oath_usersfile) {
        (Some(user), Some(file), None) => {
            let text = admin::read_import_file(&file)?;
            let imported =
                admin.import_google_authenticator(&user, text.as_str(), existing, now)?;
            audit::record(&format!(
                "enrolled {} from the google-authenticator file {}",
                imported.user,
                escape(&file.to_string_lossy())
            ));
            notify::user_event(&admin.config, &imported.user, Event::Enrolled);
            delete_file = Some(file);
            (vec![imported], Vec::new())
        }
        (None, None, Some(file)) => {
            let text = admin::read_import_file(&file)?;
            let (imported, skipped) = admin.import_oath_usersfile(text.as_str(), existing, now)?;
            for i in &imported {
                audit::record(&format!(
                    "enrolled {} from the pam_oath users file {}",
                    i.user,
                    escape(&file.to_string_lossy())
                ));
                notify::user_event(&admin.config, &i.user, Event::Enrolled);
            }
            (imported, skipped)
        }
        _ => {
            return Err(AdminError::BadOption(
                "use: import USER --google-authenticator FILE, or import --oath-usersfile FILE"
                    .into(),
            ));
        }
    };
    if json {
        let users: Vec<_> = imported
            .iter()
            .map(|i| json!({"user": i.user, "backup_codes": i.backup_codes, "notes": i.notes}))
            .collect();
        let skipped: Vec<_> = skipped
            .iter()
            .map(|(line, why)| json!({"line": line, "reason": why}))
            .collect();
        let delete_file = delete_file.as_ref().map(|f| f.display().to_string());
        print_json(json!({
            "imported": users,
            "skipped": skipped,
            "delete_file": delete_file,
            "changed": !imported.is_empty(),
        }));
    } else {
        for i in &imported {
            println!("{}: imported", i.user);
            for note in &i.notes {
                println!("  note: {note}");
            }
            if !i.backup_codes.is_empty() {
                println!("  backup codes:");
                for code in &i.backup_codes {
                    println!("    {code}");
                }
            }
        }
        for (line, why) in &skipped {
            println!("line {line} skipped: {why}");
        }
        if let Some(file) = &delete_file {
            println!(
                "Now delete {0}: it still holds the secret, readable by its owner, and whoever reads it can make codes (rm {0})",
                file.display()
            );
        }
    }
    Ok(u8::from(imported.is_empty() && !skipped.is_empty()))
}

fn run(cli: Cli) -> Result<u8, AdminError> {
    let now = clock::now();
    let config = cli.config.as_deref();
    if matches!(
        &cli.command,
        Command::Enroll {
            secret: Some(_),
            ..
        }
    ) {
        return Err(AdminError::Usage(SECRET_IN_ARGV.into()));
    }
    if let Command::Completions { shell } = &cli.command {
        return print_completions(shell);
    }
    if let Some(path) = config {
        admin::require_config(path)?;
    }
    match cli.command {
        Command::Check { json, root } => {
            let problems = Admin::check(config, &root)?;
            if json {
                let list: Vec<_> = problems
                    .iter()
                    .map(|p| json!({"path": p.path.display().to_string(), "problem": p.problem}))
                    .collect();
                print_json(json!({"ok": problems.is_empty(), "problems": list, "changed": false}));
            } else if problems.is_empty() {
                println!("OK: the configuration and every file in the state directory are valid.");
            } else {
                for p in &problems {
                    println!("{}: {}", p.path.display(), p.problem);
                }
                println!("{} problem(s) found.", problems.len());
            }
            Ok(u8::from(!problems.is_empty()))
        }
        Command::Deliver => Ok(run_deliver(config)),
        command => {
            let admin = Admin::open(config)?;
            run_user_command(&admin, command, now)
        }
    }
}

/// `twofactor completions SHELL`: the script for SHELL, from the same
/// clap definition as the parser (the package runs this at build time).
fn print_completions(shell: &str) -> Result<u8, AdminError> {
    let shell = match shell {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        other => {
            return Err(AdminError::Usage(format!(
                "completions {other:?}: use bash, zsh or fish"
            )));
        }
    };
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "twofactor",
        &mut std::io::stdout(),
    );
    Ok(0)
}

/// "locked until …" or "not locked", as `status` and `list` print it.
fn lock_text(user: &str, locked_until: Option<u64>) -> String {
    match locked_until {
        Some(t) => format!(
            "locked until {} (clear with: twofactor unlock {user})",
            timefmt::human(t)
        ),
        None => "not locked".into(),
    }
}

/// One device on one line, as `devices` and `status` print it.
fn device_line(d: &admin::DeviceInfo) -> String {
    format!(
        "{}\tTOTP {} {} digits {} s\tcreated {}\tclock offset {} s",
        d.label,
        d.params.algorithm,
        d.params.digits,
        d.params.period,
        timefmt::human(d.created),
        d.drift_seconds
    )
}

fn run_list(admin: &Admin, json: bool, now: u64) -> Result<u8, AdminError> {
    let listed = admin.list(now)?;
    if json {
        let users: Vec<_> = listed
            .iter()
            .map(|l| {
                json!({
                    "user": l.user,
                    "devices": devices_json(&l.devices),
                    "backup_codes_remaining": l.backup_codes_remaining,
                    "failed_attempts": l.failed_attempts,
                    "locked_until": l.locked_until.map(timefmt::rfc3339),
                    "last_success": l.last_success.map(timefmt::rfc3339),
                    "deliver_to": l.deliver_to,
                })
            })
            .collect();
        print_json(json!({"users": users, "changed": false}));
    } else if listed.is_empty() {
        println!("no user is enrolled");
    } else {
        println!("USER\tDEVICES\tBACKUP CODES LEFT\tFAILURES\tLOCK\tLAST SUCCESS");
        for l in &listed {
            let labels: Vec<&str> = l.devices.iter().map(|d| d.label.as_str()).collect();
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                l.user,
                labels.join(","),
                l.backup_codes_remaining,
                l.failed_attempts,
                l.locked_until.map_or_else(
                    || "-".to_string(),
                    |t| format!("until {}", timefmt::human(t))
                ),
                l.last_success
                    .map_or_else(|| "never".to_string(), timefmt::human),
            );
        }
    }
    Ok(0)
}

fn run_enroll(admin: &Admin, command: Command, now: u64) -> Result<u8, AdminError> {
    let Command::Enroll {
        user,
        secret_file,
        secret: _,
        algorithm,
        digits,
        period,
        force,
        add,
        label,
        deliver_to,
        if_missing,
        json,
    } = command
    else {
        return Err(AdminError::Usage("not an enroll command".into()));
    };
    let secret = match &secret_file {
        Some(path) => {
            let stdin = std::io::stdin();
            if path == Path::new("-") && stdin.is_terminal() {
                eprintln!("twofactor: reading the secret from standard input (end with Ctrl-D)");
            }
            // Unbuffered, on a duplicate of fd 0: std's stdin buffer
            // would keep a copy of the secret that nothing wipes.
            let fd = stdin.as_fd().try_clone_to_owned().map_err(|e| {
                AdminError::BadOption(format!("--secret-file -: cannot read standard input: {e}"))
            })?;
            Some(admin::read_secret_file(path, std::fs::File::from(fd))?)
        }
        None => None,
    };
    let mut opts = EnrollOptions {
        // Moved, not copied: wiped below, whatever enroll answers.
        secret: secret.map(|mut s| std::mem::take(&mut *s)),
        algorithm,
        digits,
        period,
        force,
        add,
        label,
        deliver_to,
    };
    let enrolled = admin.enroll(&user, &opts, now);
    opts.secret.zeroize();
    let e = match enrolled {
        // Refused under the user's lock before anything was written.
        Err(AdminError::AlreadyEnrolled(name)) if if_missing => {
            if json {
                print_json(json!({"user": name, "changed": false}));
            } else {
                println!("{name}: already enrolled; nothing changed");
            }
            return Ok(0);
        }
        other => other?,
    };
    audit::record(&if opts.add {
        format!("added device {} for {}", e.label, e.user)
    } else if opts.force {
        format!(
            "enrolled {} (device {}), replacing any enrollment",
            e.user, e.label
        )
    } else {
        format!("enrolled {} (device {})", e.user, e.label)
    });
    notify::user_event(
        &admin.config,
        e.user.as_str(),
        if opts.add {
            Event::DeviceAdded {
                device: e.label.clone(),
            }
        } else {
            Event::Enrolled
        },
    );
    let codes: Vec<String> = e
        .backup_codes
        .iter()
        .map(|c| c.grouped().to_string())
        .collect();
    if json {
        print_json(json!({
            "user": e.user.as_str(),
            "label": e.label,
            "uri": e.uri,
            "secret": e.secret.to_base32().as_str(),
            "algorithm": e.params.algorithm.name(),
            "digits": e.params.digits,
            "period": e.params.period,
            "backup_codes": codes,
            "changed": true,
        }));
    } else {
        println!(
            "Enrolled {} (TOTP {}, {} digits, {} s).\n",
            e.user, e.params.algorithm, e.params.digits, e.params.period
        );
        println!("Scan this QR code with the authenticator app:");
        if let Some(qr) = admin::qr_text(&e.uri) {
            println!("{qr}");
        }
        println!(
            "Or enter this key by hand: {}",
            admin::grouped_secret(&e.secret)
        );
        println!("otpauth URI: {}\n", e.uri);
        println!("Backup codes (each works once; keep them safe, they are not shown again):");
        print_codes(&e.backup_codes);
    }
    Ok(0)
}

fn run_status(admin: &Admin, user: &str, json: bool, now: u64) -> Result<u8, AdminError> {
    let s = admin.status(user, now)?;
    if json {
        print_json(json!({
            "user": user,
            "enrolled": s.enrolled,
            "algorithm": s.params.map(|p| p.algorithm.name()),
            "digits": s.params.map(|p| p.digits),
            "period": s.params.map(|p| p.period),
            "backup_codes_remaining": s.backup_codes_remaining,
            "failed_attempts": s.failed_attempts,
            "locked_until": s.locked_until.map(timefmt::rfc3339),
            "devices": devices_json(&s.devices),
            "deliver_to": s.deliver_to,
            "changed": false,
        }));
    } else if let Some(p) = s.params {
        println!(
            "{user}: enrolled (TOTP {}, {} digits, {} s)",
            p.algorithm, p.digits, p.period
        );
        println!("devices:");
        for d in &s.devices {
            println!("  {}", device_line(d));
        }
        match &s.deliver_to {
            Some(t) => println!("codes by message to: {t}"),
            None => println!("codes by message: off"),
        }
        println!(
            "backup codes remaining: {}",
            s.backup_codes_remaining.unwrap_or(0)
        );
        println!("failed attempts: {}", s.failed_attempts);
        println!("{}", lock_text(user, s.locked_until));
    } else {
        println!("{user}: not enrolled");
    }
    Ok(0)
}

/// The answer of a command that changes one user: a line of text, or
/// `{"user", "changed"}` and `extra` fields.
fn print_change(json: bool, user: &str, changed: bool, extra: Value, text: &str) {
    if json {
        let mut v = json!({"user": user, "changed": changed});
        if let (Some(object), Value::Object(more)) = (v.as_object_mut(), extra) {
            object.extend(more);
        }
        print_json(v);
    } else {
        println!("{text}");
    }
}

fn run_user_command(admin: &Admin, command: Command, now: u64) -> Result<u8, AdminError> {
    match command {
        enroll @ Command::Enroll { .. } => run_enroll(admin, enroll, now),
        Command::List { json } => run_list(admin, json, now),
        Command::Status { user, json } => run_status(admin, &user, json, now),
        Command::Unlock { user, json } => {
            let changed = admin.unlock(&user)?;
            if changed {
                audit::record(&format!("unlocked {user} (failures and lock cleared)"));
                notify::user_event(&admin.config, &user, Event::Unlocked);
            }
            let text = if changed {
                format!("{user}: failures cleared and unlocked")
            } else {
                format!("{user}: no failures and not locked; nothing changed")
            };
            print_change(json, &user, changed, json!({}), &text);
            Ok(0)
        }
        Command::BackupCodes { user, json } => {
            let codes = admin.regenerate_backup_codes(&user, now)?;
            audit::record(&format!(
                "made new backup codes for {user} (the old ones no longer work)"
            ));
            notify::user_event(&admin.config, &user, Event::BackupCodesRegenerated);
            if json {
                let list: Vec<String> = codes.iter().map(|c| c.grouped().to_string()).collect();
                print_json(json!({"user": user, "backup_codes": list, "changed": true}));
            } else {
                println!("New backup codes for {user} (the old ones no longer work):");
                print_codes(&codes);
            }
            Ok(0)
        }
        Command::Disable {
            user,
            if_enrolled,
            json,
        } => {
            let text = match admin.disable(&user) {
                Ok(()) => {
                    audit::record(&format!(
                        "disabled {} (secret and state removed)",
                        escape(&user)
                    ));
                    notify::user_event(&admin.config, &user, Event::Disabled);
                    format!("{user}: enrollment removed")
                }
                // Found under the user's lock; nothing was touched.
                Err(AdminError::NotEnrolled(name)) if if_enrolled => {
                    let text = format!("{name}: not enrolled; nothing changed");
                    print_change(json, &user, false, json!({}), &text);
                    return Ok(0);
                }
                Err(e) => return Err(e),
            };
            print_change(json, &user, true, json!({}), &text);
            Ok(0)
        }
        Command::Devices { user, json } => {
            let devices = admin.devices(&user)?;
            if json {
                print_json(json!({
                    "user": user,
                    "devices": devices_json(&devices),
                    "changed": false,
                }));
            } else {
                for d in &devices {
                    println!("{}", device_line(d));
                }
            }
            Ok(0)
        }
        Command::RemoveDevice { user, label, json } => {
            admin.remove_device(&user, &label)?;
            audit::record(&format!("removed device {label} of {user}"));
            notify::user_event(
                &admin.config,
                &user,
                Event::DeviceRemoved {
                    device: label.clone(),
                },
            );
            let text = format!("{user}: device {label} removed");
            print_change(json, &user, true, json!({"label": label}), &text);
            Ok(0)
        }
        Command::SetDelivery { user, target, json } => {
            let changed = admin.set_delivery(&user, target.as_deref())?;
            if changed {
                audit::record(&match &target {
                    Some(t) => format!(
                        "set where codes by message for {user} go: {}",
                        delivery::mask_target(t)
                    ),
                    None => format!("turned off codes by message for {user}"),
                });
            }
            let text = match &target {
                Some(t) => format!("{user}: codes by message go to {t}"),
                None => format!("{user}: no codes by message"),
            };
            print_change(json, &user, changed, json!({"deliver_to": target}), &text);
            Ok(0)
        }
        Command::Import {
            user,
            google_authenticator,
            oath_usersfile,
            force,
            json,
        } => run_import(
            admin,
            user,
            google_authenticator,
            oath_usersfile,
            force,
            json,
            now,
        ),
        Command::Check { .. } | Command::Deliver | Command::Completions { .. } => Ok(1),
    }
}

/// `twofactor deliver`: one connection, on stdin and stdout; the outcome
/// goes to stderr (the journal under systemd). Exit status 1 on failure.
fn run_deliver(config: Option<&Path>) -> u8 {
    let stdin = std::io::stdin();
    let setup = delivery::check_peer(stdin.as_fd()).and_then(|()| {
        Admin::open(config)
            .map(|admin| delivery::Setup::from_config(&admin.config))
            .map_err(|e| DeliveryError::Config(e.to_string()))
    });
    match delivery::serve(setup, &mut stdin.lock(), &mut std::io::stdout().lock()) {
        Ok(served) => {
            eprintln!("twofactor deliver: {served}");
            0
        }
        Err(e) => {
            eprintln!("twofactor deliver: {e}");
            1
        }
    }
}
