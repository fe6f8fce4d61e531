//! `twofactor`: enroll users and look after them (see twofactor(8)).
//! A thin shell over `pam_twofactor::admin`: parse arguments, call, print.
//! `cli` defines the arguments, `enroll` and `commands` run the commands
//! on users, and `output` prints their answers.

mod cli;
mod commands;
mod enroll;
mod fleet;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use clap_complete::Shell;
use pam_twofactor::admin::{self, Admin, AdminError};
use pam_twofactor::host::clock;
use serde_json::json;

use cli::{Cli, Command};
use commands::{run_deliver, run_user_command};
use fleet::store::Store;
use output::{print_json, print_json_error};

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

/// `enroll --secret VALUE`: refused before anything else runs, without
/// repeating the value.
const SECRET_IN_ARGV: &str = "--secret is refused: a secret in the arguments can be read by every local user (/proc/PID/cmdline) while twofactor runs; put it in a file only root can read (chmod 0600) and use --secret-file FILE, or pipe it in with --secret-file -";

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
            let mut problems = Admin::check(config, &root)?;
            // With [fleet]: the agent's socket and the database as this
            // host's role sees it (a config that does not load was
            // reported above).
            if let Ok(admin) = Admin::open(config) {
                problems.extend(fleet::status::check_problems(&admin));
            }
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
        Command::Agent => Ok(fleet::agent::run(config)),
        Command::Fleet { command } => fleet::run(Admin::open(config)?, command),
        command => {
            let mut store = Store::open(Admin::open(config)?)?;
            run_user_command(&mut store, command, now)
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
