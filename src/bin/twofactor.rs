//! `twofactor`: enroll users and look after them (see twofactor(8)).
//! A thin shell over `pam_twofactor::admin`: parse arguments, call, print.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pam_twofactor::admin::{self, Admin, AdminError, EnrollOptions, Existing};
use pam_twofactor::delivery::{self, DeliveryError};
use pam_twofactor::host::{clock, timefmt};
use serde_json::json;
use zeroize::Zeroize;

#[derive(Parser)]
#[command(
    name = "twofactor",
    version,
    about = "Manage pam_twofactor enrollments"
)]
struct Cli {
    /// Configuration file (default /etc/security/twofactor.toml, root only).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a secret and backup codes for USER and show them once.
    Enroll {
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
        #[arg(long)]
        algorithm: Option<String>,
        /// 6, 7 or 8 (default from the config).
        #[arg(long)]
        digits: Option<u8>,
        /// Seconds per code, 10 to 300 (default from the config).
        #[arg(long)]
        period: Option<u32>,
        /// Replace an existing enrollment.
        #[arg(long, conflicts_with = "add")]
        force: bool,
        /// Add another device to an existing enrollment (needs --label).
        #[arg(long, requires = "label")]
        add: bool,
        /// The device's label (default "default").
        #[arg(long)]
        label: Option<String>,
        /// Where codes by message are sent (see [delivery]).
        #[arg(long, value_name = "TARGET")]
        deliver_to: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List USER's devices.
    Devices {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove one of USER's devices.
    RemoveDevice { user: String, label: String },
    /// Set where USER's codes by message go; without TARGET, stop sending.
    SetDelivery {
        user: String,
        target: Option<String>,
    },
    /// Import from google-authenticator or pam_oath.
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
        #[arg(long)]
        json: bool,
    },
    /// Show enrollment, backup codes left, failures and lock.
    Status {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Clear USER's failure count and lock.
    Unlock { user: String },
    /// Replace USER's backup codes; the old ones stop working.
    BackupCodes {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove USER's enrollment.
    Disable { user: String },
    /// The delivery service: read one request for a code by message from
    /// stdin, run [delivery] command, answer on stdout (started by
    /// pam-twofactor-deliver.socket for each connection).
    Deliver,
    /// Validate the config and every file in the state directory.
    Check {
        #[arg(long)]
        json: bool,
        /// For tests only: read the PAM stacks, passwd and group below DIR
        /// instead of / (the config and state directory are unchanged).
        #[arg(long, hide = true, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
}

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("twofactor: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
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
            delete_file = Some(file);
            (vec![imported], Vec::new())
        }
        (None, None, Some(file)) => {
            let text = admin::read_import_file(&file)?;
            admin.import_oath_usersfile(text.as_str(), existing, now)?
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
        println!(
            "{}",
            json!({"imported": users, "skipped": skipped, "delete_file": delete_file})
        );
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
    match cli.command {
        Command::Check { json, root } => {
            let problems = Admin::check(config, &root)?;
            if json {
                let list: Vec<_> = problems
                    .iter()
                    .map(|p| json!({"path": p.path.display().to_string(), "problem": p.problem}))
                    .collect();
                println!("{}", json!({"ok": problems.is_empty(), "problems": list}));
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

fn run_user_command(admin: &Admin, command: Command, now: u64) -> Result<u8, AdminError> {
    match command {
        Command::Enroll {
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
            json,
        } => {
            let secret = match &secret_file {
                Some(path) => {
                    let stdin = std::io::stdin();
                    if path == Path::new("-") && stdin.is_terminal() {
                        eprintln!(
                            "twofactor: reading the secret from standard input (end with Ctrl-D)"
                        );
                    }
                    // Unbuffered, on a duplicate of fd 0: std's stdin buffer
                    // would keep a copy of the secret that nothing wipes.
                    let fd = stdin.as_fd().try_clone_to_owned().map_err(|e| {
                        AdminError::BadOption(format!(
                            "--secret-file -: cannot read standard input: {e}"
                        ))
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
            let e = enrolled?;
            let codes: Vec<String> = e
                .backup_codes
                .iter()
                .map(|c| c.grouped().to_string())
                .collect();
            if json {
                println!(
                    "{}",
                    json!({
                        "user": e.user.as_str(),
                        "label": e.label,
                        "uri": e.uri,
                        "secret": e.secret.to_base32().as_str(),
                        "algorithm": e.params.algorithm.name(),
                        "digits": e.params.digits,
                        "period": e.params.period,
                        "backup_codes": codes,
                    })
                );
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
                println!(
                    "Backup codes (each works once; keep them safe, they are not shown again):"
                );
                print_codes(&e.backup_codes);
            }
            Ok(0)
        }
        Command::Status { user, json } => {
            let s = admin.status(&user, now)?;
            if json {
                println!(
                    "{}",
                    json!({
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
                    })
                );
            } else if let Some(p) = s.params {
                println!(
                    "{user}: enrolled (TOTP {}, {} digits, {} s)",
                    p.algorithm, p.digits, p.period
                );
                println!(
                    "backup codes remaining: {}",
                    s.backup_codes_remaining.unwrap_or(0)
                );
                println!("failed attempts: {}", s.failed_attempts);
                match s.locked_until {
                    Some(t) => println!(
                        "locked until {} (clear with: twofactor unlock {user})",
                        timefmt::human(t)
                    ),
                    None => println!("not locked"),
                }
            } else {
                println!("{user}: not enrolled");
            }
            Ok(0)
        }
        Command::Unlock { user } => {
            admin.unlock(&user)?;
            println!("{user}: failures cleared and unlocked");
            Ok(0)
        }
        Command::BackupCodes { user, json } => {
            let codes = admin.regenerate_backup_codes(&user, now)?;
            if json {
                let list: Vec<String> = codes.iter().map(|c| c.grouped().to_string()).collect();
                println!("{}", json!({"user": user, "backup_codes": list}));
            } else {
                println!("New backup codes for {user} (the old ones no longer work):");
                print_codes(&codes);
            }
            Ok(0)
        }
        Command::Disable { user } => {
            admin.disable(&user)?;
            println!("{user}: enrollment removed");
            Ok(0)
        }
        Command::Devices { user, json } => {
            let devices = admin.devices(&user)?;
            if json {
                println!(
                    "{}",
                    json!({"user": user, "devices": devices_json(&devices)})
                );
            } else {
                for d in &devices {
                    println!(
                        "{}\tTOTP {} {} digits {} s\tcreated {}\tclock offset {} s",
                        d.label,
                        d.params.algorithm,
                        d.params.digits,
                        d.params.period,
                        timefmt::human(d.created),
                        d.drift_seconds
                    );
                }
            }
            Ok(0)
        }
        Command::RemoveDevice { user, label } => {
            admin.remove_device(&user, &label)?;
            println!("{user}: device {label} removed");
            Ok(0)
        }
        Command::SetDelivery { user, target } => {
            admin.set_delivery(&user, target.as_deref())?;
            match target {
                Some(t) => println!("{user}: codes by message go to {t}"),
                None => println!("{user}: no codes by message"),
            }
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
        Command::Check { .. } | Command::Deliver => Ok(1),
    }
}

/// `twofactor deliver`: one connection, on stdin and stdout; the outcome
/// goes to stderr (the journal under systemd). Exit status 1 on failure.
fn run_deliver(config: Option<&Path>) -> u8 {
    let stdin = std::io::stdin();
    let command = delivery::check_peer(stdin.as_fd()).and_then(|()| {
        Admin::open(config)
            .map(|admin| admin.config.delivery.command)
            .map_err(|e| DeliveryError::Config(e.to_string()))
    });
    match delivery::serve(command, &mut stdin.lock(), &mut std::io::stdout().lock()) {
        Ok(request) => {
            eprintln!("twofactor deliver: code for {} sent", request.user.as_str());
            0
        }
        Err(e) => {
            eprintln!("twofactor deliver: {e}");
            1
        }
    }
}
